"""Every metric a dashboard or alert reads is one the services really export.

Real servers on 127.0.0.1 (the gateway in front of MLServer, with a migrated audit database)
are scraped after traffic, and every series name of deploy/ is looked up among the exported
ones. Owners by name: ``payband_gateway_*`` the gateway, ``payband_monitoring_*`` the
monitoring service, Prometheus' own series (``up``, ``ALERTS``...) nobody, the rest MLServer.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from payband_audit.migrate import upgrade
from payband_contracts import EXAMPLE_CANDIDATE
from payband_local.postgres import PostgresConnectionInfo
from payband_monitoring.store import migrate
from payband_testing.gateway import GatewayServer, TestKey, gateway_server
from payband_testing.model import TinyModel
from payband_testing.monitoring import MonitoringServer, monitoring_server
from payband_testing.registry import MlflowChampion
from payband_testing.serving import InferenceServer, inference_server
from tests.deploy_config import PROMETHEUS_BUILTINS, configured_queries, exported_series, family

# real Prometheus scraping a real gateway, MLServer and monitoring service
pytestmark = pytest.mark.e2e

PREDICT_KEY = TestKey("deploy-metrics-tool", "pb_test-deploy-metrics-key-0123456789", ("predict",))
GATEWAY = "payband_gateway_"
MONITORING = "payband_monitoring_"

# The metrics payband-monitoring exports (issue 8), until monitoring_families() scrapes them.
DOCUMENTED_MONITORING_SERIES = {
    "payband_monitoring_model_info",
    "payband_monitoring_last_run_timestamp_seconds",
    "payband_monitoring_last_success_timestamp_seconds",
    "payband_monitoring_run_duration_seconds",
    "payband_monitoring_runs_total",
    "payband_monitoring_rows_analysed",
    "payband_monitoring_rows_with_outcome",
    "payband_monitoring_univariate_drift",
    "payband_monitoring_univariate_drift_alert",
    "payband_monitoring_multivariate_drift_reconstruction_error",
    "payband_monitoring_multivariate_drift_alert",
    "payband_monitoring_estimated_performance",
    "payband_monitoring_estimated_performance_alert",
    "payband_monitoring_realized_performance",
    "payband_monitoring_realized_performance_alert",
    "payband_monitoring_selection_rate",
    "payband_monitoring_disparate_impact",
    "payband_monitoring_fairness_alert",
}

# Loopback only: a proxy configured in the environment must not see these requests.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET, or POST `body` as JSON; the status and the text of the answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback URLs of servers the tests start
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with _DIRECT.open(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def scrape(url: str) -> set[str]:
    status, text = http(url)
    assert status == 200, text
    return exported_series(text)


def configured(owned: Callable[[str], bool]) -> dict[str, list[str]]:
    """The series names of deploy/ that `owned` selects, with where each is read."""
    found: dict[str, list[str]] = {}
    for query in configured_queries():
        for name in sorted(query.names):
            if owned(name):
                found.setdefault(name, []).append(query.where)
    return found


def owner(name: str) -> str:
    if name in PROMETHEUS_BUILTINS:
        return "prometheus"
    if name.startswith(GATEWAY):
        return "gateway"
    if name.startswith(MONITORING):
        return "monitoring"
    return "mlserver"


def missing(names: dict[str, list[str]], exported: set[str]) -> dict[str, str]:
    """The names not exported, each with where it is read and whether its family exists."""
    families = {family(name) for name in exported}
    return {
        name: f"{'; '.join(where)} (family {family(name)} "
        f"{'is exported, not this series' if family(name) in families else 'is not exported'})"
        for name, where in names.items()
        if name not in exported
    }


@pytest.fixture(scope="module")
def audit_database(postgres_module_database: PostgresConnectionInfo) -> PostgresConnectionInfo:
    upgrade(postgres_module_database.url)
    return postgres_module_database


@pytest.fixture(scope="module")
def gateway(
    serving_server: InferenceServer, audit_database: PostgresConnectionInfo
) -> Iterator[GatewayServer]:
    with gateway_server(
        inference_url=serving_server.url, database_url=audit_database.dsn, keys=[PREDICT_KEY]
    ) as server:
        yield server


@pytest.fixture(scope="module")
def queueing_mlserver(tiny_model: TinyModel) -> Iterator[InferenceServer]:
    """MLServer with a parallel worker and adaptive batching: only then does it export its
    queue histograms (parallel_request_queue, batch_request_queue)."""
    args = ["--workers", "1", "--max-batch-size", "4", "--max-batch-time", "0.01"]
    with inference_server(model_uri=tiny_model.directory, args=args) as server:
        yield server


def v2_request(server: InferenceServer, candidate: dict[str, Any]) -> dict[str, Any]:
    """A one-row V2 inference request with the inputs the served model declares."""
    status, text = http(f"{server.url}/v2/models/{server.model_name}")
    assert status == 200, text
    inputs = json.loads(text)["inputs"]
    return {
        "inputs": [
            {
                "name": spec["name"],
                "datatype": spec["datatype"],
                "shape": [1, 1],
                "data": [candidate[spec["name"]]],
            }
            for spec in inputs
        ]
    }


@dataclass(frozen=True)
class Exported:
    """Series names each service exports after some traffic."""

    gateway: set[str]
    mlserver: set[str]


@pytest.fixture(scope="module")
def exported(
    gateway: GatewayServer, serving_server: InferenceServer, queueing_mlserver: InferenceServer
) -> Exported:
    """One prediction and one invalid request through the gateway, one inference on the
    queueing MLServer, then a scrape of each /metrics (labelled families have samples)."""
    predictions = f"{gateway.url}/v1/predictions"
    status, text = http(predictions, {"candidate": EXAMPLE_CANDIDATE}, PREDICT_KEY.headers)
    assert status == 200, text
    invalid = {"candidate": {**EXAMPLE_CANDIDATE, "age": 7}}
    status, text = http(predictions, invalid, PREDICT_KEY.headers)
    assert status == 422, text
    request = v2_request(queueing_mlserver, EXAMPLE_CANDIDATE)
    status, text = http(queueing_mlserver.infer_url, request)
    assert status == 200, text
    return Exported(
        gateway=scrape(f"{gateway.url}/metrics"),
        mlserver=scrape(serving_server.metrics_url) | scrape(queueing_mlserver.metrics_url),
    )


def test_every_gateway_metric_in_the_config_is_exported(exported: Exported) -> None:
    names = configured(lambda name: owner(name) == "gateway")
    assert "payband_gateway_request_duration_seconds_bucket" in names
    assert missing(names, exported.gateway) == {}


def test_every_gateway_family_is_on_a_dashboard_or_in_an_alert(exported: Exported) -> None:
    shown = {family(name) for name in configured(lambda name: owner(name) == "gateway")}
    offered = {family(name) for name in exported.gateway if name.startswith(GATEWAY)}
    assert len(offered) == 8
    assert offered - shown == set()


def test_every_mlserver_metric_in_the_config_is_exported(exported: Exported) -> None:
    names = configured(lambda name: owner(name) == "mlserver")
    assert {
        "rest_server_requests_total",
        "model_infer_request_duration_sum",
        "payband_inference_rows_bucket",
        "parallel_request_queue_bucket",
        "batch_request_queue_bucket",
    } <= names.keys()
    assert missing(names, exported.mlserver) == {}


def test_queue_metrics_exist_only_with_workers_and_batching(exported: Exported) -> None:
    """Why the queueing MLServer is started: the default one lacks the queue histograms."""
    assert "parallel_request_queue_bucket" in exported.mlserver
    assert "batch_request_queue_bucket" in exported.mlserver


def test_monitoring_metrics_in_the_config_are_the_documented_ones() -> None:
    names = configured(lambda name: owner(name) == "monitoring")
    assert len(names) >= 15
    assert missing(names, DOCUMENTED_MONITORING_SERIES) == {}


@pytest.fixture(scope="module")
def monitoring(
    mlflow_champion: MlflowChampion,
    audit_database: PostgresConnectionInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MonitoringServer]:
    """``payband-monitoring serve`` after its first successful run (the champion's version has
    no records here: every family is declared, the model-health ones without samples)."""
    migrate(audit_database.url)
    with monitoring_server(
        database_url=audit_database.url,
        tracking_uri=mlflow_champion.uri,
        state_dir=tmp_path_factory.mktemp("monitoring"),
    ) as server:
        deadline = time.monotonic() + 120
        while http(f"{server.url}/readyz")[0] != 200:
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.5)
        yield server


def test_every_monitoring_metric_in_the_config_is_exported(monitoring: MonitoringServer) -> None:
    names = configured(lambda name: owner(name) == "monitoring")
    status, text = http(f"{monitoring.url}/metrics")
    assert status == 200
    assert missing(names, exported_series(text)) == {}
