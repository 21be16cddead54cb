"""Parallel inference workers and adaptive batching, configured through settings.

One server with two worker processes and adaptive batching (up to 16 requests, 50 ms) serves
the three-band model; concurrent single-candidate requests are merged into fewer calls of the
model, and every answer is still the model's own.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import xgboost as xgb

from payband_testing.model import TinyModel
from payband_testing.serving import InferenceServer, inference_server

REQUESTS = 32


@pytest.fixture(scope="module")
def scaled_server(tiny_model_three_bands: TinyModel) -> InferenceServer:
    with inference_server(
        model_uri=tiny_model_three_bands.directory,
        # Settings from the environment, as a deployment sets them.
        env={
            "PAYBAND_SERVING_PARALLEL_WORKERS": "2",
            "PAYBAND_SERVING_MAX_BATCH_SIZE": "16",
            "PAYBAND_SERVING_MAX_BATCH_TIME_S": "0.05",
        },
    ) as server:
        yield server


def request_for(model: TinyModel, row: int) -> dict:
    candidate = model.holdout.iloc[[row]]
    return {
        "inputs": [
            {
                "name": name,
                "shape": [1, 1],
                "datatype": "BYTES" if name in model.schema.category_levels else "INT64",
                "data": [
                    candidate[name].item() if hasattr(candidate[name], "item") else candidate[name]
                ],
            }
            for name in model.schema.features
        ]
    }


def metric(text: str, name: str) -> float:
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    ]
    return sum(values)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_two_worker_processes_serve_the_model(scaled_server: InferenceServer) -> None:
    workers = [
        child
        for child in children(scaled_server.process.pid)
        # Spawned processes; multiprocessing's resource tracker is not a worker.
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]
    assert len(workers) == 2


def test_concurrent_requests_are_batched_and_answered_exactly(
    scaled_server: InferenceServer, tiny_model_three_bands: TinyModel
) -> None:
    model = tiny_model_three_bands
    before = httpx.get(scaled_server.metrics_url, timeout=30).text
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(REQUESTS) as pool:
        responses = list(
            pool.map(
                lambda row: client.post(scaled_server.infer_url, json=request_for(model, row)),
                range(REQUESTS),
            )
        )
    assert [response.status_code for response in responses] == [200] * REQUESTS

    data = xgb.DMatrix(model.encoded(model.holdout.iloc[:REQUESTS]), enable_categorical=True)
    margin = model.booster.predict(data, output_margin=True)
    for row, response in enumerate(responses):
        outputs = {
            o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]
        }
        # Each request gets back exactly its own row, even when merged with others.
        assert outputs["contributions"].shape == (1, 3, len(model.schema.features))
        explained = outputs["base_value"] + outputs["contributions"].sum(axis=2)
        np.testing.assert_allclose(explained[0], margin[row], atol=1e-4)

    after = httpx.get(scaled_server.metrics_url, timeout=30).text
    calls = metric(after, "payband_inference_rows_count") - metric(
        before, "payband_inference_rows_count"
    )
    rows = metric(after, "payband_inference_rows_sum") - metric(
        before, "payband_inference_rows_sum"
    )
    assert rows == REQUESTS
    # Merged: fewer calls of the model than requests.
    assert calls < REQUESTS, f"{calls} model calls for {REQUESTS} requests: nothing was batched"


def test_a_bad_request_from_a_worker_is_still_a_clear_v2_error(
    scaled_server: InferenceServer, tiny_model_three_bands: TinyModel
) -> None:
    request = request_for(tiny_model_three_bands, 0)
    request["inputs"][1]["data"] = ["phd"]
    response = httpx.post(scaled_server.infer_url, json=request, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert re.search(
        r"input 'education' has unknown category; expected one of: below_grade_5", error
    )


def test_with_batching_errors_do_not_quote_values_that_may_be_another_clients(
    scaled_server: InferenceServer, tiny_model_three_bands: TinyModel
) -> None:
    """MLServer fails every request merged with an invalid one (a documented limitation);
    the error then names the rule but never the values another client sent."""
    model = tiny_model_three_bands
    bad = request_for(model, 0)
    bad["inputs"][1]["data"] = ["secret-education-value"]
    requests = [bad] + [request_for(model, row) for row in range(1, 8)]
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(len(requests)) as pool:
        responses = list(
            pool.map(lambda body: client.post(scaled_server.infer_url, json=body), requests)
        )
    assert responses[0].status_code == 400
    for response in responses:
        assert response.status_code in (200, 400)
        assert "secret-education-value" not in response.text


def test_with_batching_every_output_is_returned(
    scaled_server: InferenceServer, tiny_model_three_bands: TinyModel
) -> None:
    """Merged requests share their requested outputs, so with batching each gets all four."""
    model = tiny_model_three_bands
    subset = request_for(model, 0) | {"outputs": [{"name": "band"}]}
    requests = [subset, request_for(model, 1), subset, request_for(model, 2)]
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(len(requests)) as pool:
        responses = list(
            pool.map(lambda body: client.post(scaled_server.infer_url, json=body), requests)
        )
    for response in responses:
        assert response.status_code == 200, response.text
        names = [output["name"] for output in response.json()["outputs"]]
        assert names == ["band", "probabilities", "contributions", "base_value"]
