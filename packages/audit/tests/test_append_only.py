import asyncio

import psycopg
import pytest
from psycopg import sql

from payband_audit.writer import AuditWriter
from payband_local.postgres import PostgresConnectionInfo

RECORD_TABLES = [
    "prediction_requests",
    "prediction_responses",
    "prediction_errors",
    "outcomes",
    "reviews",
    "purges",
    "purged_ranges",
]


@pytest.fixture
def written(audit_db: PostgresConnectionInfo, make_record) -> PostgresConnectionInfo:
    async def write() -> None:
        async with AuditWriter(audit_db.url) as writer:
            request, prediction = make_record()
            await writer.record_prediction(request, prediction)

    asyncio.run(write())
    return audit_db


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit.prediction_requests SET caller = 'someone else'",
        "DELETE FROM audit.prediction_responses",
        "TRUNCATE audit.prediction_requests CASCADE",
        "UPDATE audit.prediction_responses SET band_index = 0",
    ],
)
def test_changes_to_records_are_refused(written: PostgresConnectionInfo, statement: str):
    with written.connect() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM audit.prediction_requests").fetchone() == (1,)


@pytest.mark.parametrize("table", RECORD_TABLES)
def test_every_record_table_has_the_triggers(audit_db: PostgresConnectionInfo, table: str):
    with audit_db.connect() as conn:
        triggers = {
            row[0]
            for row in conn.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                (f"audit.{table}",),
            )
        }
    expected = {"append_only", "append_only_truncate"}
    if table not in {"purges", "purged_ranges"}:
        expected |= {"appended_after_head", "head_covers_record"}
    assert triggers == expected


def test_purging_flag_does_not_open_the_purges_table(written: PostgresConnectionInfo):
    with written.connect() as conn:
        conn.execute("SELECT audit.purge_expired(180)")
        conn.commit()
        conn.execute("SELECT set_config('payband_audit.purging', 'on', true)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("DELETE FROM audit.purges")


def as_role(info: PostgresConnectionInfo, role: str) -> psycopg.Connection:
    conn = info.connect()
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return conn


def test_writer_role_inserts_but_cannot_read_or_delete(written: PostgresConnectionInfo):
    with as_role(written, "payband_audit_writer") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT candidate FROM audit.prediction_requests")
        conn.rollback()
        conn.execute("SET ROLE payband_audit_writer")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit.outcomes")
        conn.rollback()
        conn.execute("SET ROLE payband_audit_writer")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT audit.purge_expired(365)")


def test_reader_role_reads_but_cannot_write(written: PostgresConnectionInfo):
    with as_role(written, "payband_audit_reader") as conn:
        assert conn.execute("SELECT count(*) FROM audit.prediction_requests").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO audit.reviews (seq) VALUES (1)")


def test_purger_role_only_runs_the_purge(written: PostgresConnectionInfo):
    with as_role(written, "payband_audit_purger") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM audit.prediction_requests")
        conn.rollback()
        conn.execute("SET ROLE payband_audit_purger")
        row = conn.execute("SELECT deleted FROM audit.purge_expired(180)").fetchone()
        assert row is not None
        assert row[0]["prediction_requests"] == 0


def test_writer_works_as_the_writer_role(audit_db: PostgresConnectionInfo, make_record):
    async def write() -> int:
        async with AuditWriter(audit_db.url, role="payband_audit_writer") as writer:
            request, prediction = make_record()
            receipt = await writer.record_prediction(request, prediction)
            from payband_contracts import Outcome

            await writer.record_outcome(request.prediction_id, Outcome(band=1), recorded_by="hr")
            return receipt.seq

    assert asyncio.run(write()) == 2


FORGED_REQUEST = (
    "INSERT INTO audit.prediction_requests (seq, prediction_id, received_at, caller, prev_hash,"
    " record_hash) SELECT %s, gen_random_uuid(), now(), 'forger', record_hash, repeat('f', 64)"
    " FROM audit.chain_head"
)


def test_writer_role_cannot_write_into_the_past(written: PostgresConnectionInfo):
    # Seq 2 is the response's: another table, so only the chain head can refuse it.
    with (
        as_role(written, "payband_audit_writer") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="after the chain head"),
    ):
        conn.execute(FORGED_REQUEST, (2,))


def test_writer_role_cannot_park_a_record_at_the_next_seq(
    written: PostgresConnectionInfo, make_record
):
    # A record at head + 1 that does not move the head would block every honest writer.
    with as_role(written, "payband_audit_writer") as conn:
        conn.execute(FORGED_REQUEST, (3,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="without moving the chain"):
            conn.commit()

    async def write() -> None:
        async with AuditWriter(written.url) as writer:
            await writer.record_prediction(*make_record())

    asyncio.run(write())
