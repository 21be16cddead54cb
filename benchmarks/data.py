"""Adult pipeline wall time and PUMS load throughput on a real, durable PostgreSQL.

    uv run python benchmarks/data.py [--rows 1000000] [--repeat 3] [--skip-adult] [--skip-pums]
                                     [--no-fail]

Starts an embedded PostgreSQL with fsync on (commits are durable) and uses a temporary
PAYBAND_HOME (local store, dbt work dir), then measures
(1) Adult end to end through payband_data.steps: ingest -> load -> dbt build -> snapshot, each
    step timed, twice: cold (dbt parses the project) and warm (partial parse, same raw version).
    Target: each total under 60 s.
(2) PUMS load: a raw-format persons.csv (header PUMS_COLUMNS, plausible integers, every row
    passing the folktables filter) is written directly with the csv module, untimed: the
    source's filter of a census file is private and reads zips only. load_pums then replaces
    raw.pums with it --repeat times (COPY, ANALYZE and commit each time). Target: median
    200,000 rows/s or more.
Prints a table; exits 1 if a target is missed (always 0 with --no-fail).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _report import Row, print_table, timed  # benchmarks/ is the script's directory

from payband_data import steps
from payband_data.db import connect
from payband_data.load import ensure_raw_schema, load_pums
from payband_data.settings import DataSettings
from payband_data.sources.pums import PUMS_COLUMNS
from payband_local.postgres import EmbeddedPostgres

ADULT_TARGET_S = 60.0
PUMS_TARGET_ROWS_S = 200_000.0
ADULT_EDGES = (50_000,)
PUMS_URI = "local://raw/pums@" + "0" * 64  # load_pums only records it in each row


def adult_run(settings: DataSettings, label: str) -> list[Row]:
    seconds: dict[str, float] = {}
    version, seconds["ingest"] = timed(lambda: steps.ingest("adult", settings))
    rows, seconds["load"] = timed(lambda: steps.load(version.uri, settings))
    _, seconds["dbt build"] = timed(lambda: steps.build("adult", ADULT_EDGES, settings))
    _, seconds["snapshot"] = timed(lambda: steps.snapshot("adult", ADULT_EDGES, settings))
    total = sum(seconds.values())
    result = [Row(f"adult {label}: {step}", f"{s:.2f} s") for step, s in seconds.items()]
    ratio = f"{total / ADULT_TARGET_S:.0%} of budget"
    name = f"adult {label}: total, {rows:,} rows"
    result.append(Row(name, f"{total:.2f} s", "< 60 s", ratio, total < ADULT_TARGET_S))
    return result


def raw_pums_rows(count: int, seed: int = 0) -> Iterator[tuple[str, ...]]:
    """Rows in the raw persons.csv format: 3 persons per household, all passing the filter."""
    r = random.Random(seed).random  # noqa: S311 - reproducible benchmark data, not secrets
    small = tuple(str(i) for i in range(100))  # str() per value would dominate the writing
    occupations = tuple(str(code) for code in range(10, 9830, 10))
    states = ("6", "36", "48", "12", "17")
    for i in range(count):
        wages = int(r() ** 3 * 400_000)
        income = max(wages, 101) + (int(r() * 30_000) if r() < 0.3 else 0)
        yield (
            "2023", f"2023HU{i // 3:07d}", small[i % 3 + 1], states[i // 3 % 5],
            small[17 + int(r() * 78)], small[1 + int(r() * 8)], small[1 + int(r() * 24)],
            small[1 + int(r() * 5)], occupations[int(r() * len(occupations))],
            small[1 + int(r() * 9)], small[1 + int(r() * 2)], small[1 + int(r() * 56)],
            small[1 + int(r() * 99)], str(wages), str(income), str(1 + int(r() * 299)),
        )  # fmt: skip


def pums_loads(url: str, path: Path, repeat: int) -> list[Row]:
    with connect(url, autocommit=True) as conn:
        ensure_raw_schema(conn)  # table creation is not part of what is measured
    rates: list[float] = []
    result: list[Row] = []
    for attempt in range(1, repeat + 1):
        # A connection per load, as steps.load does; leaving `with` commits.
        started = time.perf_counter()
        with connect(url) as conn:
            rows = load_pums(conn, path, PUMS_URI)
        elapsed = time.perf_counter() - started
        rates.append(rows / elapsed)
        measured = f"{elapsed:.2f} s, {rates[-1]:,.0f} rows/s"
        result.append(Row(f"pums load {attempt}: {rows:,} rows", measured))
    median = statistics.median(rates)
    ratio = f"{median / PUMS_TARGET_ROWS_S:.2f}x target"
    passed = median >= PUMS_TARGET_ROWS_S
    result.append(Row("pums load: median", f"{median:,.0f} rows/s", ">= 200,000", ratio, passed))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-adult", action="store_true")
    parser.add_argument("--skip-pums", action="store_true")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a target is missed")
    args = parser.parse_args()

    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="payband-bench-") as tmp,
        EmbeddedPostgres(durable=True) as server,
    ):
        home = Path(tmp)
        os.environ["PAYBAND_HOME"] = str(home)  # nothing of the run lands in ~/.payband
        url = server.create_database("payband").url
        settings = DataSettings(
            database_url=url,
            store_dir=home / "store",
            dbt_work_dir=home / "dbt",
            pums_cache_dir=home / "cache" / "pums",
        )
        if not args.skip_adult:
            rows += adult_run(settings, "cold") + adult_run(settings, "warm")
        if not args.skip_pums:
            path = home / "persons.csv"
            with path.open("w", newline="", encoding="ascii") as file:
                writer = csv.writer(file, lineterminator="\n")
                writer.writerow(PUMS_COLUMNS)
                writer.writerows(raw_pums_rows(args.rows))
            rows.append(Row("pums file size", f"{path.stat().st_size / 1e6:,.1f} MB"))
            rows += pums_loads(url, path, args.repeat)

    print_table(rows)
    if not args.no_fail and any(row.passed is False for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
