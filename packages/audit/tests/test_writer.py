import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from payband_audit.errors import (
    AuditConfigError,
    AuditRejected,
    AuditUnavailable,
    DuplicatePrediction,
    OutcomeAlreadyRecorded,
    UnknownPrediction,
)
from payband_audit.migrate import upgrade
from payband_audit.settings import AuditSettings
from payband_audit.verify import verify_chain
from payband_audit.writer import AuditWriter, PredictionRequestRecord
from payband_contracts import ErrorBody, ModelRef, Outcome, Review
from payband_local.postgres import EmbeddedPostgres, PostgresConnectionInfo


def recorded_ids(info: PostgresConnectionInfo) -> list[uuid.UUID]:
    with info.connect() as conn:
        rows = conn.execute(
            "SELECT r.prediction_id FROM audit.prediction_requests r "
            "JOIN audit.prediction_responses USING (prediction_id)"
        ).fetchall()
    return [row[0] for row in rows]


def verify(info: PostgresConnectionInfo) -> str:
    with info.connect(autocommit=True) as conn:
        return str(verify_chain(conn))


@pytest.mark.parametrize("connections", [1, 3])
def test_200_concurrent_writes_are_each_committed_once(audit_db, make_record, connections: int):
    records = [make_record() for _ in range(200)]
    settings = AuditSettings(database_url=audit_db.url, connections=connections, max_batch=16)

    async def write_all() -> list[int]:
        async with AuditWriter(settings=settings) as writer:
            receipts = await asyncio.gather(*(writer.record_prediction(*r) for r in records))
            # Each await returned only after commit: a new connection sees them all now.
            assert sorted(recorded_ids(audit_db)) == sorted(r[0].prediction_id for r in records)
            return [receipt.seq for receipt in receipts]

    seqs = asyncio.run(write_all())
    assert sorted(seqs) == list(range(2, 401, 2))
    ids = recorded_ids(audit_db)
    assert len(ids) == len(set(ids)) == 200
    assert verify(audit_db) == "ok 400 records"


OTHER_PROCESS = """
import asyncio, sys, uuid
from datetime import UTC, datetime
from payband_audit.writer import AuditWriter, PredictionRequestRecord
from payband_contracts import Prediction
from payband_contracts.messages import EXAMPLE_PREDICTION

async def main():
    async with AuditWriter(sys.argv[1]) as writer:
        async def one():
            pid = uuid.uuid4()
            request = PredictionRequestRecord(
                prediction_id=pid, received_at=datetime.now(UTC), caller="replica-2"
            )
            prediction = Prediction.model_validate({**EXAMPLE_PREDICTION, "id": str(pid)})
            await writer.record_prediction(request, prediction)
        await asyncio.gather(*(one() for _ in range(150)))

asyncio.run(main())
"""


def test_writers_in_two_processes_keep_one_chain(audit_db, make_record):
    # Two gateway replicas: each has its own writer; the locked head keeps one chain.
    other = subprocess.Popen([sys.executable, "-c", OTHER_PROCESS, audit_db.url])
    try:

        async def write_here() -> None:
            async with AuditWriter(audit_db.url) as writer:
                await asyncio.gather(
                    *(writer.record_prediction(*make_record()) for _ in range(150))
                )

        asyncio.run(write_here())
        assert other.wait(timeout=60) == 0
    finally:
        other.kill()
        other.wait()
    assert len(recorded_ids(audit_db)) == 300
    assert verify(audit_db) == "ok 600 records"


def test_a_held_chain_head_fails_writes_and_stores_none_of_them(audit_db, make_record):
    # Another session holds the head longer than the write timeout (a long purge, a stuck
    # replica): callers are told "unavailable", and then nothing of theirs may be stored.
    settings = AuditSettings(database_url=audit_db.url, write_timeout_s=1.0)
    with audit_db.connect() as blocker:
        blocker.execute("SELECT * FROM audit.chain_head FOR UPDATE")

        async def scenario() -> list[object]:
            async with AuditWriter(settings=settings) as writer:
                results = await asyncio.gather(
                    *(writer.record_prediction(*make_record()) for _ in range(5)),
                    return_exceptions=True,
                )
                blocker.rollback()
                await writer.record_prediction(*make_record())
                return results

        results = asyncio.run(scenario())
    assert all(isinstance(r, AuditUnavailable) for r in results), results
    assert len(recorded_ids(audit_db)) == 1
    assert verify(audit_db) == "ok 2 records"


def test_close_commits_what_is_in_flight(audit_db, make_record):
    async def scenario() -> list[object]:
        writer = await AuditWriter(audit_db.url).start()
        tasks = [asyncio.create_task(writer.record_prediction(*make_record())) for _ in range(300)]
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        await writer.close()
        return await asyncio.gather(*tasks, return_exceptions=True)

    started = time.perf_counter()
    results = asyncio.run(scenario())
    assert time.perf_counter() - started < 5
    acknowledged = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, AuditUnavailable) for r in refused)
    assert len(recorded_ids(audit_db)) == len(acknowledged) > 0


