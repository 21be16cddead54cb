"""payband-orchestration: the Dagster instance of a deployment (webserver, daemon, config)."""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from payband_orchestration import __version__
from payband_orchestration.instance import (
    InstanceFiles,
    StorageError,
    check_storage,
    instance_environment,
    write_instance,
)
from payband_orchestration.settings import ENV_PREFIX, OrchestrationSettings

HELP = "The Dagster instance of payband: webserver and daemon over PostgreSQL."

app = typer.Typer(
    help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Dagster's home directory, created if missing \\[default: $DAGSTER_HOME].",
        show_default=False,
    ),
]

T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with one `error: ...` line on stderr and exit `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> OrchestrationSettings:
    try:
        return OrchestrationSettings()
    except ValidationError as error:
        problems = "; ".join(
            f"{ENV_PREFIX}{str(e['loc'][0]).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        )
        fail(f"invalid setting: {problems}")


def _home(home: Path | None) -> Path:
    if home is None:
        value = os.environ.get("DAGSTER_HOME", "").strip()
        if not value:
            fail(
                "DAGSTER_HOME is not set: set it to the directory for dagster.yaml and "
                "workspace.yaml (or pass --home)"
            )
        home = Path(value)
    return home.expanduser().resolve()  # Dagster wants an absolute DAGSTER_HOME


def _run(action: Callable[[], T]) -> T:
    """Run `action`; an error a user can cause ends in one `error:` line, not a traceback."""
    try:
        return action()
    except StorageError as error:
        fail(str(error))
    except OSError as error:
        fail(f"{error.strerror or error}: {error.filename}" if error.filename else str(error))


def _prepare(home: Path | None, *, upgrade: bool = False) -> tuple[OrchestrationSettings, Path]:
    """Write the files, put the instance's variables into this process's environment (and so
    into what it starts), and open the storage once."""
    settings = _settings()
    directory = _home(home)
    files = _run(lambda: write_instance(directory, settings))
    os.environ.update(instance_environment(directory, settings))
    _run(lambda: check_storage(directory, settings, upgrade=upgrade))
    typer.echo(_describe(settings, files), err=True)
    return settings, files.workspace_yaml


def _describe(settings: OrchestrationSettings, files: InstanceFiles) -> str:
    locations = ", ".join(str(location) for location in settings.code_locations)
    return (
        f"payband-orchestration: DAGSTER_HOME={files.home}; storage in PostgreSQL at "
        f"{settings.postgres_host}:{settings.postgres_port}/{settings.postgres_db}; "
        f"code locations: {locations}"
    )


def _executable(name: str) -> str:
    """A console script of this Python environment (never one found elsewhere on PATH)."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    fail(f"{name} is not installed in this Python environment ({sys.prefix})")


@app.command()
def config(home: HomeOption = None) -> None:
    """Write dagster.yaml and workspace.yaml into Dagster's home; print their paths."""
    settings = _settings()
    directory = _home(home)
    files = _run(lambda: write_instance(directory, settings))
    typer.echo(str(files.dagster_yaml))
    typer.echo(str(files.workspace_yaml))


@app.command()
def migrate(home: HomeOption = None) -> None:
    """Write the files, then create or upgrade Dagster's tables in PostgreSQL."""
    settings, _ = _prepare(home, upgrade=True)
    typer.echo(
        f"dagster storage up to date in {settings.postgres_host}:{settings.postgres_port}/"
        f"{settings.postgres_db}"
    )


@app.command()
def webserver(home: HomeOption = None) -> None:
    """Write the files, then run the Dagster webserver (UI and GraphQL) on
    PAYBAND_ORCHESTRATION_WEBSERVER_HOST:PORT."""
    settings, workspace = _prepare(home)
    from dagster_webserver.cli import cli as dagster_webserver  # run in this process

    dagster_webserver.main(
        args=[
            "--host",
            settings.webserver_host,
            "--port",
            str(settings.webserver_port),
            "--workspace",
            str(workspace),
        ],
        prog_name="dagster-webserver",
        auto_envvar_prefix="DAGSTER_WEBSERVER",
    )


@app.command()
def daemon(home: HomeOption = None) -> None:
    """Write the files, then run the Dagster daemon (run queue, schedules, sensors)."""
    _, workspace = _prepare(home)
    command = _executable("dagster-daemon")
    sys.stdout.flush()
    sys.stderr.flush()
    # Replaced by the daemon: it gets this process's signals (and its pid in a container).
    os.execv(command, [command, "run", "--workspace", str(workspace)])  # noqa: S606 - no shell


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"payband-orchestration {__version__}")
        raise typer.Exit()


@app.callback(help=HELP)
def _main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    pass


def main() -> None:
    app()
