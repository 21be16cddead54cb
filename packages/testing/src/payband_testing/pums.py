"""Synthetic ACS PUMS person files in the census format, for tests and benchmarks.

``write_persons_csv`` writes a ``psam_p<fips>.csv`` with a realistic subset of the census
columns in census order and plausible values (blanks where the census leaves them blank,
zero-padded codes, some rows that fail the folktables filter); ``write_persons_zip`` wraps it
like the census ``csv_p<state>.zip``. Deterministic for a seed; stdlib only and fast enough
for a million rows.
"""

from __future__ import annotations

import csv
import io
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = [
    "PUMS_FILE_COLUMNS",
    "STATE_FIPS",
    "write_persons_csv",
    "write_persons_zip",
]

# A subset of the person-file header, in the order the census writes it.
PUMS_FILE_COLUMNS: tuple[str, ...] = (
    "RT", "SERIALNO", "DIVISION", "SPORDER", "PUMA", "REGION", "ST", "ADJINC", "PWGTP",
    "AGEP", "CIT", "CITWP", "COW", "DDRS", "DEAR", "DEYE", "ENG", "FER", "HINS1", "INTP",
    "JWMNP", "JWTRNS", "LANX", "MAR", "MARHT", "MIG", "MIL", "NWAB", "OIP", "PAP",
    "RELSHIPP", "RETP", "SCH", "SCHG", "SCHL", "SEMP", "SEX", "SSIP", "SSP", "WAGP", "WKHP",
    "WKL", "WKWN", "WRK", "YOEP", "ANC", "DIS", "ESR", "HISP", "INDP", "NATIVITY", "OCCP",
    "PERNP", "PINCP", "POBP", "POVPIP", "POWSP", "RAC1P", "SOCP", "PWGTP1", "PWGTP2", "PWGTP3",
)  # fmt: skip

STATE_FIPS: dict[str, int] = {
    "AL": 1, "AK": 2, "AZ": 4, "AR": 5, "CA": 6, "CO": 8, "CT": 9, "DE": 10, "DC": 11,
    "FL": 12, "GA": 13, "HI": 15, "ID": 16, "IL": 17, "IN": 18, "IA": 19, "KS": 20, "KY": 21,
    "LA": 22, "ME": 23, "MD": 24, "MA": 25, "MI": 26, "MN": 27, "MS": 28, "MO": 29, "MT": 30,
    "NE": 31, "NV": 32, "NH": 33, "NJ": 34, "NM": 35, "NY": 36, "NC": 37, "ND": 38, "OH": 39,
    "OK": 40, "OR": 41, "PA": 42, "RI": 44, "SC": 45, "SD": 46, "TN": 47, "TX": 48, "UT": 49,
    "VT": 50, "VA": 51, "WA": 53, "WV": 54, "WI": 55, "WY": 56, "PR": 72,
}  # fmt: skip

# Census division -> the FIPS codes of its states (region = (division + 1) // 2, roughly).
_DIVISIONS: dict[int, tuple[int, ...]] = {
    1: (9, 23, 25, 33, 44, 50),
    2: (34, 36, 42),
    3: (17, 18, 26, 39, 55),
    4: (19, 20, 27, 29, 31, 38, 46),
    5: (10, 11, 12, 13, 24, 37, 45, 51, 54),
    6: (1, 21, 28, 47),
    7: (5, 22, 40, 48),
    8: (4, 8, 16, 30, 32, 35, 49, 56),
    9: (2, 6, 15, 41, 53),
}
_REGION_OF_DIVISION = {1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3, 7: 3, 8: 4, 9: 4}
_ADJINC = {2018: "1013097", 2019: "1010145", 2021: "1029928", 2022: "1042311", 2023: "1019518"}

