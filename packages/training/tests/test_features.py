"""Reading a features snapshot: catalogue levels, integer types, clear errors for bad values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from payband_contracts import FEATURE_CATALOGUE
from payband_data import steps
from payband_data.settings import DataSettings
from payband_data.store import DatasetVersion, open_store
from payband_training.features import (
    FEATURES,
    FEATURES_FILE,
    FeaturesError,
    category_levels,
    feature_frame,
    model_features,
    read_features,
    to_model_frame,
)

# Levels left out of the synthetic data: they must still be categories of the frame.
ABSENT = {"occupation": "military", "class_of_worker": "never_worked"}
INT16 = {"age", "hours_per_week", "band"}


def commit_raw(
    store_dir: Path, raw: pd.DataFrame, *, edges=(50_000,), metadata=None
) -> DatasetVersion:
    """Commit rows as a features snapshot (the snapshot's parquet types) to a local store."""
    schema = pa.schema(
        [pa.field(c, pa.int16() if c in INT16 else pa.string()) for c in raw.columns]
    )
    path = store_dir.parent / "features.parquet"
    pq.write_table(pa.Table.from_pandas(raw, schema=schema, preserve_index=False), path)
    meta = {
        "source": "adult",
        "year": "1994",
        "states": "",
        "row_count": str(len(raw)),
        "band_edges_usd": json.dumps(list(edges)),
    }
    with open_store(DataSettings(store_dir=store_dir)) as store:
        return store.commit("features/adult", {FEATURES_FILE: path}, metadata or meta)


@pytest.fixture
def settings(tmp_path: Path) -> DataSettings:
    return DataSettings(store_dir=tmp_path / "store")


def test_features_are_the_catalogue_in_order():
    assert tuple(str(name) for name in FEATURE_CATALOGUE.names) == FEATURES
    assert len(FEATURES) == 9
    assert model_features(True) == list(FEATURES)
    assert model_features(False) == [
        "age",
        "education",
        "marital_status",
        "class_of_worker",
        "occupation",
        "hours_per_week",
        "birthplace",
    ]


def test_category_levels_are_the_catalogue_values():
    levels = category_levels()
    assert set(levels) == {
        "sex",
        "race",
        "education",
        "marital_status",
        "class_of_worker",
        "occupation",
        "birthplace",
    }
    for name, values in levels.items():
        assert values == list(FEATURE_CATALOGUE[name].values)
    assert levels["education"][0] == "below_grade_5"
    assert levels["education"][-1] == "doctorate"


def test_read_features_types_columns_with_exact_catalogue_levels(settings, synthetic_snapshot):
    raw = synthetic_snapshot(leave_out=ABSENT)
    version = commit_raw(settings.store_dir, raw)

    features = read_features(version.uri, settings)

    assert features.uri == version.uri
    assert features.version == version
    assert features.band_labels == ("<=50K", ">50K")
    assert features.n_bands == 2
    frame = features.frame
    assert list(frame.columns) == list(raw.columns)
    assert len(frame) == 600
    for name in ("age", "hours_per_week", "band"):
        assert frame[name].dtype == np.int64
        assert frame[name].tolist() == raw[name].tolist()
    for name, levels in category_levels().items():
        assert isinstance(frame[name].dtype, pd.CategoricalDtype)
        assert list(frame[name].cat.categories) == levels
        assert frame[name].astype(str).tolist() == raw[name].tolist()
    for name, level in ABSENT.items():
        assert level not in set(frame[name])
        assert level in frame[name].cat.categories


def test_several_bands_come_from_the_edges(settings, synthetic_snapshot):
    edges = (30_000, 60_000, 100_000)
    version = commit_raw(settings.store_dir, synthetic_snapshot(edges=edges), edges=edges)

    features = read_features(version.uri, settings)

    assert features.band_labels == ("<=30K", "30K-60K", "60K-100K", ">100K")
    assert features.n_bands == 4
    assert sorted(features.frame["band"].unique()) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("occupation", "astronaut", r"'occupation'.*1 values outside the catalogue: 'astronaut'"),
        ("sex", None, r"'sex'.*outside the catalogue"),
        ("race", "White", r"'race'.*'White'.*allowed: white, black"),
        ("age", 12, r"'age'.*outside 17\.\.99: 12"),
        ("band", 2, r"'band'.*outside 0\.\.1: 2"),
        ("band_label", ">50K", r"band_label that does not match"),
    ],
)
def test_a_value_outside_the_catalogue_is_an_error_naming_it(
    settings, synthetic_snapshot, column, value, message
):
    raw = synthetic_snapshot()
    raw[column] = raw[column].astype(object)
    raw.loc[raw.index[raw["band"] == 0][0], column] = value
    version = commit_raw(settings.store_dir, raw)

    with pytest.raises(FeaturesError, match=message) as caught:
        read_features(version.uri, settings)
    assert version.uri in str(caught.value)


def test_missing_columns_and_metadata_are_errors(settings, synthetic_snapshot):
    raw = synthetic_snapshot()
    with pytest.raises(FeaturesError, match="lack columns birthplace"):
        feature_frame(raw.drop(columns=["birthplace"]), ("<=50K", ">50K"))

    no_edges = commit_raw(settings.store_dir, raw, metadata={"source": "adult"})
    with pytest.raises(FeaturesError, match="no band_edges_usd metadata"):
        read_features(no_edges.uri, settings)

    version = commit_raw(settings.store_dir, raw)
    with pytest.raises(
        FeaturesError, match=r"has no train\.parquet \(it holds features\.parquet\)"
    ):
        read_features(version.uri, settings, file_name="train.parquet")


def test_to_model_frame_selects_model_features_of_a_typed_frame(synthetic_snapshot):
    raw = synthetic_snapshot(50)
    frame = feature_frame(raw, ("<=50K", ">50K"))

    assert list(to_model_frame(frame, use_protected=False).columns) == model_features(False)
    protected = to_model_frame(frame, use_protected=True)
    assert list(protected.columns) == list(FEATURES)
    assert protected["sex"].dtype == frame["sex"].dtype

    with pytest.raises(FeaturesError, match="'sex' is str, not the catalogue's categories"):
        to_model_frame(raw, use_protected=True)
    with pytest.raises(FeaturesError, match="lacks model features occupation"):
        to_model_frame(frame.drop(columns=["occupation"]), use_protected=False)


@pytest.fixture(scope="module")
def adult_snapshot(postgres_module_database, tmp_path_factory) -> tuple[DataSettings, str]:
    """The real UCI Adult features snapshot, built with dbt on the embedded PostgreSQL."""
    home = tmp_path_factory.mktemp("adult")
    settings = DataSettings(
        database_url=postgres_module_database.url,
        store_dir=home / "store",
        dbt_work_dir=home / "dbt",
    )
    raw = steps.ingest("adult", settings)
    steps.load(raw.uri, settings)
    steps.build("adult", [50_000], settings)
    return settings, steps.snapshot("adult", [50_000], settings).uri


def test_reads_the_real_adult_snapshot(adult_snapshot):
    settings, uri = adult_snapshot

    features = read_features(uri, settings)

    frame = features.frame
    assert len(frame) == int(features.version.metadata["row_count"]) > 45_000
    assert features.band_labels == ("<=50K", ">50K")
    assert set(frame["band"]) == {0, 1}
    assert frame["age"].dtype == np.int64
    for name, levels in category_levels().items():
        assert list(frame[name].cat.categories) == levels
        assert frame[name].notna().all()
    assert set(frame["sex"]) == {"female", "male"}
