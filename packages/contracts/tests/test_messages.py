import copy
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from payband_contracts import (
    EXAMPLE_CANDIDATE,
    AuditRecord,
    BatchPredictionRequest,
    ErrorBody,
    Prediction,
    Review,
    validation_error_body,
)
from payband_contracts.messages import EXAMPLE_PREDICTION
from payband_contracts.settings import get_settings


def body_of(model, data, **kwargs) -> ErrorBody:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data, **kwargs)
    return validation_error_body(caught.value, model, request_id="req-1")


def test_batch_at_the_default_limit_is_accepted():
    batch = BatchPredictionRequest.model_validate({"candidates": [EXAMPLE_CANDIDATE] * 1_000})
    assert len(batch.candidates) == 1_000


def test_batch_over_the_limit_names_the_field_and_the_limit():
    body = body_of(BatchPredictionRequest, {"candidates": [EXAMPLE_CANDIDATE] * 1_001})
    assert body.code == "validation_failed"
    assert body.request_id == "req-1"
    assert [(e.field, e.rule) for e in body.errors] == [("candidates", "at most 1000 items")]
    assert "1001" in body.errors[0].message


def test_batch_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PAYBAND_MAX_BATCH_SIZE", "3")
    get_settings.cache_clear()
    try:
        body = body_of(BatchPredictionRequest, {"candidates": [EXAMPLE_CANDIDATE] * 4})
        assert body.errors[0].rule == "at most 3 items"
    finally:
        get_settings.cache_clear()
    body = body_of(
        BatchPredictionRequest,
        {"candidates": [EXAMPLE_CANDIDATE] * 3},
        context={"max_batch_size": 2},
    )
    assert body.errors[0].rule == "at most 2 items"


def test_empty_batch_is_rejected():
    body = body_of(BatchPredictionRequest, {"candidates": []})
    assert [(e.field, e.rule) for e in body.errors] == [("candidates", "at least 1 item")]


def test_bad_candidate_in_batch_is_named_by_index():
    bad = {**EXAMPLE_CANDIDATE, "age": 120}
    body = body_of(BatchPredictionRequest, {"candidates": [EXAMPLE_CANDIDATE, bad]})
    assert [(e.field, e.rule) for e in body.errors] == [
        ("candidates[1].age", "integer from 17 to 99")
    ]
    assert body.errors[0].loc == ["candidates", 1, "age"]


def test_fastapi_style_prefix_is_dropped():
    with pytest.raises(ValidationError) as caught:
        BatchPredictionRequest.model_validate({"candidates": [{**EXAMPLE_CANDIDATE, "sex": "x"}]})
    body = validation_error_body(caught.value, BatchPredictionRequest)
    assert body.errors[0].field == "candidates[0].sex"


def test_errors_as_fastapi_lists_them_give_the_same_body():
    with pytest.raises(ValidationError) as caught:
        BatchPredictionRequest.model_validate({"candidates": [{**EXAMPLE_CANDIDATE, "age": 9}]})
    errors = caught.value.errors(include_url=False)
    details = [{**error, "loc": ("body", *error["loc"])} for error in errors]
    from_list = validation_error_body(details, BatchPredictionRequest, loc_prefix=("body",))
    assert from_list == validation_error_body(caught.value, BatchPredictionRequest)
    assert from_list.errors[0].rule == "integer from 17 to 99"


def test_example_prediction_is_valid():
    prediction = Prediction.model_validate(EXAMPLE_PREDICTION)
    assert prediction.band.label == ">50K"
    assert prediction.explanation.contributions[0].feature == "marital_status"


def _broken(mutate) -> dict:
    data = copy.deepcopy(EXAMPLE_PREDICTION)
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["probabilities"][0].update(probability=0.5), "sum to 1"),
        (lambda d: d["probabilities"].reverse(), "band order"),
        (lambda d: d["band"].update(label="<=50K"), "band label"),
        (lambda d: d["explanation"]["contributions"].reverse(), "ordered by magnitude"),
        (
            lambda d: d["explanation"]["contributions"][1].update(
                feature="marital_status", value="married", value_label="Married"
            ),
            "only once",
        ),
        (lambda d: d["explanation"]["contributions"][2].update(value=12), "integer from 17"),
        (lambda d: d["explanation"]["contributions"][0].update(value="single"), "one of"),
        (
            lambda d: d["explanation"]["contributions"][1].update(value_label="Masters"),
            'value_label of education must be "Bachelor\'s degree"',
        ),
        (lambda d: d.update(created_at="2026-11-27T10:00:00"), "timezone"),
        (lambda d: d["explanation"].update(band_index=2), "does not exist"),
    ],
)
def test_inconsistent_predictions_are_rejected(mutate, message: str):
    with pytest.raises(ValidationError, match=message):
        Prediction.model_validate(_broken(mutate))


def test_override_needs_band_and_reason():
    body = body_of(Review, {"reviewer": "hr-17", "decision": "override", "reason": "x"})
    assert body.errors[0].rule == "band is required when decision is override"
    body = body_of(Review, {"reviewer": "hr-17", "decision": "override", "band": 0, "reason": " "})
    assert body.errors[0].rule == "reason is required when decision is override"
    review = Review(reviewer="hr-17", decision="override", band=0, reason="verified payslip")
    assert review.band == 0
    assert Review(reviewer="hr-17", decision="confirm").reason is None


def test_review_decision_is_an_enum():
    body = body_of(Review, {"reviewer": "hr-17", "decision": "maybe"})
    assert [(e.field, e.rule) for e in body.errors] == [("decision", "one of: confirm, override")]


def test_audit_record_holds_a_prediction_or_an_error():
    base = {
        "prediction_id": str(uuid.uuid4()),
        "received_at": datetime.now(UTC).isoformat(),
        "caller": "hr-tool",
        "candidate": EXAMPLE_CANDIDATE,
        "record_hash": "a" * 64,
    }
    record = AuditRecord.model_validate({**base, "prediction": EXAMPLE_PREDICTION})
    assert record.reviews == []
    error = {
        "status_code": 503,
        "error": {"code": "inference_unavailable", "message": "MLServer did not answer"},
    }
    assert AuditRecord.model_validate({**base, "error": error}).error.status_code == 503
    with pytest.raises(ValidationError, match="either a prediction or an error"):
        AuditRecord.model_validate(base)
    with pytest.raises(ValidationError, match="either a prediction or an error"):
        AuditRecord.model_validate({**base, "prediction": EXAMPLE_PREDICTION, "error": error})
    with pytest.raises(ValidationError, match="record_hash"):
        AuditRecord.model_validate({**base, "error": error, "record_hash": "xyz"})


def test_free_text_may_not_hold_nul_characters():
    body = body_of(Review, {"reviewer": "Dana\x00", "decision": "confirm"})
    assert [(e.field, e.rule) for e in body.errors] == [
        ("reviewer", "text without NUL (\\u0000) characters")
    ]
