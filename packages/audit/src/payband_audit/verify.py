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


@dataclass(frozen=True)
class _Gap:
    last_seq: int
    last_hash: str


class _Broken(Exception):
    """The first problem found; ends the walk."""


def _rows(conn: psycopg.Connection, kind: RecordKind) -> Iterator[tuple[int, RecordKind, tuple]]:
    with conn.cursor(name=f"verify_{kind.table}") as cursor:
        cursor.itersize = 5_000
        cursor.execute(kind.select_sql)
        for row in cursor:
            yield row[0], kind, row


def _name(kind: RecordKind, row: tuple[Any, ...]) -> str:
    return f"{kind.table} seq {row[0]} ({kind.columns[0]} {row[1]})"


def _purge_gaps(conn: psycopg.Connection) -> tuple[int, dict[int, _Gap]]:
    """Check the purge chain and each purge's list of gaps; the gaps by their first seq."""
    purges = conn.execute(
        "SELECT purge_id, details::text, details, prev_hash, record_hash "
        "FROM audit.purges ORDER BY purge_id"
    ).fetchall()
    ranges = conn.execute(
        "SELECT purge_id, first_seq, last_seq, last_hash FROM audit.purged_ranges "
        "ORDER BY purge_id, first_seq"
    ).fetchall()
    by_purge: dict[int, list[tuple[int, int, str]]] = {}
    for purge_id, first_seq, last_seq, last_hash in ranges:
        by_purge.setdefault(purge_id, []).append((first_seq, last_seq, last_hash))
    expected_prev = GENESIS_HASH
    for purge_id, text, details, prev_hash, record_hash in purges:
        if prev_hash != expected_prev:
            raise _Broken(f"purge {purge_id} does not link to the purge before it")
        if hashlib.sha256(f"{prev_hash}{text}".encode()).hexdigest() != record_hash:
            raise _Broken(f"purge {purge_id}: contents do not match its hash")
        listed = ",".join(f"{a}:{b}:{h}" for a, b, h in by_purge.pop(purge_id, []))
        digest = hashlib.sha256(listed.encode()).hexdigest()
        if not isinstance(details, dict) or details.get("ranges_sha256") != digest:
            raise _Broken(f"purge {purge_id}: its list of purged seqs was altered")
        expected_prev = record_hash
    if by_purge:
        raise _Broken(f"purged seqs claimed by a purge that does not exist: {sorted(by_purge)}")
    return len(purges), {first: _Gap(last, str(h)) for _, first, last, h in ranges}


def _skip_gaps(
    seq: int, until: int, prev: str, gaps: dict[int, _Gap], what: str
) -> tuple[int, str]:
    """Step over purged runs from `seq` up to `until`; a run not declared is missing."""
    while seq < until:
        gap = gaps.get(seq)
        if gap is None:
            raise _Broken(f"{what}: the records from seq {seq} to {until - 1} are missing")
        seq, prev = gap.last_seq + 1, gap.last_hash
        if seq > until:
            raise _Broken(f"{what}: it lies inside the seqs a purge says it removed")
    return seq, prev


def verify_chain(conn: psycopg.Connection) -> Verification:
    """Recompute every hash in chain order; the first mismatch is the problem.

    Reads one consistent snapshot; the connection must not be inside a transaction.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError("verify_chain needs a connection that is not inside a transaction")
    records = purges = 0
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            purges, gaps = _purge_gaps(conn)
            expected_seq, expected_prev = 1, GENESIS_HASH
            previous = "the start of the chain"
            streams = [_rows(conn, kind) for kind in KINDS]
            for seq, kind, row in heapq.merge(*streams, key=lambda item: item[0]):
                name = _name(kind, row)
                if seq < expected_seq:
                    raise _Broken(f"{name}: its seq is also the seq of {previous}")
                expected_seq, expected_prev = _skip_gaps(
                    expected_seq, seq, expected_prev, gaps, name
                )
                values, prev_hash, record_hash = row[1:-2], row[-2], row[-1]
                if prev_hash != expected_prev:
                    raise _Broken(f"{name}: does not link to the record before it")
                if chain_hash(prev_hash, content_of(kind, values)) != record_hash:
                    raise _Broken(f"{name}: contents do not match its hash")
                records += 1
                expected_seq, expected_prev, previous = seq + 1, record_hash, name
            head = conn.execute("SELECT seq, record_hash FROM audit.chain_head").fetchone()
            if head is None:
                raise _Broken("the chain head is missing")
            head_seq, head_hash = int(head[0]), str(head[1])
            if head_seq < expected_seq - 1:
                raise _Broken(
                    f"{previous}: lies past the chain head (seq {head_seq}), written without "
                    "moving the head"
                )
            end = (
                f"the chain head is at seq {head_seq} but the chain ends at seq "
                f"{expected_seq - 1}: records at the end are missing"
            )
            if head_seq >= expected_seq:
                try:
                    expected_seq, expected_prev = _skip_gaps(
                        expected_seq, head_seq + 1, expected_prev, gaps, "the chain head"
                    )
                except _Broken:
                    raise _Broken(end) from None
            if (head_seq, head_hash) != (expected_seq - 1, expected_prev):
                raise _Broken(end)
        except _Broken as broken:
            return Verification(records, purges, str(broken))
    return Verification(records, purges)
