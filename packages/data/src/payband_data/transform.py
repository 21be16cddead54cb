"""Run the dbt project that ships in this package: raw tables -> candidates -> features.

dbt runs as a subprocess of this interpreter (``dbt.cli.main``): dbt keeps global state and
logging handlers that do not belong in a long-lived process, and a child process is also how
dagster-dbt runs the same project. Everything dbt writes (target/, logs/) goes to a work
directory, so the installed package may be read-only; nothing phones home.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from payband_contracts import SalaryBands
from payband_contracts.bands import MAX_EDGES
from payband_data.db import connect, dbt_env
from payband_data.errors import DataError

__all__ = [
    "ADULT_BAND_EDGES",
    "DBT_PROJECT_DIR",
    "DbtNodeResult",
    "DbtResult",
    "TransformError",
    "build_features",
    "dbt_environment",
    "dbt_vars",
    "run_dbt",
    "validate_band_edges",
]

DBT_PROJECT_DIR = Path(__file__).with_name("dbt_project")
SOURCES = ("adult", "pums")
# UCI Adult's label is income <=50K or >50K: no other band edges can be computed from it.
ADULT_BAND_EDGES: tuple[int, ...] = (50_000,)

_DBT_MAIN = "import sys; from dbt.cli.main import cli; sys.argv[0] = 'dbt'; sys.exit(cli())"
_FAILED = frozenset({"error", "fail", "runtime error"})
# Commands that take no --vars.
_NO_VARS = frozenset({"clean", "deps", "init", "--version", "--help"})
_MAX_MESSAGE_LINES = 20
_MAX_NAMED = 5
_EXAMPLES = 3
_ERROR_HEADER = re.compile(r"^\w+ Error in \w+ ")
_ERROR_TRAILERS = ("LINE ", "^", "compiled code at", "compiled Code at")
# dbt's framing of a project-level error: the bare kind, the node header, the macro stack.
_ERROR_NOISE = re.compile(r"^(Encountered an error:|\w+ Error|\w+ Error in \w+ .*|> .*)$")


class TransformError(DataError):
    """dbt failed (a model, a test, or the project), or its inputs are invalid."""

    def __init__(self, message: str, result: DbtResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class DbtNodeResult:
    """The outcome of one node (model, seed, test) in ``run_results.json``."""

    unique_id: str
    resource_type: str
    name: str
    status: str
    message: str | None
    failures: int | None
    execution_time_s: float
    compiled_code: str | None = None
    examples: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status in _FAILED

    def describe(self) -> str:
        """One line: kind, name and what went wrong (a failed test: some offending values)."""
        text = _essence(self.message or self.status)
        if self.resource_type == "test" and self.failures is not None:
            text = f"{self.failures} failing row(s)"
            if self.examples:
                text += ", e.g. " + "; ".join(self.examples)
        return f"{self.resource_type} {self.name}: {self.status}: {text}"


@dataclass(frozen=True)
class DbtResult:
    """What one dbt invocation did."""

    args: tuple[str, ...]
    returncode: int
    nodes: tuple[DbtNodeResult, ...]
    errors: tuple[str, ...]
    elapsed_s: float
    target_path: Path
    log_path: Path

    @property
    def success(self) -> bool:
        return self.returncode == 0

    @property
    def failures(self) -> tuple[DbtNodeResult, ...]:
        return tuple(node for node in self.nodes if node.failed)

    def count(self, *statuses: str) -> int:
        return sum(node.status in statuses for node in self.nodes)

    def __str__(self) -> str:
        return (
            f"dbt {' '.join(self.args)}: {self.count('success', 'pass')} ok, "
            f"{self.count('warn')} warned, {len(self.failures)} failed, "
            f"{self.count('skipped')} skipped in {self.elapsed_s:.1f} s"
        )

    def failure_message(self) -> str:
        """What failed: a first line naming it, then one line per failed node, not dbt's log."""
        failed = self.failures
        if failed:
            names = [f"{node.resource_type} {node.name}" for node in failed]
            if len(names) > _MAX_NAMED:
                names = [*names[:_MAX_NAMED], f"{len(names) - _MAX_NAMED} more"]
            skipped = self.count("skipped")
            head = ", ".join(names) + (f" ({skipped} node(s) skipped)" if skipped else "")
            lines = [node.describe() for node in failed]
        else:
            details = [line for line in self.errors if not _ERROR_NOISE.match(line)]
            if not details:
                details = [f"dbt exited with code {self.returncode}; see {self.log_path}"]
            head, lines = details[0], details[1:]
        if len(lines) > _MAX_MESSAGE_LINES:
            lines = [*lines[:_MAX_MESSAGE_LINES], f"... and {len(lines) - _MAX_MESSAGE_LINES} more"]
        return "\n".join([f"dbt {' '.join(self.args)} failed: {head}", *lines])


