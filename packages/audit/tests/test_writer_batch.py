import asyncio
import socket
import time
import uuid

import pytest

from payband_audit.errors import (
    AuditConfigError,
    AuditRejected,
    AuditUnavailable,
    DuplicatePrediction,
)
from payband_audit.settings import AuditSettings
from payband_audit.verify import verify_chain
from payband_audit.writer import AuditWriter, _Submission
from payband_contracts import ErrorBody, ModelRef
from payband_local.ports import free_port
from payband_local.postgres import PostgresConnectionInfo


def counts(info: PostgresConnectionInfo) -> tuple[int, int, int]:
    """Rows of requests, responses, and the chain head's seq."""
    with info.connect() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM audit.prediction_requests),"
            " (SELECT count(*) FROM audit.prediction_responses),"
            " (SELECT seq FROM audit.chain_head)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def seqs_of(info: PostgresConnectionInfo, ids: list[uuid.UUID]) -> list[tuple[int, str]]:
    """(seq, table) of every request and response of these predictions, in chain order."""
    with info.connect() as conn:
        rows = conn.execute(
            "SELECT seq, 'request' FROM audit.prediction_requests WHERE prediction_id = ANY(%s)"
            " UNION ALL "
            "SELECT seq, 'response' FROM audit.prediction_responses WHERE prediction_id = ANY(%s)"
            " ORDER BY 1",
            (ids, ids),
        ).fetchall()
    return [(int(seq), str(table)) for seq, table in rows]


def verify(info: PostgresConnectionInfo) -> str:
    with info.connect(autocommit=True) as conn:
        return str(verify_chain(conn))


def test_a_batch_is_committed_together_with_consecutive_seqs(audit_db, make_record):
    first = make_record()
    pairs = [make_record(version="3") for _ in range(3)]
    # A request without a model takes the prediction's, as with record_prediction.
    pairs[1] = (pairs[1][0].model_copy(update={"model": None}), pairs[1][1])
    ids = [request.prediction_id for request, _ in pairs]

    async def scenario() -> tuple[int, str]:
        async with AuditWriter(audit_db.url) as writer:
            await writer.record_prediction(*first)
            receipt = await writer.record_predictions(pairs)
            # Committed when the call returns: another connection sees all of it.
            assert counts(audit_db) == (4, 4, 8)
            return receipt.seq, receipt.record_hash

    seq, record_hash = asyncio.run(scenario())
    assert seq == 8
    assert seqs_of(audit_db, ids) == [
        (3, "request"),
        (4, "response"),
        (5, "request"),
        (6, "response"),
        (7, "request"),
        (8, "response"),
    ]
    with audit_db.connect() as conn:
        head = conn.execute("SELECT seq, record_hash FROM audit.chain_head").fetchone()
        model = conn.execute(
            "SELECT model_name, model_version FROM audit.prediction_requests"
            " WHERE prediction_id = %s",
            (ids[1],),
        ).fetchone()
    assert head == (8, record_hash)
    assert model == ("salary-band", "3")
    assert verify(audit_db) == "ok 8 records"


def test_a_batch_with_an_id_already_recorded_writes_nothing(audit_db, make_record):
    recorded = make_record()
    fresh = [make_record(), make_record()]

    async def scenario() -> None:
        async with AuditWriter(audit_db.url) as writer:
            await writer.record_prediction(*recorded)
            before = counts(audit_db)
            with pytest.raises(DuplicatePrediction, match=str(recorded[0].prediction_id)):
                await writer.record_predictions([fresh[0], recorded, fresh[1]])
            assert counts(audit_db) == before == (1, 1, 2)
            # Nothing of the refused batch was kept, so its other ids are still free.
            receipt = await writer.record_predictions(fresh)
            assert receipt.seq == 6

    asyncio.run(scenario())
    assert verify(audit_db) == "ok 6 records"


