"""The XGBoost search: learnable data, pruning, studies shared in PostgreSQL, reweighing."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.trial import TrialState

from payband_contracts import FEATURE_CATALOGUE, SalaryBands
from payband_training.features import FeaturesError, feature_frame
from payband_training.search import (
    SearchError,
    fit_final,
    reweigh,
    roc_auc,
    search,
    storage_url,
)
from payband_training.settings import TrainingSettings

PARAMS = {
    "n_estimators",
    "max_depth",
    "learning_rate",
    "min_child_weight",
    "subsample",
    "colsample_bytree",
    "reg_lambda",
    "max_cat_to_onehot",
}


@pytest.fixture
def synthetic_train(synthetic_snapshot) -> Callable[..., pd.DataFrame]:
    """Make typed training rows: ``synthetic_train(rows, *, n_bands, seed)``."""

    def make(rows: int = 600, *, n_bands: int = 2, seed: int = 7) -> pd.DataFrame:
        edges = tuple(30_000 + 20_000 * i for i in range(n_bands - 1))
        raw = synthetic_snapshot(rows, edges=edges, seed=seed)
        return feature_frame(raw, SalaryBands(edges_usd=edges).labels)

    return make


def fast(**overrides) -> TrainingSettings:
    return TrainingSettings(**{"trials": 4, "cv_folds": 2, "seed": 13, **overrides})


@pytest.mark.parametrize("n_bands", [2, 3])
def test_search_finds_a_model_on_learnable_data(synthetic_train, n_bands):
    train = synthetic_train(n_bands=n_bands)
    seen: list[tuple[int, float]] = []

    result = search(
        train,
        use_protected=False,
        n_bands=n_bands,
        settings=fast(),
        storage=None,
        study_name=f"bands-{n_bands}",
        progress=lambda finished, best: seen.append((finished, best)),
    )

    assert result.best_value > 0.75
    assert result.study_name == f"bands-{n_bands}"
    assert result.n_trials == 4
    assert result.n_complete + result.n_pruned == 4
    assert set(result.best_params) == PARAMS
    assert 2 <= result.best_params["max_depth"] <= 8
    assert [finished for finished, _ in seen] == [1, 2, 3, 4]
    assert seen[-1][1] == result.best_value

    holdout = synthetic_train(300, n_bands=n_bands, seed=99)
    model = fit_final(train, result.best_params, use_protected=False, n_bands=n_bands, seed=13)
    probabilities = model.predict_proba(holdout[list(model.feature_names_in_)])
    assert probabilities.shape == (300, n_bands)
    assert roc_auc(holdout["band"].to_numpy(), probabilities, n_bands) > 0.75


def test_search_is_deterministic_for_a_seed(synthetic_train):
    train = synthetic_train(300)
    results = [
        search(
            train,
            use_protected=False,
            n_bands=2,
            settings=fast(trials=3),
            storage=None,
            study_name="same",
        )
        for _ in range(2)
    ]
    assert results[0] == results[1]


def test_poor_trials_are_pruned_after_a_fold(synthetic_train):
    storage = InMemoryStorage()
    folds = 3

    result = search(
        synthetic_train(300),
        use_protected=False,
        n_bands=2,
        settings=fast(trials=12, cv_folds=folds),
        storage=storage,
        study_name="pruning",
    )

    trials = optuna.load_study(study_name="pruning", storage=storage).trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert result.n_pruned == len(pruned) >= 1
    assert result.n_complete == len(complete)
    assert len(pruned) + len(complete) == result.n_trials == 12
    # A pruned trial stopped before its last fold; a complete one reported every fold.
    assert all(max(t.intermediate_values) < folds - 1 for t in pruned)
    for trial in complete:
        assert sorted(trial.intermediate_values) == list(range(folds))
        assert trial.value == pytest.approx(trial.intermediate_values[folds - 1])
    assert result.best_value == max(t.value for t in complete)


def test_workers_share_a_study_in_postgresql(synthetic_train, postgres_database):
    # Settings carry plain postgresql:// URLs; the search picks the psycopg driver itself.
    url = postgres_database.url.replace("postgresql+psycopg://", "postgresql://")
    train = synthetic_train(300)

    def worker() -> object:
        return search(
            train,
            use_protected=False,
            n_bands=2,
            settings=fast(trials=3),
            storage=url,
            study_name="shared",
        )

    first = worker()
    second = worker()

    assert first.n_trials == 3
    assert second.n_trials == 6
    assert second.n_complete + second.n_pruned == 6
    assert second.best_value >= first.best_value
    storage = RDBStorage(storage_url(url))
    try:
        trials = optuna.load_study(study_name="shared", storage=storage).trials
    finally:
        storage.remove_session()
        storage.engine.dispose()
    assert len(trials) == 6
    # The joining worker samples new parameters rather than repeating the first worker's.
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6


def test_a_study_made_for_other_inputs_cannot_be_joined(synthetic_train):
    storage = InMemoryStorage()
    train = synthetic_train(200)
    search(
        train,
        use_protected=False,
        n_bands=2,
        settings=fast(trials=1),
        storage=storage,
        study_name="fixed",
    )

    with pytest.raises(SearchError, match=r"'fixed' was created with use_protected=False"):
        search(
            train,
            use_protected=True,
            n_bands=2,
            settings=fast(trials=1),
            storage=storage,
            study_name="fixed",
        )
    assert len(optuna.load_study(study_name="fixed", storage=storage).trials) == 1


def test_optuna_stays_quiet_and_its_verbosity_is_restored(synthetic_train):
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    optuna_logger = logging.getLogger("optuna")
    optuna_logger.addHandler(handler)
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        optuna.create_study(study_name="loud")  # what INFO would print
        assert [r.getMessage() for r in records] == [
            "A new study created in memory with name: loud"
        ]
        records.clear()
        search(
            synthetic_train(200),
            use_protected=False,
            n_bands=2,
            settings=fast(trials=2),
            storage=None,
            study_name="quiet",
        )
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        optuna_logger.removeHandler(handler)
    assert records == []


def test_rows_the_search_cannot_use_are_clear_errors(synthetic_train):
    train = synthetic_train(200, n_bands=3)
    common = {"use_protected": False, "storage": None, "study_name": "bad"}

    one_row = train[(train["band"] != 2) | (train.index == train.index[train["band"] == 2][0])]
    with pytest.raises(SearchError, match=r"band 2 \(1 rows\).*at least 3"):
        search(one_row, n_bands=3, settings=fast(cv_folds=3), **common)
    with pytest.raises(SearchError, match=r"bands must be 0\.\.1, found 0\.\.2"):
        search(train, n_bands=2, settings=fast(), **common)
    with pytest.raises(SearchError, match=r"sample_weight has shape \(3,\), expected \(200,\)"):
        search(train, n_bands=3, settings=fast(), sample_weight=[1.0, 1.0, 1.0], **common)
    untyped = train.astype({"occupation": str})
    with pytest.raises(FeaturesError, match="'occupation' is str"):
        search(untyped, n_bands=3, settings=fast(), **common)


def test_fit_final_uses_protected_attributes_only_when_allowed(synthetic_train):
    train = synthetic_train(400)
    params = {"n_estimators": 30, "max_depth": 3}

    without = fit_final(train, params, use_protected=False, n_bands=2, seed=1)
    with_protected = fit_final(train, params, use_protected=True, n_bands=2, seed=1)

    assert "sex" not in without.feature_names_in_
    assert list(with_protected.feature_names_in_) == [str(n) for n in FEATURE_CATALOGUE.names]
    types = dict(
        zip(
            with_protected.feature_names_in_,
            with_protected.get_booster().feature_types,
            strict=True,
        )
    )
    assert types["sex"] == types["occupation"] == "c"
    assert types["age"] == "int"


def test_reweighing_makes_band_independent_of_group(synthetic_train):
    train = synthetic_train(600)

    weights = reweigh(train)

    frame = pd.DataFrame(
        {"group": train["sex"].astype(str) + "/" + train["race"].astype(str)},
    ).assign(band=train["band"].to_numpy(), weight=weights)
    overall = frame.groupby("band")["weight"].sum() / frame["weight"].sum()
    assert overall.to_numpy() == pytest.approx(
        train["band"].value_counts(normalize=True).sort_index()
    )
    cells = frame.groupby(["group", "band"])["weight"].sum()
    per_group = frame.groupby("group")["weight"].sum()
    shares = cells / per_group.reindex(cells.index.get_level_values("group")).to_numpy()
    assert len(shares) == 2 * frame["group"].nunique()  # every group has both bands
    for (_, band), share in shares.items():
        assert share == pytest.approx(overall[band])
    # The data favour men, so the raw shares differ and the weights are not all 1.
    raw = pd.crosstab(train["sex"], train["band"], normalize="index")
    assert abs(raw.loc["male", 1] - raw.loc["female", 1]) > 0.1
    assert weights.sum() == pytest.approx(len(train))
    assert weights.std() > 0.05

    weighted = fit_final(
        train, {"n_estimators": 30}, use_protected=True, n_bands=2, seed=1, sample_weight=weights
    )
    plain = fit_final(train, {"n_estimators": 30}, use_protected=True, n_bands=2, seed=1)
    inputs = train[list(plain.feature_names_in_)]
    assert not np.allclose(weighted.predict_proba(inputs), plain.predict_proba(inputs))


def test_storage_url_picks_the_psycopg_driver():
    assert (
        storage_url("postgresql://u@127.0.0.1:5432/db")
        == "postgresql+psycopg://u@127.0.0.1:5432/db"
    )
    assert storage_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert storage_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert storage_url("sqlite:///x.db") == "sqlite:///x.db"


def test_an_unreachable_study_storage_is_a_clear_error_without_the_password(synthetic_train):
    with pytest.raises(SearchError, match="cannot open the study storage") as caught:
        search(
            synthetic_train(100),
            use_protected=False,
            n_bands=2,
            settings=fast(),
            storage="postgresql://bob:hunter2@127.0.0.1:1/payband",
            study_name="nowhere",
        )
    assert "postgresql+psycopg://bob:***@127.0.0.1:1/payband" in str(caught.value)
    assert "hunter2" not in str(caught.value)
