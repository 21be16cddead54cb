"""A real MLServer (``payband-serving serve``) answering V2 requests over REST and gRPC.

The requests in ``testdata/`` are literal V2 JSON, as a client would send them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import (
    ModelInferRequestConverter,
    ModelInferResponseConverter,
    ModelMetadataResponseConverter,
)
from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub
from mlserver.types import InferenceRequest, InferenceResponse

from payband_contracts.model import DecisionRule
from payband_testing.model import TinyModel
from payband_testing.serving import InferenceServer

TESTDATA = Path(__file__).parent / "testdata"
# MLServer 1.7's own gRPC converters, used here as the client, still call pydantic's
# deprecated BaseModel.construct.
grpc_converters_warn = pytest.mark.filterwarnings(
    "ignore:The `construct` method is deprecated:pydantic.warnings.PydanticDeprecatedSince20"
)


def literal(name: str) -> dict[str, Any]:
    return json.loads((TESTDATA / name).read_text())


def frame_of(request: dict[str, Any]) -> pd.DataFrame:
    """The candidates of a V2 request as raw rows."""
    return pd.DataFrame({item["name"]: item["data"] for item in request["inputs"]})


def outputs_of(response: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        output["name"]: np.asarray(output["data"]).reshape(output["shape"])
        for output in response["outputs"]
    }


def check_against_booster(model: TinyModel, frame: pd.DataFrame, response: dict) -> None:
    """Every row: contributions + base value = XGBoost's margin; probabilities and band too."""
    got = outputs_of(response)
    data = xgb.DMatrix(model.encoded(frame), enable_categorical=True)
    margin = model.booster.predict(data, output_margin=True)
    probability = model.booster.predict(data)
    rows, features = len(frame), len(model.schema.features)
    assert got["contributions"].shape == (rows, 2, features)
    assert got["base_value"].shape == (rows, 2)
    explained = got["base_value"] + got["contributions"].sum(axis=2)
    np.testing.assert_allclose(explained[:, 1], margin, atol=1e-4)
    np.testing.assert_allclose(explained[:, 0], -margin, atol=1e-4)
    np.testing.assert_allclose(got["probabilities"][:, 1], probability, atol=1e-6)
    np.testing.assert_allclose(got["probabilities"].sum(axis=1), 1.0, atol=1e-9)
    assert got["band"].shape == (rows, 1)
    assert got["band"][:, 0].tolist() == (probability > 0.5).astype(int).tolist()


def infer(server: InferenceServer, request: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.infer_url, json=request, timeout=30)


def test_one_candidate_over_rest(serving_server: InferenceServer, tiny_model: TinyModel) -> None:
    request = literal("single.json")
    response = infer(serving_server, request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "single-candidate"
    assert body["model_name"] == "salary-band"
    assert json.loads(body["parameters"]["features"]) == list(tiny_model.schema.features)
    assert json.loads(body["parameters"]["band_labels"]) == ["<=50K", ">50K"]
    assert [output["name"] for output in body["outputs"]] == [
        "band",
        "probabilities",
        "contributions",
        "base_value",
    ]
    check_against_booster(tiny_model, frame_of(request), body)


def test_a_batch_over_rest(serving_server: InferenceServer, tiny_model: TinyModel) -> None:
    request = literal("batch.json")
    response = infer(serving_server, request)
    assert response.status_code == 200, response.text
    check_against_booster(tiny_model, frame_of(request), response.json())


def test_five_hundred_unseen_candidates(
    serving_server: InferenceServer, tiny_model: TinyModel
) -> None:
    frame = tiny_model.holdout
    response = infer(serving_server, tiny_model.v2_request(frame))
    assert response.status_code == 200, response.text
    check_against_booster(tiny_model, frame, response.json())


def test_the_band_over_rest_is_the_models_cut_off(
    serving_server_cut_off: InferenceServer, tiny_model_cut_off: TinyModel
) -> None:
    model = tiny_model_cut_off
    response = infer(serving_server_cut_off, model.v2_request(model.holdout))
    assert response.status_code == 200, response.text
    got = outputs_of(response.json())
    band, probabilities = got["band"][:, 0], got["probabilities"]
    np.testing.assert_array_equal(band, model.schema.bands(probabilities))
    np.testing.assert_array_equal(band, model.bands(model.holdout))
    # p(>50K) above 0.2 is enough: about one row in ten is not given its most probable band.
    assert (band != probabilities.argmax(axis=1)).sum() >= 25
    margin = got["base_value"][:, 1] + got["contributions"][:, 1].sum(axis=1)
    np.testing.assert_allclose(probabilities[:, 1], 1 / (1 + np.exp(-margin)), atol=1e-6)


def test_requested_outputs_only(serving_server: InferenceServer) -> None:
    response = infer(serving_server, literal("single_selected_outputs.json"))
    assert response.status_code == 200, response.text
    assert [output["name"] for output in response.json()["outputs"]] == ["band", "probabilities"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "unknown_category.json",
            "input 'education' has unknown category 'phd'; expected one of: below_grade_5,",
        ),
        ("missing_input.json", "missing inputs: hours_per_week"),
        ("unexpected_input.json", "unexpected input 'salary'; the model takes age, education"),
        ("wrong_shape.json", "input 'age' has shape [1, 2]; expected [N] or [N, 1]"),
        (
            "categorical_as_number.json",
            "input 'education' is categorical and must be BYTES (category names), not INT64",
        ),
        ("fractional_age.json", "input 'age' must hold whole numbers; found 38.5"),
        ("uneven_rows.json", "inputs differ in length: most have 1 rows, but hours_per_week has 2"),
        ("shape_data_mismatch.json", "input 'age' has shape [2, 1] but holds 1 values"),
        ("unknown_output.json", "unknown outputs requested: salary_usd"),
    ],
)
def test_bad_requests_get_a_v2_error_naming_the_problem(
    serving_server: InferenceServer, name: str, message: str
) -> None:
    response = infer(serving_server, literal(name))
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]
    assert "Traceback" not in response.text


