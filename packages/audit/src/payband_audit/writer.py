"""AuditWriter: group-committed, hash-chained audit records for services.

Every call waits until its records are durably committed, and raises AuditUnavailable quickly
when they cannot be (database down or busy, queue full, timeout): a service must not answer a
request whose record it could not keep. Concurrent calls are batched into one transaction
(group commit) by one background task, which locks the chain head so that records are chained
in commit order, also across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self
from uuid import UUID, uuid4

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from payband_audit.chain import (
    ERROR,
    KINDS,
    OUTCOME,
    REQUEST,
    RESPONSE,
    REVIEW,
    RecordKind,
    chain_hash,
    content_of,
)
from payband_audit.db import SESSION_OPTIONS, to_conninfo, with_options
from payband_audit.errors import (
    AuditConfigError,
    AuditError,
    AuditRejected,
    AuditUnavailable,
    DuplicatePrediction,
    OutcomeAlreadyRecorded,
    UnknownPrediction,
)
from payband_audit.settings import AuditSettings
from payband_contracts import Candidate, ErrorBody, ModelRef, Outcome, Prediction, Review
from payband_contracts.database import describe
from payband_contracts.errors import first_line

logger = logging.getLogger(__name__)

# The database is busy or the transaction lost a race: nothing is wrong with the records.
TRANSIENT_ERRORS = (
    psycopg.errors.QueryCanceled,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
)


class PredictionRequestRecord(BaseModel):
    """What came in: one prediction request as the gateway received it."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    prediction_id: UUID
    received_at: AwareDatetime
    caller: str = Field(min_length=1)
    request_id: str | None = None
    candidate: Candidate | None = None
    model: ModelRef | None = None
    raw_request: str | None = None


@dataclass(frozen=True)
class Receipt:
    """Proof of a committed write: the chain position and hash of its last record."""

    seq: int
    record_hash: str


@dataclass(frozen=True)
class _Entry:
    kind: RecordKind
    values: tuple[Any, ...]
    content: str


@dataclass
class _Submission:
    entries: list[_Entry]
    future: asyncio.Future[Receipt]
    new_predictions: tuple[UUID, ...] = ()
    requires_prediction: UUID | None = None
    outcome_for: UUID | None = None
    conflict: AuditRejected | None = field(default=None)

    def fail(self, error: AuditError) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def succeed(self, receipt: Receipt) -> None:
        if not self.future.done():
            self.future.set_result(receipt)


def _entry(kind: RecordKind, values: Sequence[Any]) -> _Entry:
    values = tuple(values)
    try:
        content = content_of(kind, values)
        content.encode()  # a lone surrogate must fail here, not inside a batch
    except (TypeError, ValueError, ArithmeticError) as error:
        raise AuditRejected(f"cannot record this {kind.table} entry: {error}") from None
    return _Entry(kind, values, content)


def _distinct(ids: Sequence[UUID], what: str) -> tuple[UUID, ...]:
    """The ids of a batch; AuditRejected for an empty batch or an id in it twice."""
    if not ids:
        raise AuditRejected(f"a batch of {what} to record must not be empty")
    if len(set(ids)) != len(ids):
        twice = next(pid for pid in ids if ids.count(pid) > 1)
        raise AuditRejected(f"prediction {twice} appears more than once in the batch")
    return tuple(ids)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None, name: str) -> datetime:
    if moment is None:
        return _now()
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise AuditRejected(f"{name} must be a datetime with a time zone, not {moment!r}")
    return moment


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise AuditRejected(f"{name} must be a non-empty string, not {value!r}")
    return value


def _is_connection_error(error: BaseException) -> bool:
    return isinstance(
        error, psycopg.OperationalError | psycopg.InterfaceError | OSError | TimeoutError
    )


