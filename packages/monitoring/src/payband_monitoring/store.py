"""Monitoring results in PostgreSQL (schema ``monitoring``): runs, and results per chunk.

Saving a run upserts each result on (model, version, chunking, chunk, calculator, subject,
method): running again over the same records changes nothing, a grown chunk is replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from payband_contracts import database
from payband_contracts.errors import first_line
from payband_monitoring.analysis import Analysis
from payband_monitoring.errors import MonitoringConfigError, MonitoringError, MonitoringUnavailable

__all__ = ["VERSION_TABLE", "ResultStore", "current_revision", "migrate"]

VERSION_TABLE = "payband_monitoring_alembic_version"

UPSERT = """
INSERT INTO monitoring.results (
    model_name, model_version, chunking, chunk_key, calculator, subject, method, chunk_index,
    chunk_start, chunk_end, rows, value, lower_threshold, upper_threshold, alert, run_id)
VALUES (%(model_name)s, %(model_version)s, %(chunking)s, %(chunk_key)s, %(calculator)s,
    %(subject)s, %(method)s, %(chunk_index)s, %(chunk_start)s, %(chunk_end)s, %(rows)s, %(value)s,
    %(lower_threshold)s, %(upper_threshold)s, %(alert)s, %(run_id)s)
ON CONFLICT (model_name, model_version, chunking, chunk_key, calculator, subject, method)
DO UPDATE SET chunk_index = EXCLUDED.chunk_index, chunk_start = EXCLUDED.chunk_start,
    chunk_end = EXCLUDED.chunk_end, rows = EXCLUDED.rows, value = EXCLUDED.value,
    lower_threshold = EXCLUDED.lower_threshold, upper_threshold = EXCLUDED.upper_threshold,
    alert = EXCLUDED.alert, run_id = EXCLUDED.run_id
"""

INSERT_RUN = """
INSERT INTO monitoring.runs (run_id, started_at, finished_at, model_name, model_version,
    reference_run_id, chunking, rows_analysed, rows_pending, rows_with_outcome, chunks, alerts)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


@contextmanager
def _clear_errors(url: str, doing: str) -> Iterator[None]:
    try:
        yield
    except psycopg.OperationalError as error:
        raise MonitoringUnavailable(
            f"cannot {doing} at {database.describe(url)}: {first_line(error)}"
        ) from None
    except psycopg.errors.UndefinedTable:
        raise MonitoringConfigError(
            f"the monitoring schema is not migrated in {database.describe(url)}; "
            "run `payband-monitoring migrate`"
        ) from None
    except psycopg.errors.InsufficientPrivilege as error:
        raise MonitoringConfigError(f"cannot {doing}: {first_line(error)}") from None
    except psycopg.Error as error:
        raise MonitoringError(
            f"cannot {doing} at {database.describe(url)}: {first_line(error)}"
        ) from None


def _connect(url: str, timeout: int, **options: Any) -> psycopg.Connection[Any]:
    """A connection; an invalid URL is a MonitoringConfigError (libpq's own message would
    quote the URL, password included)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(database.conninfo(url))
    except database.DatabaseUrlError as error:
        raise MonitoringConfigError(str(error)) from None
    except psycopg.ProgrammingError:
        raise MonitoringConfigError(str(database.DatabaseUrlError.unreadable(url))) from None
    return psycopg.connect(**info, connect_timeout=timeout, **options)


def migrate(database_url: str, revision: str = "head") -> None:
    """Migrate the monitoring schema up to ``revision``."""
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError
    from sqlalchemy.exc import ArgumentError, DBAPIError

    config = Config()
    config.set_main_option("script_location", "payband_monitoring:migrations")
    config.attributes["database_url"] = database_url
    try:
        command.upgrade(config, revision)
    except DBAPIError as error:
        raise MonitoringUnavailable(
            f"cannot migrate the monitoring database at {database.describe(database_url)}: "
            f"{first_line(error)}"
        ) from None
    except (CommandError, ArgumentError, ValueError) as error:
        raise MonitoringConfigError(first_line(error)) from None


def current_revision(database_url: str) -> str | None:
    """The monitoring schema's revision, or None when it was never migrated."""
    with (
        _clear_errors(database_url, "read the monitoring schema's revision"),
        _connect(database_url, 5) as conn,
    ):
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()  # noqa: S608
        return row[0] if row else None


class ResultStore:
    """Saves runs and reads the history of results."""

    def __init__(self, database_url: str, *, connect_timeout: int = 5) -> None:
        self._url = database_url
        self._timeout = connect_timeout

    @contextmanager
    def _connect(self, doing: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with (
            _clear_errors(self._url, doing),
            _connect(self._url, self._timeout, row_factory=dict_row) as conn,
        ):
            yield conn

    def check(self) -> None:
        """MonitoringUnavailable or MonitoringConfigError unless results can be stored."""
        with self._connect("reach the monitoring database") as conn:
            conn.execute("SELECT 1 FROM monitoring.runs LIMIT 0")

    def save(self, analysis: Analysis, started_at: datetime, finished_at: datetime) -> None:
        """The run and its results, in one transaction."""
        with self._connect("store monitoring results") as conn, conn.transaction():
            conn.execute(
                INSERT_RUN,
                (
                    UUID(analysis.run_id),
                    started_at,
                    finished_at,
                    analysis.model_name,
                    analysis.model_version,
                    analysis.reference_run_id,
                    analysis.chunking,
                    analysis.rows_analysed,
                    analysis.rows_pending,
                    analysis.rows_with_outcome,
                    analysis.chunks,
                    len(analysis.alerts()),
                ),
            )
            common = {
                "model_name": analysis.model_name,
                "model_version": analysis.model_version,
                "chunking": analysis.chunking,
                "run_id": UUID(analysis.run_id),
            }
            with conn.cursor() as cursor:
                cursor.executemany(UPSERT, [asdict(row) | common for row in analysis.results])

    def history(
        self,
        *,
        model_name: str | None = None,
        model_version: str | None = None,
        calculator: str | None = None,
        subject: str | None = None,
        alerts_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Stored results, oldest chunk first, filtered as asked."""
        clauses, params = [], []
        for column, value in (
            ("model_name", model_name),
            ("model_version", model_version),
            ("calculator", calculator),
            ("subject", subject),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if alerts_only:
            clauses.append("alert")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = (
            f"SELECT * FROM monitoring.results {where} "  # noqa: S608 (fixed column names)
            "ORDER BY model_name, model_version, chunking, chunk_index, calculator, subject, method"
        )
        with self._connect("read monitoring results") as conn:
            return conn.execute(query, params).fetchall()
