"""Loading raw versions into PostgreSQL with COPY: Adult, PUMS, replacement and bad input."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from payband_data.db import connect
from payband_data.load import (
    LoadError,
    ensure_raw_schema,
    load_adult,
    load_pums,
    load_raw,
)
from payband_data.sources.adult import adult_files
from payband_data.sources.pums import PUMS_COLUMNS, PumsSource
from payband_local.postgres import PostgresConnectionInfo
from payband_testing.pums import STATE_FIPS, write_persons_zip

HEADER = ",".join(PUMS_COLUMNS)
URI_A = "local://raw/adult@" + "a" * 64
URI_B = "local://raw/adult@" + "b" * 64
PUMS_URI = "local://raw/pums@" + "c" * 64
# Real census codes, so the rows are plausible persons.
_OCCP = (10, 440, 960, 1021, 2310, 3255, 3601, 3700, 4000, 4720, 5000, 6005, 6230, 7700, 9005)


def write_raw_persons(path: Path, rows: int, *, seed: int = 0, year: int = 2023) -> Path:
    """A ``persons.csv`` in the raw format (already filtered), ``rows`` persons."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    r = rng.random
    serial = sporder = 0
    with path.open("w", encoding="ascii") as file:
        file.write(HEADER + "\n")
        for _ in range(rows):
            if sporder == 0 or r() < 0.4:
                serial, sporder = serial + 1, 0
            sporder += 1
            wages = int(r() ** 3 * 400_000)
            file.write(
                f"{year},{year}HU{serial:07d},{sporder},6,{17 + int(r() * 80)},"
                f"{1 + int(r() * 8)},{1 + int(r() * 24)},{1 + int(r() * 5)},"
                f"{_OCCP[int(r() * len(_OCCP))]},{1 + int(r() * 9)},{1 + int(r() * 2)},"
                f"{6 if r() < 0.8 else 303},{1 + int(r() * 98)},{wages},{wages + 200},"
                f"{1 + int(r() * 200)}\n"
            )
    return path


