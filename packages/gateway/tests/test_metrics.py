"""/metrics after real requests: every family a dashboard or alert reads, with its labels and
values that follow from the requests made (read before and after, so the deltas are exact)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from payband_contracts import EXAMPLE_CANDIDATE
from payband_local.postgres import PostgresConnectionInfo
from payband_testing.gateway import GatewayServer, TestKey, gateway_server
from payband_testing.serving import InferenceServer

PREDICT_KEY = TestKey("metrics-tool", "pb_test-metrics-predict-key-0123456789", ("predict",))
AUDIT_KEY = TestKey("metrics-auditor", "pb_test-metrics-audit-key-0123456789", ("audit",))

PREDICT = ("/v1/predictions", "POST")
RECORD = ("/v1/predictions/{prediction_id}", "GET")


@dataclass(frozen=True)
class Scrape:
    """One parsed answer of /metrics: sample values looked up by sample name and labels."""

    samples: list[Sample]
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The value of the one sample with exactly these labels; 0 if there is none yet."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0

    def total(self, name: str) -> float:
        """The sum over every label set of one sample name."""
        return sum(s.value for s in self.samples if s.name == name)

    def labelled(self, name: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples if s.name == name]


def scrape(client: httpx.Client) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))
    return Scrape(
        samples=[sample for family in families for sample in family.samples],
        types={family.name: family.type for family in families},
    )


def requests_total(scrape: Scrape, route: tuple[str, str], status: int) -> float:
    path, method = route
    return scrape.value(
        "payband_gateway_requests_total", route=path, method=method, status=str(status)
    )


def histogram(scrape: Scrape, name: str, **labels: str) -> tuple[float, float, list[float]]:
    """count, sum and the cumulative bucket counts in order of their upper bounds."""
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for s in scrape.samples
        if s.name == f"{name}_bucket" and {k: v for k, v in s.labels.items() if k != "le"} == labels
    )
    return (
        scrape.value(f"{name}_count", **labels),
        scrape.value(f"{name}_sum", **labels),
        [count for _, count in buckets],
    )


@dataclass(frozen=True)
class Traffic:
    """The metrics before and after one of each kind of request, and what was answered."""

    before: Scrape
    after: Scrape
    prediction: dict[str, Any]

    def delta(self, read: Callable[[Scrape], float]) -> float:
        return read(self.after) - read(self.before)


@pytest.fixture(scope="module")
def metrics_gateway(
    serving_server: InferenceServer, audit_database: PostgresConnectionInfo
) -> Iterator[GatewayServer]:
    """A gateway of this module's own, with keys of its own: nothing else adds to its counts."""
    with gateway_server(
        inference_url=serving_server.url,
        database_url=audit_database.dsn,
        keys=[PREDICT_KEY, AUDIT_KEY],
    ) as server:
        yield server


@pytest.fixture(scope="module")
def traffic(metrics_gateway: GatewayServer) -> Traffic:
    """A 200 prediction, a 401, a 422 and a 404 through the gateway, between two scrapes."""
    with httpx.Client(base_url=metrics_gateway.url, trust_env=False, timeout=30) as client:
        before = scrape(client)
        ok = client.post(
            "/v1/predictions", json={"candidate": EXAMPLE_CANDIDATE}, headers=PREDICT_KEY.headers
        )
        assert ok.status_code == 200, ok.text
        refused = client.post("/v1/predictions", json={"candidate": EXAMPLE_CANDIDATE})
        assert refused.status_code == 401, refused.text
        invalid = client.post(
            "/v1/predictions",
            json={"candidate": {**EXAMPLE_CANDIDATE, "age": 7}},
            headers=PREDICT_KEY.headers,
        )
        assert invalid.status_code == 422, invalid.text
        unknown = client.get(f"/v1/predictions/{uuid4()}", headers=AUDIT_KEY.headers)
        assert unknown.status_code == 404, unknown.text
        after = scrape(client)
    return Traffic(before=before, after=after, prediction=ok.json())


def test_metrics_need_no_key(metrics_gateway: GatewayServer) -> None:
    with httpx.Client(base_url=metrics_gateway.url, trust_env=False, timeout=30) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert "payband_gateway_requests_total" in response.text


def test_the_metric_types(traffic: Traffic) -> None:
    assert {
        "payband_gateway_requests": "counter",
        "payband_gateway_request_duration_seconds": "histogram",
        "payband_gateway_predictions": "counter",
        "payband_gateway_audit_write_duration_seconds": "histogram",
        "payband_gateway_audit_write_failures": "counter",
        "payband_gateway_audit_available": "gauge",
        "payband_gateway_upstream_duration_seconds": "histogram",
        "payband_gateway_model_info": "gauge",
    }.items() <= traffic.after.types.items()


