"""/v1/predictions: predictions, the stored record, its chart, outcomes and reviews."""

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from payband_contracts import (
    AuditRecord,
    BatchPrediction,
    BatchPredictionRequest,
    ErrorBody,
    Outcome,
    Prediction,
    PredictionRequest,
    RecordedOutcome,
    RecordedReview,
    Review,
    ReviewDecision,
)
from payband_gateway.audited import (
    answered,
    band_error,
    parse_body,
    predict,
    read_record,
    write_with_conflicts,
)
from payband_gateway.chart import render_waterfall
from payband_gateway.deps import Services, require, services
from payband_gateway.errors import ApiError
from payband_gateway.keys import Caller, Role

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])

_ERRORS: dict[int, str] = {
    401: "No API key, or one that is not valid.",
    403: "The API key lacks the role this needs.",
    413: "The request body is too large.",
    415: "The body is not JSON.",
    422: "The request is invalid: `errors` names each field and the rule it broke.",
    503: "The audit log or the inference server is unavailable; nothing was answered.",
}


def _responses(*statuses: int, **extra: str) -> dict[int | str, dict[str, Any]]:
    described = {status: _ERRORS[status] for status in statuses}
    described.update({int(status): text for status, text in extra.items()})
    return {status: {"model": ErrorBody, "description": text} for status, text in described.items()}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that validates its body itself (see parse_body)."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model.__name__}"},
                    "examples": {
                        f"example{i}": {"value": example}
                        for i, example in enumerate(schema.get("examples", []), start=1)
                    },
                }
            },
        }
    }


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


Found = Annotated[Services, Depends(services)]


@router.post(
    "",
    summary="Predict the salary band of one candidate, with its explanation",
    response_model=Prediction,
    responses=_responses(401, 403, 413, 415, 422, 503, **{"502": "The inference server failed."}),
    openapi_extra=_body(PredictionRequest),
)
async def create_prediction(
    request: Request, found: Found, caller: Annotated[Caller, Depends(require(Role.PREDICT))]
) -> Response:
    """The band, the probability of every band and the exact contribution of every feature,
    largest first, with the largest stated in words. The band is the model's decision rule
    (chosen in training, e.g. a cut-off on one band's probability) applied to the
    probabilities, so it need not be the most probable band. Answered only once the request
    and the answer are committed to the audit log."""
    payload = await parse_body(request, PredictionRequest, services=found, caller=caller)
    [prediction] = await predict(found, request, caller, [payload.candidate])
    return _json(prediction)


@router.post(
    "/batch",
    summary="Predict the salary bands of several candidates at once",
    response_model=BatchPrediction,
    responses=_responses(401, 403, 413, 415, 422, 503, **{"502": "The inference server failed."}),
    openapi_extra=_body(BatchPredictionRequest),
)
async def create_predictions(
    request: Request, found: Found, caller: Annotated[Caller, Depends(require(Role.PREDICT))]
) -> Response:
    """One prediction per candidate, in order (at most PAYBAND_MAX_BATCH_SIZE). All of them are
    committed to the audit log in one transaction before any is returned."""
    payload = await parse_body(request, BatchPredictionRequest, services=found, caller=caller)
    predictions = await predict(found, request, caller, payload.candidates)
    return _json(BatchPrediction(predictions=predictions))


@router.get(
    "/{prediction_id}",
    summary="The stored audit record of a prediction request",
    response_model=AuditRecord,
    responses=_responses(401, 403, 422, 503, **{"404": "No such prediction is recorded."}),
)
async def get_record(
    prediction_id: UUID,
    found: Found,
    caller: Annotated[Caller, Depends(require(Role.AUDIT))],
) -> Response:
    """What came in, what went out, and the outcome and reviews recorded since."""
    return _json(await read_record(found, prediction_id))


@router.get(
    "/{prediction_id}/explanation.png",
    summary="A waterfall chart of the stored explanation",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "A PNG image."},
        **_responses(401, 403, 422, 503, **{"404": "No such prediction is recorded."}),
        409: {"model": ErrorBody, "description": "The request was answered with an error."},
    },
)
async def get_explanation_chart(
    prediction_id: UUID,
    found: Found,
    caller: Annotated[Caller, Depends(require(Role.AUDIT, Role.REVIEW, Role.PREDICT))],
) -> Response:
    """Drawn from the contributions stored in the audit log, not recomputed. A key with only
    the predict role sees the charts of its own predictions."""
    record = await read_record(found, prediction_id)
    if not (caller.may(Role.AUDIT) or caller.may(Role.REVIEW)) and record.caller != caller.name:
        raise ApiError(404, "not_found", f"No prediction {prediction_id} is recorded.")
    prediction = answered(record)
    png = await run_in_threadpool(render_waterfall, prediction, top=found.settings.chart_features)
    return Response(png, media_type="image/png")


@router.post(
    "/{prediction_id}/outcome",
    summary="Record the true salary band of a prediction (once)",
    status_code=201,
    response_model=RecordedOutcome,
    responses=_responses(
        401,
        403,
        413,
        415,
        422,
        503,
        **{
            "404": "No such prediction is recorded.",
            "409": "The prediction already has its outcome, or was an error.",
        },
    ),
    openapi_extra=_body(Outcome),
)
async def record_outcome(
    prediction_id: UUID,
    request: Request,
    found: Found,
    caller: Annotated[Caller, Depends(require(Role.REVIEW))],
) -> Response:
    """Ground truth for realized performance. A second outcome for the same prediction is
    refused with 409."""
    outcome = await parse_body(request, Outcome)
    prediction = answered(await read_record(found, prediction_id))
    if outcome.band >= len(prediction.probabilities):
        raise band_error("band", outcome.band, prediction)
    stored = RecordedOutcome(
        **outcome.model_dump(), recorded_at=datetime.now(UTC), recorded_by=caller.name
    )
    await write_with_conflicts(
        found,
        "outcome",
        found.writer.record_outcome(
            prediction_id, outcome, recorded_by=caller.name, recorded_at=stored.recorded_at
        ),
    )
    return _json(stored, 201)


@router.post(
    "/{prediction_id}/reviews",
    summary="Record a human review: confirm the band or override it with a reason",
    status_code=201,
    response_model=RecordedReview,
    responses=_responses(
        401,
        403,
        413,
        415,
        422,
        503,
        **{"404": "No such prediction is recorded.", "409": "The request was an error."},
    ),
    openapi_extra=_body(Review),
)
async def record_review(
    prediction_id: UUID,
    request: Request,
    found: Found,
    caller: Annotated[Caller, Depends(require(Role.REVIEW))],
) -> Response:
    """Human oversight (AI Act Art. 14). An override names another band and a reason; a
    confirmation may repeat the predicted band but not name another."""
    review = await parse_body(request, Review)
    prediction = answered(await read_record(found, prediction_id))
    predicted = prediction.band.index
    if review.band is not None:
        if review.band >= len(prediction.probabilities):
            raise band_error("band", review.band, prediction)
        if review.decision is ReviewDecision.CONFIRM and review.band != predicted:
            raise band_error("band", review.band, prediction, f"the predicted band {predicted}")
        if review.decision is ReviewDecision.OVERRIDE and review.band == predicted:
            raise band_error(
                "band", review.band, prediction, f"a band other than the predicted {predicted}"
            )
    stored = RecordedReview(**review.model_dump(), recorded_at=datetime.now(UTC))
    await write_with_conflicts(
        found,
        "review",
        found.writer.record_review(prediction_id, review, recorded_at=stored.recorded_at),
    )
    return _json(stored, 201)
