"""The retention purge: run by the purge role through the database function."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from payband_audit.settings import check_retention


@dataclass(frozen=True)
class PurgeResult:
    purge_id: int
    cutoff: datetime
    first_kept_seq: int
    deleted: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def purge_expired(conn: psycopg.Connection, retention_days: int) -> PurgeResult:
    """Delete records older than the retention period and record the purge; commits."""
    check_retention(retention_days)
    with conn.transaction():
        row = conn.execute(
            "SELECT purge_id, cutoff, first_kept_seq, deleted FROM audit.purge_expired(%s)",
            (retention_days,),
        ).fetchone()
    assert row is not None, "audit.purge_expired returned nothing"
    return PurgeResult(int(row[0]), row[1], int(row[2]), {k: int(v) for k, v in row[3].items()})
