"""The monitoring code location: its job run in process against the real registry and audit
log (results stored, alerts in the metadata), its failures in one line, and loaded by module
as a code server loads it."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from dagster import AssetKey, DagsterInstance, DefaultScheduleStatus

from payband_monitoring.analysis import CALCULATORS
from payband_monitoring.definitions import (
    ASSET,
    JOB,
    SCHEDULE,
    MonitoringRun,
    build_definitions,
    defs,
)
from payband_monitoring.runner import Monitor
from payband_monitoring.settings import MonitoringSettings
from payband_testing.dagster import validate_code_location


@pytest.fixture
def env(registry, database: str, tmp_path: Path, monkeypatch) -> dict[str, str]:
    """What a deployment sets: the code location reads it at each run, as the command does."""
    variables = {
        "PAYBAND_AUDIT_DATABASE_URL": database,
        "PAYBAND_MONITORING_DATABASE_URL": database,
        "PAYBAND_MLFLOW_TRACKING_URI": registry.uri,
        "PAYBAND_MONITORING_STATE_DIR": str(tmp_path / "state"),
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def _run(definitions, monitoring: MonitoringRun | None = None):
    """The job in process; its result and the messages it logged."""
    with DagsterInstance.ephemeral() as instance:
        result = definitions.resolve_job_def(JOB).execute_in_process(
            instance=instance,
            raise_on_error=False,
            resources={"monitoring": monitoring or MonitoringRun()},
        )
        logged = [
            entry.user_message
            for entry in instance.all_logs(result.run_id)
            if entry.dagster_event is None
        ]
    return result, logged


def _failure(result) -> str:
    """The failed step's message; it must be a Failure (a message, not a traceback)."""
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_key == ASSET
    assert failure.step_failure_data.error.cls_name == "Failure"
    assert failure.step_failure_data.error.cause is None, "no chained traceback"
    return failure.step_failure_data.user_failure_data.description