class AuditWriter:
    """Writes audit records for a service; use as `async with AuditWriter(url) as writer:`."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: AuditSettings | None = None,
        role: str | None = None,
    ) -> None:
        self.settings = settings or AuditSettings()
        self._conninfo = to_conninfo(database_url or self.settings.database_url)
        self._role = role if role is not None else self.settings.role
        self._queue: asyncio.Queue[_Submission] = asyncio.Queue(self.settings.queue_size)
        # Connections not writing a batch now; with more than one, batches overlap.
        self._idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        self._open: set[psycopg.AsyncConnection[Any]] = set()
        self._stale: list[psycopg.AsyncConnection[Any]] = []
        self._unavailable: str | None = "not started"
        self._closed = False
        self._waiting: _Submission | None = None
        self._inflight: dict[asyncio.Task[None], list[_Submission]] = {}
        self._deadlines: deque[tuple[float, asyncio.Future[Receipt]]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._expirer: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """Whether writes are being accepted (the database was reachable at the last try)."""
        return self._unavailable is None and not self._closed

    @property
    def unavailable_reason(self) -> str | None:
        return None if self.available else (self._unavailable or "closed")

    @property
    def pending(self) -> int:
        return self._queue.qsize() + sum(len(batch) for batch in self._inflight.values())

    async def start(self) -> Self:
        """Connect and start the background committer.

        A database that cannot be reached now is retried in the background (writes fail fast
        meanwhile); one that is reachable but not migrated is an AuditConfigError.
        """
        try:
            await self._fill_pool()
            self._unavailable = None
        except AuditUnavailable as error:
            self._mark_unavailable(str(error))
        except AuditConfigError:
            for conn in list(self._open):
                await self._drop(conn)
            raise
        self._worker = asyncio.create_task(self._commit_loop(), name="audit-writer")
        self._expirer = asyncio.create_task(self._expire_loop(), name="audit-expirer")
        return self

    async def close(self) -> None:
        """Commit what is queued and in flight (within the write timeout), then stop.

        Later writes raise AuditUnavailable; whatever could not be committed in time fails
        with AuditUnavailable, so no caller is left waiting.
        """
        self._closed = True
        loop = asyncio.get_running_loop()
        if self._worker is not None:
            deadline = loop.time() + self.settings.write_timeout_s
            while (
                (not self._queue.empty() or self._inflight or self._waiting)
                and self._unavailable is None
                and loop.time() < deadline
                and not self._worker.done()
            ):
                await asyncio.sleep(0.01)
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        closed = AuditUnavailable("the audit writer closed before the record was committed")
        unfinished = [s for batch in self._inflight.values() for s in batch]
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        for task in (self._reconnector, self._expirer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for submission in unfinished:
            submission.fail(closed)
        self._inflight.clear()
        if self._waiting is not None:
            self._waiting.fail(closed)
        self._fail_queued(closed)
        for conn in [*self._open, *self._stale]:
            await self._drop(conn)
        self._stale.clear()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def record_prediction(
        self, request: PredictionRequestRecord, prediction: Prediction
    ) -> Receipt:
        """Record a request and the prediction answered to it, in one transaction.

        A request without a model is recorded with the prediction's model; a different one
        is refused.
        """
        return await self._submit(
            self._prediction_entries(request, prediction),
            new_predictions=(request.prediction_id,),
        )

    async def record_predictions(
        self, pairs: Sequence[tuple[PredictionRequestRecord, Prediction]]
    ) -> Receipt:
        """Record requests with their predictions all in one transaction, or none of them.

        Each pair is checked as by `record_prediction`; one id already in the log fails the
        whole submission with DuplicatePrediction. The receipt is that of the last record.
        """
        entries: list[_Entry] = []
        ids: list[UUID] = []
        for request, prediction in pairs:
            entries.extend(self._prediction_entries(request, prediction))
            ids.append(request.prediction_id)
        return await self._submit(entries, new_predictions=_distinct(ids, "predictions"))

    async def record_error(
        self,
        request: PredictionRequestRecord,
        status_code: int,
        error: ErrorBody,
        *,
        upstream_body: str | None = None,
        recorded_at: datetime | None = None,
    ) -> Receipt:
        """Record a request that was answered with an error, in one transaction."""
        return await self.record_errors(
            [request], status_code, error, upstream_body=upstream_body, recorded_at=recorded_at
        )

    async def record_errors(
        self,
        requests: Sequence[PredictionRequestRecord],
        status_code: int,
        error: ErrorBody,
        *,
        upstream_body: str | None = None,
        recorded_at: datetime | None = None,
    ) -> Receipt:
        """Record requests answered with the same error (a failed batch) all in one
        transaction, or none of them."""
        if type(status_code) is not int or not 400 <= status_code <= 599:
            raise AuditRejected(f"status code {status_code!r} is not an error (400-599)")
        if upstream_body is not None and not isinstance(upstream_body, str):
            raise AuditRejected("upstream_body must be a string")
        at = _aware(recorded_at, "recorded_at")
        body = error.model_dump_json()
        entries: list[_Entry] = []
        for request in requests:
            entries.append(self._request_entry(request))
            entries.append(
                _entry(ERROR, (request.prediction_id, at, status_code, body, upstream_body))
            )
        ids = [request.prediction_id for request in requests]
        return await self._submit(entries, new_predictions=_distinct(ids, "requests"))

    async def record_outcome(
        self,
        prediction_id: UUID,
        outcome: Outcome,
        *,
        recorded_by: str,
        recorded_at: datetime | None = None,
    ) -> Receipt:
        """Record the true band of a prediction; OutcomeAlreadyRecorded for a second one."""
        prediction_id = self._uuid(prediction_id)
        entry = _entry(
            OUTCOME,
            (
                prediction_id,
                _aware(recorded_at, "recorded_at"),
                _text(recorded_by, "recorded_by"),
                outcome.band,
                outcome.observed_at,
                outcome.source,
            ),
        )
        return await self._submit(
            [entry], requires_prediction=prediction_id, outcome_for=prediction_id
        )

    async def record_review(
        self,
        prediction_id: UUID,
        review: Review,
        *,
        recorded_at: datetime | None = None,
        review_id: UUID | None = None,
    ) -> Receipt:
        """Record a human oversight decision about a prediction."""
        prediction_id = self._uuid(prediction_id)
        entry = _entry(
            REVIEW,
            (
                self._uuid(review_id) if review_id is not None else uuid4(),
                prediction_id,
                _aware(recorded_at, "recorded_at"),
                review.reviewer,
                review.decision.value,
                review.band,
                review.reason,
            ),
        )
        return await self._submit([entry], requires_prediction=prediction_id)

    @staticmethod
    def _uuid(value: object) -> UUID:
        if not isinstance(value, UUID):
            raise AuditRejected(f"expected a UUID, not {value!r}")
        return value

    @staticmethod
    def _request_entry(request: PredictionRequestRecord) -> _Entry:
        return _entry(
            REQUEST,
            (
                request.prediction_id,
                request.received_at,
                request.caller,
                request.request_id,
                request.model.name if request.model else None,
                request.model.version if request.model else None,
                request.candidate.model_dump_json() if request.candidate else None,
                request.raw_request,
            ),
        )

    async def check(self) -> None:
        """Readiness probe: open and close a fresh connection, within the connect timeout.

        AuditUnavailable when the database cannot be reached, AuditConfigError when it is not
        migrated (or the role cannot be used). Works before start() and leaves the pool alone.
        """
        timeout = self.settings.connect_timeout_s
        try:
            async with asyncio.timeout(timeout):
                conn = await self._connect()
                await conn.close()
        except (AuditUnavailable, AuditConfigError):
            raise
        except TimeoutError:
            raise AuditUnavailable(
                f"the audit database at {describe(self._conninfo)} did not answer within "
                f"{timeout:g} s"
            ) from None
        except Exception as error:  # noqa: BLE001 - a probe answers "not ready", never crashes
            raise AuditUnavailable(
                f"cannot reach the audit database at {describe(self._conninfo)}: "
                f"{first_line(error)}"
            ) from None

    @staticmethod
    def _prediction_entries(
        request: PredictionRequestRecord, prediction: Prediction
    ) -> list[_Entry]:
        """The request and response records of one answered prediction, checked."""
        if prediction.id != request.prediction_id:
            raise AuditRejected(
                f"prediction {prediction.id} does not answer request {request.prediction_id}"
            )
        if request.model is None:
            request = request.model_copy(update={"model": prediction.model})
        elif request.model != prediction.model:
            raise AuditRejected(
                f"the request names model {request.model.name} {request.model.version} but "
                f"the prediction comes from {prediction.model.name} {prediction.model.version}"
            )
        response = _entry(
            RESPONSE,
            (
                prediction.id,
                prediction.created_at,
                prediction.band.index,
                prediction.band.model_dump_json(),
                "[" + ",".join(p.model_dump_json() for p in prediction.probabilities) + "]",
                prediction.explanation.model_dump_json(),
            ),
        )
        return [AuditWriter._request_entry(request), response]

    async def _submit(
        self,
        entries: list[_Entry],
        *,
        new_predictions: tuple[UUID, ...] = (),
        requires_prediction: UUID | None = None,
        outcome_for: UUID | None = None,
    ) -> Receipt:
        if self._closed:
            raise AuditUnavailable("the audit writer is closed")
        if self._worker is None:
            raise AuditUnavailable("the audit writer is not started")
        if self._worker.done():
            raise AuditUnavailable("the audit writer has stopped")
        if self._unavailable is not None:
            raise AuditUnavailable(f"the audit log is unavailable: {self._unavailable}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        try:
            submission = _Submission(
                entries,
                future,
                new_predictions=new_predictions,
                requires_prediction=requires_prediction,
                outcome_for=outcome_for,
            )
            self._queue.put_nowait(submission)
        except asyncio.QueueFull:
            raise AuditUnavailable(
                f"the audit queue is full ({self._queue.maxsize} records waiting)"
            ) from None
        # One timeout for all: submissions expire in the order they came (see _expire_loop).
        self._deadlines.append((loop.time() + self.settings.write_timeout_s, future))
        return await future

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        timeout_ms = max(1, int(self.settings.write_timeout_s * 1000))
        conninfo = make_conninfo(
            self._conninfo,
            connect_timeout=self.settings.connect_timeout_s,
            # A dead peer is noticed by the kernel, not only when the write timeout runs out.
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            tcp_user_timeout=timeout_ms,
            # Durable commits whatever the server's default; a stuck statement ends in time.
            options=with_options(
                self._conninfo,
                f"{SESSION_OPTIONS} -c synchronous_commit=on -c statement_timeout={timeout_ms}",
            ),
        )
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo)
        except psycopg.OperationalError as error:
            raise AuditUnavailable(
                f"cannot connect to the audit database at {describe(self._conninfo)}: "
                f"{first_line(error)}"
            ) from None
        try:
            if self._role:
                await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self._role)))
            cursor = await conn.execute("SELECT to_regclass('audit.chain_head') IS NOT NULL")
            migrated = await cursor.fetchone()
            await conn.commit()
        except psycopg.Error as error:
            await conn.close()
            if _is_connection_error(error):
                raise AuditUnavailable(f"the audit database went away: {error}") from None
            raise AuditConfigError(f"cannot use the audit database: {error}") from None
        except BaseException:
            # Cancelled (e.g. a readiness probe timed out): leave no connection behind.
            await conn.close()
            raise
        if not migrated or not migrated[0]:
            await conn.close()
            raise AuditConfigError(
                f"the audit schema is not migrated in {describe(self._conninfo)}; "
                "run `payband-audit migrate`"
            )
        return conn

    async def _fill_pool(self) -> None:
        """Open connections up to the pool size; enough if at least one is open."""
        while len(self._open) < self.settings.connections:
            try:
                conn = await self._connect()
            except AuditUnavailable:
                if self._open:
                    return
                raise
            self._open.add(conn)
            self._idle.put_nowait(conn)

    def _mark_unavailable(self, reason: str) -> None:
        if self._unavailable is None:
            logger.warning("audit log unavailable: %s", reason)
        self._unavailable = reason
        error = AuditUnavailable(f"the audit log is unavailable: {reason}")
        if self._waiting is not None:
            self._waiting.fail(error)
        self._fail_queued(error)
        # Idle connections went through the same outage: open fresh ones when it is over.
        while not self._idle.empty():
            stale = self._idle.get_nowait()
            self._open.discard(stale)
            self._stale.append(stale)
        if not self._closed and (self._reconnector is None or self._reconnector.done()):
            self._reconnector = asyncio.create_task(self._reconnect(), name="audit-reconnect")

    def _fail_queued(self, error: AuditError) -> None:
        while not self._queue.empty():
            self._queue.get_nowait().fail(error)

    async def _drop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._open.discard(conn)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 1.0)

    async def _reconnect(self) -> None:
        while not self._closed:
            while self._stale:
                await self._drop(self._stale.pop())
            await asyncio.sleep(self.settings.retry_interval_s)
            try:
                await self._fill_pool()
            except (AuditError, psycopg.Error, OSError) as error:
                self._unavailable = str(error) or type(error).__name__
                continue
            self._unavailable = None
            logger.info("audit log available again")
            return

    async def _expire_loop(self) -> None:
        """Fail submissions not committed within the write timeout.

        A submission that expires before its transaction takes the chain head is never
        written; one already being written may still commit, leaving a record of a request
        that the caller then refuses to answer (never the reverse).
        """
        loop = asyncio.get_running_loop()
        timeout = self.settings.write_timeout_s
        tick = min(0.05, timeout / 10)
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            while self._deadlines and (
                self._deadlines[0][1].done() or self._deadlines[0][0] <= now
            ):
                _, future = self._deadlines.popleft()
                if not future.done():
                    future.set_exception(
                        AuditUnavailable(f"the audit record was not committed within {timeout:g} s")
                    )

    async def _commit_loop(self) -> None:
        while True:
            self._waiting = await self._queue.get()
            # While every connection is busy, more submissions gather for the next batch.
            conn = await self._idle.get()
            # One turn of the event loop lets callers just answered by the last commit queue
            # their next records, so they join this transaction instead of the next.
            await asyncio.sleep(0)
            batch = [self._waiting]
            while len(batch) < self.settings.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            task = asyncio.create_task(self._run_batch(conn, batch), name="audit-batch")
            self._inflight[task] = batch
            self._waiting = None

    async def _run_batch(
        self, conn: psycopg.AsyncConnection[Any], batch: list[_Submission]
    ) -> None:
        try:
            healthy = await self._commit(conn, batch)
        except Exception:
            # Never leave a caller waiting: fail this batch, start afresh, keep going.
            logger.exception("audit writer failed a batch")
            self._mark_unavailable("the audit writer failed unexpectedly")
            for submission in batch:
                submission.fail(AuditUnavailable("the audit writer failed unexpectedly"))
            healthy = False
        finally:
            self._inflight.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            for submission in batch:
                # Cancelled (by close()): whatever is unanswered was not committed.
                submission.fail(AuditUnavailable("the audit writer stopped before committing"))
        if healthy and conn in self._open:
            self._idle.put_nowait(conn)
        else:
            await self._drop(conn)

    async def _commit(self, conn: psycopg.AsyncConnection[Any], batch: list[_Submission]) -> bool:
        """Commit a batch on `conn`; False when the connection is no longer usable."""
        batch = [submission for submission in batch if not submission.future.done()]
        if not batch:
            return True
        if self._unavailable is not None:
            error = AuditUnavailable(f"the audit log is unavailable: {self._unavailable}")
            for submission in batch:
                submission.fail(error)
            return True
        try:
            # The server's statement timeout cannot help when the connection itself hangs.
            async with asyncio.timeout(self.settings.write_timeout_s + 1.0):
                written = await self._write(conn, batch)
        except Exception as error:  # noqa: BLE001 - every failure must answer the waiting callers
            return await self._failed(conn, batch, error)
        for submission, receipt in written:
            submission.succeed(receipt)
        for submission in batch:
            if submission.conflict is not None:
                submission.fail(submission.conflict)
        return True

    async def _failed(
        self, conn: psycopg.AsyncConnection[Any], batch: list[_Submission], error: Exception
    ) -> bool:
        if isinstance(error, TRANSIENT_ERRORS):
            busy = AuditUnavailable(f"the audit database is busy: {first_line(error)}")
            for submission in batch:
                submission.fail(busy)
            return True
        if isinstance(error, TimeoutError) or _is_connection_error(error):
            reason = first_line(error) if str(error).strip() else "no answer in time"
            # Unavailable before any caller resumes, so none of them sees the writer as up.
            self._mark_unavailable(reason)
            unavailable = AuditUnavailable(f"the audit log is unavailable: {reason}")
            for submission in batch:
                submission.fail(unavailable)
            return False
        if len(batch) == 1 and isinstance(error, psycopg.errors.ForeignKeyViolation):
            # Its prediction was purged between the check and the commit.
            batch[0].fail(UnknownPrediction("the prediction is no longer in the audit log"))
            return True
        if len(batch) == 1:
            logger.error("audit record refused: %s", first_line(error))
            batch[0].fail(AuditRejected(f"the audit record was refused: {first_line(error)}"))
            return True
        # One bad record must not fail the others: commit each on its own.
        for submission in batch:
            submission.conflict = None
            if not await self._commit(conn, [submission]):
                return False
        return True

    async def _write(
        self, conn: psycopg.AsyncConnection[Any], batch: list[_Submission]
    ) -> list[tuple[_Submission, Receipt]]:
        mentioned = {s.requires_prediction for s in batch if s.requires_prediction is not None}
        mentioned.update(pid for s in batch for pid in s.new_predictions)
        outcome_ids = [s.outcome_for for s in batch if s.outcome_for is not None]
        async with conn.transaction():
            # One round trip: lock the head and learn which ids the log already holds.
            cursor = await conn.execute(
                "SELECT seq, record_hash,"
                " ARRAY(SELECT prediction_id FROM audit.prediction_requests"
                "       WHERE prediction_id = ANY(%s)),"
                " ARRAY(SELECT prediction_id FROM audit.outcomes WHERE prediction_id = ANY(%s))"
                " FROM audit.chain_head FOR UPDATE",
                (list(mentioned), outcome_ids),
            )
            head = await cursor.fetchone()
            if head is None:
                raise AuditConfigError("audit.chain_head has no row")
            # Callers who gave up while this waited for the head are not written at all.
            batch = [submission for submission in batch if not submission.future.done()]
            accepted = self._accepted(batch, committed=set(head[2]), with_outcome=set(head[3]))
            seq, prev_hash = int(head[0]), str(head[1])
            rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
            written = []
            for submission in accepted:
                for entry in submission.entries:
                    seq += 1
                    record_hash = chain_hash(prev_hash, entry.content)
                    rows[entry.kind.table].append((seq, *entry.values, prev_hash, record_hash))
                    prev_hash = record_hash
                written.append((submission, Receipt(seq, prev_hash)))
            if written:
                async with conn.cursor() as copy_cursor:
                    for kind in KINDS:
                        if rows[kind.table]:
                            async with copy_cursor.copy(kind.copy_sql) as copy:
                                for row in rows[kind.table]:
                                    await copy.write_row(row)
                await conn.execute(
                    "UPDATE audit.chain_head SET seq = %s, record_hash = %s", (seq, prev_hash)
                )
        return written

    @staticmethod
    def _accepted(
        batch: list[_Submission], *, committed: set[UUID], with_outcome: set[UUID]
    ) -> list[_Submission]:
        """The submissions that can be written now, given the ids already in the log.

        Conflicts with committed records fail at once. Conflicts with another submission of
        this batch are kept in `conflict` and reported only once the batch has committed.
        """
        new_here: set[UUID] = set()
        outcomes_here: set[UUID] = set()
        accepted = []
        for submission in batch:
            new, required, outcome_for = (
                submission.new_predictions,
                submission.requires_prediction,
                submission.outcome_for,
            )
            # A submission with several new ids is refused whole if any one of them clashes.
            old = next((pid for pid in new if pid in committed), None)
            clash = next((pid for pid in new if pid in new_here), None)
            if old is not None:
                submission.fail(DuplicatePrediction(f"prediction {old} is already recorded"))
            elif required is not None and required not in committed | new_here:
                submission.fail(UnknownPrediction(f"prediction {required} is not in the audit log"))
            elif outcome_for is not None and outcome_for in with_outcome:
                submission.fail(
                    OutcomeAlreadyRecorded(f"prediction {outcome_for} already has its outcome")
                )
            elif clash is not None:
                submission.conflict = DuplicatePrediction(f"prediction {clash} is already recorded")
            elif outcome_for is not None and outcome_for in outcomes_here:
                submission.conflict = OutcomeAlreadyRecorded(
                    f"prediction {outcome_for} already has its outcome"
                )
            else:
                accepted.append(submission)
                new_here.update(new)
                if outcome_for is not None:
                    outcomes_here.add(outcome_for)
        return accepted
