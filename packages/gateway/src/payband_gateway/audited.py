"""Predictions that are answered only once their audit record is committed, and the reads,
outcomes and reviews around them. Routes call these; every failure is an ApiError."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from payband_audit import (
    AuditConfigError,
    AuditRejected,
    AuditUnavailable,
    OutcomeAlreadyRecorded,
    PredictionRequestRecord,
    Receipt,
    UnknownPrediction,
)
from payband_audit.reader import AuditReader
from payband_contracts import (
    AuditRecord,
    Candidate,
    ErrorBody,
    FieldError,
    Prediction,
    validation_error_body,
)
from payband_contracts.settings import get_settings
from payband_gateway.deps import Services
from payband_gateway.errors import ApiError, request_id_of
from payband_gateway.inference import InferenceError
from payband_gateway.keys import Caller

__all__ = ["parse_body", "predict", "read_record", "recorded"]

logger = logging.getLogger("payband_gateway")

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")

AUDIT_UNAVAILABLE = (
    "The audit log cannot record this request now, so no answer is given; retry later."
)


def _now() -> datetime:
    return datetime.now(UTC)


async def recorded(services: Services, kind: str, write: Awaitable[T]) -> T:
    """Await an audit write, timing it; AuditUnavailable becomes a 503 and nothing else."""
    started = time.perf_counter()
    try:
        result = await write
    except AuditUnavailable as error:
        services.metrics.audit_write_failures.labels(kind=kind, reason="unavailable").inc()
        logger.warning("audit write failed: %s", error, extra={"fields": {"kind": kind}})
        raise ApiError(
            503, "audit_unavailable", AUDIT_UNAVAILABLE, headers={"Retry-After": "1"}
        ) from None
    except AuditRejected as error:
        reason = "conflict" if isinstance(error, OutcomeAlreadyRecorded) else "rejected"
        services.metrics.audit_write_failures.labels(kind=kind, reason=reason).inc()
        raise
    services.metrics.audit_write_duration.labels(kind=kind).observe(time.perf_counter() - started)
    return result


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def parse_body(
    request: Request,
    model: type[ModelT],
    *,
    services: Services | None = None,
    caller: Caller | None = None,
) -> ModelT:
    """The body validated against a contract model; 415/422 otherwise.

    With `services` and `caller`, a prediction request that fails validation is recorded in
    the audit log with its raw body (if the log is up: a bad request gets its 422 either way).
    """
    if not _is_json(request):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"The body must be JSON (Content-Type: application/json), "
            f"not {request.headers.get('content-type')}.",
        )
    body = await request.body()
    try:
        return model.model_validate_json(
            body, context={"max_batch_size": get_settings().max_batch_size}
        )
    except ValidationError as error:
        invalid = validation_error_body(error, model, request_id=request_id_of(request))
    if services is not None and caller is not None:
        record = PredictionRequestRecord(
            prediction_id=uuid4(),
            received_at=_now(),
            caller=caller.name,
            request_id=request_id_of(request),
            # As sent, but text: undecodable bytes replaced, NUL (which PostgreSQL's text
            # cannot hold) escaped.
            raw_request=body.decode("utf-8", errors="replace").replace("\x00", "\\u0000"),
        )
        try:
            await recorded(services, "error", services.writer.record_error(record, 422, invalid))
        except (ApiError, AuditRejected):
            logger.warning("an invalid prediction request could not be recorded")
    raise ApiError(422, invalid.code, invalid.message, errors=invalid.errors)


async def predict(
    services: Services, request: Request, caller: Caller, candidates: Sequence[Candidate]
) -> list[Prediction]:
    """Predictions for the candidates, each recorded before it is returned."""
    request_id = request_id_of(request)
    if not services.writer.available:
        # Fail fast: no inference for an answer that could not be given anyway.
        services.metrics.audit_write_failures.labels(kind="prediction", reason="unavailable").inc()
        raise ApiError(503, "audit_unavailable", AUDIT_UNAVAILABLE, headers={"Retry-After": "1"})
    received_at = _now()
    records = [
        PredictionRequestRecord(
            prediction_id=uuid4(),
            received_at=received_at,
            caller=caller.name,
            request_id=request_id,
            candidate=candidate,
        )
        for candidate in candidates
    ]
    try:
        predictions = await services.inference.predict(
            candidates, [record.prediction_id for record in records]
        )
    except InferenceError as error:
        body = ErrorBody(code=error.code, message=error.message, request_id=request_id)
        logger.warning(
            "inference failed: %s", error.message, extra={"fields": {"code": error.code}}
        )
        await recorded(
            services,
            "error",
            services.writer.record_errors(
                records, error.status, body, upstream_body=error.upstream_body
            ),
        )
        headers = {"Retry-After": "1"} if error.status == 503 else None
        raise ApiError(error.status, error.code, error.message, headers=headers) from None
    pairs = list(zip(records, predictions, strict=True))
    if len(pairs) == 1:
        await recorded(services, "prediction", services.writer.record_prediction(*pairs[0]))
    else:
        await recorded(services, "prediction", services.writer.record_predictions(pairs))
    for prediction in predictions:
        services.metrics.predictions.labels(
            model=prediction.model.name,
            version=prediction.model.version,
            band=prediction.band.label,
        ).inc()
    return predictions


def _read(services: Services, prediction_id: UUID) -> AuditRecord | None:
    # Unset, the reader acts with the login user's rights, not PAYBAND_AUDIT_ROLE (the
    # writer's role, which may not read records).
    with AuditReader(
        settings=services.audit_settings, role=services.settings.audit_reader_role or ""
    ) as reader:
        return reader.get(prediction_id)


async def read_record(services: Services, prediction_id: UUID) -> AuditRecord:
    """The stored record; 404 if there is none, 503 if the audit log cannot be read."""
    try:
        record = await run_in_threadpool(_read, services, prediction_id)
    except AuditConfigError as error:
        logger.error("audit read refused: %s", error)
        raise ApiError(
            503, "audit_unavailable", "The audit log cannot be read now; retry later."
        ) from None
    except AuditUnavailable as error:
        logger.warning("audit read failed: %s", error)
        raise ApiError(
            503,
            "audit_unavailable",
            "The audit log cannot be read now; retry later.",
            headers={"Retry-After": "1"},
        ) from None
    if record is None:
        raise ApiError(404, "not_found", f"No prediction {prediction_id} is recorded.")
    return record


def answered(record: AuditRecord) -> Prediction:
    """The record's prediction; 409 for a request that was answered with an error."""
    if record.prediction is None:
        raise ApiError(
            409,
            "not_a_prediction",
            f"Request {record.prediction_id} was answered with an error, not a prediction.",
        )
    return record.prediction


def band_error(field: str, band: int, prediction: Prediction, rule: str | None = None) -> ApiError:
    bands = len(prediction.probabilities)
    rule = rule or f"integer from 0 to {bands - 1}"
    return ApiError(
        422,
        "validation_failed",
        "The request is invalid: 1 error, see `errors`.",
        errors=[
            FieldError(
                field=field,
                loc=[field],
                rule=rule,
                message=f"band {band} does not fit model {prediction.model.name} "
                f"{prediction.model.version}: {rule}",
            )
        ],
    )


async def write_with_conflicts(services: Services, kind: str, write: Awaitable[Receipt]) -> None:
    """An outcome or review write: 409 for a second outcome, 404 for a purged prediction."""
    try:
        await recorded(services, kind, write)
    except OutcomeAlreadyRecorded as error:
        raise ApiError(409, "outcome_already_recorded", f"{str(error).capitalize()}.") from None
    except UnknownPrediction as error:
        raise ApiError(404, "not_found", f"{str(error).capitalize()}.") from None
    except AuditRejected as error:
        # Something in the record the log cannot hold; the request, not the service, is at fault.
        raise ApiError(422, "rejected", f"The audit log refused this record: {error}.") from None
