"""The synthetic PUMS writer: census header order, realistic values, deterministic per seed."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from payband_testing.pums import (
    PUMS_FILE_COLUMNS,
    STATE_FIPS,
    write_persons_csv,
    write_persons_zip,
)

NEEDED = ("SERIALNO", "SPORDER", "ST", "AGEP", "COW", "SCHL", "MAR", "OCCP", "RAC1P", "SEX",
          "POBP", "WKHP", "WAGP", "PINCP", "PWGTP")  # fmt: skip
ROWS = 5000


@pytest.fixture(scope="module")
def persons() -> list[dict[str, str]]:
    buffer = io.StringIO()
    assert write_persons_csv(buffer, ROWS, year=2019, state_fips=6, seed=7) == ROWS
    return list(csv.DictReader(io.StringIO(buffer.getvalue())))


def _ints(persons: list[dict[str, str]], column: str) -> list[int]:
    return [int(p[column]) for p in persons if p[column] != ""]


def test_header_follows_the_census_order() -> None:
    assert PUMS_FILE_COLUMNS[:10] == (
        "RT", "SERIALNO", "DIVISION", "SPORDER", "PUMA", "REGION", "ST", "ADJINC", "PWGTP", "AGEP",
    )  # fmt: skip
    assert set(NEEDED) <= set(PUMS_FILE_COLUMNS)
    assert "YEAR" not in PUMS_FILE_COLUMNS
    assert len(set(PUMS_FILE_COLUMNS)) == len(PUMS_FILE_COLUMNS)
    assert len(PUMS_FILE_COLUMNS) > len(NEEDED) + 20  # columns nobody reads, as in the real file
    order = [PUMS_FILE_COLUMNS.index(name) for name in ("MAR", "SCHL", "SEX", "WAGP", "WKHP")]
    assert order == sorted(order)
    assert PUMS_FILE_COLUMNS.index("OCCP") < PUMS_FILE_COLUMNS.index("PINCP")
    assert PUMS_FILE_COLUMNS.index("POBP") < PUMS_FILE_COLUMNS.index("RAC1P")


def test_rows_have_every_column(persons: list[dict[str, str]]) -> None:
    assert len(persons) == ROWS
    assert list(persons[0]) == list(PUMS_FILE_COLUMNS)
    assert all(None not in p and len(p) == len(PUMS_FILE_COLUMNS) for p in persons)
    assert {p["RT"] for p in persons} == {"P"}
    assert {p["ST"] for p in persons} == {"06"}
    assert {(p["REGION"], p["DIVISION"]) for p in persons} == {("4", "9")}


def test_households_number_their_persons(persons: list[dict[str, str]]) -> None:
    assert all(re.fullmatch(r"2019(HU|GQ)06\d{7}", p["SERIALNO"]) for p in persons)
    kinds = Counter(p["SERIALNO"][4:6] for p in persons)
    assert kinds["GQ"] > 0
    assert kinds["HU"] > kinds["GQ"]
    by_household: dict[str, list[int]] = {}
    for p in persons:
        by_household.setdefault(p["SERIALNO"], []).append(int(p["SPORDER"]))
    assert all(orders == list(range(1, len(orders) + 1)) for orders in by_household.values())
    assert max(len(orders) for orders in by_household.values()) > 1


def test_values_are_in_census_ranges(persons: list[dict[str, str]]) -> None:
    ages = _ints(persons, "AGEP")
    assert len(ages) == ROWS
    assert min(ages) == 0
    assert max(ages) == 96
    assert set(_ints(persons, "SCHL")) == set(range(1, 25))
    assert all(len(p["SCHL"]) == 2 for p in persons if p["SCHL"])
    assert set(_ints(persons, "COW")) == set(range(1, 10))
    assert set(_ints(persons, "MAR")) == set(range(1, 6))
    assert set(_ints(persons, "RAC1P")) == set(range(1, 10))
    assert set(_ints(persons, "SEX")) == {1, 2}
    wages = _ints(persons, "WAGP")
    assert min(wages) == 0
    assert max(wages) <= 500_000
    assert all(1 <= hours <= 99 for hours in _ints(persons, "WKHP"))


def test_blank_where_the_census_leaves_fields_blank(persons: list[dict[str, str]]) -> None:
    children = [p for p in persons if int(p["AGEP"]) < 15]
    assert children
    assert all(
        p["WKHP"] == p["COW"] == p["OCCP"] == p["PINCP"] == p["WAGP"] == "" for p in children
    )
    adults = [p for p in persons if int(p["AGEP"]) >= 16]
    assert any(p["WKHP"] == "" for p in adults)
    assert any(p["COW"] == "" for p in adults)
    assert all(p["COW"] != "" for p in persons if p["WKHP"] != "")


def test_birthplaces_are_real_codes(persons: list[dict[str, str]]) -> None:
    codes = _ints(persons, "POBP")
    assert all(len(p["POBP"]) == 3 for p in persons)
    states = {c for c in codes if c <= 56}
    assert states <= set(range(1, 57)) - {3, 7, 14, 43, 52}
    assert len(states) > 40
    assert {110, 207, 303} <= set(codes)


def test_occupations_are_zero_padded_2018_codes(persons: list[dict[str, str]]) -> None:
    codes = [p["OCCP"] for p in persons if p["OCCP"]]
    assert all(re.fullmatch(r"\d{4}", code) for code in codes)
    numbers = {int(code) for code in codes}
    assert min(numbers) >= 10
    assert max(numbers) <= 9830
    assert any(code.startswith("00") for code in codes)  # management codes such as 0010
    assert len(numbers) > 200


def test_some_persons_fail_the_folktables_filter_for_each_reason(
    persons: list[dict[str, str]],
) -> None:
    def number(p: dict[str, str], column: str) -> int | None:
        return int(p[column]) if p[column] else None

    reasons = Counter()
    passing = 0
    for p in persons:
        age, income = number(p, "AGEP"), number(p, "PINCP")
        hours, weight = number(p, "WKHP"), number(p, "PWGTP")
        reasons["young"] += age is not None and age <= 16
        reasons["negative income"] += income is not None and income < 0
        reasons["small income"] += income is not None and 0 <= income <= 100
        reasons["no hours"] += hours is None
        reasons["zero weight"] += weight == 0
        passing += (
            None not in (age, income, hours, weight)
            and age > 16  # type: ignore[operator]
            and income > 100  # type: ignore[operator]
            and hours > 0  # type: ignore[operator]
            and weight >= 1  # type: ignore[operator]
        )
    assert all(reasons[key] > 0 for key in reasons), reasons
    assert len(reasons) == 5
    assert ROWS * 0.25 < passing < ROWS * 0.75


def test_the_same_seed_writes_the_same_file(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    write_persons_csv(first, 500, year=2021, state_fips=36, seed=3)
    write_persons_csv(str(second), 500, year=2021, state_fips=36, seed=3)
    write_persons_csv(other, 500, year=2021, state_fips=36, seed=4)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert first.read_text().splitlines()[1].startswith("P,2021HU360000001,2,1,")


def test_zip_looks_like_a_census_download(tmp_path: Path) -> None:
    path = write_persons_zip(tmp_path / "csv_pny.zip", 300, year=2021, state_fips=36, seed=5)
    plain = io.StringIO()
    write_persons_csv(plain, 300, year=2021, state_fips=36, seed=5)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["psam_p36.csv", "ACS2021_PUMS_README.pdf"]
        assert archive.getinfo("psam_p36.csv").compress_type == zipfile.ZIP_DEFLATED
        assert archive.read("psam_p36.csv").decode() == plain.getvalue()
        assert archive.read("ACS2021_PUMS_README.pdf").startswith(b"%PDF")


def test_state_fips_cover_the_states_dc_and_puerto_rico() -> None:
    assert len(STATE_FIPS) == 52
    assert (STATE_FIPS["CA"], STATE_FIPS["DC"], STATE_FIPS["PR"], STATE_FIPS["WY"]) == (
        6,
        11,
        72,
        56,
    )
    assert set(STATE_FIPS.values()).isdisjoint({3, 7, 14, 43, 52})


def test_serial_numbers_differ_between_states(tmp_path: Path) -> None:
    """As in the census files: a household's serial number is unique across the nation."""
    serials = []
    for fips in (6, 36):
        path = tmp_path / f"{fips}.csv"
        write_persons_csv(path, 200, year=2021, state_fips=fips, seed=3)
        with path.open(newline="") as handle:
            serials.append({row["SERIALNO"] for row in csv.DictReader(handle)})
    assert serials[0]
    assert not serials[0] & serials[1]
