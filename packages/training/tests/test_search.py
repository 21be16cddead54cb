"""The multi-objective search: accuracy against fairness, gates as constraints, starting
points, the chosen trial, the Pareto front, studies shared in PostgreSQL."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import optuna
import pandas as pd
import pytest
from optuna.storages import InMemoryStorage, RDBStorage

from payband_contracts import FEATURE_CATALOGUE, SalaryBands
from payband_contracts.database import sqlalchemy_url
from payband_contracts.model import DecisionRule
from payband_training.features import FeaturesError, feature_frame
from payband_training.mitigation import Mitigation
from payband_training.search import (
    DEFAULT_TREES,
    STARTING_POINTS,
    SearchError,
    TrialConfig,
    default_study_name,
    fit_final,
    search,
)
from payband_training.settings import TrainingSettings

TREE_PARAMS = set(DEFAULT_TREES)


@pytest.fixture
def synthetic_train(synthetic_snapshot) -> Callable[..., pd.DataFrame]:
    """Make typed training rows: ``synthetic_train(rows, *, n_bands, seed)``."""

    def make(rows: int = 600, *, n_bands: int = 2, seed: int = 7) -> pd.DataFrame:
        edges = tuple(30_000 + 20_000 * i for i in range(n_bands - 1))
        raw = synthetic_snapshot(rows, edges=edges, seed=seed)
        return feature_frame(raw, SalaryBands(edges_usd=edges).labels)

    return make


def fast(**overrides) -> TrainingSettings:
    return TrainingSettings(
        **{"trials": 4, "cv_folds": 2, "seed": 13, "min_group_rows": 10, **overrides}
    )


def run(train: pd.DataFrame, settings: TrainingSettings, name: str = "s", **kwargs):
    return search(
        train,
        use_protected=kwargs.pop("use_protected", False),
        n_bands=kwargs.pop("n_bands", 2),
        settings=settings,
        storage=kwargs.pop("storage", None),
        study_name=name,
        **kwargs,
    )


@pytest.mark.parametrize("n_bands", [2, 3])
def test_search_finds_a_model_on_learnable_data(synthetic_train, n_bands):
    train = synthetic_train(n_bands=n_bands)
    seen: list[tuple[int, float]] = []

    result = run(
        train,
        # Three bands explain one tree per band: a budget that lets the default trees through.
        fast(
            min_roc_auc=0.6,
            min_disparate_impact=0.0,
            search_fairness_margin=0.0,
            max_explanation_ms=1000.0,
        ),
        f"bands-{n_bands}",
        n_bands=n_bands,
        progress=lambda finished, best: seen.append((finished, best)),
    )

    assert result.study_name == f"bands-{n_bands}"
    assert result.n_trials == result.n_complete == 4
    assert result.chosen.feasible
    assert result.best_value > 0.75
    assert set(result.best_params) == TREE_PARAMS
    # The first trials are the starting points: the unmitigated default, then the penalty.
    first = result.trials[0].config
    assert first.mitigation == Mitigation("none", 0.0)
    assert first.params == DEFAULT_TREES
    assert result.trials[1].config.mitigation == Mitigation("penalty", STARTING_POINTS[1][1])
    if n_bands == 2:
        assert first.decision.cut_off == pytest.approx(0.5)
        assert result.trials[1].config.decision.cut_off == pytest.approx(STARTING_POINTS[1][2])
    else:
        assert len(result.trials[1].config.decision.band_offsets) == 3
    assert [finished for finished, _ in seen] == [1, 2, 3, 4]
    assert seen[-1][1] == max(t.roc_auc for t in result.trials if t.feasible)
    # The chosen trial is the feasible one with the best ROC AUC; the baseline the best
    # unmitigated one.
    assert result.chosen.roc_auc == max(t.roc_auc for t in result.trials if t.feasible)
    assert result.baseline is not None
    assert result.baseline.config.mitigation.method == "none"

    booster = fit_final(train, result.chosen.config, use_protected=False, n_bands=n_bands, seed=13)
    assert "sex" not in booster.feature_names


def test_the_front_holds_exactly_the_undominated_trials(synthetic_train):
    result = run(synthetic_train(400), fast(trials=8), "front")

    def beats(a, b) -> bool:
        return (
            a.roc_auc >= b.roc_auc
            and a.worst_disparate_impact >= b.worst_disparate_impact
            and (a.roc_auc > b.roc_auc or a.worst_disparate_impact > b.worst_disparate_impact)
        )

    assert result.front
    for trial in result.trials:
        dominated = any(beats(other, trial) for other in result.trials)
        assert trial.pareto is not dominated
    for trial in result.trials:
        assert trial.worst_fold_disparate_impact <= trial.worst_disparate_impact + 1e-12
        assert trial.worst_disparate_impact == pytest.approx(
            min(trial.disparate_impact.values()), abs=0.5
        )


def test_without_a_feasible_trial_the_fairest_is_reported(synthetic_train):
    # A quality gate no model can pass: every trial is infeasible.
    result = run(synthetic_train(400), fast(trials=5, min_roc_auc=1.0), "hopeless")

    assert not result.feasible
    assert not any(trial.feasible for trial in result.trials)
    best = max(t.worst_disparate_impact for t in result.trials)
    assert result.chosen.worst_disparate_impact == best


def test_the_explanation_budget_is_a_constraint(synthetic_train, monkeypatch):
    generous = run(
        synthetic_train(300),
        fast(trials=2, min_roc_auc=0.0, min_disparate_impact=0.0, search_fairness_margin=0.0),
        "budget",
    )
    assert all(trial.feasible for trial in generous.trials)
    assert all(trial.explanation_cost > 0 for trial in generous.trials)
    # A budget no booster meets (0.001 ms for 1,000 explanations).
    tight = run(
        synthetic_train(300),
        fast(
            trials=2,
            min_roc_auc=0.0,
            min_disparate_impact=0.0,
            search_fairness_margin=0.0,
            max_explanation_ms=0.001,
        ),
        "tight",
    )
    assert not any(trial.feasible for trial in tight.trials)


def test_every_fold_must_clear_the_fairness_gate_with_the_margin(synthetic_train):
    storage = InMemoryStorage()
    result = run(synthetic_train(400), fast(trials=4, min_roc_auc=0.0), "margin", storage=storage)
    study = optuna.load_study(study_name="margin", storage=storage)
    for trial, frozen in zip(result.trials, study.trials, strict=True):
        gate = 0.8 + 0.03
        assert trial.feasible == (trial.worst_fold_disparate_impact >= gate)
        assert frozen.user_attrs["constraints"][1] == pytest.approx(
            gate - trial.worst_fold_disparate_impact
        )


def test_search_is_deterministic_for_a_seed(synthetic_train):
    train = synthetic_train(300)
    results = [run(train, fast(trials=3), "same") for _ in range(2)]
    assert results[0] == results[1]


def test_the_methods_searched_are_a_setting(synthetic_train):
    result = run(synthetic_train(300), fast(trials=3, mitigation=("none", "massage")), "two")
    assert {t.config.mitigation.method for t in result.trials} <= {"none", "massage"}
    # Starting points of methods not searched are left out: none, then massage.
    assert [t.config.mitigation.method for t in result.trials[:2]] == ["none", "massage"]


def test_workers_share_a_study_in_postgresql(synthetic_train, postgres_database):
    # Settings carry plain postgresql:// URLs; the search picks the psycopg driver itself.
    url = postgres_database.url.replace("postgresql+psycopg://", "postgresql://")
    train = synthetic_train(300)

    first = run(train, fast(trials=3), "shared", storage=url)
    second = run(train, fast(trials=3), "shared", storage=url)

    assert first.n_trials == 3
    assert second.n_trials == second.n_complete == 6
    storage = RDBStorage(sqlalchemy_url(url))
    try:
        trials = optuna.load_study(study_name="shared", storage=storage).trials
    finally:
        storage.remove_session()
        storage.engine.dispose()
    assert len(trials) == 6
    # The starting points run once, and the joining worker samples new parameters.
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6


def test_a_study_made_for_other_inputs_cannot_be_joined(synthetic_train):
    storage = InMemoryStorage()
    train = synthetic_train(200)
    run(train, fast(trials=1), "fixed", storage=storage)

    with pytest.raises(SearchError, match=r"'fixed' was created with use_protected=False"):
        run(train, fast(trials=1), "fixed", storage=storage, use_protected=True)
    with pytest.raises(SearchError, match=r"min_disparate_impact=0.8"):
        run(train, fast(trials=1, min_disparate_impact=0.7), "fixed", storage=storage)
    ran = optuna.load_study(study_name="fixed", storage=storage).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,)
    )
    assert len(ran) == 1
    optuna.create_study(study_name="single", storage=storage, direction="maximize")
    with pytest.raises(SearchError, match="'single' is not a two-objective study"):
        run(train, fast(trials=1), "single", storage=storage)


def test_the_default_study_name_follows_the_data_version_and_the_search_settings():
    def name(version: str = "a" * 64, **overrides) -> str:
        return default_study_name(version, fast(**overrides), n_bands=2, use_protected=False)

    assert name() == name()  # workers on one split with one configuration join one study
    assert name().startswith("salary-band-" + "a" * 16 + "-")
    others = {
        name("b" * 64),
        name(mitigation=["none"]),
        name(min_disparate_impact=0.7),
        name(cv_folds=3),
        default_study_name("a" * 64, fast(), n_bands=3, use_protected=False),
        default_study_name("a" * 64, fast(), n_bands=2, use_protected=True),
    }
    assert name() not in others
    assert len(others) == 6
    assert name(trials=9, timeout_s=60) == name()  # how long a search runs is not what it is for


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
        run(synthetic_train(200), fast(trials=2), "quiet")
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        optuna_logger.removeHandler(handler)
    assert records == []


def test_rows_the_search_cannot_use_are_clear_errors(synthetic_train):
    train = synthetic_train(200, n_bands=3)

    one_row = train[(train["band"] != 2) | (train.index == train.index[train["band"] == 2][0])]
    with pytest.raises(SearchError, match=r"band 2 \(1 rows\).*at least 3"):
        run(one_row, fast(cv_folds=3), n_bands=3)
    with pytest.raises(SearchError, match=r"bands must be 0\.\.1, found 0\.\.2"):
        run(train, fast(), n_bands=2)
    untyped = train.astype({"occupation": str})
    with pytest.raises(FeaturesError, match="'occupation' is str"):
        run(untyped, fast(), n_bands=3)
    with pytest.raises(SearchError, match="lack columns race"):
        run(train.drop(columns="race"), fast(), n_bands=3)


def test_fit_final_uses_protected_attributes_only_when_allowed(synthetic_train):
    train = synthetic_train(400)
    config = TrialConfig(
        {"n_estimators": 30, "max_depth": 3}, Mitigation("penalty", 2.0), DecisionRule()
    )

    without = fit_final(train, config, use_protected=False, n_bands=2, seed=1)
    with_protected = fit_final(train, config, use_protected=True, n_bands=2, seed=1)

    assert "sex" not in without.feature_names
    assert list(with_protected.feature_names) == [str(n) for n in FEATURE_CATALOGUE.names]
    types = dict(zip(with_protected.feature_names, with_protected.feature_types, strict=True))
    assert types["sex"] == types["occupation"] == "c"
    assert types["age"] == "int"
    assert not math.isnan(float(without.attr("best_iteration") or 0))


def test_an_unreachable_study_storage_is_a_clear_error_without_the_password(synthetic_train):
    with pytest.raises(SearchError, match="cannot open the study storage") as caught:
        run(
            synthetic_train(100),
            fast(),
            "nowhere",
            storage="postgresql://bob:hunter2@127.0.0.1:1/payband",
        )
    assert "postgresql://bob:***@127.0.0.1:1/payband" in str(caught.value)
    assert "hunter2" not in str(caught.value)
