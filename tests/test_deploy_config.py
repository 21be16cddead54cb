"""The deploy/ configuration's shape: the PromQL name parser the other deploy tests rely on,
the alert rules, the dashboards and Grafana's provisioning (no server needed)."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

from tests.deploy_config import (
    DASHBOARDS,
    DATASOURCE,
    DEPLOY,
    PROMETHEUS,
    alert_rules,
    configured_queries,
    dashboards,
    exported_series,
    family,
    load_yaml,
    metric_names,
    panels,
    variable_query,
)

GRAFANA = DEPLOY / "grafana"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="gateway"} == 0', {"up"}),
        (
            'sum by (job) (rate(payband_gateway_requests_total{route=~"/v1/.*", status=~"5.."}'
            "[5m])) / sum by (job) (rate(payband_gateway_requests_total[5m])) > 0.05",
            {"payband_gateway_requests_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (le, stage, outcome) "
            "(rate(payband_gateway_upstream_duration_seconds_bucket[$__rate_interval])))",
            {"payband_gateway_upstream_duration_seconds_bucket"},
        ),
        # Aggregations are case-insensitive and take their grouping before or after.
        ("SUM BY (job) (x) + sum(y) without (instance, le)", {"x", "y"}),
        ("count(x) by (job) / ignoring(le) group_left count(y)", {"x", "y"}),
        (
            "a * on (instance, job) group_left(model, version) b unless on() c",
            {"a", "b", "c"},
        ),
        ("a and b or c > bool 1", {"a", "b", "c"}),
        ("x offset 5m + x offset -1h30m - x @ start() + x @ 1609746000", {"x"}),
        (
            "rate(x_total[1h:5m]) > 1e3 and y < 0x1F or z != Inf and w == -NaN",
            {"x_total", "y", "z", "w"},
        ),
        ('label_replace(up{job="a"}, "dst", "$1", "src", "(.*)")', {"up"}),
        ('count_values("version", build_info) and topk(5, other)', {"build_info", "other"}),
        (
            '{__name__="payband_gateway_audit_available", job="gateway"}',
            {"payband_gateway_audit_available"},
        ),
        ("{__name__=~\"payband_.*\"} or {__name__!='x'}", set()),
        ("job:payband_requests:rate5m * 2", {"job:payband_requests:rate5m"}),
        (
            "absent(payband_monitoring_last_success_timestamp_seconds)",
            {"payband_monitoring_last_success_timestamp_seconds"},
        ),
        ("time() - last_success > 7200 and vector(1) and scalar(x) > 0", {"last_success", "x"}),
        # Grafana's variables in every spelling, inside and outside matchers and ranges.
        (
            'x{model="$model", version=~"${version:regex}", job="[[job]]"}[$__rate_interval]',
            {"x"},
        ),
        ("histogram_quantile($quantile, rate(x_bucket[$__interval])) * ${factor}", {"x_bucket"}),
        ('y{path=~".*/infer", a="}"} # a comment naming z\n + w', {"y", "w"}),
        ("1 + 2.5 * .5 - 3e-2", set()),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_metric_names_refuses_an_unbalanced_grouping() -> None:
    with pytest.raises(ValueError, match="unbalanced parenthesis"):
        metric_names("sum by (job x")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "payband_gateway_upstream_duration_seconds_bucket",
            "payband_gateway_upstream_duration_seconds",
        ),
        ("model_infer_request_duration_sum", "model_infer_request_duration"),
        ("model_infer_request_duration_count", "model_infer_request_duration"),
        ("payband_gateway_requests_total", "payband_gateway_requests"),
        ("payband_gateway_requests_created", "payband_gateway_requests"),
        ("payband_gateway_audit_available", "payband_gateway_audit_available"),
        ("payband_monitoring_model_info", "payband_monitoring_model_info"),
        ("_total", "_total"),
    ],
)
def test_family(name: str, expected: str) -> None:
    assert family(name) == expected


def test_exported_series_follow_the_types() -> None:
    exposition = "\n".join(
        [
            "# HELP requests_total Requests.",
            "# TYPE requests_total counter",
            'requests_total{route="/"} 1.0',
            "# TYPE requests_created gauge",
            'requests_created{route="/"} 1.7e9',
            "# TYPE duration_seconds histogram",
            "# TYPE latency summary",
            "# TYPE available gauge",
            "available 1.0",
            "untyped_sample 3",
        ]
    )
    assert exported_series(exposition) == {
        "requests_total",
        "requests_created",
        # A histogram without samples yet still offers its series; not the bare name.
        "duration_seconds_bucket",
        "duration_seconds_sum",
        "duration_seconds_count",
        "latency",
        "latency_sum",
        "latency_count",
        "available",
        "untyped_sample",
    }


def test_every_query_names_a_metric() -> None:
    queries = configured_queries()
    assert len(queries) > 40
    assert [query.where for query in queries if not query.names] == []


# Alert rules


def test_alerts_have_unique_names_a_severity_and_their_texts() -> None:
    rules = alert_rules()
    names = Counter(rule["alert"] for rule in rules)
    assert [name for name, count in names.items() if count > 1] == []
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), rule["alert"]
        assert all(text.strip() for text in rule["annotations"].values()), rule["alert"]


def test_the_briefs_alerts_exist() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    reads = {name: metric_names(expr) for name, expr in exprs.items()}
    for metric in [
        "payband_monitoring_univariate_drift_alert",
        "payband_monitoring_multivariate_drift_alert",
        "payband_monitoring_estimated_performance_alert",
        "payband_monitoring_realized_performance_alert",
        "payband_monitoring_fairness_alert",
        "payband_monitoring_last_success_timestamp_seconds",
        "payband_gateway_requests_total",
        "payband_gateway_audit_write_failures_total",
        "payband_gateway_audit_available",
        "up",
    ]:
        assert any(metric in names for names in reads.values()), metric


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    """Each alert has a promtool case where it fires and one where it stays silent."""
    tests = load_yaml(PROMETHEUS / "tests" / "payband_test.yml")
    assert tests["rule_files"] == ["../rules/payband.yml"]
    cases = [case for group in tests["tests"] for case in group.get("alert_rule_test", [])]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set()
    assert names - silent == set()


# Dashboards


def test_dashboards_are_the_two_expected() -> None:
    assert sorted(dashboards()) == ["model-health.json", "operations.json"]


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_dashboard_is_valid_json_for_grafana_11(path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["schemaVersion"] == 39
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard["title"].strip()
    # Grafana assigns ids on import; a provisioned dashboard must not carry a database id.
    assert dashboard.get("id") is None


def test_dashboard_uids_and_titles_are_unique() -> None:
    boards = list(dashboards().values())
    assert len({board["uid"] for board in boards}) == len(boards)
    assert len({board["title"] for board in boards}) == len(boards)


@pytest.mark.parametrize("name", ["operations.json", "model-health.json"])
def test_every_panel_queries_prometheus(name: str) -> None:
    dashboard = dashboards()[name]
    found = list(panels(dashboard))
    assert len(found) >= 10
    assert len({panel["id"] for panel in found}) == len(found)
    for panel in found:
        title = panel.get("title")
        assert panel.get("datasource") == DATASOURCE, title
        targets = panel.get("targets", [])
        assert any(target.get("expr", "").strip() for target in targets), title
        for target in targets:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, title
        assert len({target["refId"] for target in targets}) == len(targets), title


@pytest.mark.parametrize("name", ["operations.json", "model-health.json"])
def test_panels_fit_the_grid_without_overlapping(name: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboards()[name]):
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def test_model_health_selects_model_and_version_from_model_info() -> None:
    variables = _variables(dashboards()["model-health.json"])
    assert variable_query(variables["model"]) == (
        "label_values(payband_monitoring_model_info, model)"
    )
    assert variable_query(variables["version"]) == (
        'label_values(payband_monitoring_model_info{model="$model"}, version)'
    )
    for variable in variables.values():
        assert variable["datasource"] == DATASOURCE


# Monitoring families that describe the service, not one model version.
_PER_SERVICE = {
    "payband_monitoring_last_run_timestamp_seconds",
    "payband_monitoring_last_success_timestamp_seconds",
    "payband_monitoring_run_duration_seconds",
    "payband_monitoring_runs_total",
}


def test_model_health_panels_follow_the_selected_model_version() -> None:
    dashboard = dashboards()["model-health.json"]
    for panel in panels(dashboard):
        for target in panel["targets"]:
            if metric_names(target["expr"]) - _PER_SERVICE:
                assert 'model="$model"' in target["expr"], panel["title"]
                assert 'version="$version"' in target["expr"], panel["title"]


def test_disparate_impact_panel_draws_the_four_fifths_line() -> None:
    [panel] = [
        panel
        for panel in panels(dashboards()["model-health.json"])
        if any(
            "payband_monitoring_disparate_impact" in metric_names(t["expr"])
            for t in panel["targets"]
        )
    ]
    defaults = panel["fieldConfig"]["defaults"]
    assert 0.8 in [step["value"] for step in defaults["thresholds"]["steps"]]
    assert defaults["custom"]["thresholdsStyle"]["mode"] in {"line", "dashed", "line+area"}


def test_operations_covers_gateway_and_mlserver() -> None:
    names = {
        name
        for panel in panels(dashboards()["operations.json"])
        for target in panel["targets"]
        for name in metric_names(target["expr"])
    }
    assert {
        "payband_gateway_requests_total",
        "payband_gateway_request_duration_seconds_bucket",
        "payband_gateway_upstream_duration_seconds_bucket",
        "payband_gateway_audit_write_duration_seconds_bucket",
        "payband_gateway_audit_write_failures_total",
        "payband_gateway_audit_available",
        "payband_gateway_predictions_total",
        "payband_gateway_model_info",
        "rest_server_requests_total",
        "rest_server_request_duration_seconds_bucket",
        "parallel_request_queue_bucket",
        "batch_request_queue_bucket",
        "payband_inference_rows_bucket",
    } <= names


# Grafana provisioning


def test_datasource_is_the_one_dashboards_name() -> None:
    [source] = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert {"type": source["type"], "uid": source["uid"]} == DATASOURCE
    assert source["url"] == "http://prometheus:9090"


def test_dashboard_provider_reads_the_mounted_dashboards_directory() -> None:
    [provider] = load_yaml(GRAFANA / "provisioning" / "dashboards" / "payband.yml")["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    # The README documents the mount that puts deploy/grafana/dashboards at that path.
    readme = (DEPLOY / "README.md").read_text()
    assert f"./grafana/dashboards:{path}" in readme
