"""The gateway's OpenAPI document, and schemathesis requests to every operation it describes,
sent to the live gateway with an admin key: no 5xx, and every answer as documented.

The schema is loaded inside the tests and each operation run through `as_strategy` with
Hypothesis: `schemathesis.pytest.from_fixture` (4.32.5) sets `Function._nodeid`, which
pytest 9.2 no longer has.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from pydantic import BaseModel
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from payband_contracts import (
    EXAMPLE_CANDIDATE,
    BatchPredictionRequest,
    Candidate,
    Outcome,
    PredictionRequest,
    Review,
)
from payband_testing.gateway import GatewayServer, TestKey

MAX_EXAMPLES = 30

OPERATIONS = [
    ("POST", "/v1/predictions"),
    ("POST", "/v1/predictions/batch"),
    ("GET", "/v1/predictions/{prediction_id}"),
    ("GET", "/v1/predictions/{prediction_id}/explanation.png"),
    ("POST", "/v1/predictions/{prediction_id}/outcome"),
    ("POST", "/v1/predictions/{prediction_id}/reviews"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]
# Negative data needs something to break: a body or a parameter.
WITH_INPUT = [(method, path) for method, path in OPERATIONS if method == "POST" or "{" in path]
ON_A_PREDICTION = [(method, path) for method, path in OPERATIONS if "{prediction_id}" in path]


# Bodies the schema calls valid that the gateway rightly refuses, because JSON Schema cannot
# say that an override needs a band and a reason, or that a band must exist in the model.
ACCEPTANCE_NOT_IN_THE_SCHEMA = {
    ("POST", "/v1/predictions/{prediction_id}/outcome"),
    ("POST", "/v1/predictions/{prediction_id}/reviews"),
}


@pytest.fixture(scope="module")
def api_schema(gateway: GatewayServer) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "base-url": gateway.url,
            "request-timeout": 30,
            # The admin key is sent as a fixed header; generated credentials would compete with it.
            "generation": {"with-security-parameters": False},
        }
    )
    return schemathesis.openapi.from_url(f"{gateway.url}/openapi.json", config=config, timeout=30)


@pytest.fixture
def prediction_id(gateway: GatewayServer, keys: dict[str, TestKey]) -> str:
    with httpx.Client(base_url=gateway.url, trust_env=False, timeout=30) as http:
        response = http.post(
            "/v1/predictions",
            json={"candidate": EXAMPLE_CANDIDATE},
            headers=keys["predict"].headers,
        )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def integral_floats_as_ints(value: Any) -> Any:
    """38.0 as 38: JSON Schema counts it an integer, the contracts' strict ints refuse it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: integral_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral_floats_as_ints(item) for item in value]
    return value


def with_int_bodies(case: schemathesis.Case) -> schemathesis.Case:
    case.body = integral_floats_as_ints(case.body)
    return case


def run_cases(
    api_schema: schemathesis.BaseSchema,
    method: str,
    path: str,
    mode: GenerationMode,
    headers: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
    max_examples: int = MAX_EXAMPLES,
) -> Counter[int]:
    """Send generated requests to one operation, run schemathesis' checks on every answer and
    return how often each status came back."""
    strategy = api_schema[path][method].as_strategy(
        mode, headers=headers, path_parameters=path_parameters
    )
    if mode is GenerationMode.POSITIVE:
        strategy = strategy.map(with_int_bodies)
    excluded = [positive_data_acceptance] if (method, path) in ACCEPTANCE_NOT_IN_THE_SCHEMA else []
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        statuses[case.call_and_validate(excluded_checks=excluded).status_code] += 1

    check()
    return statuses


def test_the_schema_lists_exactly_the_operations_tested(
    api_schema: schemathesis.BaseSchema,
) -> None:
    found = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_valid_requests(
    api_schema: schemathesis.BaseSchema, keys: dict[str, TestKey], method: str, path: str
) -> None:
    statuses = run_cases(
        api_schema, method, path, GenerationMode.POSITIVE, headers=keys["admin"].headers
    )
    if path in {"/v1/predictions", "/v1/predictions/batch"}:
        assert set(statuses) == {200}, statuses


