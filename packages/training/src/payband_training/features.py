"""The model's inputs: a features snapshot read into typed pandas columns.

Category levels come from the feature catalogue, never from the data: a level absent from a
snapshot still exists for the model, and a value outside the catalogue is an error, not NaN.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from payband_contracts import FEATURE_CATALOGUE, SalaryBands
from payband_contracts.errors import first_line
from payband_data.store import open_store

if TYPE_CHECKING:
    from payband_data.settings import DataSettings
    from payband_data.store import DatasetVersion

__all__ = [
    "BAND",
    "FEATURES",
    "FEATURES_FILE",
    "PROTECTED",
    "FeatureSet",
    "FeaturesError",
    "band_labels_of",
    "category_levels",
    "feature_frame",
    "model_features",
    "read_features",
    "to_model_frame",
]

FEATURES_FILE = "features.parquet"
# The target: the band index, 0 for the lowest band.
BAND = "band"
FEATURES: tuple[str, ...] = tuple(str(name) for name in FEATURE_CATALOGUE.names)
PROTECTED: tuple[str, ...] = tuple(str(name) for name in FEATURE_CATALOGUE.protected)
_SHOWN_VALUES = 5


class FeaturesError(ValueError):
    """A features snapshot or frame does not match the catalogue; one readable line."""


@dataclass(frozen=True)
class FeatureSet:
    """A features snapshot in memory: the typed frame and the version it came from."""

    frame: pd.DataFrame
    uri: str
    version: DatasetVersion
    band_labels: tuple[str, ...]

    @property
    def n_bands(self) -> int:
        return len(self.band_labels)


def model_features(use_protected: bool) -> list[str]:
    """The model's input columns in catalogue order; sex and race only if allowed."""
    return [name for name in FEATURES if use_protected or name not in PROTECTED]


def category_levels() -> dict[str, list[str]]:
    """The levels of every categorical or ordinal feature, in catalogue order."""
    return {
        str(spec.name): list(spec.values)
        for spec in FEATURE_CATALOGUE.features
        if spec.categories is not None
    }


def _dtypes() -> dict[str, pd.CategoricalDtype]:
    # Unordered even for ordinal features: XGBoost splits categories as sets either way,
    # and the order stays in the level list.
    return {name: pd.CategoricalDtype(levels) for name, levels in category_levels().items()}


def band_labels_of(metadata: Mapping[str, str]) -> tuple[str, ...]:
    """The band labels of a version, from its ``band_edges_usd`` metadata (a JSON list)."""
    text = metadata.get("band_edges_usd")
    if text is None:
        raise FeaturesError(
            f"version {metadata.get('dataset', '?')} has no band_edges_usd metadata: "
            "it is not a features snapshot"
        )
    try:
        edges = json.loads(text)
        return SalaryBands(edges_usd=tuple(edges)).labels
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        reason = first_line(exc)
        raise FeaturesError(
            f"band_edges_usd {text!r} is not a list of band edges: {reason}"
        ) from None


def _shown(values: pd.Series) -> str:
    unique = sorted({repr(value) for value in values})
    more = f" and {len(unique) - _SHOWN_VALUES} more" if len(unique) > _SHOWN_VALUES else ""
    return ", ".join(unique[:_SHOWN_VALUES]) + more


def _integer_column(
    raw: pd.Series, name: str, minimum: int | None, maximum: int | None
) -> pd.Series:
    if raw.isna().any():
        raise FeaturesError(f"column {name!r} has {int(raw.isna().sum())} missing values")
    if not pd.api.types.is_integer_dtype(raw.dtype):
        raise FeaturesError(f"column {name!r} must hold integers, not {raw.dtype}")
    low = raw.min() if minimum is None else minimum
    high = raw.max() if maximum is None else maximum
    outside = raw[(raw < low) | (raw > high)]
    if len(outside):
        raise FeaturesError(
            f"column {name!r} has {len(outside)} values outside {low}..{high}: {_shown(outside)}"
        )
    return raw.astype("int64")


def feature_frame(raw: pd.DataFrame, band_labels: Sequence[str]) -> pd.DataFrame:
    """Check a snapshot's rows against the catalogue and the bands; return them typed.

    Integer features and ``band`` become int64, categorical and ordinal features pandas
    Categoricals with the catalogue's levels; other columns (record_id, ...) pass through.
    """
    missing = [name for name in (*FEATURES, BAND) if name not in raw.columns]
    if missing:
        raise FeaturesError(f"the features lack columns {', '.join(missing)}")
    frame = raw.copy()
    dtypes = _dtypes()
    for spec in FEATURE_CATALOGUE.features:
        name = str(spec.name)
        if spec.kind == "integer":
            frame[name] = _integer_column(raw[name], name, spec.minimum, spec.maximum)
            continue
        unknown = raw[name][~raw[name].isin(spec.values)]
        if len(unknown):
            raise FeaturesError(
                f"column {name!r} has {len(unknown)} values outside the catalogue: "
                f"{_shown(unknown)} (allowed: {', '.join(spec.values)})"
            )
        frame[name] = raw[name].astype(dtypes[name])
    frame[BAND] = _integer_column(raw[BAND], BAND, 0, len(band_labels) - 1)
    if "band_label" in raw.columns:
        expected = np.asarray(band_labels, dtype=object)[frame[BAND].to_numpy()]
        wrong = raw["band_label"].to_numpy(dtype=object) != expected
        if wrong.any():
            raise FeaturesError(
                f"{int(wrong.sum())} rows have a band_label that does not match their band "
                f"under the labels {list(band_labels)}"
            )
    return frame


def read_features(
    uri: str, data_settings: DataSettings, *, file_name: str = FEATURES_FILE
) -> FeatureSet:
    """Fetch a versioned features snapshot (or a split part: ``file_name``) and type it.

    The band labels come from the version's ``band_edges_usd`` metadata.
    """
    with open_store(data_settings) as store:
        version = store.get(uri)
        if file_name not in version.files:
            raise FeaturesError(
                f"{version.uri} has no {file_name} (it holds {', '.join(sorted(version.files))})"
            )
        labels = band_labels_of(version.metadata)
        with tempfile.TemporaryDirectory(prefix="payband-features-") as tmp:
            paths = store.fetch(version.uri, Path(tmp))
            raw = pd.read_parquet(paths[file_name])
    try:
        frame = feature_frame(raw, labels)
    except FeaturesError as exc:
        raise FeaturesError(f"{version.uri}: {exc}") from None
    return FeatureSet(frame=frame, uri=version.uri, version=version, band_labels=labels)


def to_model_frame(frame: pd.DataFrame, use_protected: bool) -> pd.DataFrame:
    """The model's input columns of a typed frame, in order; FeaturesError if untyped."""
    columns = model_features(use_protected)
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise FeaturesError(f"the frame lacks model features {', '.join(missing)}")
    dtypes = _dtypes()
    for name in columns:
        if name in dtypes and frame[name].dtype != dtypes[name]:
            raise FeaturesError(
                f"column {name!r} is {frame[name].dtype}, not the catalogue's categories: "
                "type the frame with feature_frame first"
            )
    return frame.loc[:, columns]
