"""promtool on deploy/prometheus: the config and rules are valid, the rules' unit tests pass,
and every dashboard query is valid PromQL."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy_config import PROMETHEUS, alert_rules, configured_queries, fetch_promtool


@pytest.fixture(scope="session")
def promtool(tmp_path_factory: pytest.TempPathFactory) -> str:
    """promtool's path: on PATH (.ci/run installs Debian's prometheus package), else fetched
    from that package without installing it. Never a skip: where neither works, the tests fail
    and say why."""
    path = shutil.which("promtool")
    if path is not None:
        return path
    try:
        return str(fetch_promtool(tmp_path_factory.mktemp("promtool")))
    except (RuntimeError, StopIteration) as error:
        pytest.fail(f"promtool is not on PATH and could not be fetched: {error}")


def run(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def test_config_is_valid(promtool: str) -> None:
    result = run(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid prometheus config file syntax" in result.stdout
    # The rule_files glob finds the rules relative to the config file.
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_rules_are_valid(promtool: str) -> None:
    result = run(promtool, "check", "rules", PROMETHEUS / "rules" / "payband.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", PROMETHEUS / "tests" / "payband_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "FAILED" not in result.stdout


# Grafana's variables become plain values so that promtool can parse the queries.
_GRAFANA_RANGES = re.compile(r"\$__(?:rate_interval|interval|range)\b")
_GRAFANA_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]")


def _as_promql(expr: str) -> str:
    return _GRAFANA_VARIABLES.sub("x", _GRAFANA_RANGES.sub("5m", expr))


def _check_queries(promtool: str, exprs: list[str], directory: Path) -> str:
    """promtool's verdict on the expressions, written as recording rules."""
    rules = [{"record": f"dashboard:query_{i}", "expr": _as_promql(e)} for i, e in enumerate(exprs)]
    path = directory / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run(promtool, "check", "rules", path)
    return result.stdout + result.stderr if result.returncode else ""


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = [query.expr for query in configured_queries() if query.kind == "panel"]
    assert len(exprs) > 40
    assert _check_queries(promtool, exprs, tmp_path) == ""


def test_the_promql_check_finds_a_broken_query(promtool: str, tmp_path: Path) -> None:
    broken = "sum by (le (rate(x_bucket[$__rate_interval]))"
    assert "dashboard:query_1" in _check_queries(promtool, ["up", broken], tmp_path)


def test_promtool_can_be_fetched_without_installing_it(tmp_path: Path) -> None:
    """The fallback of the promtool fixture, exercised even where promtool is installed."""
    fetched = fetch_promtool(tmp_path)

    done = subprocess.run([fetched, "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).startswith("promtool, version 2.")
    assert shutil.which("promtool") != str(fetched)