def _essence(message: str) -> str:
    """The line of a dbt error message that says what went wrong.

    dbt wraps the database's message in a header ("Database Error in model x (path)") and
    follows it with the statement's position and the compiled file; both are left out.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    useful = [
        line
        for line in lines
        if not _ERROR_HEADER.match(line) and not line.startswith(_ERROR_TRAILERS)
    ]
    return (useful or lines or [message])[0]


def validate_band_edges(source: str, band_edges: Sequence[float]) -> tuple[int, ...]:
    """Band edges as ascending positive whole USD amounts; Adult allows only [50000]."""
    if source not in SOURCES:
        raise TransformError(f"source {source!r} is not one of: {', '.join(SOURCES)}")
    edges: list[int] = []
    for edge in band_edges:
        if isinstance(edge, bool) or not isinstance(edge, int | float) or edge != int(edge):
            raise TransformError(f"band edges must be whole USD amounts, got {edge!r}")
        edges.append(int(edge))
    if not edges:
        raise TransformError("band edges must hold at least one amount, e.g. [50000]")
    if len(edges) > MAX_EDGES:
        raise TransformError(f"at most {MAX_EDGES} band edges are allowed, got {len(edges)}")
    if edges[0] <= 0:
        raise TransformError(f"band edges must be positive, got {edges}")
    for lower, upper in itertools.pairwise(edges):
        if upper <= lower:
            raise TransformError(f"band edges must be strictly ascending, got {edges}")
    if source == "adult" and tuple(edges) != ADULT_BAND_EDGES:
        raise TransformError(
            f"source adult supports only band edges {list(ADULT_BAND_EDGES)}: UCI Adult records "
            f"income only as <=50K or >50K, so it cannot give bands for {edges}; "
            "use source pums for other bands"
        )
    return tuple(edges)


def dbt_vars(source: str, band_edges: Sequence[float]) -> dict[str, Any]:
    """The project's vars: source, band_edges and the labels payband_contracts gives them."""
    edges = validate_band_edges(source, band_edges)
    labels = SalaryBands(edges_usd=tuple(float(edge) for edge in edges)).labels
    return {"source": source, "band_edges": list(edges), "band_labels": list(labels)}


