import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from payband_audit.purge import purge_expired
from payband_audit.verify import verify_chain
from payband_audit.writer import AuditWriter
from payband_contracts import Outcome, Review
from payband_local.postgres import PostgresConnectionInfo

NOW = datetime.now(UTC)


def verify(info: PostgresConnectionInfo) -> str:
    with info.connect(autocommit=True) as conn:
        return str(verify_chain(conn))


def write(info: PostgresConnectionInfo, make_record, ages_days: list[int]) -> list:
    """One prediction per age (days ago); each also gets an outcome at the same time."""

    async def run() -> list:
        requests = []
        async with AuditWriter(info.url) as writer:
            for days in ages_days:
                at = NOW - timedelta(days=days)
                request, prediction = make_record(at=at)
                await writer.record_prediction(request, prediction)
                await writer.record_outcome(
                    request.prediction_id, Outcome(band=1), recorded_by="hr", recorded_at=at
                )
                requests.append(request)
        return requests

    return asyncio.run(run())


def remaining(info: PostgresConnectionInfo) -> set:
    with info.connect() as conn:
        return {
            row[0] for row in conn.execute("SELECT prediction_id FROM audit.prediction_requests")
        }


def test_empty_log_verifies(audit_db):
    assert verify(audit_db) == "ok 0 records"


def test_altered_row_is_named(audit_db, make_record):
    requests = write(audit_db, make_record, [3, 2, 1])
    assert verify(audit_db) == "ok 9 records"
    target = requests[1].prediction_id
    with audit_db.connect() as conn:
        # What an attacker with the owner's rights could do: switch the trigger off.
        conn.execute("ALTER TABLE audit.prediction_requests DISABLE TRIGGER append_only")
        conn.execute(
            "UPDATE audit.prediction_requests SET candidate = "
            "json_build_object('age', 99) WHERE prediction_id = %s",
            (target,),
        )
        conn.execute("ALTER TABLE audit.prediction_requests ENABLE TRIGGER append_only")
        conn.commit()
    result = verify(audit_db)
    assert result == (
        f"broken: prediction_requests seq 4 (prediction_id {target}): "
        "contents do not match its hash"
    )


def test_deleted_row_is_named(audit_db, make_record):
    requests = write(audit_db, make_record, [3, 2, 1])
    with audit_db.connect() as conn:
        conn.execute("ALTER TABLE audit.outcomes DISABLE TRIGGER append_only")
        conn.execute(
            "DELETE FROM audit.outcomes WHERE prediction_id = %s", (requests[0].prediction_id,)
        )
        conn.commit()
    assert verify(audit_db).startswith(
        f"broken: prediction_requests seq 4 (prediction_id {requests[1].prediction_id}): "
        "the records from seq 3 to 3 are missing"
    )


def test_deleted_tail_is_noticed(audit_db, make_record):
    requests = write(audit_db, make_record, [3, 2, 1])
    with audit_db.connect() as conn:
        conn.execute("ALTER TABLE audit.outcomes DISABLE TRIGGER append_only")
        conn.execute(
            "DELETE FROM audit.outcomes WHERE prediction_id = %s", (requests[2].prediction_id,)
        )
        conn.commit()
    assert "records at the end are missing" in verify(audit_db)


def test_purge_refuses_less_than_180_days(audit_db):
    with audit_db.connect() as conn:
        with pytest.raises(ValueError, match="shorter than the minimum of 180 days"):
            purge_expired(conn, 179)
        # The database refuses too, whoever calls it.
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="minimum of 180 days"):
            conn.execute("SELECT audit.purge_expired(30)")


def test_purge_removes_only_older_records_and_chain_still_verifies(audit_db, make_record):
    requests = write(audit_db, make_record, [400, 300, 200, 100, 10])
    with audit_db.connect() as conn:
        result = purge_expired(conn, 180)
    assert result.deleted == {
        "reviews": 0,
        "outcomes": 3,
        "prediction_errors": 0,
        "prediction_responses": 3,
        "prediction_requests": 3,
    }
    assert result.ranges == 1
    assert remaining(audit_db) == {r.prediction_id for r in requests[3:]}
    assert verify(audit_db) == "ok 6 records"

    # New records chain on; a second purge with nothing to delete keeps the chain verifiable.
    write(audit_db, make_record, [0])
    with audit_db.connect() as conn:
        assert purge_expired(conn, 365).total == 0
    assert verify(audit_db) == "ok 9 records"


