import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest

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
from payband_audit.writer import AuditWriter
from payband_contracts import ErrorBody, Outcome, Review
from payband_testing.postgres import EmbeddedPostgres, PostgresConnectionInfo


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


def test_200_concurrent_writes_are_each_committed_once(audit_db, make_record):
    records = [make_record() for _ in range(200)]

    async def write_all() -> list[int]:
        async with AuditWriter(audit_db.url) as writer:
            receipts = await asyncio.gather(*(writer.record_prediction(*r) for r in records))
            # Each await returned only after commit: a new connection sees them all now.
            assert sorted(recorded_ids(audit_db)) == sorted(r[0].prediction_id for r in records)
            return [receipt.seq for receipt in receipts]

    seqs = asyncio.run(write_all())
    assert sorted(seqs) == list(range(2, 401, 2))
    ids = recorded_ids(audit_db)
    assert len(ids) == len(set(ids)) == 200
    assert verify(audit_db) == "ok 400 records"


def test_concurrent_writers_in_two_processes_keep_one_chain(audit_db, make_record):
    # Two writers (as in two gateway replicas) share the chain through the locked head.
    async def write_with_two_writers() -> None:
        async with AuditWriter(audit_db.url) as first, AuditWriter(audit_db.url) as second:
            await asyncio.gather(
                *(
                    (first if i % 2 else second).record_prediction(*make_record())
                    for i in range(100)
                )
            )

    asyncio.run(write_with_two_writers())
    assert verify(audit_db) == "ok 200 records"


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
    naive = type(request)(
        **{**request.__dict__, "received_at": datetime.now(UTC).replace(tzinfo=None)}
    )

    async def scenario() -> None:
        async with AuditWriter(audit_db.url) as writer:
            await writer.record_prediction(naive, prediction)

    with pytest.raises(AuditRejected, match="without time zone"):
        asyncio.run(scenario())
