"""Predictions end to end: gateway -> real MLServer -> committed audit record -> answer."""

import json
import uuid

import httpx
import pytest
import xgboost as xgb

from payband_contracts import EXAMPLE_CANDIDATE, AuditRecord, BatchPrediction, Prediction
from payband_testing.model import TinyModel


def candidates_of(model: TinyModel, rows: slice) -> list[dict]:
    return model.holdout.iloc[rows].to_dict("records")


def margins(model: TinyModel, rows: slice) -> list[float]:
    data = xgb.DMatrix(model.encoded(model.holdout.iloc[rows]), enable_categorical=True)
    return [float(m) for m in model.booster.predict(data, output_margin=True)]


def check_explains_the_booster(prediction: Prediction, margin: float) -> None:
    """base value + contributions = the booster's log-odds of band 1 (negated for band 0)."""
    explanation = prediction.explanation
    score = explanation.base_value + sum(c.contribution for c in explanation.contributions)
    assert explanation.band_index == prediction.band.index
    assert score == pytest.approx(margin if prediction.band.index == 1 else -margin, abs=1e-4)
    assert prediction.band.index == int(margin > 0)


def test_one_candidate_is_predicted_explained_and_recorded(
    client: httpx.Client, keys, rows, tiny_model: TinyModel
):
    before = rows("prediction_responses")
    candidate = candidates_of(tiny_model, slice(0, 1))[0]
    response = client.post(
        "/v1/predictions", json={"candidate": candidate}, headers=keys["predict"].headers
    )
    assert response.status_code == 200, response.text
    prediction = Prediction.model_validate_json(response.text)
    check_explains_the_booster(prediction, margins(tiny_model, slice(0, 1))[0])

    # Every model input contributes, largest first, in words.
    explanation = prediction.explanation
    assert {c.feature for c in explanation.contributions} == set(tiny_model.schema.features)
    assert len(explanation.summary) == 3
    top = explanation.contributions[0]
    assert explanation.summary[0].startswith(f"{top.label} is {top.value_label}: ")
    assert ("raises" if top.contribution > 0 else "lowers") in explanation.summary[0]
    assert prediction.model.name == "salary-band"

    # Answered only after the record was committed: it is there, and it is the answer.
    assert rows("prediction_responses") == before + 1
    stored = client.get(f"/v1/predictions/{prediction.id}", headers=keys["audit"].headers)
    assert stored.status_code == 200, stored.text
    record = AuditRecord.model_validate_json(stored.text)
    assert record.prediction == prediction
    assert record.caller == "hr-tool"
    assert record.candidate is not None
    assert record.candidate.model_dump(mode="json") == candidate
    assert record.error is None


def test_a_batch_is_answered_in_order_and_recorded_whole(
    client: httpx.Client, keys, rows, tiny_model: TinyModel
):
    before = rows("prediction_responses")
    candidates = candidates_of(tiny_model, slice(10, 60))
    response = client.post(
        "/v1/predictions/batch", json={"candidates": candidates}, headers=keys["predict"].headers
    )
    assert response.status_code == 200, response.text
    batch = BatchPrediction.model_validate_json(response.text)
    assert len(batch.predictions) == 50
    assert len({p.id for p in batch.predictions}) == 50
    expected = margins(tiny_model, slice(10, 60))
    for prediction, margin in zip(batch.predictions, expected, strict=True):
        check_explains_the_booster(prediction, margin)
    assert rows("prediction_responses") == before + 50
    # Each candidate's record holds that candidate.
    last = client.get(f"/v1/predictions/{batch.predictions[-1].id}", headers=keys["admin"].headers)
    assert last.json()["candidate"] == candidates[-1]


def test_request_id_is_returned_given_or_made(client: httpx.Client, keys):
    given = client.post(
        "/v1/predictions",
        json={"candidate": EXAMPLE_CANDIDATE},
        headers={**keys["predict"].headers, "X-Request-ID": "hr-4711"},
    )
    assert given.headers["x-request-id"] == "hr-4711"
    made = client.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    # Something that is not a plain id is replaced, not echoed.
    odd = client.get("/healthz", headers={"X-Request-ID": "<script>"})
    assert odd.headers["x-request-id"] != "<script>"
    prediction_id = given.json()["id"]
    stored = client.get(f"/v1/predictions/{prediction_id}", headers=keys["audit"].headers)
    assert stored.json()["request_id"] == "hr-4711"