def test_purge_keeps_predictions_with_recent_activity(audit_db, make_record):
    old = write(audit_db, make_record, [400])[0]

    async def review_now() -> None:
        async with AuditWriter(audit_db.url) as writer:
            await writer.record_review(old.prediction_id, Review(reviewer="hr", decision="confirm"))

    asyncio.run(review_now())
    with audit_db.connect() as conn:
        assert purge_expired(conn, 180).total == 0
    assert remaining(audit_db) == {old.prediction_id}
    assert verify(audit_db) == "ok 4 records"


def test_purge_takes_expired_predictions_out_of_the_middle(audit_db, make_record):
    # A's outcome (expired) was recorded after C's request; C is still in use. A goes, C
    # stays, and the chain verifies across the two gaps A leaves.
    async def scenario() -> list:
        async with AuditWriter(audit_db.url) as writer:
            a, a_prediction = make_record(at=NOW - timedelta(days=400))
            await writer.record_prediction(a, a_prediction)
            c, c_prediction = make_record(at=NOW - timedelta(days=300))
            await writer.record_prediction(c, c_prediction)
            await writer.record_outcome(
                a.prediction_id,
                Outcome(band=0),
                recorded_by="hr",
                recorded_at=NOW - timedelta(days=250),
            )
            await writer.record_outcome(c.prediction_id, Outcome(band=1), recorded_by="hr")
            return [a, c]

    _, c = asyncio.run(scenario())
    with audit_db.connect() as conn:
        result = purge_expired(conn, 180)
    assert result.total == 3
    assert result.ranges == 2
    assert remaining(audit_db) == {c.prediction_id}
    assert verify(audit_db) == "ok 3 records"
    with audit_db.connect() as conn:
        gaps = conn.execute("SELECT first_seq, last_seq FROM audit.purged_ranges").fetchall()
    assert sorted(gaps) == [(1, 2), (5, 5)]


def test_purge_of_the_newest_records_keeps_the_head_verifiable(audit_db, make_record):
    write(audit_db, make_record, [400, 300])
    with audit_db.connect() as conn:
        assert purge_expired(conn, 180).total == 6
    assert verify(audit_db) == "ok 0 records"
    write(audit_db, make_record, [1])
    assert verify(audit_db) == "ok 3 records"


def test_a_forged_gap_is_noticed(audit_db, make_record):
    write(audit_db, make_record, [400, 1])
    with audit_db.connect() as conn:
        purge_expired(conn, 180)
        # Hide a deletion of the recent prediction's outcome behind a made-up gap.
        conn.execute("ALTER TABLE audit.outcomes DISABLE TRIGGER append_only")
        conn.execute("DELETE FROM audit.outcomes")
        conn.execute(
            "INSERT INTO audit.purged_ranges SELECT 6, 6, record_hash, 1 FROM audit.chain_head"
        )
        conn.commit()
    assert verify(audit_db) == "broken: purge 1: its list of purged seqs was altered"


def test_writer_role_cannot_rewind_the_head(audit_db, make_record):
    write(audit_db, make_record, [1])
    with audit_db.connect() as conn:
        conn.execute("SET ROLE payband_audit_writer")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only moves forward"):
            conn.execute("UPDATE audit.chain_head SET seq = 1")
        conn.rollback()
        conn.execute("SET ROLE payband_audit_writer")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only moves forward"):
            conn.execute("UPDATE audit.chain_head SET seq = 99, record_hash = repeat('a', 64)")
    assert verify(audit_db) == "ok 3 records"


def test_purge_while_writers_write(audit_db, make_record):
    write(audit_db, make_record, [400, 300, 200])

    async def scenario() -> int:
        async with AuditWriter(audit_db.url) as writer:
            writes = [writer.record_prediction(*make_record()) for _ in range(100)]
            purge = asyncio.to_thread(run_purge)
            results = await asyncio.gather(*writes, purge)
            return results[-1]

    def run_purge() -> int:
        with audit_db.connect() as conn:
            return purge_expired(conn, 180).total

    assert asyncio.run(scenario()) == 9
    assert verify(audit_db) == "ok 200 records"


def test_tampered_purge_record_is_named(audit_db, make_record):
    write(audit_db, make_record, [400, 1])
    with audit_db.connect() as conn:
        purge_expired(conn, 180)
        conn.execute("ALTER TABLE audit.purges DISABLE TRIGGER append_only")
        conn.execute(
            "UPDATE audit.purges SET details = jsonb_set(details, '{retention_days}', '30')"
        )
        conn.commit()
    assert verify(audit_db) == "broken: purge 1: contents do not match its hash"
