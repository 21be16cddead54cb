"""Walk the hash chain and name the first record that breaks it."""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from payband_audit.chain import GENESIS_HASH, KINDS, RecordKind, chain_hash, content_of


@dataclass(frozen=True)
class Verification:
    """The outcome of walking the chain."""

    records: int
    purges: int
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        if self.ok:
            return f"ok {self.records} records"
        return f"broken: {self.problem}"


def _rows(conn: psycopg.Connection, kind: RecordKind) -> Iterator[tuple[int, RecordKind, tuple]]:
    with conn.cursor(name=f"verify_{kind.table}") as cursor:
        cursor.itersize = 5_000
        cursor.execute(kind.select_sql)
        for row in cursor:
            yield row[0], kind, row


def _name(kind: RecordKind, row: tuple[Any, ...]) -> str:
    return f"{kind.table} seq {row[0]} ({kind.columns[0]} {row[1]})"


def _verify_purges(conn: psycopg.Connection) -> tuple[int, int, str, str | None]:
    """The purge chain: (purges, first kept seq, anchor hash, problem)."""
    rows = conn.execute(
        "SELECT purge_id, details::text, details, prev_hash, record_hash "
        "FROM audit.purges ORDER BY purge_id"
    ).fetchall()
    expected_prev = GENESIS_HASH
    first_seq, anchor = 1, GENESIS_HASH
    for purge_id, text, details, prev_hash, record_hash in rows:
        if prev_hash != expected_prev:
            return (
                len(rows),
                first_seq,
                anchor,
                f"purge {purge_id} does not link to the purge before it",
            )
        if hashlib.sha256(f"{prev_hash}{text}".encode()).hexdigest() != record_hash:
            return len(rows), first_seq, anchor, f"purge {purge_id}: contents do not match its hash"
        expected_prev = record_hash
        first_seq, anchor = int(details["first_kept_seq"]), str(details["anchor_hash"])
    return len(rows), first_seq, anchor, None


def verify_chain(conn: psycopg.Connection) -> Verification:
    """Recompute every hash in chain order; the first mismatch is the problem.

    Reads one consistent snapshot; the connection must not be inside a transaction.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError("verify_chain needs a connection that is not inside a transaction")
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        purges, expected_seq, expected_prev, problem = _verify_purges(conn)
        if problem:
            return Verification(0, purges, problem)
        records = 0
        streams = [_rows(conn, kind) for kind in KINDS]
        for seq, kind, row in heapq.merge(*streams, key=lambda item: item[0]):
            values, prev_hash, record_hash = row[1:-2], row[-2], row[-1]
            if seq != expected_seq:
                return Verification(
                    records,
                    purges,
                    f"{_name(kind, row)}: the records from seq {expected_seq} to {seq - 1} "
                    "are missing",
                )
            if prev_hash != expected_prev:
                return Verification(
                    records, purges, f"{_name(kind, row)}: does not link to the record before it"
                )
            if chain_hash(prev_hash, content_of(kind, values)) != record_hash:
                return Verification(
                    records, purges, f"{_name(kind, row)}: contents do not match its hash"
                )
            records += 1
            expected_seq, expected_prev = seq + 1, record_hash
        head = conn.execute("SELECT seq, record_hash FROM audit.chain_head").fetchone()
        if head is None or (int(head[0]), str(head[1])) != (expected_seq - 1, expected_prev):
            last = expected_seq - 1
            return Verification(
                records,
                purges,
                f"the chain head is at seq {head[0] if head else '?'} but the last record is "
                f"seq {last}: records at the end are missing",
            )
    return Verification(records, purges)