def dbt_environment(database_url: str, work_dir: Path) -> dict[str, str]:
    """Variables for a dbt run of this project: the connection, where dbt writes, no tracking.

    Also what a dagster-dbt ``DbtCliResource`` needs in its environment.
    """
    work_dir = Path(work_dir)
    return {
        **dbt_env(database_url),
        "DBT_PROJECT_DIR": str(DBT_PROJECT_DIR),
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        "DBT_TARGET_PATH": str(work_dir / "target"),
        "DBT_LOG_PATH": str(work_dir / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        # Only compares the installed dbt with require-dbt-version; off for a quiet log.
        "DBT_VERSION_CHECK": "false",
        "DBT_USE_COLORS": "false",
    }


def _node_results(path: Path) -> tuple[DbtNodeResult, ...]:
    try:
        results = json.loads(path.read_text())["results"]
    except (FileNotFoundError, ValueError, KeyError):
        return ()
    nodes = []
    for entry in results:
        # <type>.<project>.<name>[.<hash or version>]
        parts = str(entry["unique_id"]).split(".")
        nodes.append(
            DbtNodeResult(
                unique_id=entry["unique_id"],
                resource_type=parts[0],
                name=parts[2] if len(parts) > 2 else parts[-1],
                status=str(entry.get("status")),
                message=entry.get("message"),
                failures=entry.get("failures"),
                execution_time_s=float(entry.get("execution_time") or 0.0),
                compiled_code=entry.get("compiled_code"),
            )
        )
    return tuple(nodes)


def _with_examples(
    nodes: tuple[DbtNodeResult, ...], database_url: str
) -> tuple[DbtNodeResult, ...]:
    """Failed tests with a few of the rows they found, e.g. the unmapped codes.

    The tests' own compiled SELECTs are run again, read-only; examples are a courtesy, so a
    database error just leaves them out.
    """
    failed = [node for node in nodes if node.failed and node.compiled_code and node.failures]
    if not failed:
        return nodes
    examples: dict[str, tuple[str, ...]] = {}
    try:
        with connect(database_url, autocommit=True) as conn:
            for node in failed:
                # The project's own compiled test, not outside input; run read-only.
                query = f"SELECT * FROM ({node.compiled_code}) AS failing LIMIT {_EXAMPLES}"  # noqa: S608
                with conn.transaction():
                    conn.execute("SET TRANSACTION READ ONLY")
                    rows = conn.execute(query.encode()).fetchall()
                shown = [", ".join(str(value) for value in row) for row in rows]
                if any(row and any(value is not None for value in row) for row in rows):
                    examples[node.unique_id] = tuple(text[:80] for text in shown)
    except (DataError, psycopg.Error):
        return nodes
    return tuple(
        replace(node, examples=examples[node.unique_id]) if node.unique_id in examples else node
        for node in nodes
    )


def _error_events(stdout: str) -> tuple[str, ...]:
    """Messages of dbt's error-level log events (JSON lines on stdout)."""
    messages: list[str] = []
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        info = event.get("info", {}) if isinstance(event, dict) else {}
        if info.get("level") == "error" and (message := str(info.get("msg", "")).strip()):
            messages.extend(part.strip() for part in message.splitlines() if part.strip())
    return tuple(messages)


def _require_dbt_postgres() -> None:
    """dbt runs in a child process; say plainly if it or its PostgreSQL adapter is missing."""
    if importlib.util.find_spec("dbt.cli.main") is None:
        raise TransformError(f"dbt-core is not installed in {sys.prefix}")
    if importlib.util.find_spec("dbt.adapters.postgres") is None:
        raise TransformError(f"dbt-postgres is not installed in {sys.prefix}")


def run_dbt(
    args: Sequence[str],
    *,
    database_url: str,
    source: str = "adult",
    band_edges: Sequence[float] = ADULT_BAND_EDGES,
    work_dir: Path,
    timeout_s: float | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> DbtResult:
    """Run one dbt command (e.g. ``["build"]``) on the packaged project.

    The vars come from ``source`` and ``band_edges`` (see ``dbt_vars``); target/ and logs/ go
    under ``work_dir``; ``extra_env`` adds to dbt's environment. A failed command raises
    ``TransformError``: a first line naming what failed, then one line per failed node; the
    ``DbtResult`` is on the error's ``result``.
    """
    arguments = tuple(args)
    variables = dbt_vars(source, band_edges)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **dbt_environment(database_url, work_dir), **(extra_env or {})}
    # JSON lines on stdout carry the errors; the file log stays readable text.
    env["DBT_LOG_FORMAT"] = "json"
    env["DBT_LOG_FORMAT_FILE"] = "text"
    target_path = Path(env["DBT_TARGET_PATH"])
    log_path = Path(env["DBT_LOG_PATH"])
    target_path.mkdir(parents=True, exist_ok=True)
    log_path.mkdir(parents=True, exist_ok=True)
    # A stale file from an earlier run must not be read as this run's outcome.
    (target_path / "run_results.json").unlink(missing_ok=True)

    _require_dbt_postgres()
    command = [sys.executable, "-c", _DBT_MAIN, *arguments]
    if not arguments or arguments[0] not in _NO_VARS:
        command += ["--vars", json.dumps(variables)]
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            command,
            env=env,
            cwd=work_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TransformError(f"dbt {' '.join(arguments)} did not finish in {timeout_s} s") from None
    result = DbtResult(
        args=arguments,
        returncode=completed.returncode,
        nodes=_with_examples(_node_results(target_path / "run_results.json"), database_url),
        errors=_error_events(completed.stdout) or tuple(completed.stderr.strip().splitlines()[-5:]),
        elapsed_s=time.perf_counter() - started,
        target_path=target_path,
        log_path=log_path,
    )
    if not result.success:
        raise TransformError(result.failure_message(), result)
    return result


def build_features(
    *,
    database_url: str,
    source: str,
    band_edges: Sequence[float] = ADULT_BAND_EDGES,
    work_dir: Path,
    timeout_s: float | None = None,
) -> DbtResult:
    """Seeds, models and every test for one source: ``marts.features`` holds its features.

    One ``dbt build`` (which loads the seeds first). The other source's staging model and
    seeds are left out, so a build depends only on the raw table it reads.
    """
    validate_band_edges(source, band_edges)
    other = next(name for name in SOURCES if name != source)
    return run_dbt(
        ["build", "--exclude", f"tag:{other}"],
        database_url=database_url,
        source=source,
        band_edges=band_edges,
        work_dir=work_dir,
        timeout_s=timeout_s,
    )