# Place of birth: state codes (3, 7, 14, 43 and 52 are unused FIPS codes) and some abroad.
_POBP_STATES = tuple(code for code in range(1, 57) if code not in (3, 7, 14, 43, 52))
_POBP_ABROAD = (72, 110, 207, 210, 233, 303, 312, 329, 362, 427)
# 2018 OCCP code ranges (first, last) of the major groups; codes step by 10 inside a range,
# so every drawn code lies in a group (the gaps between groups hold no occupation).
_OCCP_BLOCKS = (
    (10, 960), (1005, 3550), (3601, 3655), (3700, 3960), (4000, 4655), (4700, 4965),
    (5000, 5940), (6005, 6130), (6200, 7640), (7700, 8990), (9005, 9760), (9800, 9830),
)  # fmt: skip
(
    _SERIALNO, _SPORDER, _PWGTP, _AGEP, _COW, _MAR, _SCHL, _SEX, _WAGP, _WKHP, _ESR, _INDP_AT,
    _OCCP, _SOCP_AT, _PERNP, _PINCP, _POBP, _RAC1P,
) = (
    PUMS_FILE_COLUMNS.index(name)
    for name in (
        "SERIALNO", "SPORDER", "PWGTP", "AGEP", "COW", "MAR", "SCHL", "SEX", "WAGP", "WKHP",
        "ESR", "INDP", "OCCP", "SOCP", "PERNP", "PINCP", "POBP", "RAC1P",
    )
)  # fmt: skip
# Preformatted small integers: str() per value is most of the cost of a million rows.
_S = tuple(str(i) for i in range(301))
_SCHL_CODES = tuple(f"{i:02d}" for i in range(1, 25))
_INDP = ("0170", "0770", "1170", "3390", "4670", "6170", "6870", "7380", "7860", "8190")
_SOCP = ("11102X", "131199", "151252", "252020", "291141", "353023", "412031", "472061")