def test_invalid_batches_are_refused_before_anything_is_written(audit_db, make_record):
    one, other = make_record(), make_record()
    wrong_id = (make_record()[0], make_record()[1])
    request, prediction = make_record(version="7")
    wrong_model = (
        request.model_copy(update={"model": ModelRef(name="salary-band", version="6")}),
        prediction,
    )

    async def scenario() -> None:
        async with AuditWriter(audit_db.url) as writer:
            with pytest.raises(AuditRejected, match="more than once") as twice:
                await writer.record_predictions([one, other, one])
            assert not isinstance(twice.value, DuplicatePrediction)
            with pytest.raises(AuditRejected, match="does not answer"):
                await writer.record_predictions([one, wrong_id])
            with pytest.raises(AuditRejected, match="comes from salary-band 7"):
                await writer.record_predictions([other, wrong_model])
            with pytest.raises(AuditRejected, match="must not be empty"):
                await writer.record_predictions([])
            assert counts(audit_db) == (0, 0, 0)
            # The writer is still fine, and the ids of the refused batches are still free.
            await writer.record_predictions([one, other])

    asyncio.run(scenario())
    assert counts(audit_db) == (2, 2, 4)
    assert verify(audit_db) == "ok 4 records"


@pytest.mark.parametrize("connections", [1, 3])
def test_batches_and_single_writes_interleave_in_one_chain(audit_db, make_record, connections: int):
    singles = [make_record() for _ in range(60)]
    batches = [[make_record() for _ in range(10)] for _ in range(6)]
    settings = AuditSettings(database_url=audit_db.url, connections=connections, max_batch=8)

    async def scenario() -> list[object]:
        async with AuditWriter(settings=settings) as writer:
            calls = [writer.record_prediction(*pair) for pair in singles]
            for i, batch in enumerate(batches):
                calls.insert(i * 10 + 5, writer.record_predictions(batch))
            return await asyncio.gather(*calls)

    receipts = asyncio.run(scenario())
    seqs = sorted(r.seq for r in receipts)
    # Every call ends on the response of its last pair, and the last one ends the chain.
    assert len(set(seqs)) == 66
    assert all(seq % 2 == 0 for seq in seqs)
    assert seqs[-1] == 240
    assert counts(audit_db) == (120, 120, 240)
    for batch in batches:
        seqs = [
            seq for seq, _ in seqs_of(audit_db, [request.prediction_id for request, _ in batch])
        ]
        # A batch is one run of the chain: nothing of another caller lands inside it.
        assert seqs == list(range(seqs[0], seqs[0] + 20))
    assert verify(audit_db) == "ok 240 records"


@pytest.mark.parametrize("batch_first", [True, False])
def test_a_batch_and_a_single_write_of_one_id_in_one_transaction(
    audit_db, make_record, batch_first: bool
):
    # Both reach the committer in one group: the first queued wins, never half of the batch.
    x, y = make_record(), make_record()

    async def scenario() -> list[object]:
        async with AuditWriter(audit_db.url) as writer:
            batch, single = writer.record_predictions([x, y]), writer.record_prediction(*y)
            # gather starts its tasks in order, so they queue in this order.
            calls = [batch, single] if batch_first else [single, batch]
            results = await asyncio.gather(*calls, return_exceptions=True)
            return results if batch_first else results[::-1]

    batch_result, single_result = asyncio.run(scenario())
    if batch_first:
        assert not isinstance(batch_result, Exception), batch_result
        assert isinstance(single_result, DuplicatePrediction), single_result
        assert counts(audit_db) == (2, 2, 4)
    else:
        assert isinstance(batch_result, DuplicatePrediction), batch_result
        assert not isinstance(single_result, Exception), single_result
        assert counts(audit_db) == (1, 1, 2)
        assert seqs_of(audit_db, [x[0].prediction_id]) == []
    assert verify(audit_db).startswith("ok ")


def test_a_submission_clashes_if_any_of_its_ids_is_taken():
    # The group-commit check itself: a clash that slipped through would still end right,
    # but only through a failed transaction and a retry of every submission on its own.
    a, b, c, d, e, f = (uuid.uuid4() for _ in range(6))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        batch = [
            _Submission([], loop.create_future(), new_predictions=(b,)),
            _Submission([], loop.create_future(), new_predictions=(c, b)),
            _Submission([], loop.create_future(), new_predictions=(d, a)),
            _Submission([], loop.create_future(), new_predictions=(e, f)),
            _Submission([], loop.create_future(), requires_prediction=f),
        ]
        accepted = AuditWriter._accepted(batch, committed={a}, with_outcome=set())
        assert accepted == [batch[0], batch[3], batch[4]]
        assert isinstance(batch[1].conflict, DuplicatePrediction)
        assert str(b) in str(batch[1].conflict)
        assert not batch[1].future.done()
        error = batch[2].future.exception()
        assert isinstance(error, DuplicatePrediction)
        assert str(a) in str(error)
        assert not any(batch[i].future.done() for i in (0, 3, 4))

    asyncio.run(scenario())