def with_input(name: str, datatype: str, data: list) -> dict[str, Any]:
    request = literal("single.json")
    for item in request["inputs"]:
        if item["name"] == name:
            item.update(datatype=datatype, data=data)
    return request


@pytest.mark.parametrize(
    ("name", "datatype", "data", "message"),
    [
        # Declared INT64 but not whole numbers: refused, never cast to 38 or 1.
        ("age", "INT64", [38.5], "input 'age' must hold whole numbers; found 38.5"),
        ("age", "INT64", [True], "input 'age' must hold integers; found True"),
        ("age", "INT64", ["38"], "input 'age' must hold integers; found '38'"),
        ("age", "INT64", [-5], "input 'age' must be from 17 to 99; found -5"),
        (
            "age",
            "INT64",
            [2**70],
            "input 'age' must be from 17 to 99; found 1.18059162",
        ),
        ("age", "INT8", [300], "input 'age' must be from 17 to 99; found 300"),
        ("hours_per_week", "FP32", [1e30], "input 'hours_per_week' must be from 1 to 99"),
        ("age", "BOOL", [True], "input 'age' must be INT64 (whole numbers), not BOOL"),
        ("education", "BYTES", [3], "category names are text, not int"),
        ("education", "BYTES", ["x" * 500], "input 'education' has unknown category 'xxxxx"),
    ],
)
def test_values_that_are_not_what_the_model_takes(
    serving_server: InferenceServer, name: str, datatype: str, data: list, message: str
) -> None:
    response = infer(serving_server, with_input(name, datatype, data))
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    # Quoted values are cut short.
    assert len(response.json()["error"]) < 600


def test_nested_and_flat_data_mean_the_same(serving_server: InferenceServer) -> None:
    flat = infer(serving_server, literal("single.json")).json()
    nested = infer(serving_server, with_input("education", "BYTES", [["bachelors_degree"]])).json()
    assert nested["outputs"] == flat["outputs"]