def test_one_bad_record_does_not_fail_its_batch(audit_db, make_record):
    async def scenario() -> list[object]:
        async with AuditWriter(audit_db.url) as writer:
            records = [make_record() for _ in range(10)]
            bad_request = records[4][0].model_copy(update={"raw_request": "nul \x00 byte"})
            records[4] = (bad_request, records[4][1])
            return await asyncio.gather(
                *(writer.record_prediction(*r) for r in records), return_exceptions=True
            )

    results = asyncio.run(scenario())
    assert isinstance(results[4], AuditRejected)
    assert sum(not isinstance(r, Exception) for r in results) == 9
    assert len(recorded_ids(audit_db)) == 9
    assert verify(audit_db) == "ok 18 records"


def test_unencodable_text_is_refused_before_the_batch(audit_db, make_record):
    request, prediction = make_record()
    bad = request.model_copy(update={"raw_request": "lone surrogate \udc80"})

    async def scenario() -> None:
        async with AuditWriter(audit_db.url) as writer:
            with pytest.raises(AuditRejected, match="cannot record"):
                await writer.record_prediction(bad, prediction)

    asyncio.run(scenario())


def test_the_model_that_answered_is_recorded(audit_db, make_record):
    request, prediction = make_record(version="7")
    without_model = request.model_copy(update={"model": None})
    other, other_prediction = make_record(version="7")
    wrong = other.model_copy(update={"model": ModelRef(name="salary-band", version="6")})

    async def scenario() -> None:
        async with AuditWriter(audit_db.url) as writer:
            await writer.record_prediction(without_model, prediction)
            with pytest.raises(AuditRejected, match="comes from salary-band 7"):
                await writer.record_prediction(wrong, other_prediction)

    asyncio.run(scenario())
    with audit_db.connect() as conn:
        rows = conn.execute("SELECT model_name, model_version FROM audit.prediction_requests")
        assert rows.fetchall() == [("salary-band", "7")]


def test_errors_outcomes_and_reviews_are_recorded(audit_db, make_record):
    async def write() -> None:
        async with AuditWriter(audit_db.url) as writer:
            request, prediction = make_record()
            await writer.record_prediction(request, prediction)
            failed, _ = make_record()
            error = ErrorBody(code="inference_unavailable", message="MLServer did not answer")
            await writer.record_error(failed, 503, error, upstream_body="connection refused")
            await writer.record_outcome(
                request.prediction_id, Outcome(band=0, source="payroll"), recorded_by="hr"
            )
            with pytest.raises(OutcomeAlreadyRecorded):
                await writer.record_outcome(
                    request.prediction_id, Outcome(band=1), recorded_by="hr"
                )
            review = Review(reviewer="hr-17", decision="override", band=0, reason="payslip")
            await writer.record_review(request.prediction_id, review)
            await writer.record_review(
                failed.prediction_id, Review(reviewer="hr-17", decision="confirm")
            )
            with pytest.raises(UnknownPrediction):
                await writer.record_outcome(uuid.uuid4(), Outcome(band=1), recorded_by="hr")
            with pytest.raises(UnknownPrediction):
                await writer.record_review(uuid.uuid4(), review)
            with pytest.raises(DuplicatePrediction):
                await writer.record_prediction(request, prediction)
            with pytest.raises(AuditRejected, match="does not answer"):
                await writer.record_prediction(failed, prediction)

    asyncio.run(write())
    with audit_db.connect() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM audit.prediction_requests),"
            " (SELECT count(*) FROM audit.prediction_errors),"
            " (SELECT count(*) FROM audit.outcomes), (SELECT count(*) FROM audit.reviews)"
        ).fetchone()
    assert counts == (2, 1, 1, 2)
    assert verify(audit_db) == "ok 7 records"


def test_two_outcomes_for_one_prediction_in_one_batch(audit_db, make_record):
    async def write() -> list[object]:
        async with AuditWriter(audit_db.url) as writer:
            request, prediction = make_record()
            await writer.record_prediction(request, prediction)
            return await asyncio.gather(
                *(
                    writer.record_outcome(request.prediction_id, Outcome(band=b), recorded_by="x")
                    for b in (0, 1, 0)
                ),
                return_exceptions=True,
            )

    results = asyncio.run(write())
    assert sum(isinstance(r, OutcomeAlreadyRecorded) for r in results) == 2
    assert verify(audit_db) == "ok 3 records"


def test_unmigrated_database_is_a_config_error(postgres_database):
    async def start() -> None:
        await AuditWriter(postgres_database.url).start()

    with pytest.raises(AuditConfigError, match=r"not migrated.*payband-audit migrate"):
        asyncio.run(start())


