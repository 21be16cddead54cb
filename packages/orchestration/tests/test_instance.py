"""dagster.yaml and workspace.yaml as written, and Dagster using them on a real PostgreSQL."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml

from payband_local.ports import free_port
from payband_local.postgres import PostgresConnectionInfo
from payband_orchestration.instance import (
    PASSWORD_VARIABLE,
    StorageError,
    check_storage,
    instance_environment,
    write_instance,
)
from payband_orchestration.settings import OrchestrationSettings

DAGSTER = str(Path(sys.executable).with_name("dagster"))
PASSWORD = "s3cret-pw-4711"


def settings_for(info: PostgresConnectionInfo, **overrides: object) -> OrchestrationSettings:
    values: dict[str, object] = {
        "postgres_host": info.host,
        "postgres_port": info.port,
        "postgres_user": info.user,
        "postgres_db": info.database,
        **overrides,
    }
    return OrchestrationSettings(**values)


def test_files_parse_and_say_what_the_settings_say(tmp_path: Path):
    settings = OrchestrationSettings(
        postgres_host="postgres",
        postgres_port=6543,
        postgres_user="dagster",
        postgres_password=PASSWORD,
        postgres_db="dagster_prod",
        code_locations="data=dagster-data:4000,training=dagster-training:4000",
        max_concurrent_runs=3,
    )
    home = tmp_path / "not" / "yet" / "there"
    files = write_instance(home, settings)
    assert (files.dagster_yaml, files.workspace_yaml) == (
        home / "dagster.yaml",
        home / "workspace.yaml",
    )
    assert sorted(p.name for p in home.iterdir()) == ["dagster.yaml", "workspace.yaml"]

    instance = yaml.safe_load(files.dagster_yaml.read_text())
    assert instance["storage"] == {
        "postgres": {
            "postgres_db": {
                "hostname": "postgres",
                "port": 6543,
                "username": "dagster",
                "password": {"env": PASSWORD_VARIABLE},
                "db_name": "dagster_prod",
                "scheme": "postgresql+psycopg2",
            }
        }
    }
    assert instance["run_coordinator"] == {
        "module": "dagster",
        "class": "QueuedRunCoordinator",
        "config": {"max_concurrent_runs": 3},
    }
    assert instance["telemetry"] == {"enabled": False}
    assert "run_launcher" not in instance  # Dagster's default
    assert PASSWORD not in files.dagster_yaml.read_text()
    assert PASSWORD not in files.workspace_yaml.read_text()
    assert files.dagster_yaml.stat().st_mode & 0o777 == 0o600

    workspace = yaml.safe_load(files.workspace_yaml.read_text())
    assert workspace == {
        "load_from": [
            {"grpc_server": {"host": "dagster-data", "port": 4000, "location_name": "data"}},
            {
                "grpc_server": {
                    "host": "dagster-training",
                    "port": 4000,
                    "location_name": "training",
                }
            },
        ]
    }


def test_rewriting_replaces_the_files(tmp_path: Path):
    write_instance(tmp_path, OrchestrationSettings(code_locations="a=h:1,b=h:2"))
    files = write_instance(tmp_path, OrchestrationSettings(code_locations="c=h:3"))
    workspace = yaml.safe_load(files.workspace_yaml.read_text())
    assert [e["grpc_server"]["location_name"] for e in workspace["load_from"]] == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dagster.yaml", "workspace.yaml"]


def test_the_names_written_are_the_classes_dagster_loads(tmp_path: Path):
    import importlib

    import dagster

    instance = yaml.safe_load(
        write_instance(tmp_path, OrchestrationSettings()).dagster_yaml.read_text()
    )
    coordinator = instance["run_coordinator"]
    loaded = getattr(importlib.import_module(coordinator["module"]), coordinator["class"])
    assert loaded is dagster.QueuedRunCoordinator


def test_environment_carries_the_password_and_switches_telemetry_off(tmp_path: Path):
    settings = OrchestrationSettings(postgres_password=PASSWORD)
    assert instance_environment(tmp_path, settings) == {
        "DAGSTER_HOME": str(tmp_path),
        "DAGSTER_DISABLE_TELEMETRY": "true",
        PASSWORD_VARIABLE: PASSWORD,
    }
    assert instance_environment(tmp_path, OrchestrationSettings())[PASSWORD_VARIABLE] == ""


def public_tables(info: PostgresConnectionInfo) -> set[str]:
    with info.connect() as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows}


def test_dagster_keeps_its_storage_in_postgresql(
    tmp_path: Path, postgres_database: PostgresConnectionInfo, monkeypatch: pytest.MonkeyPatch
):
    from dagster import DagsterInstance, QueuedRunCoordinator
    from dagster_postgres import DagsterPostgresStorage

    settings = settings_for(postgres_database, max_concurrent_runs=2)
    write_instance(tmp_path, settings)
    # dagster.yaml names the variable; without it Dagster refuses to load.
    monkeypatch.setenv(PASSWORD_VARIABLE, "")
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert isinstance(instance.get_ref().storage, DagsterPostgresStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 2
        assert instance.get_runs() == []
    finally:
        instance.dispose()
    assert {"runs", "event_logs", "jobs", "job_ticks", "alembic_version"} <= public_tables(
        postgres_database
    )


def test_dagster_cli_uses_the_instance(tmp_path: Path, postgres_database: PostgresConnectionInfo):
    settings = settings_for(postgres_database)
    write_instance(tmp_path, settings)
    result = subprocess.run(
        [DAGSTER, "instance", "info"],
        env={**os.environ, **instance_environment(tmp_path, settings)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"$DAGSTER_HOME: {tmp_path}" in result.stdout
    assert "run_storage: PostgresRunStorage" in result.stdout
    assert "event_log_storage: PostgresEventLogStorage" in result.stdout
    assert "telemetry:\n  enabled: false" in result.stdout
    assert "runs" in public_tables(postgres_database)


def test_check_storage_creates_and_upgrades_the_tables(
    tmp_path: Path, postgres_database: PostgresConnectionInfo, monkeypatch: pytest.MonkeyPatch
):
    settings = settings_for(postgres_database)
    write_instance(tmp_path, settings)
    for name, value in instance_environment(tmp_path, settings).items():
        monkeypatch.setenv(name, value)
    check_storage(tmp_path, settings, upgrade=True)
    assert {"runs", "event_logs", "jobs"} <= public_tables(postgres_database)
    check_storage(tmp_path, settings)  # and again, on existing tables


def test_nothing_listening_is_one_line_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    settings = OrchestrationSettings(postgres_port=free_port(), postgres_password=PASSWORD)
    write_instance(tmp_path, settings)
    for name, value in instance_environment(tmp_path, settings).items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot reach PostgreSQL at 127\.0\.0\.1:") as raised:
        check_storage(tmp_path, settings)
    assert time.monotonic() - started < 10
    assert "\n" not in str(raised.value)
    assert "database 'dagster', user 'postgres'" in str(raised.value)


def test_a_missing_database_is_one_line_without_the_password(
    tmp_path: Path,
    postgres_database: PostgresConnectionInfo,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    settings = settings_for(
        postgres_database, postgres_db="no_such_database", postgres_password=PASSWORD
    )
    write_instance(tmp_path, settings)
    for name, value in instance_environment(tmp_path, settings).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StorageError) as raised:
        check_storage(tmp_path, settings)
    message = str(raised.value)
    assert message.startswith(f"cannot use PostgreSQL at 127.0.0.1:{postgres_database.port}")
    assert 'database "no_such_database" does not exist' in message
    assert "\n" not in message
    assert PASSWORD not in message
    # Dagster's retry warnings were kept quiet.
    captured = capsys.readouterr()
    assert "Retrying" not in captured.out + captured.err


def test_a_user_who_may_not_create_tables_is_one_line(
    tmp_path: Path, postgres_database: PostgresConnectionInfo, monkeypatch: pytest.MonkeyPatch
):
    # Since PostgreSQL 15 only the database's owner creates tables in its public schema;
    # dagster-postgres re-raises that refusal as SQLAlchemy's own error.
    role = f"no_create_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_database.dsn, autocommit=True) as connection:
        connection.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        settings = settings_for(postgres_database, postgres_user=role)
        write_instance(tmp_path, settings)
        for name, value in instance_environment(tmp_path, settings).items():
            monkeypatch.setenv(name, value)
        with pytest.raises(StorageError) as raised:
            check_storage(tmp_path, settings)
        message = str(raised.value)
        assert message.startswith(f"cannot use PostgreSQL at 127.0.0.1:{postgres_database.port}")
        assert f"user '{role}'" in message
        assert "permission denied" in message
        assert "\n" not in message
    finally:
        with psycopg.connect(postgres_database.dsn, autocommit=True) as connection:
            connection.execute(f'DROP OWNED BY "{role}"')
            connection.execute(f'DROP ROLE "{role}"')
