"""Ground truth and human oversight: outcomes (once) and reviews, in the audit log."""

import uuid

import httpx
import pytest

from payband_audit.verify import verify_chain
from payband_contracts import EXAMPLE_CANDIDATE, AuditRecord


@pytest.fixture
def made(client: httpx.Client, keys) -> dict:
    """A fresh prediction's answer."""
    response = client.post(
        "/v1/predictions", json={"candidate": EXAMPLE_CANDIDATE}, headers=keys["predict"].headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def record(client: httpx.Client, keys, prediction_id: str) -> AuditRecord:
    response = client.get(f"/v1/predictions/{prediction_id}", headers=keys["audit"].headers)
    assert response.status_code == 200, response.text
    return AuditRecord.model_validate_json(response.text)


def test_an_outcome_is_recorded_once_and_a_second_is_409(client: httpx.Client, keys, made, rows):
    url = f"/v1/predictions/{made['id']}/outcome"
    before = rows("outcomes")
    first = client.post(
        url,
        json={"band": 1, "observed_at": "2026-11-01T00:00:00Z", "source": "payroll 2026-11"},
        headers=keys["review"].headers,
    )
    assert first.status_code == 201, first.text
    assert first.json()["recorded_by"] == "oversight"
    assert rows("outcomes") == before + 1

    second = client.post(url, json={"band": 0}, headers=keys["admin"].headers)
    assert second.status_code == 409
    assert second.json()["code"] == "outcome_already_recorded"
    assert rows("outcomes") == before + 1

    stored = record(client, keys, made["id"]).outcome
    assert stored is not None
    assert (stored.band, stored.source, stored.recorded_by) == (1, "payroll 2026-11", "oversight")


def test_an_outcome_must_name_a_band_of_the_model(client: httpx.Client, keys, made):
    url = f"/v1/predictions/{made['id']}/outcome"
    response = client.post(url, json={"band": 2}, headers=keys["review"].headers)
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["rule"]) == ("band", "integer from 0 to 1")
    negative = client.post(url, json={"band": -1}, headers=keys["review"].headers)
    assert negative.status_code == 422
    assert negative.json()["errors"][0]["field"] == "band"
    nul = client.post(
        url, json={"band": 0, "source": "pay\u0000roll"}, headers=keys["review"].headers
    )
    assert nul.status_code == 422
    assert nul.json()["errors"][0]["field"] == "source"
    # A time zone that pushes the date out of the calendar in UTC.
    edge = client.post(
        url,
        json={"band": 0, "observed_at": "0001-01-01T00:00:00+01:00"},
        headers=keys["review"].headers,
    )
    assert edge.status_code == 422
    assert edge.json()["errors"][0]["field"] == "observed_at"


def test_outcomes_and_reviews_of_unknown_predictions_are_404(client: httpx.Client, keys):
    unknown = uuid.uuid4()
    outcome = client.post(
        f"/v1/predictions/{unknown}/outcome", json={"band": 0}, headers=keys["review"].headers
    )
    assert outcome.status_code == 404
    review = client.post(
        f"/v1/predictions/{unknown}/reviews",
        json={"reviewer": "Dana Example", "decision": "confirm"},
        headers=keys["review"].headers,
    )
    assert review.status_code == 404
    assert str(unknown) in review.json()["message"]


def test_a_request_answered_with_an_error_takes_no_outcome(
    client: httpx.Client, keys, audit_database
):
    client.post(
        "/v1/predictions",
        json={"candidate": {**EXAMPLE_CANDIDATE, "age": 5}},
        headers=keys["predict"].headers,
    )
    with audit_database.connect() as conn:
        row = conn.execute(
            "SELECT prediction_id FROM audit.prediction_errors ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    response = client.post(
        f"/v1/predictions/{row[0]}/outcome", json={"band": 0}, headers=keys["review"].headers
    )
    assert response.status_code == 409
    assert response.json()["code"] == "not_a_prediction"


def test_reviews_confirm_or_override_with_a_reason(client: httpx.Client, keys, made, rows):
    url = f"/v1/predictions/{made['id']}/reviews"
    predicted = made["band"]["index"]
    other = 1 - predicted
    before = rows("reviews")
    confirm = client.post(
        url,
        json={"reviewer": "Dana Example", "decision": "confirm"},
        headers=keys["review"].headers,
    )
    assert confirm.status_code == 201, confirm.text
    override = client.post(
        url,
        json={
            "reviewer": "Sam Example",
            "decision": "override",
            "band": other,
            "reason": "Collective agreement sets the band for this role.",
        },
        headers=keys["review"].headers,
    )
    assert override.status_code == 201, override.text
    assert rows("reviews") == before + 2

    reviews = record(client, keys, made["id"]).reviews
    assert [(r.reviewer, r.decision.value, r.band) for r in reviews] == [
        ("Dana Example", "confirm", None),
        ("Sam Example", "override", other),
    ]
    assert reviews[1].reason == "Collective agreement sets the band for this role."


@pytest.mark.parametrize(
    ("review", "field", "rule_part"),
    [
        ({"decision": "override", "band": "other", "reason": ""}, "(body)", "reason is required"),
        ({"decision": "override", "band": "other"}, "(body)", "reason is required"),
        ({"decision": "override", "reason": "why"}, "(body)", "band is required"),
        ({"decision": "override", "band": "same", "reason": "why"}, "band", "other than"),
        ({"decision": "confirm", "band": "other"}, "band", "the predicted band"),
        ({"decision": "override", "band": 7, "reason": "why"}, "band", "from 0 to 1"),
        ({"decision": "maybe"}, "decision", "one of: confirm, override"),
        ({"decision": "confirm", "reviewer": "Dana\u0000"}, "reviewer", "without NUL"),
        (
            {"decision": "override", "band": "other", "reason": "why\u0000"},
            "reason",
            "without NUL",
        ),
    ],
)
def test_an_invalid_review_is_422_and_not_recorded(
    client: httpx.Client, keys, made, rows, review, field, rule_part
):
    predicted = made["band"]["index"]
    bands = {"same": predicted, "other": 1 - predicted}
    if review.get("band") in bands:
        review = {**review, "band": bands[review["band"]]}
    before = rows("reviews")
    response = client.post(
        f"/v1/predictions/{made['id']}/reviews",
        json={"reviewer": "Dana Example", **review},
        headers=keys["review"].headers,
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == field
    assert rule_part in error["rule"]
    assert rows("reviews") == before


def test_the_chain_verifies_after_all_of_it(client: httpx.Client, keys, made, audit_database):
    client.post(
        f"/v1/predictions/{made['id']}/reviews",
        json={"reviewer": "Dana Example", "decision": "confirm"},
        headers=keys["review"].headers,
    )
    with audit_database.connect() as conn:
        verification = verify_chain(conn)
    assert verification.ok, str(verification)
    assert verification.records > 3