def _query(database: str, sql: str) -> list[tuple]:
    with psycopg.connect(database.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return conn.execute(sql).fetchall()


def test_one_asset_one_job_and_a_stopped_hourly_schedule(settings) -> None:
    assert callable(defs), "the module's `defs` loads lazily, when Dagster asks for it"
    definitions = build_definitions(settings)
    graph = definitions.resolve_asset_graph()
    assert graph.get_all_asset_keys() == {AssetKey(ASSET)}
    assert graph.get(AssetKey(ASSET)).group_name == "monitoring"
    job = definitions.resolve_job_def(JOB)
    assert job.asset_layer.executable_asset_keys == {AssetKey(ASSET)}
    schedule = definitions.resolve_schedule_def(SCHEDULE)
    assert schedule.job_name == JOB
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == DefaultScheduleStatus.STOPPED


def test_a_run_override_names_a_version_and_keeps_the_rest(settings) -> None:
    assert MonitoringRun().settings(settings) is settings
    pinned = MonitoringRun(model_version="3").settings(settings)
    assert pinned.model_version == "3"
    assert pinned.model_dump(exclude={"model_version"}) == settings.model_dump(
        exclude={"model_version"}
    )


def test_job_runs_monitoring_from_the_environment_and_stores_it(
    env, database, feed, like_reference, shifted
) -> None:
    feed.predictions(like_reference(1_000, 41))
    feed.predictions(shifted(700, 42))

    result, logged = _run(build_definitions())

    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert event.asset_key == AssetKey(ASSET)
    metadata = {key: value.value for key, value in event.materialization.metadata.items()}

    # As `payband-monitoring run` (tests/test_cli.py): the champion, 3 chunks, 200 waiting.
    assert (metadata["model"], metadata["model_version"]) == ("salary-band", "1")
    assert metadata["chunking"] == "size:500"
    assert (metadata["rows_analysed"], metadata["chunks"]) == (1_500, 3)
    assert (metadata["rows_pending"], metadata["rows_with_outcome"]) == (200, 0)
    assert metadata["not_analysed"] == "200 waiting for a full chunk of 500"
    report = Path(env["PAYBAND_MONITORING_STATE_DIR"]) / "report.html"
    assert metadata["report_path"] == str(report)
    assert "Univariate drift per feature" in report.read_text()
    assert logged[:2] == [
        "model: salary-band version 1",
        "records: 1500 analysed in 3 chunks (size:500), 0 of them with an outcome; "
        "not analysed: 200 waiting for a full chunk of 500",
    ]
    assert logged[-1] == f"report: {report}"

    # One run stored, with every result of its chunks.
    ((run_id, rows, chunks, alerts),) = _query(
        database, "SELECT run_id::text, rows_analysed, chunks, alerts FROM monitoring.runs"
    )
    assert metadata["monitoring_run_id"] == run_id
    assert (rows, chunks, alerts) == (1_500, 3, metadata["alerts"])
    ((keys,),) = _query(database, "SELECT count(DISTINCT chunk_key) FROM monitoring.results")
    assert keys == 3

    # The alerts by kind are the stored alerts of each calculator's latest chunk.
    stored = dict(
        _query(
            database,
            """
            SELECT calculator, count(*) FILTER (WHERE alert) FROM monitoring.results r
            WHERE chunk_index = (SELECT max(chunk_index) FROM monitoring.results
                                 WHERE calculator = r.calculator)
            GROUP BY calculator
            """,
        )
    )
    by_kind = {kind: metadata[f"{kind}_alerts"] for kind in CALCULATORS}
    assert by_kind == {kind: stored.get(kind, 0) for kind in CALCULATORS}
    assert sum(by_kind.values()) == metadata["alerts"]
    # The latest chunk is all shifted records: hours and education drift by both methods.
    assert by_kind["univariate_drift"] == 4
    for alert in (
        "univariate_drift: hours_per_week kolmogorov_smirnov = ",
        "univariate_drift: hours_per_week jensen_shannon = ",
        "univariate_drift: education jensen_shannon = ",
        "univariate_drift: education l_infinity = ",
    ):
        assert f"- {alert}" in metadata["alerts_latest_chunk"]
        assert any(line.startswith(f"  {alert}") for line in logged)
    assert f"alerts in the latest chunk: {metadata['alerts']}" in logged


def test_no_champion_fails_the_run_in_one_line(settings, database) -> None:
    result, _ = _run(build_definitions(settings.model_copy(update={"champion_alias": "nobody"})))

    assert _failure(result).startswith(
        "cannot resolve model 'salary-band' alias 'nobody': Registered model alias nobody"
    )
    assert _query(database, "SELECT count(*) FROM monitoring.runs") == [(0,)]


def test_a_version_named_by_the_resource_must_exist(settings, database) -> None:
    result, _ = _run(build_definitions(settings), MonitoringRun(model_version="7"))

    assert _failure(result).startswith("cannot resolve model 'salary-band' 7: ")
    assert _query(database, "SELECT count(*) FROM monitoring.runs") == [(0,)]


def test_an_unmigrated_results_database_fails_the_run(
    settings: MonitoringSettings, postgres_server
) -> None:
    empty = postgres_server.create_database("monitoring_dagster_unmigrated")
    try:
        unmigrated = settings.model_copy(update={"database_url": empty.url})
        result, _ = _run(build_definitions(unmigrated))
    finally:
        postgres_server.drop_database("monitoring_dagster_unmigrated")

    assert _failure(result) == (
        "the monitoring schema is not migrated in "
        f"127.0.0.1:{empty.port}/monitoring_dagster_unmigrated; run `payband-monitoring migrate`"
    )


def test_an_unexpected_error_fails_the_run_naming_its_type_only(settings, monkeypatch) -> None:
    def broken(self):
        raise RuntimeError("a message that may quote a candidate")

    monkeypatch.setattr(Monitor, "run", broken)

    result, _ = _run(build_definitions(settings))

    assert _failure(result) == (
        "the monitoring run failed unexpectedly (RuntimeError); "
        "the traceback is in the step's stderr"
    )


def test_an_invalid_setting_in_the_environment_fails_the_run(env, monkeypatch) -> None:
    monkeypatch.setenv("PAYBAND_MONITORING_CHUNK_PERIOD", "fortnight")

    result, _ = _run(build_definitions())

    assert _failure(result) == (
        "invalid setting: chunk_period: Value error, 'fortnight' is not a pandas "
        "period alias such as 'h', 'D', 'W' or 'M'"
    )


def test_dagster_loads_the_code_location_by_module(env, tmp_path) -> None:
    """What a code server does: `dagster definitions validate -m payband_monitoring.definitions`."""
    result = validate_code_location("payband_monitoring.definitions", env, tmp_path / "dagster")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful for code location payband_monitoring.definitions" in (
        result.stdout + result.stderr
    )
