"""payband-audit: migrate, verify, purge and export the audit log."""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import psycopg
import typer
from pydantic import ValidationError

from payband_audit import __version__
from payband_audit.db import connect, require_migrated
from payband_audit.errors import AuditError
from payband_audit.purge import purge_expired
from payband_audit.settings import AuditSettings, check_retention
from payband_audit.verify import verify_chain
from payband_contracts.cli_support import add_version_option, fail
from payband_contracts.errors import first_line

app = typer.Typer(
    help="The audit log of payband: migrate, verify, purge and export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Database URL \\[default: $PAYBAND_AUDIT_DATABASE_URL].",
        show_default=False,
    ),
]
RoleOption = Annotated[
    str | None,
    typer.Option(
        "--role", help="Role to act as after connecting \\[default: $PAYBAND_AUDIT_ROLE]."
    ),
]

T = TypeVar("T")


def _settings() -> AuditSettings:
    try:
        return AuditSettings()
    except ValidationError as error:
        problems = "; ".join(
            f"PAYBAND_AUDIT_{str(e['loc'][0]).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        )
        fail(f"invalid setting: {problems}")


def _url(url: str | None) -> str:
    return url or _settings().database_url


def _run(action: Callable[[], T]) -> T:
    """Run `action`; an error a user can cause ends in one `error:` line, not a traceback."""
    try:
        return action()
    except AuditError as error:
        fail(str(error))
    except psycopg.Error as error:
        fail(first_line(error))
    except OSError as error:
        fail(f"{error.strerror or error}: {error.filename}" if error.filename else str(error))


@app.command()
def migrate(
    url: UrlOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Migrate the audit schema to the latest revision (or --revision)."""
    from payband_audit.migrate import current_revision, upgrade  # Alembic: only when needed

    database_url = _url(url)
    _run(lambda: upgrade(database_url, revision))
    typer.echo(f"audit schema at revision {_run(lambda: current_revision(database_url))}")


@app.command("downgrade")
def downgrade_command(
    revision: Annotated[str, typer.Argument(help='Target revision; "base" removes the schema.')],
    url: UrlOption = None,
) -> None:
    """Migrate the audit schema down to a revision."""
    from payband_audit.migrate import current_revision, downgrade

    database_url = _url(url)
    _run(lambda: downgrade(database_url, revision))
    typer.echo(f"audit schema at revision {_run(lambda: current_revision(database_url))}")


@app.command()
def verify(url: UrlOption = None, role: RoleOption = None) -> None:
    """Walk the hash chain: "ok N records", or exit 1 naming the first broken record."""
    settings = _settings()

    def check() -> str:
        with connect(_url(url), role=role or settings.role) as conn:
            require_migrated(conn)
            return str(verify_chain(conn))

    result = _run(check)
    typer.echo(result)
    if not result.startswith("ok"):
        raise typer.Exit(1)


@app.command()
def purge(
    url: UrlOption = None,
    role: RoleOption = None,
    retention_days: Annotated[
        int | None,
        typer.Option(
            help="Keep this many days (at least 180) \\[default: $PAYBAND_AUDIT_RETENTION_DAYS]."
        ),
    ] = None,
) -> None:
    """Delete records older than the retention period, keeping the chain verifiable."""
    settings = _settings()
    days = retention_days if retention_days is not None else settings.retention_days
    try:
        check_retention(days)
    except ValueError as error:
        fail(str(error))

    def run() -> str:
        with connect(_url(url), role=role or settings.role) as conn:
            require_migrated(conn)
            result = purge_expired(conn, days)
        return (
            f"purge {result.purge_id}: deleted {result.total} records of predictions last "
            f"active before {result.cutoff.isoformat(timespec='seconds')} "
            f"({result.ranges} gaps left in the chain, each recorded)"
        )

    typer.echo(_run(run))


class ExportFormat(enum.StrEnum):
    parquet = "parquet"
    csv = "csv"


@app.command()
def export(
    output: Annotated[Path, typer.Argument(help="File to write.", dir_okay=False)],
    url: UrlOption = None,
    role: RoleOption = None,
    file_format: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="parquet or csv \\[default: from the file name]."),
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Received at or after (UTC if no zone).")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="Received before (UTC if no zone).")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    model_version: Annotated[str | None, typer.Option(help="Only this model version.")] = None,
) -> None:
    """Export answered predictions (inputs, band, probabilities, outcome) for monitoring."""
    from payband_audit.reader import AuditReader  # pandas: only when needed

    settings = _settings()
    by_suffix = {".csv": ExportFormat.csv, ".parquet": ExportFormat.parquet}
    chosen = file_format or by_suffix.get(output.suffix.lower())
    if chosen is None:
        fail(f"cannot tell the format of {output.name}: name it .parquet or .csv, or pass --format")

    def run() -> int:
        with AuditReader(_url(url), settings=settings, role=role or settings.role) as reader:
            frame = reader.dataframe(
                start=_utc(since),
                end=_utc(until),
                model_name=model_name,
                model_version=model_version,
            )
        output.parent.mkdir(parents=True, exist_ok=True)
        if chosen is ExportFormat.csv:
            frame.to_csv(output, index=False)
        else:
            import pandas as pd
            import pyarrow as pa
            import pyarrow.parquet as pq

            # Time stamps as Arrow timestamps first: pyarrow reads a tz-aware pandas column
            # through Series.values, which pandas 3.1 deprecates (and warns about).
            for name, dtype in frame.dtypes.items():
                if isinstance(dtype, pd.DatetimeTZDtype):
                    arrow = pd.ArrowDtype(pa.timestamp(dtype.unit, tz=str(dtype.tz)))
                    frame[name] = frame[name].astype(arrow)
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), output)
        return len(frame)

    rows = _run(run)
    typer.echo(f"exported {rows} predictions to {output} ({chosen.value})")


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


add_version_option(
    app,
    f"payband-audit {__version__}",
    "The audit log of payband: migrate, verify, purge and export.",
)


def main() -> None:
    app()