@pytest.mark.parametrize(
    ("route", "status"), [(PREDICT, 200), (PREDICT, 401), (PREDICT, 422), (RECORD, 404)]
)
def test_requests_are_counted_by_route_method_and_status(
    traffic: Traffic, route: tuple[str, str], status: int
) -> None:
    assert traffic.delta(lambda s: requests_total(s, route, status)) == 1


def test_requests_are_labelled_with_the_route_template_not_the_path(traffic: Traffic) -> None:
    routes = {
        labels["route"] for labels in traffic.after.labelled("payband_gateway_requests_total")
    }
    assert "/v1/predictions/{prediction_id}" in routes
    assert not any(route.startswith("/v1/predictions/") and "{" not in route for route in routes)


def test_request_duration_histogram(traffic: Traffic) -> None:
    path, method = PREDICT
    labels = {"route": path, "method": method, "status": "200"}
    count_before, sum_before, _ = histogram(
        traffic.before, "payband_gateway_request_duration_seconds", **labels
    )
    count, total, buckets = histogram(
        traffic.after, "payband_gateway_request_duration_seconds", **labels
    )
    assert count - count_before == 1
    # A prediction waits for MLServer and a committed audit write: more than nothing, under 30 s.
    assert 0 < total - sum_before < 30
    assert buckets == sorted(buckets)
    assert buckets[-1] == count  # the +Inf bucket holds every observation


def test_predictions_are_counted_by_model_version_and_band(
    traffic: Traffic, serving_server: InferenceServer
) -> None:
    name = "payband_gateway_predictions_total"
    model = traffic.prediction["model"]
    assert model["name"] == serving_server.model_name
    labels = {"model": model["name"], "version": model["version"]}
    band = traffic.prediction["band"]["label"]
    assert traffic.delta(lambda s: s.value(name, **labels, band=band)) == 1
    # Only the one answered prediction counts: the refused and the invalid request do not.
    assert traffic.delta(lambda s: s.total(name)) == 1


@pytest.mark.parametrize("kind", ["prediction", "error"])
def test_audit_writes_are_timed_by_kind(traffic: Traffic, kind: str) -> None:
    """The prediction and the invalid request (recorded as an error) were each written once."""
    name = "payband_gateway_audit_write_duration_seconds"
    count_before, sum_before, _ = histogram(traffic.before, name, kind=kind)
    count, total, buckets = histogram(traffic.after, name, kind=kind)
    assert count - count_before == 1
    assert 0 < total - sum_before < 30
    assert buckets[-1] == count


def test_no_audit_write_failed_and_every_kind_and_reason_is_exported_from_the_start(
    traffic: Traffic,
) -> None:
    # At 0 before the first failure, so that the alert's increase() sees that failure.
    name = "payband_gateway_audit_write_failures_total"
    for scrape in (traffic.before, traffic.after):
        expected = [
            {"kind": kind, "reason": reason}
            for kind in ("prediction", "error", "outcome", "review")
            for reason in ("unavailable", "rejected", "conflict")
        ]
        assert sorted(scrape.labelled(name), key=str) == sorted(expected, key=str)
        assert scrape.total(name) == 0


def test_inference_calls_are_timed(traffic: Traffic) -> None:
    name = "payband_gateway_upstream_duration_seconds"
    count_before, _, _ = histogram(traffic.before, name, stage="inference", outcome="ok")
    count, total, buckets = histogram(traffic.after, name, stage="inference", outcome="ok")
    assert count - count_before == 1
    assert total > 0
    assert buckets[-1] == count
    stages = {labels["stage"] for labels in traffic.after.labelled(f"{name}_count")}
    assert stages <= {"metadata", "inference", "readiness check"}
    assert "metadata" in stages


def test_the_audit_log_is_available(traffic: Traffic) -> None:
    assert traffic.after.value("payband_gateway_audit_available") == 1


def test_model_info_names_the_served_model(
    traffic: Traffic, serving_server: InferenceServer
) -> None:
    infos = [s for s in traffic.after.samples if s.name == "payband_gateway_model_info"]
    assert [(s.labels, s.value) for s in infos] == [
        (
            {"model": serving_server.model_name, "version": traffic.prediction["model"]["version"]},
            1.0,
        )
    ]
