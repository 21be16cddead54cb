"""Who may do what: the API-key matrix, and the open endpoints."""

import uuid

import httpx
import pytest

from payband_contracts import EXAMPLE_CANDIDATE

SUCCESS = {"predict": 200, "batch": 200, "record": 200, "chart": 200, "outcome": 201, "review": 201}

# Which keys may use which route (admin may use all).
ALLOWED = {
    "predict": {"predict", "admin"},
    "batch": {"predict", "admin"},
    "record": {"audit", "admin"},
    "chart": {"predict", "review", "audit", "admin"},
    "outcome": {"review", "admin"},
    "review": {"review", "admin"},
}


def call(client: httpx.Client, route: str, prediction_id: str, headers: dict) -> httpx.Response:
    path = f"/v1/predictions/{prediction_id}"
    if route == "predict":
        return client.post(
            "/v1/predictions", json={"candidate": EXAMPLE_CANDIDATE}, headers=headers
        )
    if route == "batch":
        body = {"candidates": [EXAMPLE_CANDIDATE] * 2}
        return client.post("/v1/predictions/batch", json=body, headers=headers)
    if route == "record":
        return client.get(path, headers=headers)
    if route == "chart":
        return client.get(f"{path}/explanation.png", headers=headers)
    if route == "outcome":
        return client.post(f"{path}/outcome", json={"band": 0}, headers=headers)
    body = {"reviewer": "Dana Example", "decision": "confirm"}
    return client.post(f"{path}/reviews", json=body, headers=headers)


@pytest.fixture
def prediction_id(client: httpx.Client, keys) -> str:
    """A fresh prediction made by the predict key."""
    made = client.post(
        "/v1/predictions", json={"candidate": EXAMPLE_CANDIDATE}, headers=keys["predict"].headers
    )
    assert made.status_code == 200, made.text
    return made.json()["id"]


@pytest.mark.parametrize("route", sorted(ALLOWED))
@pytest.mark.parametrize("who", ["predict", "review", "audit", "admin"])
def test_each_role_may_do_exactly_its_part(client: httpx.Client, keys, prediction_id, route, who):
    response = call(client, route, prediction_id, keys[who].headers)
    if who in ALLOWED[route]:
        assert response.status_code == SUCCESS[route], response.text
    else:
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["code"] == "forbidden"
        assert keys[who].name in body["message"]
        assert "role" in body["message"]


@pytest.mark.parametrize("route", sorted(ALLOWED))
def test_no_key_or_a_wrong_key_is_401_on_every_route(client: httpx.Client, prediction_id, route):
    missing = call(client, route, prediction_id, {})
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthenticated"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = call(client, route, prediction_id, {"X-API-Key": "pb_not-a-key"})
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "invalid_api_key"


def test_authentication_comes_before_the_body_is_read(client: httpx.Client):
    # Not even a broken body reveals anything to a caller without a key.
    response = client.post(
        "/v1/predictions", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401


def test_a_bearer_token_works_like_the_header(client: httpx.Client, keys):
    bearer = {"Authorization": f"Bearer {keys['predict'].key}"}
    response = client.post("/v1/predictions", json={"candidate": EXAMPLE_CANDIDATE}, headers=bearer)
    assert response.status_code == 200
    basic = {"Authorization": "Basic aHItdG9vbDpzZWNyZXQ="}
    assert client.post("/v1/predictions", json={}, headers=basic).status_code == 401


def test_a_predict_key_sees_only_its_own_charts(client: httpx.Client, keys, prediction_id):
    own = client.get(
        f"/v1/predictions/{prediction_id}/explanation.png", headers=keys["predict"].headers
    )
    assert own.status_code == 200
    other = client.get(
        f"/v1/predictions/{prediction_id}/explanation.png", headers=keys["other"].headers
    )
    assert other.status_code == 404
    # As for an id that does not exist: nothing tells the two apart.
    unknown = client.get(
        f"/v1/predictions/{uuid.uuid4()}/explanation.png", headers=keys["other"].headers
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, other.json()["code"])


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"])
def test_health_metrics_and_docs_are_open(client: httpx.Client, path: str):
    assert client.get(path).status_code == 200