def _count(conn: psycopg.Connection[Any], table: str, uri: str | None = None) -> int:
    query = f"SELECT count(*) FROM {table}"  # noqa: S608 - table names are constants here
    if uri is None:
        row = conn.execute(query.encode()).fetchone()
    else:
        row = conn.execute(f"{query} WHERE dataset_uri = %s".encode(), (uri,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def database(postgres_module_database: PostgresConnectionInfo) -> PostgresConnectionInfo:
    return postgres_module_database


@pytest.fixture
def conn(database: PostgresConnectionInfo) -> Iterator[psycopg.Connection[Any]]:
    with connect(database.url) as connection:
        yield connection


def test_raw_schema_is_created_once_with_primary_keys(conn: psycopg.Connection[Any]) -> None:
    ensure_raw_schema(conn)
    ensure_raw_schema(conn)
    keys = conn.execute(
        "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc "
        "JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name) "
        "WHERE tc.table_schema = 'raw' AND tc.constraint_type = 'PRIMARY KEY' ORDER BY 1"
    ).fetchall()
    assert keys == [("adult", "record_id"), ("pums", "record_id")]
    columns = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'raw' AND table_name = 'pums' ORDER BY ordinal_position"
    ).fetchall()
    assert [name for name, _ in columns] == [
        "record_id",
        *(name.lower() for name in PUMS_COLUMNS),
        "dataset_uri",
        "loaded_at",
    ]
    types = dict(columns)
    assert types["serialno"] == "text"
    assert types["agep"] == types["wagp"] == "integer"
    assert types["loaded_at"] == "timestamp with time zone"


def test_adult_load_copies_every_record(conn: psycopg.Connection[Any]) -> None:
    started = time.perf_counter()
    rows = load_raw(conn, "adult", adult_files(), URI_A)
    elapsed = time.perf_counter() - started

    assert rows == 48_842
    splits = dict(conn.execute("SELECT split, count(*) FROM raw.adult GROUP BY split").fetchall())
    assert splits == {"train": 32_561, "test": 16_281}
    assert _count(conn, "raw.adult", URI_A) == 48_842
    # The first record of each file, typed, '?' and the test file's '.' kept as in the file.
    first_train = conn.execute(
        "SELECT age, workclass, fnlwgt, education, income, line_number FROM raw.adult "
        "WHERE record_id = 'adult-train-1'"
    ).fetchone()
    assert first_train == (39, "State-gov", 77_516, "Bachelors", "<=50K", 1)
    first_test = conn.execute(
        "SELECT age, occupation, income FROM raw.adult WHERE record_id = 'adult-test-2'"
    ).fetchone()
    assert first_test == (25, "Machine-op-inspct", "<=50K.")
    unknown = conn.execute("SELECT count(*) FROM raw.adult WHERE workclass = '?'").fetchone()
    assert unknown == (2_799,)
    assert elapsed < 30, f"loading Adult took {elapsed:.1f} s"


def test_reloading_replaces_the_previous_version(conn: psycopg.Connection[Any]) -> None:
    load_adult(conn, adult_files(), URI_A)
    first_loaded = conn.execute("SELECT max(loaded_at) FROM raw.adult").fetchone()

    assert load_adult(conn, adult_files(), URI_B) == 48_842

    assert _count(conn, "raw.adult") == 48_842
    assert _count(conn, "raw.adult", URI_B) == 48_842
    assert conn.execute("SELECT min(loaded_at) FROM raw.adult").fetchone() > first_loaded


def test_adult_needs_both_files(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"adult\.data.*adult\.test"):
        load_adult(conn, {"adult.data": adult_files()["adult.data"]}, URI_A)


def test_a_malformed_adult_line_keeps_the_previous_rows(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    load_adult(conn, adult_files(), URI_A)
    files = adult_files()
    broken = tmp_path / "adult.test"
    lines = files["adult.test"].read_text().splitlines(keepends=True)
    lines[5] = (
        "41, Private, lots, HS-grad, 9, Divorced, Sales, Unmarried, White, Male, 0, 0, 40, United-States, <=50K.\n"  # noqa: E501
    )
    broken.write_text("".join(lines))

    with pytest.raises(LoadError) as caught:
        load_adult(conn, {**files, "adult.test": broken}, URI_B)

    assert str(caught.value).startswith(f"{broken}:6")
    assert "fnlwgt" in str(caught.value)
    assert _count(conn, "raw.adult", URI_A) == 48_842


def test_a_value_the_database_refuses_names_the_physical_adult_line(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """COPY counts rows sent; adult.test's skipped first line must not shift the line named."""
    files = adult_files()
    broken = tmp_path / "adult.test"
    lines = files["adult.test"].read_text().splitlines(keepends=True)
    lines[5] = (
        "99999999999, Private, 1, HS-grad, 9, Divorced, Sales, Unmarried, White, Male, 0, 0, 40, United-States, <=50K.\n"  # noqa: E501
    )
    broken.write_text("".join(lines))

    with pytest.raises(LoadError) as caught:
        load_adult(conn, {**files, "adult.test": broken}, URI_B)

    assert str(caught.value).startswith(f"{broken}:6 (column age): ")
    assert "out of range" in str(caught.value)


@pytest.fixture
def census_person_zip(tmp_path: Path) -> Iterator[str]:
    """A census-like HTTP server on 127.0.0.1 serving one synthetic California person zip."""
    root = tmp_path / "census"
    folder = root / "pums" / "2023" / "1-Year"
    folder.mkdir(parents=True)
    write_persons_zip(folder / "csv_pca.zip", 3_000, year=2023, state_fips=STATE_FIPS["CA"])

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """No request log on stderr."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/pums"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_pums_load_of_a_fetched_census_file(
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    census_person_zip: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    source = PumsSource(2023, ["CA"], base_url=census_person_zip, cache_dir=tmp_path / "cache")
    raw = source.fetch(tmp_path / "raw")

    rows = load_raw(conn, "pums", raw.files, PUMS_URI)

    assert rows == int(raw.metadata["row_count"]) > 0
    assert _count(conn, "raw.pums", PUMS_URI) == rows
    expected_ids = []
    with raw.files["persons.csv"].open() as file:
        next(file)
        for line in file:
            year, serialno, sporder = line.split(",")[:3]
            expected_ids.append(f"pums-{year}-{serialno}-{sporder}")
    loaded = {row[0] for row in conn.execute("SELECT record_id FROM raw.pums").fetchall()}
    assert loaded == set(expected_ids)
    # The folktables filter held in the file, and the values arrived as integers.
    bounds = conn.execute("SELECT min(agep), min(pincp), min(wkhp), min(pwgtp) FROM raw.pums")
    min_age, min_income, min_hours, min_weight = bounds.fetchone()
    assert min_age > 16
    assert min_income > 100
    assert min_hours > 0
    assert min_weight >= 1


def test_pums_load_is_fast_and_leaves_no_default_behind(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = write_raw_persons(tmp_path / "persons.csv", 300_000, seed=3)

    started = time.perf_counter()
    rows = load_pums(conn, path, PUMS_URI)
    elapsed = time.perf_counter() - started

    assert rows == 300_000
    assert _count(conn, "raw.pums", PUMS_URI) == rows
    # Row INSERTs manage a few ten thousand rows a second; COPY several hundred thousand.
    assert rows / elapsed > 100_000, f"{rows / elapsed:,.0f} rows/s"
    default = conn.execute(
        "SELECT column_default FROM information_schema.columns "
        "WHERE table_schema = 'raw' AND table_name = 'pums' AND column_name = 'dataset_uri'"
    ).fetchone()
    assert default == (None,)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            "2023,2023HU0000009,1,6,abc,1,21,1,10,1,1,6,40,50000,50000,10",
            r":4 \(column agep\): invalid input syntax for type integer: \"abc\"",
            id="not-an-integer",
        ),
        pytest.param(
            "2023,2023HU0000009,1,6,40,1,21",
            r":4: missing data for column \"mar\"",
            id="missing-fields",
        ),
        pytest.param(
            "2023,2023HU0000001,1,6,40,1,21,1,10,1,1,6,40,50000,50000,10",
            r":4: duplicate key value .*pums-2023-2023HU0000001-1",
            id="duplicate-person",
        ),
        pytest.param(
            "2023,2023HU0000009,1,6,40,1,21,1,10,1,1,6,40,99999999999,50000,10",
            r":4 \(column wagp\): value \"99999999999\" is out of range for type integer",
            id="out-of-range",
        ),
    ],
)
def test_a_malformed_pums_line_is_named_and_keeps_the_previous_rows(
    conn: psycopg.Connection[Any], tmp_path: Path, line: str, expected: str
) -> None:
    good = write_raw_persons(tmp_path / "good.csv", 50, seed=1)
    load_pums(conn, good, PUMS_URI)
    bad = tmp_path / "persons.csv"
    bad.write_text(
        f"{HEADER}\n"
        "2023,2023HU0000001,1,6,40,1,21,1,10,1,1,6,40,50000,50000,10\n"
        "2023,2023HU0000002,1,6,41,1,21,1,10,1,2,6,40,50000,50000,10\n"
        f"{line}\n"
    )

    with pytest.raises(LoadError, match=expected) as caught:
        load_pums(conn, bad, "local://raw/pums@" + "d" * 64)

    assert str(caught.value).startswith(f"{bad}:4")
    assert "\n" not in str(caught.value)
    assert _count(conn, "raw.pums", PUMS_URI) == 50
    assert _count(conn, "raw.pums") == 50


def test_a_wrong_pums_header_is_refused_before_loading(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    load_pums(conn, write_raw_persons(tmp_path / "good.csv", 20), PUMS_URI)
    bad = tmp_path / "persons.csv"
    bad.write_text(HEADER.replace("AGEP", "AGE") + "\n2023,2023HU0000001,1,6,40\n")

    with pytest.raises(LoadError, match=r":1: the header is .*AGE,.* expected .*AGEP"):
        load_pums(conn, bad, "local://raw/pums@" + "d" * 64)
    with pytest.raises(LoadError, match="no such file"):
        load_pums(conn, tmp_path / "missing.csv", PUMS_URI)
    with pytest.raises(LoadError, match=r"persons\.csv"):
        load_raw(conn, "pums", {"people.csv": bad}, PUMS_URI)
    with pytest.raises(LoadError, match="unknown source"):
        load_raw(conn, "census", {}, PUMS_URI)

    assert _count(conn, "raw.pums", PUMS_URI) == 20


def test_the_schema_lock_is_not_the_build_lock() -> None:
    """load.py's schema lock is taken while steps' build lock is held: one key would deadlock."""
    from payband_data import load, steps

    assert load._SCHEMA_LOCK_KEY != steps._BUILD_LOCK_KEY


def test_raw_tables_are_unlogged(postgres_database) -> None:
    """Copies of versioned-store commits: no write-ahead log, so loads run about twice as fast."""
    from payband_data.load import ensure_raw_schema

    with postgres_database.connect() as conn:
        ensure_raw_schema(conn)
        rows = conn.execute(
            "SELECT relname, relpersistence FROM pg_class"
            " WHERE relnamespace = 'raw'::regnamespace AND relkind = 'r' ORDER BY relname"
        ).fetchall()
    assert rows == [("adult", "u"), ("pums", "u")]
