"""The Optuna search for XGBoost: cross-validated ROC AUC, a median pruner, shared studies.

Every trial scores one parameter set by stratified k-fold ROC AUC (one-vs-rest macro AUC for
more than two bands) and reports the running mean after each fold, so the MedianPruner stops
poor trials early. A study kept in PostgreSQL can be joined by several workers: each
``search`` call adds ``settings.trials`` trials to the study of that name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.pruners import MedianPruner
from optuna.samplers import TPESampler
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.trial import FrozenTrial, Trial, TrialState
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from xgboost import XGBClassifier

from payband_training.features import BAND, PROTECTED, to_model_frame
from payband_training.settings import TrainingSettings

__all__ = [
    "PRUNER_STARTUP_TRIALS",
    "SearchError",
    "SearchResult",
    "fit_final",
    "make_classifier",
    "reweigh",
    "roc_auc",
    "search",
    "storage_url",
    "suggest_params",
]

# Trials that always run every fold before the pruner compares against their median.
PRUNER_STARTUP_TRIALS = 3
# XGBoost threads per fit; one search worker uses the whole machine.
N_JOBS = os.cpu_count() or 1
# What a study was created for; a worker that differs must not add trials to it.
_STUDY_ATTRS = ("n_bands", "use_protected", "cv_folds", "weighted")


class SearchError(ValueError):
    """The search cannot run as asked (too few rows, a mismatched study); one readable line."""


@dataclass(frozen=True)
class SearchResult:
    """The study's best parameters and its trial counts (all workers' trials included)."""

    best_params: dict[str, Any]
    best_value: float
    n_trials: int
    n_pruned: int
    n_complete: int
    study_name: str


def storage_url(url: str) -> str:
    """A PostgreSQL URL for SQLAlchemy with the psycopg 3 driver; other URLs unchanged."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def suggest_params(trial: Trial) -> dict[str, Any]:
    """The search space; the names are XGBClassifier's keyword arguments."""
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 400, step=25),
        "max_depth": trial.suggest_int("max_depth", 2, 8),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.6, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        # Categorical features with fewer levels than this are split one-hot, others by partition.
        "max_cat_to_onehot": trial.suggest_int("max_cat_to_onehot", 1, 12),
    }


def make_classifier(params: dict[str, Any], *, n_bands: int, seed: int) -> XGBClassifier:
    """An unfitted XGBoost classifier on pandas categoricals (native categorical support)."""
    return XGBClassifier(
        objective="binary:logistic" if n_bands == 2 else "multi:softprob",
        enable_categorical=True,
        tree_method="hist",
        n_jobs=N_JOBS,
        random_state=seed,
        **params,
    )


def roc_auc(truth: np.ndarray, probabilities: np.ndarray, n_bands: int) -> float:
    """ROC AUC; one-vs-rest macro average over the bands when there are more than two."""
    if n_bands == 2:
        return float(roc_auc_score(truth, probabilities[:, 1]))
    return float(
        roc_auc_score(
            truth, probabilities, multi_class="ovr", average="macro", labels=list(range(n_bands))
        )
    )


def _targets(train: pd.DataFrame, n_bands: int, min_rows: int) -> np.ndarray:
    """The band of every row; SearchError unless each band has ``min_rows`` rows."""
    if n_bands < 2:
        raise SearchError(f"a model needs at least 2 bands, not {n_bands}")
    if BAND not in train.columns:
        raise SearchError(f"the training rows lack the {BAND!r} column")
    truth = train[BAND].to_numpy(dtype=np.int64)
    if len(truth) and (truth.min() < 0 or truth.max() >= n_bands):
        raise SearchError(f"bands must be 0..{n_bands - 1}, found {truth.min()}..{truth.max()}")
    counts = np.bincount(truth, minlength=n_bands)
    if scarce := [
        f"band {band} ({count} rows)" for band, count in enumerate(counts) if count < min_rows
    ]:
        raise SearchError(
            f"too few training rows in {', '.join(scarce)}: each band needs at least {min_rows}"
        )
    return truth


def _weights(sample_weight: Sequence[float] | np.ndarray | None, rows: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight, dtype=float)
    if weights.shape != (rows,):
        raise SearchError(f"sample_weight has shape {weights.shape}, expected ({rows},)")
    return weights


def _open_storage(storage: str | BaseStorage | None) -> tuple[BaseStorage, bool]:
    """The storage and whether this call created it (and so disposes of it)."""
    if storage is None:
        return InMemoryStorage(), True
    if isinstance(storage, str):
        url = storage_url(storage)
        try:
            return RDBStorage(url, engine_kwargs={"pool_pre_ping": True}), True
        except SQLAlchemyError as exc:
            shown = make_url(url).render_as_string(hide_password=True)
            reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()[0]
            raise SearchError(f"cannot open the study storage {shown}: {reason}") from None
    return storage, False


def _check_study(study: optuna.Study, expected: dict[str, Any]) -> None:
    found = {key: study.user_attrs[key] for key in _STUDY_ATTRS if key in study.user_attrs}
    if not found:
        for key, value in expected.items():
            study.set_user_attr(key, value)
        return
    if differing := [
        f"{key}={found.get(key)!r}" for key in _STUDY_ATTRS if found.get(key) != expected[key]
    ]:
        raise SearchError(
            f"study {study.study_name!r} was created with {', '.join(differing)}, "
            f"this search has {', '.join(f'{key}={expected[key]!r}' for key in _STUDY_ATTRS)}: "
            "use another study name"
        )