def _occupation(u: float, v: float) -> int:
    first, last = _OCCP_BLOCKS[int(u * len(_OCCP_BLOCKS))]
    return min(first + int(v * ((last - first) // 10 + 1)) * 10, last)


def _filler(rng: random.Random, year: int) -> list[str]:
    """Plausible values for the columns no payband code reads."""
    r = rng.random
    row = [""] * len(PUMS_FILE_COLUMNS)
    values = {
        "RT": "P",
        "PUMA": f"{100 + int(r() * 40) * 100:05d}",
        "ADJINC": _ADJINC.get(year, "1000000"),
        "CIT": str(1 + int(r() * 5)),
        "DDRS": str(1 + int(r() * 2)),
        "DEAR": str(1 + int(r() * 2)),
        "DEYE": str(1 + int(r() * 2)),
        "ENG": "" if r() < 0.8 else str(1 + int(r() * 4)),
        "HINS1": str(1 + int(r() * 2)),
        "INTP": str(int(r() ** 4 * 20000)),
        "JWMNP": "" if r() < 0.5 else str(1 + int(r() * 90)),
        "JWTRNS": "" if r() < 0.5 else f"{1 + int(r() * 12):02d}",
        "LANX": str(1 + int(r() * 2)),
        "MIG": str(1 + int(r() * 3)),
        "MIL": str(1 + int(r() * 4)),
        "RELSHIPP": f"{20 + int(r() * 19)}",
        "RETP": "0" if r() < 0.8 else str(int(r() * 40000)),
        "SCH": str(1 + int(r() * 3)),
        "SEMP": "0" if r() < 0.9 else str(int(r() * 80000)),
        "SSP": "0" if r() < 0.75 else str(int(r() * 30000)),
        "DIS": str(1 + int(r() * 2)),
        "HISP": f"{1 + int(r() * 24):02d}" if r() < 0.2 else "01",
        "NATIVITY": str(1 + int(r() * 2)),
        "POVPIP": str(int(r() * 502)),
        "PWGTP1": str(int(r() * 300)),
        "PWGTP2": str(int(r() * 300)),
        "PWGTP3": str(int(r() * 300)),
    }
    for name, value in values.items():
        row[PUMS_FILE_COLUMNS.index(name)] = value
    return row


def _rows(rows: int, year: int, state_fips: int, seed: int) -> Iterator[list[str]]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    r = rng.random
    division = next((d for d, codes in _DIVISIONS.items() if state_fips in codes), 0)
    fillers = [_filler(rng, year) for _ in range(64)]
    for row in fillers:
        row[PUMS_FILE_COLUMNS.index("DIVISION")] = str(division)
        row[PUMS_FILE_COLUMNS.index("REGION")] = str(_REGION_OF_DIVISION.get(division, 9))
        row[PUMS_FILE_COLUMNS.index("ST")] = f"{state_fips:02d}"
    serial, sporder, household_left, kind = 0, 0, 0, "HU"

    for _ in range(rows):
        if household_left == 0:
            serial += 1
            sporder = 0
            kind = "GQ" if r() < 0.03 else "HU"
            household_left = 1 if kind == "GQ" else 1 + int(r() ** 2 * 5)
        household_left -= 1
        sporder += 1

        age = int(r() * 97)
        worker = age >= 16 and r() < 0.65
        worked_before = worker or (age >= 16 and r() < 0.3)
        wages = int(r() ** 3 * 500_000) if worker else 0
        u = r()
        if age < 15:
            income = ""
        elif u < 0.03:
            income = str(-1 - int(r() * 20_000))
        elif u < 0.08:
            income = str(int(r() * 101))
        else:
            income = str(wages + (int(r() * 30_000) if r() < 0.3 else 0))
        if r() < 0.15:
            birthplace = _POBP_ABROAD[int(r() * len(_POBP_ABROAD))]
        else:
            birthplace = state_fips if r() < 0.7 else _POBP_STATES[int(r() * len(_POBP_STATES))]

        row = fillers[int(r() * len(fillers))].copy()
        # Serial numbers are unique across the nation: the state's code leads the number.
        row[_SERIALNO] = f"{year}{kind}{state_fips:02d}{serial:07d}"
        row[_SPORDER] = _S[sporder]
        row[_PWGTP] = "0" if r() < 0.01 else _S[1 + int(r() ** 2 * 299)]
        row[_AGEP] = _S[age]
        row[_COW] = _S[1 + int(r() * 9)] if worked_before else ""
        row[_MAR] = _S[1 + int(r() * 5)] if age >= 15 else "5"
        row[_SCHL] = _SCHL_CODES[int(r() * 24)] if age >= 3 else ""
        row[_SEX] = _S[1 + int(r() * 2)]
        row[_WAGP] = row[_PERNP] = "" if age < 15 else str(wages)
        row[_WKHP] = (_S[40] if r() < 0.5 else _S[1 + int(r() * 99)]) if worker else ""
        row[_ESR] = "1" if worker else ("" if age < 16 else "6")
        if worked_before:
            row[_INDP_AT] = _INDP[int(r() * len(_INDP))]
            row[_OCCP] = f"{_occupation(r(), r()):04d}"
            row[_SOCP_AT] = _SOCP[int(r() * len(_SOCP))]
        row[_PINCP] = income
        row[_POBP] = f"{birthplace:03d}"
        row[_RAC1P] = _S[1 + int(r() * 9)]
        yield row


def write_persons_csv(
    path_or_file: str | Path | TextIO, rows: int, *, year: int, state_fips: int, seed: int = 0
) -> int:
    """Write a header and ``rows`` synthetic persons in the census CSV format; returns ``rows``."""
    if isinstance(path_or_file, str | Path):
        with Path(path_or_file).open("w", newline="", encoding="ascii") as file:
            return write_persons_csv(file, rows, year=year, state_fips=state_fips, seed=seed)
    writer = csv.writer(path_or_file, lineterminator="\n")
    writer.writerow(PUMS_FILE_COLUMNS)
    writer.writerows(_rows(rows, year, state_fips, seed))
    return rows


def write_persons_zip(
    path: str | Path, rows: int, *, year: int, state_fips: int, seed: int = 0
) -> Path:
    """Write a census-style ``csv_p<state>.zip``: ``psam_p<fips>.csv`` plus a README member."""
    path = Path(path)
    # Level 1 keeps a million-row archive quick to write; it is still an ordinary deflate zip.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with (
            archive.open(f"psam_p{state_fips:02d}.csv", "w") as member,
            io.TextIOWrapper(member, encoding="ascii", newline="") as text,
        ):
            write_persons_csv(text, rows, year=year, state_fips=state_fips, seed=seed)
        archive.writestr(f"ACS{year}_PUMS_README.pdf", b"%PDF-1.4\n% synthetic README\n%%EOF\n")
    return path
