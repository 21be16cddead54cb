"""The deploy/ configuration as data, for the tests: alert rules, dashboards, and the metric
names their PromQL reads (``metric_names``), comparable with what services export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

__all__ = [
    "DASHBOARDS",
    "DATASOURCE",
    "DEPLOY",
    "K8S",
    "PROMETHEUS",
    "PROMETHEUS_BUILTINS",
    "Query",
    "alert_rules",
    "configured_queries",
    "dashboards",
    "exported_series",
    "family",
    "fetch_promtool",
    "load_yaml",
    "load_yaml_documents",
    "metric_names",
    "panels",
    "scrape_jobs",
    "variable_query",
]

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
K8S = DEPLOY / "k8s"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

# Series Prometheus makes itself (per target, and for alerts); no service exports them.
PROMETHEUS_BUILTINS = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "ALERTS",
        "ALERTS_FOR_STATE",
    }
)

# Aggregation operators may be followed by by/without before their parenthesis.
_AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
# Keywords whose parenthesised list holds label names, not series.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _LABEL_LIST_KEYWORDS | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\])
    | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![\w.]))
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<identifier>[A-Za-z_:][\w:]*)
    | (?P<brace>\{(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`|[^}"'`])*\})
    | (?P<bracket>\[[^\]]*\])
    | (?P<open>\()
    | (?P<close>\))
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# {__name__="x"} names a series by its matcher; =~ and != name no one series.
_NAME_MATCHER = re.compile(
    r"""__name__\s*=(?![=~])\s*(?:"((?:\\.|[^"\\])*)"|'((?:\\.|[^'\\])*)')"""
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    found = []
    for match in _TOKEN.finditer(expr):
        kind = match.lastgroup
        assert kind is not None
        if kind not in {"space", "comment"}:
            found.append((kind, match.group()))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric (series) names a PromQL expression reads, as written: ``x_bucket`` stays
    ``x_bucket``. Functions, aggregations, keywords, label names, durations, strings,
    numbers and Grafana variables (``$model``, ``${model:regex}``, ``$__rate_interval``,
    ``[[model]]``) are not names."""
    tokens = _tokens(expr)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][0] if i + 1 < len(tokens) else None
        if kind == "brace":
            for double, single in _NAME_MATCHER.findall(text):
                names.add(double or single)
        elif kind == "identifier":
            word = text.lower()
            if word in _LABEL_LIST_KEYWORDS and following == "open":
                i = _after_parenthesis(tokens, i + 1)
                continue
            if following != "open" and word not in _KEYWORDS and word not in _AGGREGATIONS:
                names.add(text)
        i += 1
    return names


def _after_parenthesis(tokens: list[tuple[str, str]], start: int) -> int:
    """The index after the parenthesis that closes the one at `start`."""
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i][0] == "open":
            depth += 1
        elif tokens[i][0] == "close":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced parenthesis in {' '.join(text for _, text in tokens)!r}")


_SERIES_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def family(name: str) -> str:
    """The metric family a series name belongs to: histogram and summary series
    (``_bucket``, ``_sum``, ``_count``) and counters (``_total``, ``_created``) map back to
    their family; other names are their own family."""
    for suffix in _SERIES_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


# The series a family of each type has in the text format (a counter's # TYPE line already
# names its _total series).
_SERIES_OF_TYPE = {
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def exported_series(exposition: str) -> set[str]:
    """Every series name a Prometheus text exposition offers: from its ``# TYPE`` lines (so
    labelled families without samples yet count too) plus the names of its samples."""
    series: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            series.update(name + suffix for suffix in _SERIES_OF_TYPE.get(kind.strip(), ("",)))
        elif line and not line.startswith("#"):
            series.add(re.split(r"[\s{]", line, maxsplit=1)[0])
    return series


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    """Every non-empty document of a multi-document YAML file, in order."""
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def scrape_jobs() -> dict[str, dict[str, Any]]:
    """The scrape configs of deploy/prometheus/prometheus.yml by job name."""
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    return {job["job_name"]: job for job in config["scrape_configs"]}


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of deploy/prometheus/rules/*.yml."""
    return [
        rule
        for path in sorted((PROMETHEUS / "rules").glob("*.yml"))
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def dashboards() -> dict[str, dict[str, Any]]:
    """The dashboards by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variable_query(variable: dict[str, Any]) -> str:
    """A query variable's query: Grafana stores it as a string or as an object."""
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else query


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<series>.*),\s*\w+\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.DOTALL)


