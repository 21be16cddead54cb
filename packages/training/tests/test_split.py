"""The train/test split: stratified, seeded, and committed as reproducible store versions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from payband_contracts import SalaryBands
from payband_data.settings import DataSettings
from payband_data.store import DatasetVersion
from payband_data.store.local import LocalStore
from payband_training.features import FeatureSet, feature_frame, read_features
from payband_training.split import TEST_FILE, TRAIN_FILE, SplitError, commit_split, split

FEATURES_URI = "local://features/adult@" + "1" * 64
RAW_URI = "local://raw/adult@" + "2" * 64


@pytest.fixture
def synthetic_features(synthetic_snapshot) -> Callable[..., FeatureSet]:
    """Make a typed feature set with unequal bands: ``synthetic_features(edges=...)``."""

    def make(edges: tuple[int, ...] = (50_000,), raw_uri: str | None = RAW_URI) -> FeatureSet:
        # Unequal bands (70/30 %, or 60/30/10 %) so that stratification has something to keep.
        shares = {1: (0.7, 0.3), 2: (0.6, 0.3, 0.1)}[len(edges)]
        raw = synthetic_snapshot(edges=edges, shares=shares)
        labels = SalaryBands(edges_usd=edges).labels
        version = DatasetVersion(
            dataset="features/adult",
            version="1" * 64,
            uri=FEATURES_URI,
            metadata={
                "source": "adult",
                "year": "1994",
                "states": "",
                "band_edges_usd": json.dumps(list(edges)),
                # As payband-data's snapshot records it; older snapshots lack it.
                **({} if raw_uri is None else {"raw_uri": raw_uri}),
            },
            files={},
            created_at=pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime(),
        )
        return FeatureSet(
            frame=feature_frame(raw, labels), uri=FEATURES_URI, version=version, band_labels=labels
        )

    return make


@pytest.mark.parametrize("edges", [(50_000,), (30_000, 80_000)])
def test_split_is_stratified_by_band(synthetic_features, edges):
    features = synthetic_features(edges=edges)

    parts = split(features, test_fraction=0.2, seed=11)

    assert (len(parts.train), len(parts.test)) == (480, 120)
    overall = features.frame["band"].value_counts(normalize=True).sort_index()
    assert overall.min() < 0.4  # the bands are unequal
    for part in (parts.train, parts.test):
        shares = part["band"].value_counts(normalize=True).sort_index()
        # Stratified: each band's share is the overall share, up to one row of rounding.
        assert np.abs(shares - overall).max() <= 1 / len(part)
    ids = set(parts.train["record_id"]) | set(parts.test["record_id"])
    assert ids == set(features.frame["record_id"])
    assert not set(parts.train["record_id"]) & set(parts.test["record_id"])


def test_split_keeps_row_order_types_and_is_deterministic(synthetic_features):
    features = synthetic_features()

    first = split(features, test_fraction=0.25, seed=3)
    again = split(features, test_fraction=0.25, seed=3)
    other = split(features, test_fraction=0.25, seed=4)

    pd.testing.assert_frame_equal(first.train, again.train)
    pd.testing.assert_frame_equal(first.test, again.test)
    assert set(first.test["record_id"]) != set(other.test["record_id"])
    for part in (first.train, first.test):
        assert part["record_id"].is_monotonic_increasing
        assert list(part.index) == list(range(len(part)))
        assert (part.dtypes == features.frame.dtypes).all()
    assert (first.seed, first.test_fraction) == (3, 0.25)


def test_a_band_with_fewer_than_two_rows_cannot_be_stratified(synthetic_features):
    features = synthetic_features(edges=(30_000, 80_000))
    frame = features.frame
    # Keep a single row of the top band.
    top = frame.index[frame["band"] == 2]
    scarce = FeatureSet(
        frame=frame.drop(index=top[1:]).reset_index(drop=True),
        uri=features.uri,
        version=features.version,
        band_labels=features.band_labels,
    )

    with pytest.raises(SplitError, match=r"by band: >80K \(1 rows\) need at least 2 rows each"):
        split(scarce, test_fraction=0.2, seed=1)


def test_a_fraction_outside_zero_and_one_or_too_small_a_test_part_is_an_error(synthetic_features):
    features = synthetic_features(edges=(30_000, 80_000))
    with pytest.raises(SplitError, match=r"test_fraction must be between 0 and 1, not 1\.5"):
        split(features, test_fraction=1.5, seed=1)
    with pytest.raises(SplitError, match=r"cannot split .* with test_fraction 0\.002"):
        split(features, test_fraction=0.002, seed=1)


def test_commit_split_gives_the_same_versions_for_the_same_input(
    synthetic_features, tmp_path: Path
):
    features = synthetic_features()
    store = LocalStore(tmp_path / "store")

    train, test = commit_split(
        split(features, test_fraction=0.2, seed=5), features, store, source="adult"
    )
    again = commit_split(
        split(features, test_fraction=0.2, seed=5), features, store, source="adult"
    )
    # A fresh store elsewhere: the versions depend on the content only.
    elsewhere = commit_split(
        split(features, test_fraction=0.2, seed=5),
        features,
        LocalStore(tmp_path / "other"),
        source="adult",
    )
    reseeded = commit_split(
        split(features, test_fraction=0.2, seed=6), features, store, source="adult"
    )

    assert (train.dataset, test.dataset) == ("splits/adult/train", "splits/adult/test")
    assert [v.uri for v in again] == [train.uri, test.uri]
    assert [v.uri for v in elsewhere] == [train.uri, test.uri]
    assert reseeded[0].uri != train.uri
    assert [v.uri for v in store.versions("splits/adult/train")] == [reseeded[0].uri, train.uri]
    assert set(train.files) == {TRAIN_FILE}
    assert set(test.files) == {TEST_FILE}


def test_commit_split_metadata_and_read_back(synthetic_features, tmp_path: Path):
    features = synthetic_features(edges=(30_000, 80_000))
    parts = split(features, test_fraction=0.2, seed=5)
    settings = DataSettings(store_dir=tmp_path / "store")
    store = LocalStore(settings.store_dir)

    train, test = commit_split(parts, features, store, source="adult")

    for version, part in ((train, parts.train), (test, parts.test)):
        counts = part["band_label"].value_counts().to_dict()
        assert {
            key: version.metadata[key]
            for key in (
                "source",
                "year",
                "states",
                "features_uri",
                "raw_uri",
                "seed",
                "test_fraction",
            )
        } == {
            "source": "adult",
            "year": "1994",
            "states": "",
            "features_uri": FEATURES_URI,
            "raw_uri": RAW_URI,
            "seed": "5",
            "test_fraction": "0.2",
        }
        assert version.metadata["row_count"] == str(len(part))
        assert json.loads(version.metadata["rows_per_band"]) == counts
        assert set(counts) == {"<=30K", "30K-80K", ">80K"}
    file_names = {train.uri: TRAIN_FILE, test.uri: TEST_FILE}
    for version, part in ((train, parts.train), (test, parts.test)):
        read = read_features(version.uri, settings, file_name=file_names[version.uri])
        assert read.band_labels == features.band_labels
        pd.testing.assert_frame_equal(read.frame, part)


def test_a_snapshot_without_a_raw_version_gives_an_empty_raw_uri(
    synthetic_features, tmp_path: Path
):
    features = synthetic_features(raw_uri=None)
    parts = split(features, test_fraction=0.2, seed=5)

    train, test = commit_split(parts, features, LocalStore(tmp_path / "store"), source="adult")

    assert train.metadata["raw_uri"] == test.metadata["raw_uri"] == ""
    assert train.metadata["features_uri"] == FEATURES_URI


def test_commit_split_checks_the_source(synthetic_features, tmp_path: Path):
    features = synthetic_features()
    parts = split(features, test_fraction=0.2, seed=5)
    store = LocalStore(tmp_path / "store")

    with pytest.raises(SplitError, match="holds source 'adult', not 'pums'"):
        commit_split(parts, features, store, source="pums")
    with pytest.raises(SplitError, match="invalid source 'Adult/x'"):
        commit_split(parts, features, store, source="Adult/x")
    assert store.versions() == []