def search(
    train: pd.DataFrame,
    *,
    use_protected: bool,
    n_bands: int,
    settings: TrainingSettings,
    storage: str | BaseStorage | None,
    study_name: str,
    sample_weight: Sequence[float] | np.ndarray | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> SearchResult:
    """Run ``settings.trials`` trials (or until ``settings.timeout_s``) in the named study.

    ``storage``: a PostgreSQL URL (joined by other workers), an Optuna storage, or None for
    a study in memory. ``progress(finished, best)`` is called after each trial of this call
    with the number of trials it finished and the study's best value so far (NaN if none).
    The folds depend only on the rows and ``settings.seed``, so all workers score alike.
    """
    inputs = to_model_frame(train, use_protected)
    truth = _targets(train, n_bands, settings.cv_folds)
    weights = _weights(sample_weight, len(train))
    folds = list(
        StratifiedKFold(n_splits=settings.cv_folds, shuffle=True, random_state=settings.seed).split(
            inputs, truth
        )
    )

    def objective(trial: Trial) -> float:
        params = suggest_params(trial)
        scores: list[float] = []
        for fold, (fit_rows, check_rows) in enumerate(folds):
            model = make_classifier(params, n_bands=n_bands, seed=settings.seed)
            model.fit(
                inputs.iloc[fit_rows],
                truth[fit_rows],
                sample_weight=None if weights is None else weights[fit_rows],
            )
            # Scored unweighted: reweighing changes what the model learns, not what counts.
            probabilities = model.predict_proba(inputs.iloc[check_rows])
            scores.append(roc_auc(truth[check_rows], probabilities, n_bands))
            trial.report(float(np.mean(scores)), fold)
            if trial.should_prune():
                raise optuna.TrialPruned
        return float(np.mean(scores))

    finished = 0

    def report(study: optuna.Study, _: FrozenTrial) -> None:
        nonlocal finished
        finished += 1
        if progress is not None:
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            progress(
                finished,
                max((t.value for t in complete if t.value is not None), default=float("nan")),
            )

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store, owned = _open_storage(storage)
    try:
        study = optuna.create_study(
            study_name=study_name, storage=store, direction="maximize", load_if_exists=True
        )
        _check_study(
            study,
            {
                "n_bands": n_bands,
                "use_protected": use_protected,
                "cv_folds": settings.cv_folds,
                "weighted": weights is not None,
            },
        )
        # Seeded per worker by the trials already there, so a joining worker does not
        # repeat the first worker's parameters.
        started = len(study.get_trials(deepcopy=False))
        study = optuna.load_study(
            study_name=study_name,
            storage=store,
            sampler=TPESampler(seed=settings.seed + started),
            pruner=MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0),
        )
        study.optimize(
            objective, n_trials=settings.trials, timeout=settings.timeout_s, callbacks=[report]
        )
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise SearchError(
                f"no trial of study {study_name!r} completed"
                + (f" within {settings.timeout_s:g} s" if settings.timeout_s else "")
            )
        best = study.best_trial
        return SearchResult(
            best_params=dict(best.params),
            best_value=float(best.value),
            n_trials=len(trials),
            n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
            n_complete=len(complete),
            study_name=study_name,
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
        if owned and isinstance(store, RDBStorage):
            store.remove_session()
            store.engine.dispose()


def fit_final(
    train: pd.DataFrame,
    params: dict[str, Any],
    *,
    use_protected: bool,
    n_bands: int,
    seed: int,
    sample_weight: Sequence[float] | np.ndarray | None = None,
) -> XGBClassifier:
    """Fit the chosen parameters on all training rows; every band must occur in them."""
    inputs = to_model_frame(train, use_protected)
    truth = _targets(train, n_bands, 1)
    model = make_classifier(params, n_bands=n_bands, seed=seed)
    model.fit(inputs, truth, sample_weight=_weights(sample_weight, len(train)))
    return model


def reweigh(train: pd.DataFrame, attributes: Sequence[str] = PROTECTED) -> np.ndarray:
    """Kamiran-Calders reweighing: weight = P(group) P(band) / P(group, band) per row.

    The group is the combination of ``attributes``; after weighting, band and group are
    independent in the training rows (weighted P(band | group) = P(band)).
    """
    if not attributes:
        raise SearchError("reweighing needs at least one attribute")
    if missing := [name for name in (*attributes, BAND) if name not in train.columns]:
        raise SearchError(f"the training rows lack columns {', '.join(missing)}")
    ones = pd.Series(np.ones(len(train)))
    # Plain arrays as keys: positional, whatever the frame's index, and no unused categories.
    groups = [train[name].to_numpy(dtype=object) for name in attributes]
    band = train[BAND].to_numpy()
    n_group = ones.groupby(groups).transform("size").to_numpy(dtype=float)
    n_band = ones.groupby(band).transform("size").to_numpy(dtype=float)
    n_cell = ones.groupby([*groups, band]).transform("size").to_numpy(dtype=float)
    return n_group * n_band / (len(train) * n_cell)