def _variable_metric_names(query: str) -> set[str]:
    """Metric names of a Grafana Prometheus variable query (label_values(series, label),
    query_result(expr)); label_values(label) and metrics(regex) read no one series."""
    if match := _LABEL_VALUES.match(query):
        return metric_names(match["series"])
    if match := _QUERY_RESULT.match(query):
        return metric_names(match["expr"])
    return set()


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the configuration, what holds it and where it is."""

    kind: Literal["alert", "panel", "variable"]
    where: str
    expr: str
    names: frozenset[str]


def configured_queries() -> list[Query]:
    """Every expression of the alert rules, dashboard targets and dashboard variables."""
    found = [
        Query("alert", rule["alert"], rule["expr"], frozenset(metric_names(rule["expr"])))
        for rule in alert_rules()
    ]
    for file, dashboard in dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                expr = target.get("expr", "")
                where = f"{file} panel {panel.get('title')!r} {target.get('refId')}"
                found.append(Query("panel", where, expr, frozenset(metric_names(expr))))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable_query(variable)
                names = frozenset(_variable_metric_names(query))
                where = f"{file} variable {variable['name']}"
                found.append(Query("variable", where, query, names))
    return found


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"{command[0]} {command[1]} failed: {lines[-1] if lines else '?'}")


def fetch_promtool(directory: Path) -> Path:
    """promtool from Debian's prometheus package, downloaded and unpacked under ``directory``
    with apt's own tools and private package lists: no root, nothing installed. For machines
    without promtool on PATH (.ci/run installs the package; a developer need not)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("apt-get and dpkg-deb are needed to fetch Debian's prometheus package")
    lists, cache = directory / "lists", directory / "cache"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    apt = ["apt-get", "-q", "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={cache}"]
    apt += ["-o", "Debug::NoLocking=1"]
    _run([*apt, "update"], directory)
    _run([*apt, "download", "prometheus"], directory)
    package = next(directory.glob("prometheus_*.deb"))
    _run(["dpkg-deb", "-x", str(package), str(directory / "root")], directory)
    return directory / "root" / "usr" / "bin" / "promtool"


# deploy/compose.yaml, its env file and what it must agree with (tests/test_deploy_compose.py).

COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"


def compose_file() -> dict[str, Any]:
    """deploy/compose.yaml as Compose reads it before interpolation (anchors and merge keys
    resolved, ``${VAR}`` left as written)."""
    return load_yaml(COMPOSE)


def compose_spec_schema() -> dict[str, Any]:
    """The compose specification's JSON Schema, as vendored by check-jsonschema (offline)."""
    from importlib.resources import files

    vendor = files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Interpolation:
    """One ``$`` expression of a Compose file: ``${name}``, ``${name<op><arg>}`` or ``$name``
    (``op`` is ``:-``, ``-``, ``:?``, ``?``, ``:+`` or ``+``; empty when there is none)."""

    name: str
    op: str
    arg: str
    braced: bool


_INTERPOLATION = re.compile(
    r"""
    \$\$                                                    # an escaped dollar: no variable
    | \$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}
    | \$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<bad>\$\{[^}]*\}?|\$)                              # anything else after a $
    """,
    re.VERBOSE,
)


def interpolations(text: str) -> list[Interpolation]:
    """Every variable ``text`` interpolates, in order, with Compose's rules: ``$$`` is a
    literal dollar. A ``$`` that starts no valid expression raises ValueError, as Compose
    refuses it."""
    found = []
    for match in _INTERPOLATION.finditer(text):
        if match["bad"] is not None:
            raise ValueError(f"invalid interpolation {match['bad']!r} at offset {match.start()}")
        if match["name"]:
            found.append(Interpolation(match["name"], match["op"] or "", match["arg"] or "", True))
        elif match["bare"]:
            found.append(Interpolation(match["bare"], "", "", False))
    return found


@dataclass(frozen=True)
class EnvVariable:
    """One ``NAME=value`` line of an env file and the comment lines right above it."""

    name: str
    value: str
    comment: str


def env_file(path: Path = ENV_EXAMPLE) -> dict[str, EnvVariable]:
    """The variables of an env file by name; a name given twice raises ValueError."""
    found: dict[str, EnvVariable] = {}
    comment: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            comment = []
        elif stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
        else:
            name, equals, value = stripped.partition("=")
            if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{path.name}:{number}: not NAME=value: {line!r}")
            if name in found:
                raise ValueError(f"{path.name}:{number}: {name} is set twice")
            found[name] = EnvVariable(name, value, " ".join(comment))
            comment = []
    return found


def scrape_targets() -> list[tuple[str, str, int]]:
    """(job, host, port) of every static target of deploy/prometheus/prometheus.yml."""
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    found = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                found.append((job["job_name"], host, int(port)))
    return found


def grafana_datasources() -> list[dict[str, Any]]:
    """The datasources Grafana is provisioned with."""
    return [
        source
        for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
        for source in load_yaml(path)["datasources"]
    ]


def grafana_dashboard_providers() -> list[dict[str, Any]]:
    """The dashboard providers Grafana is provisioned with."""
    return [
        provider
        for path in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
        for provider in load_yaml(path)["providers"]
    ]


def field_errors(settings: type[BaseSettings], values: dict[str, str]) -> list[str]:
    """What the settings class says about these field values (its field validators
    included), as an environment would give them. Errors of the whole model (the gateway
    reading its key file, say) are not the fields' and are left out."""
    try:
        # The values given win over the environment, and only their errors count.
        settings.model_validate(values)
    except ValidationError as error:
        return [
            f"{problem['loc'][0]}: {problem['msg']}"
            for problem in error.errors()
            if problem["loc"] and problem["loc"][0] in values
        ]
    return []