@pytest.mark.parametrize(
    ("candidate", "field", "rule"),
    [
        ({**EXAMPLE_CANDIDATE, "age": 12}, "candidate.age", "integer from 17 to 99"),
        ({**EXAMPLE_CANDIDATE, "age": 38.5}, "candidate.age", "integer"),
        ({**EXAMPLE_CANDIDATE, "sex": "x"}, "candidate.sex", "one of: female, male"),
        (
            {k: v for k, v in EXAMPLE_CANDIDATE.items() if k != "education"},
            "candidate.education",
            "required",
        ),
        ({**EXAMPLE_CANDIDATE, "salary": 1}, "candidate.salary", "unknown field: not allowed"),
    ],
)
def test_an_invalid_candidate_gets_422_naming_field_and_rule_and_is_recorded(
    client: httpx.Client, keys, rows, candidate, field, rule
):
    errors_before = rows("prediction_errors")
    response = client.post(
        "/v1/predictions",
        json={"candidate": candidate},
        headers={**keys["predict"].headers, "X-Request-ID": "bad-1"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    assert body["request_id"] == "bad-1"
    assert [(e["field"], e["rule"]) for e in body["errors"]] == [(field, rule)]
    # The refused request is in the audit log too, with what was sent.
    assert rows("prediction_errors") == errors_before + 1


def test_invalid_json_and_wrong_media_type_are_4xx_in_the_error_shape(client: httpx.Client, keys):
    broken = client.post(
        "/v1/predictions",
        content=b'{"candidate": ',
        headers={**keys["predict"].headers, "Content-Type": "application/json"},
    )
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["rule"] == "valid JSON"
    text = client.post(
        "/v1/predictions",
        content=json.dumps({"candidate": EXAMPLE_CANDIDATE}),
        headers={**keys["predict"].headers, "Content-Type": "text/plain"},
    )
    assert text.status_code == 415
    assert text.json()["code"] == "unsupported_media_type"


def test_a_batch_over_the_limit_names_the_limit(client: httpx.Client, keys):
    response = client.post(
        "/v1/predictions/batch",
        json={"candidates": [EXAMPLE_CANDIDATE] * 1_001},
        headers=keys["predict"].headers,
    )
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["rule"]) == ("candidates", "at most 1000 items")


def test_a_body_over_the_size_limit_is_refused_before_it_is_read(client: httpx.Client, keys):
    big = b'{"candidate": "' + b"x" * (1024 * 1024) + b'"}'
    declared = client.post(
        "/v1/predictions",
        content=big,
        headers={**keys["predict"].headers, "Content-Type": "application/json"},
    )
    assert declared.status_code == 413
    assert declared.json()["code"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit is applied while reading
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    streamed = client.post(
        "/v1/predictions",
        content=chunks(),
        headers={**keys["predict"].headers, "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert streamed.json()["code"] == "payload_too_large"


def test_unknown_routes_and_methods_answer_in_the_error_shape(client: httpx.Client, keys):
    missing = client.get("/v1/nothing", headers=keys["admin"].headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    wrong = client.delete("/v1/predictions", headers=keys["admin"].headers)
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"
    bad_id = client.get("/v1/predictions/not-a-uuid", headers=keys["audit"].headers)
    assert bad_id.status_code == 422
    assert bad_id.json()["errors"][0]["field"] == "path.prediction_id"
    unknown = client.get(f"/v1/predictions/{uuid.uuid4()}", headers=keys["audit"].headers)
    assert unknown.status_code == 404


def test_explanation_chart_is_drawn_from_the_stored_record(client: httpx.Client, keys):
    made = client.post(
        "/v1/predictions", json={"candidate": EXAMPLE_CANDIDATE}, headers=keys["predict"].headers
    )
    chart_url = f"/v1/predictions/{made.json()['id']}/explanation.png"
    for who in ("audit", "review", "predict", "admin"):
        chart = client.get(chart_url, headers=keys[who].headers)
        assert chart.status_code == 200, (who, chart.text)
        assert chart.headers["content-type"] == "image/png"
        assert chart.content.startswith(b"\x89PNG\r\n\x1a\n")
    # Another predict key may not see this caller's predictions.
    assert client.get(chart_url, headers=keys["other"].headers).status_code == 404


def test_a_nul_byte_is_a_422_and_the_raw_body_is_recorded_escaped(
    client: httpx.Client, keys, audit_database
):
    response = client.post(
        "/v1/predictions",
        content=b'{"candidate": "\x00"}',
        headers={**keys["predict"].headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    with audit_database.connect() as conn:
        row = conn.execute(
            "SELECT raw_request FROM audit.prediction_requests ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    assert row[0] == '{"candidate": "\\u0000"}'
