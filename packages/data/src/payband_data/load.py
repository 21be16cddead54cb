"""Load a raw dataset version into PostgreSQL (schema ``raw``) with COPY.

A raw table holds exactly one version: a load replaces the table's content in one transaction,
so a failed load leaves the previous version in place. Raw tables are UNLOGGED: the versioned
store is their source of truth. Every row carries the version's URI
(``dataset_uri``) and the load time (``loaded_at``), and a stable ``record_id``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from payband_contracts.errors import first_line
from payband_data.errors import DataError
from payband_data.sources import SourceError
from payband_data.sources.adult import ADULT_COLUMNS, ADULT_SPLITS, iter_adult_rows
from payband_data.sources.pums import PUMS_COLUMNS

__all__ = [
    "ADULT_TABLE",
    "PUMS_FILE",
    "PUMS_TABLE",
    "RAW_SCHEMA",
    "LoadError",
    "ensure_raw_schema",
    "load_adult",
    "load_pums",
    "load_raw",
]

RAW_SCHEMA = "raw"
ADULT_TABLE = "raw.adult"
PUMS_TABLE = "raw.pums"
PUMS_FILE = "persons.csv"

ADULT_INTEGER_COLUMNS = frozenset(
    {"age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"}
)
PUMS_TEXT_COLUMNS = frozenset({"serialno"})

# Large blocks keep the per-call overhead negligible: the server parses the CSV, not Python.
_COPY_BLOCK_BYTES = 1 << 20
# Serialises concurrent first-time schema creation (CREATE ... IF NOT EXISTS can still race).
_SCHEMA_LOCK_KEY = 0x70617962616E64  # "payband"
_COPY_CONTEXT = re.compile(r"COPY \w+, line (\d+)(?:, column (\w+))?")


class LoadError(DataError):
    """A raw file cannot be loaded: wrong files or header, or a malformed line."""


def _pums_columns() -> list[str]:
    return [column.lower() for column in PUMS_COLUMNS]


def _ddl() -> list[sql.Composable]:
    adult_columns = [
        sql.SQL("{} {}").format(
            sql.Identifier(name),
            sql.SQL("integer" if name in ADULT_INTEGER_COLUMNS else "text"),
        )
        for name in ADULT_COLUMNS
    ]
    pums_columns = [
        sql.SQL("{} {}").format(
            sql.Identifier(name),
            sql.SQL("text" if name in PUMS_TEXT_COLUMNS else "integer"),
        )
        for name in _pums_columns()
    ]
    # Generated ids cost nothing at COPY time and cannot disagree with the columns they name.
    # UNLOGGED: a raw table is a copy of a versioned-store commit, reloaded from it at will, so
    # it skips the write-ahead log (loads about twice as fast); a crash empties it, and an
    # empty raw table fails the dbt build (not_empty) instead of building empty features.
    adult = sql.SQL(
        "CREATE UNLOGGED TABLE IF NOT EXISTS raw.adult ("
        " record_id text GENERATED ALWAYS AS"
        " ('adult-' || split || '-' || line_number::text) STORED PRIMARY KEY,"
        " split text NOT NULL, line_number integer NOT NULL, {columns},"
        " dataset_uri text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())"
    ).format(columns=sql.SQL(", ").join(adult_columns))
    pums = sql.SQL(
        "CREATE UNLOGGED TABLE IF NOT EXISTS raw.pums ("
        " record_id text GENERATED ALWAYS AS"
        " ('pums-' || year::text || '-' || serialno || '-' || sporder::text) STORED PRIMARY KEY,"
        " {columns},"
        " dataset_uri text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())"
    ).format(columns=sql.SQL(", ").join(pums_columns))
    return [sql.SQL("CREATE SCHEMA IF NOT EXISTS raw"), adult, pums]


def ensure_raw_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the schema ``raw`` with the tables ``raw.adult`` and ``raw.pums`` if missing."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        for statement in _ddl():
            conn.execute(statement)


def _copy_error(
    path: Path, error: psycopg.Error, line_of: Callable[[int], int] | None = None
) -> LoadError:
    """One line naming the file and line, from the COPY context the server reports.

    ``line_of`` turns COPY's line (the n-th row sent) into the file's physical line when they
    differ, as for Adult, whose skipped header and blank lines never reach the server.
    """
    diag = error.diag
    message = diag.message_primary or first_line(error)
    if diag.message_detail:
        message = f"{message} ({diag.message_detail.strip()})"
    match = _COPY_CONTEXT.search(diag.context or "")
    if match is None:
        return LoadError(f"{path}: {message}")
    line = int(match[1]) if line_of is None else line_of(int(match[1]))
    column = f" (column {match[2]})" if match[2] else ""
    return LoadError(f"{path}:{line}{column}: {message}")


def _adult_line(path: Path, split: str) -> Callable[[int], int]:
    """COPY's n-th row of an Adult file -> its physical line (the row's line_number)."""

    def line_of(row: int) -> int:
        found = next(itertools.islice(iter_adult_rows(path, split), row - 1, None), None)
        return int(found[1]) if found is not None else row

    return line_of


def _replace_content(conn: psycopg.Connection[Any], table: str) -> None:
    # TRUNCATE inside the load's transaction: readers see the old rows until the commit, and
    # COPY may FREEZE the new ones (no hint-bit writes when dbt first reads them).
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(*table.split("."))))


def load_adult(conn: psycopg.Connection[Any], files: Mapping[str, Path], dataset_uri: str) -> int:
    """Replace ``raw.adult`` with the rows of ``adult.data`` (train) and ``adult.test`` (test).

    ``files`` maps the file names of the raw dataset to local paths. Returns the row count.
    """
    if set(files) != set(ADULT_SPLITS):
        raise LoadError(
            f"the Adult raw dataset is the files {sorted(ADULT_SPLITS)}, got {sorted(files)}"
        )
    columns = sql.SQL(", ").join(
        sql.Identifier(name) for name in ("split", "line_number", *ADULT_COLUMNS, "dataset_uri")
    )
    copy_statement = sql.SQL("COPY raw.adult ({}) FROM STDIN (FREEZE true)").format(columns)
    ensure_raw_schema(conn)
    rows = 0
    path, split = Path(), ""
    try:
        with conn.transaction(), conn.cursor() as cursor:
            _replace_content(conn, ADULT_TABLE)
            for name, split in ADULT_SPLITS.items():
                path = Path(files[name])
                with cursor.copy(copy_statement) as copy:
                    for row in iter_adult_rows(path, split):
                        copy.write_row((*row, dataset_uri))
                rows += cursor.rowcount
            conn.execute("ANALYZE raw.adult")
    except SourceError as error:
        raise LoadError(str(error)) from error
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file") from None
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as error:
        raise _copy_error(path, error, _adult_line(path, split)) from error
    return rows


def _check_pums_header(path: Path) -> None:
    expected = ",".join(PUMS_COLUMNS)
    try:
        with path.open("rb") as file:
            first = file.readline(len(expected) * 4 + 2)
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file") from None
    header = first.decode("utf-8", errors="replace").rstrip("\r\n")
    if header != expected:
        raise LoadError(f"{path}:1: the header is {header!r}, expected {expected!r}")


def load_pums(conn: psycopg.Connection[Any], path: Path, dataset_uri: str) -> int:
    """Replace ``raw.pums`` with the rows of one PUMS ``persons.csv``; returns the row count.

    The file's bytes go to the server as they are (COPY ... FORMAT csv); ``dataset_uri`` comes
    from a column default that exists only inside the load's transaction.
    """
    path = Path(path)
    _check_pums_header(path)
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in _pums_columns())
    copy_statement = sql.SQL(
        "COPY raw.pums ({}) FROM STDIN (FORMAT csv, HEADER true, FREEZE true)"
    ).format(columns)
    ensure_raw_schema(conn)
    try:
        with conn.transaction(), conn.cursor() as cursor, path.open("rb") as file:
            _replace_content(conn, PUMS_TABLE)
            conn.execute(
                sql.SQL("ALTER TABLE raw.pums ALTER COLUMN dataset_uri SET DEFAULT {}").format(
                    sql.Literal(dataset_uri)
                )
            )
            with cursor.copy(copy_statement) as copy:
                while block := file.read(_COPY_BLOCK_BYTES):
                    copy.write(block)
            rows = cursor.rowcount
            conn.execute("ALTER TABLE raw.pums ALTER COLUMN dataset_uri DROP DEFAULT")
            conn.execute("ANALYZE raw.pums")
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as error:
        raise _copy_error(path, error) from error
    return rows


def load_raw(
    conn: psycopg.Connection[Any], source: str, files: Mapping[str, Path], dataset_uri: str
) -> int:
    """Load the files of a raw version of ``source`` ('adult' or 'pums'); returns the rows."""
    if source == "adult":
        return load_adult(conn, files, dataset_uri)
    if source == "pums":
        if set(files) != {PUMS_FILE}:
            raise LoadError(f"the PUMS raw dataset is the file {PUMS_FILE}, got {sorted(files)}")
        return load_pums(conn, files[PUMS_FILE], dataset_uri)
    raise LoadError(f"unknown source {source!r}: expected 'adult' or 'pums'")