@pytest.mark.parametrize(("method", "path"), WITH_INPUT)
def test_invalid_requests(
    api_schema: schemathesis.BaseSchema, keys: dict[str, TestKey], method: str, path: str
) -> None:
    run_cases(api_schema, method, path, GenerationMode.NEGATIVE, headers=keys["admin"].headers)


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [(method, path, GenerationMode.POSITIVE) for method, path in ON_A_PREDICTION]
    # With the id fixed only a body is left to break.
    + [
        (method, path, GenerationMode.NEGATIVE)
        for method, path in ON_A_PREDICTION
        if method == "POST"
    ],
)
def test_requests_about_a_recorded_prediction(
    api_schema: schemathesis.BaseSchema,
    keys: dict[str, TestKey],
    prediction_id: str,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    """Random ids mostly reach the 404; a real one reaches the chart, outcome and review code."""
    statuses = run_cases(
        api_schema,
        method,
        path,
        mode,
        headers=keys["admin"].headers,
        path_parameters={"prediction_id": prediction_id},
    )
    if method == "GET" and mode is GenerationMode.POSITIVE:
        assert set(statuses) == {200}, statuses


@pytest.mark.parametrize(
    ("method", "path"), [(method, path) for method, path in OPERATIONS if path.startswith("/v1/")]
)
def test_requests_without_a_key(
    api_schema: schemathesis.BaseSchema, method: str, path: str
) -> None:
    """Refusals are documented answers too: 401 with the ErrorBody, whatever the request."""
    statuses = run_cases(api_schema, method, path, GenerationMode.POSITIVE, max_examples=10)
    assert set(statuses) == {401}, statuses


@pytest.fixture(scope="module")
def document(gateway: GatewayServer) -> dict[str, Any]:
    with httpx.Client(base_url=gateway.url, trust_env=False, timeout=30) as http:
        response = http.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    found = set(refs(document))
    assert found
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in components, ref


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1/predictions", PredictionRequest),
        ("/v1/predictions/batch", BatchPredictionRequest),
        ("/v1/predictions/{prediction_id}/outcome", Outcome),
        ("/v1/predictions/{prediction_id}/reviews", Review),
    ],
)
def test_request_bodies_are_documented(
    document: dict[str, Any], path: str, model: type[BaseModel]
) -> None:
    """Routes validate their bodies themselves; the document still names each body's schema."""
    body = document["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    media = body["content"]["application/json"]
    assert media["schema"] == {"$ref": f"#/components/schemas/{model.__name__}"}
    component = document["components"]["schemas"][model.__name__]
    assert component["type"] == "object"
    assert component["additionalProperties"] is False
    assert set(component["required"]) == {
        name for name, field in model.model_fields.items() if field.is_required()
    }


def test_the_prediction_request_body_has_valid_examples(document: dict[str, Any]) -> None:
    media = document["paths"]["/v1/predictions"]["post"]["requestBody"]["content"]
    examples = media["application/json"]["examples"]
    assert examples
    for example in examples.values():
        request = PredictionRequest.model_validate(example["value"])
        assert request.candidate == Candidate.model_validate(EXAMPLE_CANDIDATE)


def test_security_schemes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    api_key = schemes["APIKeyHeader"]
    assert (api_key["type"], api_key["in"], api_key["name"]) == ("apiKey", "header", "X-API-Key")
    assert schemes["HTTPBearer"]["type"] == "http"
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    for method, path in OPERATIONS:
        security = document["paths"][path][method.lower()].get("security")
        if path.startswith("/v1/"):
            # Either header will do: two alternatives, not both at once.
            assert security == [{"APIKeyHeader": []}, {"HTTPBearer": []}], (method, path)
        else:
            assert security is None, (method, path)


def test_prediction_errors_are_documented_with_the_error_body(document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/predictions"]["post"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Prediction"
    }
    for status in ("401", "403", "422", "503"):
        assert responses[status]["description"], status
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }, status
    error_body = document["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) == {"code", "message"}
    assert {"code", "message", "request_id", "errors"} <= set(error_body["properties"])