def test_full_queue_fails_fast(audit_db, make_record):
    settings = AuditSettings(database_url=audit_db.url, queue_size=5, max_batch=1)

    async def flood() -> list[object]:
        async with AuditWriter(settings=settings) as writer:
            return await asyncio.gather(
                *(writer.record_prediction(*make_record()) for _ in range(50)),
                return_exceptions=True,
            )

    results = asyncio.run(flood())
    full = [r for r in results if isinstance(r, AuditUnavailable)]
    assert full
    assert all("queue is full" in str(r) for r in full)
    committed = [r for r in results if not isinstance(r, Exception)]
    assert len(recorded_ids(audit_db)) == len(committed)


def test_outage_fails_fast_and_recovers_without_losing_acknowledged_records(make_record):
    with EmbeddedPostgres() as server:
        info = server.create_database("outage")
        upgrade(info.url)
        settings = AuditSettings(database_url=info.url, retry_interval_s=0.2, connect_timeout_s=1)
        acknowledged: list[uuid.UUID] = []

        async def scenario() -> None:
            async with AuditWriter(settings=settings) as writer:
                for _ in range(20):
                    request, prediction = make_record()
                    await writer.record_prediction(request, prediction)
                    acknowledged.append(request.prediction_id)

                server.stop_server()
                started = time.perf_counter()
                with pytest.raises(AuditUnavailable, match="unavailable"):
                    await writer.record_prediction(*make_record())
                assert time.perf_counter() - started < 2.0
                assert not writer.available
                # While it is down, every write is refused at once.
                started = time.perf_counter()
                for _ in range(10):
                    with pytest.raises(AuditUnavailable):
                        await writer.record_prediction(*make_record())
                assert time.perf_counter() - started < 0.5

                server.start_server()
                deadline = time.perf_counter() + 15
                while not writer.available and time.perf_counter() < deadline:
                    await asyncio.sleep(0.05)
                assert writer.available, writer.unavailable_reason
                for _ in range(20):
                    request, prediction = make_record()
                    await writer.record_prediction(request, prediction)
                    acknowledged.append(request.prediction_id)

        asyncio.run(scenario())
        stored = set(recorded_ids(info))
        assert set(acknowledged) <= stored
        assert verify(info) == f"ok {2 * len(stored)} records"


def test_writer_started_while_database_is_down_connects_later(make_record):
    with EmbeddedPostgres() as server:
        info = server.create_database("late")
        upgrade(info.url)
        server.stop_server()
        settings = AuditSettings(database_url=info.url, retry_interval_s=0.2, connect_timeout_s=1)

        async def scenario() -> None:
            async with AuditWriter(settings=settings) as writer:
                assert not writer.available
                with pytest.raises(AuditUnavailable, match="cannot connect"):
                    await writer.record_prediction(*make_record())
                server.start_server()
                deadline = time.perf_counter() + 15
                while not writer.available and time.perf_counter() < deadline:
                    await asyncio.sleep(0.05)
                await writer.record_prediction(*make_record())

        asyncio.run(scenario())
        assert len(recorded_ids(info)) == 1


def test_closed_writer_refuses(audit_db, make_record):
    async def scenario() -> None:
        writer = await AuditWriter(audit_db.url).start()
        await writer.close()
        with pytest.raises(AuditUnavailable, match="closed"):
            await writer.record_prediction(*make_record())

    asyncio.run(scenario())


def test_naive_timestamps_are_refused(audit_db, make_record):
    request, prediction = make_record()
    naive = datetime.now(UTC).replace(tzinfo=None)
    with pytest.raises(ValidationError, match="timezone"):
        PredictionRequestRecord(**{**request.model_dump(), "received_at": naive})

    async def scenario() -> None:
        async with AuditWriter(audit_db.url) as writer:
            await writer.record_prediction(request, prediction)
            with pytest.raises(AuditRejected, match="time zone"):
                await writer.record_outcome(
                    request.prediction_id, Outcome(band=1), recorded_by="hr", recorded_at=naive
                )

    asyncio.run(scenario())


def test_a_pool_recovers_fully_after_an_outage(make_record):
    with EmbeddedPostgres() as server:
        info = server.create_database("pool")
        upgrade(info.url)
        settings = AuditSettings(
            database_url=info.url, connections=3, retry_interval_s=0.2, connect_timeout_s=1
        )

        async def scenario() -> int:
            async with AuditWriter(settings=settings) as writer:
                await asyncio.gather(*(writer.record_prediction(*make_record()) for _ in range(30)))
                server.restart()
                # The first write after the restart finds a dead connection: refused, not lost.
                with pytest.raises(AuditUnavailable):
                    await writer.record_prediction(*make_record())
                deadline = time.perf_counter() + 15
                while not writer.available and time.perf_counter() < deadline:
                    await asyncio.sleep(0.05)
                flips = 0
                for _ in range(30):
                    try:
                        await writer.record_prediction(*make_record())
                    except AuditUnavailable:
                        flips += 1
                        await asyncio.sleep(0.3)
                return flips

        assert asyncio.run(scenario()) == 0
        assert verify(info).startswith("ok ")
