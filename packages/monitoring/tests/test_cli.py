"""`payband-monitoring` through its entry point: migrate, run, report, history, errors;
stored results are idempotent per chunk.

The commands run in this process (``run``); one smoke test runs the installed script as a
process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from payband_local.postgres import PostgresConnectionInfo
from payband_monitoring.store import current_revision
from payband_testing.cli import run_in_process
from payband_testing.registry import restored_mlflow_globals

CLI = str(Path(sys.executable).with_name("payband-monitoring"))


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command in this process (arguments, messages, exit codes, results).

    Loading the champion's reference data sets MLflow's global tracking and registry URIs
    (and their variables), which a process drops as it exits; here they are restored after
    the call.
    """
    with restored_mlflow_globals():
        return run_in_process("payband-monitoring", *args, env=env)


def cli_process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed script as its own process, as a user runs it."""
    return subprocess.run(
        [CLI, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def env(registry, database: str, tmp_path: Path) -> dict[str, str]:
    return {
        "PAYBAND_AUDIT_DATABASE_URL": database,
        "PAYBAND_MONITORING_DATABASE_URL": database,
        "PAYBAND_MLFLOW_TRACKING_URI": registry.uri,
        "PAYBAND_MONITORING_STATE_DIR": str(tmp_path / "state"),
    }


def count(database: str, table: str) -> int:
    with psycopg.connect(database.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute(f"SELECT count(*) FROM monitoring.{table}").fetchone()  # noqa: S608
    assert row is not None
    return int(row[0])


def test_smoke_migrate_creates_the_schema_once(postgres_database: PostgresConnectionInfo):
    # The first migrate is the real script, as a process: the smoke test of the entry point.
    env = {"PAYBAND_MONITORING_DATABASE_URL": postgres_database.url}
    assert current_revision(postgres_database.url) is None
    for run in (cli_process, cli):
        done = run("migrate", env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "monitoring schema is up to date"
    assert current_revision(postgres_database.url) == "0001"


def test_run_stores_results_once_per_chunk_and_writes_the_report(
    env, database, feed, like_reference, shifted, tmp_path
):
    feed.predictions(like_reference(1_000, 31))
    feed.predictions(shifted(700, 32))

    first = cli("run", env=env)

    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == "model: salary-band version 1"
    assert lines[1] == (
        "records: 1500 analysed in 3 chunks (size:500), 0 of them with an outcome; "
        "not analysed: 200 waiting for a full chunk of 500"
    )
    assert "  univariate_drift: hours_per_week kolmogorov_smirnov = " in first.stdout
    report = tmp_path / "state" / "report.html"
    assert lines[-1] == f"report: {report}"
    page = report.read_text()
    assert "Univariate drift per feature" in page
    assert "Estimated performance (CBPE)" in page
    # plotly.js is embedded and no script is fetched: the report opens offline.
    assert re.search(r"<script[^>]*\bsrc=", page) is None
    assert "Plotly.newPlot" in page
    stored = count(database, "results")
    assert stored > 0
    assert count(database, "runs") == 1

    # The same records again: the same results, one more run.
    again = cli("run", env=env)
    assert again.returncode == 0, again.stderr
    assert count(database, "results") == stored
    assert count(database, "runs") == 2

    # 300 more records fill the fourth chunk: only its results are added.
    feed.predictions(shifted(300, 33))
    third = cli("run", env=env)
    assert third.returncode == 0, third.stderr
    assert count(database, "results") == stored + stored // 3

    history = cli("history", "--subject", "hours_per_week", "--alerts", env=env)
    assert history.returncode == 0, history.stderr
    header, *rows = history.stdout.splitlines()
    assert header.split("\t") == [
        "model_version", "chunk_key", "chunk_start", "rows", "calculator", "subject",
        "method", "value", "alert",
    ]  # fmt: skip
    # Chunks 2 (half shifted) and 3 alert on both of hours_per_week's methods.
    assert [row.split("\t")[1] for row in rows] == ["[1000:1499]"] * 2 + ["[1500:1999]"] * 2
    assert {row.split("\t")[-1] for row in rows} == {"True"}


def test_report_writes_a_file_and_stores_nothing(env, database, feed, like_reference, tmp_path):
    feed.predictions(like_reference(600, 34))
    output = tmp_path / "out" / "monitoring.html"

    done = cli("report", "--output", str(output), env=env)

    assert done.returncode == 0, done.stderr
    assert "alerts in the latest chunk: " in done.stdout
    assert done.stdout.splitlines()[-1] == f"report: {output}"
    assert "Fairness over time" in output.read_text()
    assert count(database, "results") == 0
    assert count(database, "runs") == 0


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"PAYBAND_MONITORING_CHUNK_PERIOD": "fortnight"},
            "error: invalid setting: chunk_period: Value error, 'fortnight' is not a pandas "
            "period alias such as 'h', 'D', 'W' or 'M'",
        ),
        (
            # Without a check first, MLflow would retry for minutes, logging each attempt.
            {"PAYBAND_MLFLOW_TRACKING_URI": "postgresql://postgres@127.0.0.1:1/m"},
            "error: cannot reach the MLflow database postgresql://postgres@127.0.0.1:1/m: ",
        ),
        (
            {"PAYBAND_MONITORING_CHAMPION_ALIAS": "nobody"},
            "error: cannot resolve model 'salary-band' alias 'nobody': ",
        ),
        (
            {"PAYBAND_MONITORING_CHUNK_SIZE": "1000"},
            "error: the reference data has 3000 rows, fewer than 4 chunks of 1000; "
            "lower PAYBAND_MONITORING_CHUNK_SIZE",
        ),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(env, variables, message):
    done = cli("run", env={**env, **variables})

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(message)
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unmigrated_results_database_is_named(env, postgres_server):
    empty = postgres_server.create_database("monitoring_unmigrated")
    try:
        done = cli("run", env={**env, "PAYBAND_MONITORING_DATABASE_URL": empty.url})
    finally:
        postgres_server.drop_database("monitoring_unmigrated")

    assert done.returncode == 2
    assert done.stderr == (
        "error: the monitoring schema is not migrated in "
        f"127.0.0.1:{empty.port}/monitoring_unmigrated; run `payband-monitoring migrate`\n"
    )


def test_an_unreachable_audit_log_is_named(env):
    unreachable = "postgresql://postgres@127.0.0.1:1/payband"
    done = cli("run", env={**env, "PAYBAND_AUDIT_DATABASE_URL": unreachable})

    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot connect to the audit database at 127.0.0.1:1/")
    assert len(done.stderr.strip().splitlines()) == 1


def test_migrate_names_an_unreachable_database():
    done = cli(
        "migrate", env={"PAYBAND_MONITORING_DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/x"}
    )

    assert done.returncode == 2
    assert done.stderr.startswith(
        "error: cannot migrate the monitoring database at 127.0.0.1:1/x: "
    )
    assert "pw" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_invalid_results_database_url_is_named_without_its_password(env):
    done = cli("history", env={**env, "PAYBAND_MONITORING_DATABASE_URL": "postgresql://u:pw@[x"})

    assert done.returncode == 2
    assert done.stderr == (
        "error: invalid database URL 'postgresql://u:***@[x' "
        "(expected postgresql://user@host:port/dbname or key=value pairs)\n"
    )
