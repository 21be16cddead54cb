"""Dagster's two files in DAGSTER_HOME, written from the settings, and a check of the storage.

- ``dagster.yaml``: run, event log and schedule storage in PostgreSQL (the password stays in
  the environment: Dagster reads ``PAYBAND_ORCHESTRATION_POSTGRES_PASSWORD`` itself), the
  queued run coordinator with its limit, the default run launcher, telemetry off.
- ``workspace.yaml``: one ``grpc_server`` entry per code location.

Both are rewritten at every start, so the environment is the one source of truth.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from payband_orchestration.settings import ENV_PREFIX, OrchestrationSettings

__all__ = [
    "DAGSTER_YAML",
    "PASSWORD_VARIABLE",
    "WORKSPACE_YAML",
    "InstanceFiles",
    "StorageError",
    "check_storage",
    "instance_config",
    "instance_environment",
    "workspace_config",
    "write_instance",
]

DAGSTER_YAML = "dagster.yaml"
WORKSPACE_YAML = "workspace.yaml"
# dagster.yaml names this variable instead of holding the password.
PASSWORD_VARIABLE = f"{ENV_PREFIX}POSTGRES_PASSWORD"

_HEADER = (
    "# Written by payband-orchestration from the PAYBAND_ORCHESTRATION_* variables;\n"
    "# rewritten at every start: change the variables, not this file.\n"
)


class StorageError(Exception):
    """Dagster's storage in PostgreSQL cannot be used; the message is one line."""


@dataclass(frozen=True)
class InstanceFiles:
    """The files written into a Dagster home."""

    home: Path
    dagster_yaml: Path
    workspace_yaml: Path


def instance_config(settings: OrchestrationSettings) -> dict[str, Any]:
    """The contents of dagster.yaml."""
    from dagster import QueuedRunCoordinator  # Dagster is slow to import: only when needed

    return {
        "storage": {
            # Dagster's short form for dagster_postgres.DagsterPostgresStorage (run, event
            # log and schedule storage in one database).
            "postgres": {
                "postgres_db": {
                    "hostname": settings.postgres_host,
                    "port": settings.postgres_port,
                    "username": settings.postgres_user,
                    "password": {"env": PASSWORD_VARIABLE},
                    "db_name": settings.postgres_db,
                    # psycopg2, the driver dagster-postgres requires and is written for (its
                    # webserver engine closes psycopg 3 connections, SQLAlchemy 2.1's default).
                    "scheme": "postgresql+psycopg2",
                }
            }
        },
        "run_coordinator": {
            # `dagster` exports the class: the public name, not its private module.
            "module": "dagster",
            "class": QueuedRunCoordinator.__name__,
            "config": {"max_concurrent_runs": settings.max_concurrent_runs},
        },
        # The default run launcher: a run starts as a process of its code location's server.
        # The environment variable only stops the upload; this stops the collection.
        "telemetry": {"enabled": False},
    }


def workspace_config(settings: OrchestrationSettings) -> dict[str, Any]:
    """The contents of workspace.yaml: one gRPC code server per code location."""
    return {
        "load_from": [
            {
                "grpc_server": {
                    "host": location.host,
                    "port": location.port,
                    "location_name": location.name,
                }
            }
            for location in settings.code_locations
        ]
    }


def write_instance(home: Path, settings: OrchestrationSettings) -> InstanceFiles:
    """Write dagster.yaml (mode 600) and workspace.yaml into ``home`` (created if missing),
    each replaced in one step so a process starting meanwhile reads the old or the new file."""
    home.mkdir(parents=True, exist_ok=True)
    files = InstanceFiles(home, home / DAGSTER_YAML, home / WORKSPACE_YAML)
    _write_yaml(files.dagster_yaml, instance_config(settings), mode=0o600)
    _write_yaml(files.workspace_yaml, workspace_config(settings), mode=0o644)
    return files


def _write_yaml(path: Path, content: dict[str, Any], *, mode: int) -> None:
    text = _HEADER + yaml.safe_dump(content, sort_keys=False, default_flow_style=False)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        temporary.chmod(mode)  # whatever the umask
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def instance_environment(home: Path, settings: OrchestrationSettings) -> dict[str, str]:
    """The variables the webserver and the daemon need: Dagster's home, telemetry off, and
    the password that dagster.yaml refers to (empty when there is none)."""
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "true",
        PASSWORD_VARIABLE: settings.postgres_password.get_secret_value(),
    }


def check_storage(home: Path, settings: OrchestrationSettings, *, upgrade: bool = False) -> None:
    """Open the Dagster instance of ``home`` as the webserver and the daemon will (Dagster
    creates its tables in an empty database); with ``upgrade``, also migrate its schema.

    Needs ``instance_environment`` in ``os.environ``. StorageError, one line, when
    PostgreSQL cannot be reached or refuses (the password is never part of it).
    """
    where = (
        f"PostgreSQL at {settings.postgres_host}:{settings.postgres_port} "
        f"(database {settings.postgres_db!r}, user {settings.postgres_user!r})"
    )
    try:
        # Fail at once when nothing listens, instead of after Dagster's retries.
        socket.create_connection((settings.postgres_host, settings.postgres_port), 5).close()
    except OSError as error:
        raise StorageError(f"cannot reach {where}: {error.strerror or error}") from None

    from dagster import DagsterInstance
    from dagster_postgres.utils import DagsterPostgresException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with _quiet_retries():
            instance = DagsterInstance.from_config(str(home))
            try:
                if upgrade:
                    instance.upgrade()
            finally:
                instance.dispose()
    except DagsterPostgresException as error:
        cause = error.__cause__
        reason = getattr(cause, "orig", None) or cause or error  # the driver's own message
        raise StorageError(f"cannot use {where}: {_first_line(reason)}") from None
    except SQLAlchemyError as error:
        # dagster-postgres re-raises other refusals as they are, e.g. a user who may not
        # create tables in the database (PostgreSQL 15+ unless it owns the database).
        reason = getattr(error, "orig", None) or error
        raise StorageError(f"cannot use {where}: {_first_line(reason)}") from None


@contextmanager
def _quiet_retries() -> Iterator[None]:
    """Silence Dagster's multi-line "Retrying failed database connection" warnings: the
    failure, if it comes, is reported once."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _first_line(error: BaseException) -> str:
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