def test_a_bad_record_fails_its_whole_batch_but_not_the_others(audit_db, make_record):
    # PostgreSQL refuses a NUL byte only at commit time: the group falls back to one by one.
    batch = [make_record() for _ in range(3)]
    bad_request = batch[2][0].model_copy(update={"raw_request": "nul \x00 byte"})
    batch[2] = (bad_request, batch[2][1])
    singles = [make_record() for _ in range(4)]

    async def scenario() -> list[object]:
        async with AuditWriter(audit_db.url) as writer:
            return await asyncio.gather(
                *(writer.record_prediction(*pair) for pair in singles[:2]),
                writer.record_predictions(batch),
                *(writer.record_prediction(*pair) for pair in singles[2:]),
                return_exceptions=True,
            )

    results = asyncio.run(scenario())
    assert isinstance(results[2], AuditRejected), results
    assert sum(not isinstance(r, Exception) for r in results) == 4
    assert seqs_of(audit_db, [request.prediction_id for request, _ in batch]) == []
    assert counts(audit_db) == (4, 4, 8)
    assert verify(audit_db) == "ok 8 records"


def test_check_passes_on_a_migrated_database_started_or_not(audit_db, make_record):
    async def scenario() -> None:
        writer = AuditWriter(audit_db.url)
        await writer.check()
        await writer.start()
        try:
            await writer.check()
            await writer.record_prediction(*make_record())
            await writer.check()
            assert writer.available
            await writer.record_prediction(*make_record())
        finally:
            await writer.close()
        await writer.check()

    asyncio.run(scenario())
    assert counts(audit_db) == (2, 2, 4)


def test_check_on_an_unmigrated_database_is_a_config_error(postgres_database):
    async def scenario() -> None:
        await AuditWriter(postgres_database.url).check()

    with pytest.raises(AuditConfigError, match=r"not migrated.*payband-audit migrate"):
        asyncio.run(scenario())


def test_check_with_an_unknown_role_is_a_config_error(audit_db):
    async def scenario() -> None:
        await AuditWriter(audit_db.url, role="no_such_role").check()

    with pytest.raises(AuditConfigError, match="no_such_role"):
        asyncio.run(scenario())


def test_check_fails_fast_when_nothing_listens():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/payband"

    async def scenario() -> None:
        await AuditWriter(url).check()

    started = time.perf_counter()
    with pytest.raises(AuditUnavailable, match="cannot connect"):
        asyncio.run(scenario())
    assert time.perf_counter() - started < 5


def test_check_gives_up_on_a_server_that_never_answers_within_the_connect_timeout():
    # Accepts TCP connections (the kernel does) but never says a word.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        settings = AuditSettings(
            database_url=f"postgresql://postgres@127.0.0.1:{port}/payband", connect_timeout_s=1
        )

        async def scenario() -> None:
            await AuditWriter(settings=settings).check()

        started = time.perf_counter()
        with pytest.raises(AuditUnavailable):
            asyncio.run(scenario())
        elapsed = time.perf_counter() - started
    assert 0.5 < elapsed < 3, elapsed


def test_a_failed_batch_is_recorded_whole_or_not_at_all(audit_db, make_record):
    requests = [make_record()[0] for _ in range(3)]
    error = ErrorBody(code="inference_unavailable", message="MLServer is down.")

    async def scenario() -> int:
        async with AuditWriter(audit_db.url) as writer:
            receipt = await writer.record_errors(requests, 503, error, upstream_body=None)
            with pytest.raises(AuditRejected, match="more than once"):
                await writer.record_errors([requests[0], requests[0]], 503, error)
            with pytest.raises(DuplicatePrediction):
                await writer.record_errors([make_record()[0], requests[1]], 503, error)
            return receipt.seq

    assert asyncio.run(scenario()) == 6
    with audit_db.connect() as conn:
        rows = conn.execute(
            "SELECT seq, status_code FROM audit.prediction_errors ORDER BY seq"
        ).fetchall()
    # Request and error of each, one after another; nothing of the refused batches.
    assert rows == [(2, 503), (4, 503), (6, 503)]
    assert counts(audit_db)[0] == 3
    assert verify(audit_db) == "ok 6 records"
