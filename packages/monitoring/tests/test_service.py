"""`payband-monitoring serve` as a real process: its loop runs, /metrics exports the latest
run, /report shows it, a failed run is counted and the loop goes on, SIGTERM exits 0."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from payband_local.ports import free_port
from payband_testing.monitoring import MonitoringServer, monitoring_server

# the monitoring service as a real process per case
pytestmark = pytest.mark.e2e


def wait_ready(server: MonitoringServer, timeout: float = 120.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(f"{server.url}/readyz", timeout=5)
        if answer.status_code == 200 or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def samples(server: MonitoringServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_the_service_exports_the_latest_run_and_shows_its_report(
    registry, database, feed, like_reference, shifted, tmp_path
):
    ids = feed.predictions(like_reference(1_000, 41))
    feed.outcomes(ids[:500], feed.truth(like_reference(1_000, 41)[:500], seed=42))
    feed.predictions(shifted(500, 43))
    model = {"model": "salary-band", "version": "1"}

    with monitoring_server(
        database_url=database,
        tracking_uri=registry.uri,
        state_dir=tmp_path / "state",
    ) as server:
        ready = wait_ready(server)
        assert ready.status_code == 200, server.tail()
        found = samples(server)
        report = httpx.get(f"{server.url}/report", timeout=10)

    assert server.process.returncode == 0, server.tail()
    assert value(found, "payband_monitoring_runs_total", outcome="success") == 1
    assert value(found, "payband_monitoring_runs_total", outcome="failure") == 0
    assert value(found, "payband_monitoring_last_success_timestamp_seconds") > time.time() - 300
    assert value(found, "payband_monitoring_model_info", **model) == 1
    assert value(found, "payband_monitoring_rows_analysed", **model) == 1_500
    assert value(found, "payband_monitoring_rows_with_outcome", **model) == 500
    drift = "payband_monitoring_univariate_drift_alert"
    assert value(found, drift, **model, feature="hours_per_week", method="kolmogorov_smirnov") == 1
    assert value(found, drift, **model, feature="education", method="jensen_shannon") == 1
    assert value(found, drift, **model, feature="age", method="kolmogorov_smirnov") == 0
    assert value(found, drift, **model, feature="sex", method="l_infinity") == 0
    statistic = "payband_monitoring_univariate_drift"
    assert value(found, statistic, **model, feature="hours_per_week", method="jensen_shannon") > 0.1
    for metric in ("roc_auc", "accuracy", "f1"):
        assert value(found, "payband_monitoring_estimated_performance", **model, metric=metric) > 0
        # Outcomes came for the first chunk only: realized performance is that chunk's.
        assert value(found, "payband_monitoring_realized_performance", **model, metric=metric) > 0
    for attribute in ("sex", "race"):
        impact = value(found, "payband_monitoring_disparate_impact", **model, attribute=attribute)
        assert 0 <= impact <= 1
        alert = value(found, "payband_monitoring_fairness_alert", **model, attribute=attribute)
        assert alert == (1 if impact < 0.8 else 0)
    rate = value(
        found, "payband_monitoring_selection_rate", **model, attribute="sex", group="female"
    )
    assert 0 <= rate <= 1

    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    assert "payband monitoring: salary-band version 1" in report.text
    assert "hours_per_week" in report.text

    # One JSON object per line, the run's summary among them; no candidate values.
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    done = [line for line in lines if line["message"] == "monitoring run done"]
    assert done
    assert done[0]["rows_analysed"] == 1_500
    assert "female" not in server.log()


def test_a_failing_run_is_counted_and_the_loop_goes_on(registry, database, tmp_path):
    with monitoring_server(
        database_url=database,
        tracking_uri=registry.uri,
        state_dir=tmp_path / "state",
        env={"PAYBAND_MONITORING_CHAMPION_ALIAS": "nobody"},
        interval_s=0.5,
    ) as server:
        deadline = time.monotonic() + 60
        failures = 0.0
        while failures < 2 and time.monotonic() < deadline:
            failures = value(samples(server), "payband_monitoring_runs_total", outcome="failure")
            time.sleep(0.2)
        ready = httpx.get(f"{server.url}/readyz", timeout=5)
        report = httpx.get(f"{server.url}/report", timeout=5)
        found = samples(server)

    assert failures >= 2, server.tail()
    assert ready.status_code == 503
    assert ready.json()["code"] == "not_ready"
    assert "cannot resolve model 'salary-band' alias 'nobody'" in ready.json()["message"]
    assert report.status_code == 404
    assert report.json()["code"] == "no_report"
    assert value(found, "payband_monitoring_last_success_timestamp_seconds") == 0
    assert value(found, "payband_monitoring_last_run_timestamp_seconds") > 0
    assert not [name for name, _ in found if name == "payband_monitoring_model_info"]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"PAYBAND_MONITORING_INTERVAL_S": "0"}, "error: invalid setting: interval_s: "),
        (
            {"PAYBAND_MONITORING_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
            "error: cannot reach the monitoring database at 127.0.0.1:1/x: ",
        ),
    ],
)
def test_serve_refuses_to_start_with_one_line(registry, database, tmp_path, variables, message):
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "PAYBAND_MONITORING_DATABASE_URL": database,
        "PAYBAND_MLFLOW_TRACKING_URI": registry.uri,
        "PAYBAND_MONITORING_STATE_DIR": str(tmp_path),
        **variables,
    }
    done = subprocess.run(
        [sys.executable, "-m", "payband_monitoring", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 2
    assert done.stderr.startswith(message)
    assert len(done.stderr.strip().splitlines()) == 1
