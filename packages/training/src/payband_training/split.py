"""The train/test split: stratified by band, seeded, and committed to the versioned store.

Both parts keep the snapshot's columns, row order and parquet schema, so they read back with
``read_features(uri, settings, file_name=TRAIN_FILE)``. The parquet bytes depend only on the
rows: the same snapshot, fraction and seed give the same store versions.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from payband_contracts import FEATURE_CATALOGUE
from payband_training.features import BAND, FeatureSet

if TYPE_CHECKING:
    from payband_data.store import DatasetVersion, VersionedStore

__all__ = ["TEST_FILE", "TRAIN_FILE", "Split", "SplitError", "commit_split", "split"]

TRAIN_FILE = "train.parquet"
TEST_FILE = "test.parquet"
# The snapshot's parquet types for the integer columns; everything else is a string.
_INT16_COLUMNS = frozenset(
    {BAND, *(str(spec.name) for spec in FEATURE_CATALOGUE.features if spec.kind == "integer")}
)
_SOURCE = re.compile(r"[a-z0-9_-]+")


class SplitError(ValueError):
    """The features cannot be split or committed as asked; one readable line."""


@dataclass(frozen=True)
class Split:
    """The two parts of a features snapshot and how they were drawn."""

    train: pd.DataFrame
    test: pd.DataFrame
    seed: int
    test_fraction: float


def split(features: FeatureSet, *, test_fraction: float, seed: int) -> Split:
    """Split the rows into train and test, stratified by band; deterministic for a seed.

    Each part keeps the snapshot's row order (and a fresh 0..n-1 index).
    """
    if not 0 < test_fraction < 1:
        raise SplitError(f"test_fraction must be between 0 and 1, not {test_fraction}")
    frame = features.frame
    counts = Counter(frame[BAND].tolist())
    if scarce := [
        f"{label} ({counts[index]} rows)"
        for index, label in enumerate(features.band_labels)
        if counts[index] < 2
    ]:
        raise SplitError(
            f"cannot stratify {features.uri} by band: {', '.join(scarce)} "
            "need at least 2 rows each; use fewer band edges or more data"
        )
    try:
        train_rows, test_rows = train_test_split(
            np.arange(len(frame)),
            test_size=test_fraction,
            random_state=seed,
            stratify=frame[BAND].to_numpy(),
        )
    except ValueError as exc:
        # e.g. a test part too small to hold one row of every band
        raise SplitError(
            f"cannot split {features.uri} with test_fraction {test_fraction}: {exc}"
        ) from None

    def part(rows: np.ndarray) -> pd.DataFrame:
        return frame.iloc[np.sort(rows)].reset_index(drop=True)

    return Split(
        train=part(train_rows), test=part(test_rows), seed=seed, test_fraction=test_fraction
    )


def _table(frame: pd.DataFrame) -> pa.Table:
    """The part as the snapshot's parquet types, without pandas metadata."""
    arrays = []
    for name in frame.columns:
        column = frame[name]
        if name in _INT16_COLUMNS:
            arrays.append(pa.array(column.to_numpy(), type=pa.int16()))
        elif isinstance(column.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(
            column.dtype
        ):
            arrays.append(pa.array(column.to_numpy(dtype=object), type=pa.string()))
        else:
            arrays.append(pa.Array.from_pandas(column))
    return pa.Table.from_arrays(arrays, names=[str(name) for name in frame.columns])


def _rows_per_band(frame: pd.DataFrame, band_labels: tuple[str, ...]) -> str:
    counts = Counter(frame[BAND].tolist())
    per_label = {label: counts[index] for index, label in enumerate(band_labels)}
    return json.dumps(dict(sorted(per_label.items())), separators=(",", ":"))


def commit_split(
    split: Split, features: FeatureSet, store: VersionedStore, *, source: str
) -> tuple[DatasetVersion, DatasetVersion]:
    """Commit the parts as ``splits/<source>/train`` and ``splits/<source>/test``.

    Metadata: source, year, states and band_edges_usd of the features version, plus
    row_count, rows_per_band (JSON), features_uri, raw_uri (the raw version the features were
    built from), seed and test_fraction.
    """
    if not _SOURCE.fullmatch(source):
        raise SplitError(f"invalid source {source!r}: use lower-case letters, digits, '_', '-'")
    snapshot_source = features.version.metadata.get("source", source)
    if snapshot_source != source:
        raise SplitError(
            f"{features.uri} holds source {snapshot_source!r}, not {source!r}: "
            "commit its split under its own source"
        )
    common = {
        "source": source,
        "year": features.version.metadata.get("year", ""),
        "states": features.version.metadata.get("states", ""),
        "band_edges_usd": features.version.metadata.get("band_edges_usd", ""),
        "features_uri": features.uri,
        "raw_uri": features.version.metadata.get("raw_uri", ""),
        "seed": str(split.seed),
        "test_fraction": repr(float(split.test_fraction)),
    }
    committed = []
    with tempfile.TemporaryDirectory(prefix="payband-split-") as tmp:
        for part, frame, file_name in (
            ("train", split.train, TRAIN_FILE),
            ("test", split.test, TEST_FILE),
        ):
            path = Path(tmp) / file_name
            # Fixed writer options and no creation time: equal rows give equal bytes.
            pq.write_table(_table(frame), path, compression="zstd")
            dataset = f"splits/{source}/{part}"
            committed.append(
                store.commit(
                    dataset,
                    {file_name: path},
                    {
                        **common,
                        "row_count": str(len(frame)),
                        "rows_per_band": _rows_per_band(frame, features.band_labels),
                    },
                    message=f"{dataset}: {len(frame)} rows of {features.uri}",
                )
            )
    train, test = committed
    return train, test
