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
    deleted: dict[str, int]
    ranges: int

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def purge_expired(conn: psycopg.Connection, retention_days: int) -> PurgeResult:
    """Delete the predictions whose every record is older than the retention period, and
    record the purge (with the gaps it leaves in the chain); commits."""
    check_retention(retention_days)
    with conn.transaction():
        row = conn.execute(
            "SELECT purge_id, cutoff, deleted, ranges FROM audit.purge_expired(%s)",
            (retention_days,),
        ).fetchone()
    if row is None:
        raise RuntimeError("audit.purge_expired returned nothing")
    return PurgeResult(int(row[0]), row[1], {k: int(v) for k, v in row[2].items()}, int(row[3]))