def test_a_request_that_is_not_v2_is_refused_without_a_server_error(
    serving_server: InferenceServer,
) -> None:
    response = httpx.post(
        serving_server.infer_url,
        content=b'{"inputs": [{"name": "age"}]}',
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422
    assert "shape" in response.text


def test_metadata_names_inputs_outputs_version_and_training_data(
    serving_server: InferenceServer, tiny_model: TinyModel
) -> None:
    response = httpx.get(f"{serving_server.url}/v2/models/salary-band", timeout=30)
    assert response.status_code == 200
    body = response.json()
    schema = tiny_model.schema
    assert body["platform"] == "xgboost-treeshap"
    assert [item["name"] for item in body["inputs"]] == list(schema.features)
    education = next(item for item in body["inputs"] if item["name"] == "education")
    assert education["datatype"] == "BYTES"
    assert json.loads(education["parameters"]["categories"]) == list(
        schema.category_levels["education"]
    )
    age = next(item for item in body["inputs"] if item["name"] == "age")
    assert age["datatype"] == "INT64"
    assert {item["name"]: item["shape"] for item in body["outputs"]} == {
        "band": [-1, 1],
        "probabilities": [-1, 2],
        "contributions": [-1, 2, len(schema.features)],
        "base_value": [-1, 2],
    }
    parameters = body["parameters"]
    assert parameters["training_data_uri"] == schema.train_uri
    assert parameters["features_uri"] == schema.features_uri
    assert parameters["model_uri"] == str(tiny_model.directory)
    assert json.loads(parameters["band_edges_usd"]) == [50000.0]
    assert DecisionRule.model_validate_json(parameters["decision_rule"]) == DecisionRule()


def test_metadata_states_the_decision_rule(
    serving_server_cut_off: InferenceServer, tiny_model_cut_off: TinyModel
) -> None:
    response = httpx.get(f"{serving_server_cut_off.url}/v2/models/salary-band", timeout=30)
    assert response.status_code == 200
    parameters = response.json()["parameters"]
    rule = DecisionRule.model_validate_json(parameters["decision_rule"])
    assert rule == tiny_model_cut_off.schema.decision
    assert rule.cut_off == pytest.approx(0.2)
    assert parameters["decision_rule_description"] == (
        "band >50K when its probability is above 0.200, otherwise <=50K"
    )


def grpc_request(request: dict[str, Any], *, use_raw: bool = False) -> pb.ModelInferRequest:
    """The V2 JSON request as a gRPC message: BYTES travel as bytes over gRPC."""
    typed = InferenceRequest.model_validate(request)
    for item in typed.inputs:
        if getattr(item.datatype, "value", item.datatype) == "BYTES":
            item.data.root = [value.encode() for value in item.data.root]
    return ModelInferRequestConverter.from_types(typed, model_name="salary-band", use_raw=use_raw)


@pytest.fixture(scope="module")
def grpc_stub(serving_server: InferenceServer) -> Any:
    channel = grpc.insecure_channel(serving_server.grpc_target)
    try:
        yield GRPCInferenceServiceStub(channel)
    finally:
        channel.close()


@grpc_converters_warn
@pytest.mark.parametrize("use_raw", [False, True], ids=["typed-contents", "raw-contents"])
def test_grpc_gives_the_same_answer_as_rest(
    serving_server: InferenceServer, tiny_model: TinyModel, grpc_stub: Any, use_raw: bool
) -> None:
    request = literal("batch.json")
    message = grpc_request(request, use_raw=use_raw)
    reply: InferenceResponse = ModelInferResponseConverter.to_types(
        grpc_stub.ModelInfer(message, timeout=30)
    )
    over_grpc = reply.model_dump(mode="json")
    check_against_booster(tiny_model, frame_of(request), over_grpc)
    over_rest = infer(serving_server, request).json()
    for name, values in outputs_of(over_rest).items():
        np.testing.assert_allclose(outputs_of(over_grpc)[name], values, atol=1e-12)


@grpc_converters_warn
def test_grpc_bad_request_is_invalid_argument_naming_the_problem(grpc_stub: Any) -> None:
    message = grpc_request(literal("unknown_category.json"))
    with pytest.raises(grpc.RpcError) as raised:
        grpc_stub.ModelInfer(message, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'education' has unknown category 'phd'" in raised.value.details()


@grpc_converters_warn
def test_grpc_metadata(grpc_stub: Any, tiny_model: TinyModel) -> None:
    reply = ModelMetadataResponseConverter.to_types(
        grpc_stub.ModelMetadata(pb.ModelMetadataRequest(name="salary-band"), timeout=30)
    )
    assert [item.name for item in reply.inputs or []] == list(tiny_model.schema.features)
    assert reply.parameters is not None
    assert reply.parameters.model_extra["training_data_uri"] == tiny_model.schema.train_uri


def test_the_server_logs_one_json_object_per_line(serving_server: InferenceServer) -> None:
    lines = [line for line in serving_server.log().splitlines() if line.strip()]
    assert lines
    entries = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any("Loaded model 'salary-band'" in entry["message"] for entry in entries)
