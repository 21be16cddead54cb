"""One training, end to end: features snapshot (by URI) in, a registered model version out.

read -> split (committed to the versioned store) -> multi-objective Optuna search (accuracy
against fairness, with mitigation) -> final fit -> evaluation with bootstrap intervals, before
and after mitigation -> MLflow run (params, metrics, data inputs, model, SHAP plots, the
search's trials and Pareto front, reference data) -> registry version, promoted to `champion`
only if the gates pass -> the version's model card, written once, with the gates' decision.
`train` chains the public steps below; the Dagster code location (`definitions`) runs each
step as an asset. Neither holds logic of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from payband_contracts.database import sqlalchemy_url
from payband_data.settings import DataSettings
from payband_data.store import open_store
from payband_training.card import BiasExamination, model_card
from payband_training.cost import explanation_cost, predicted_batch_ms
from payband_training.evaluate import Evaluation, deciding_groups, label_disparate_impact
from payband_training.features import (
    BAND,
    PROTECTED,
    FeatureSet,
    band_labels_of,
    read_features,
)
from payband_training.gates import EXPLANATION_MS, SEARCH_FEASIBLE
from payband_training.model import ModelSchema
from payband_training.registry import Registration, record_card, register
from payband_training.search import (
    SearchResult,
    TrialRecord,
    default_study_name,
    evaluate_fit,
    fit_final,
    search,
)
from payband_training.settings import TrainingSettings
from payband_training.split import TEST_FILE, TRAIN_FILE, SplitError, commit_split, split
from payband_training.tracking import configure, log_training

if TYPE_CHECKING:
    import pandas as pd
    import xgboost as xgb

    from payband_data.store import DatasetVersion

# (step name, detail) for progress output; the CLI prints it, Dagster logs it.
Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class TrainingData:
    """A committed train/test split in memory, with the versions its parts are."""

    features_uri: str
    train: pd.DataFrame
    test: pd.DataFrame
    train_version: DatasetVersion
    test_version: DatasetVersion
    band_labels: tuple[str, ...]

    @property
    def n_bands(self) -> int:
        return len(self.band_labels)

    @property
    def source(self) -> str:
        return self.train_version.metadata.get("source", "")


@dataclass(frozen=True)
class TrainedModel:
    """The final model as recorded in MLflow, and what its model card needs."""

    run_id: str
    model_uri: str
    schema: ModelSchema
    evaluation: Evaluation
    train_rows: int
    # What the gates judge: the evaluation's metrics and the explanation cost.
    metrics: dict[str, float]
    bias: BiasExamination


@dataclass(frozen=True)
class TrainingOutcome:
    """What one training produced and where it is recorded."""

    features_uri: str
    train_uri: str
    test_uri: str
    search: SearchResult
    evaluation: Evaluation
    run_id: str
    model_uri: str
    registration: Registration


def _quiet(step: str, detail: str) -> None:
    del step, detail


def check_databases(settings: TrainingSettings) -> None:
    """Refuse MLflow and the Optuna study in one database (each keeps an alembic_version)."""
    if sqlalchemy_url(settings.mlflow_tracking_uri) == sqlalchemy_url(settings.study_storage_url):
        raise ValueError(
            "MLflow and the Optuna study need separate databases (each keeps its own "
            "alembic_version table): set PAYBAND_MLFLOW_TRACKING_URI or "
            "PAYBAND_TRAINING_STUDY_STORAGE_URL to another database"
        )


def newest_features_uri(source: str, data_settings: DataSettings) -> str:
    """The URI of the newest ``features/<source>`` version; ValueError if there is none."""
    with open_store(data_settings) as store:
        version = store.latest(f"features/{source}")
    if version is None:
        raise ValueError(
            f"the store has no features/{source} version: run `payband-data snapshot` first"
        )
    return version.uri


def split_features(
    features: FeatureSet,
    settings: TrainingSettings,
    data_settings: DataSettings,
    *,
    progress: Progress = _quiet,
) -> TrainingData:
    """Split a snapshot by band and commit both parts to the versioned store."""
    source = features.version.metadata.get("source", "")
    parts = split(features, test_fraction=settings.test_fraction, seed=settings.seed)
    with open_store(data_settings) as store:
        train_version, test_version = commit_split(parts, features, store, source=source)
    progress("split", f"train {train_version.uri}, test {test_version.uri}")
    return TrainingData(
        features_uri=features.uri,
        train=parts.train,
        test=parts.test,
        train_version=train_version,
        test_version=test_version,
        band_labels=features.band_labels,
    )


def read_split(train_uri: str, test_uri: str, data_settings: DataSettings) -> TrainingData:
    """A committed split read back from the store by its two URIs."""
    train = read_features(train_uri, data_settings, file_name=TRAIN_FILE)
    test = read_features(test_uri, data_settings, file_name=TEST_FILE)
    origins = {part.version.metadata.get("features_uri", "") for part in (train, test)}
    if len(origins) != 1:
        raise SplitError(f"{train.uri} and {test.uri} are not parts of one features snapshot")
    return TrainingData(
        features_uri=origins.pop(),
        train=train.frame,
        test=test.frame,
        train_version=train.version,
        test_version=test.version,
        band_labels=band_labels_of(train.version.metadata),
    )


def search_params(
    data: TrainingData,
    settings: TrainingSettings,
    *,
    study_name: str | None = None,
    progress: Progress = _quiet,
) -> SearchResult:
    """The search on the train part; workers on the same train version join one study.

    Its folds are judged by the groups the gate will judge: those with at least
    ``settings.min_group_rows`` test rows.
    """
    name = study_name or default_study_name(
        data.train_version.version,
        settings,
        n_bands=data.n_bands,
        use_protected=settings.use_protected_attributes,
    )
    found = search(
        data.train,
        use_protected=settings.use_protected_attributes,
        n_bands=data.n_bands,
        settings=settings,
        storage=settings.study_storage_url,
        study_name=name,
        deciding=_test_groups(data, settings),
        progress=lambda done, best: progress(
            "search", f"trial {done}: best ROC AUC meeting the gates {best:.4f}"
        ),
    )
    chosen = found.chosen
    progress(
        "search",
        f"chose trial {chosen.number} of {found.n_trials} "
        f"({chosen.config.mitigation.describe()}): "
        f"CV ROC AUC {chosen.roc_auc:.4f}, worst disparate impact "
        f"{chosen.worst_disparate_impact:.3f}; "
        f"{sum(t.feasible for t in found.trials)} trials meet every gate, "
        f"{len(found.front)} on the Pareto front",
    )
    return found


def _test_groups(data: TrainingData, settings: TrainingSettings) -> dict[str, set[str]]:
    groups = {attribute: data.test[attribute].astype(str).tolist() for attribute in PROTECTED}
    return deciding_groups(groups, settings.min_group_rows)


def _fit_and_evaluate(
    data: TrainingData, trial: TrialRecord, settings: TrainingSettings
) -> tuple[xgb.Booster, Evaluation]:
    booster = fit_final(
        data.train,
        trial.config,
        use_protected=settings.use_protected_attributes,
        n_bands=data.n_bands,
        seed=settings.seed,
        min_group_rows=settings.min_group_rows,
    )
    evaluation = evaluate_fit(
        booster,
        data.test,
        trial.config.decision,
        use_protected=settings.use_protected_attributes,
        n_bands=data.n_bands,
        min_group_rows=settings.min_group_rows,
        bootstrap_samples=settings.bootstrap_samples,
        seed=settings.seed,
        band_labels=data.band_labels,
        intersection=PROTECTED,
    )
    return booster, evaluation


def fit_and_record(
    data: TrainingData,
    found: SearchResult,
    settings: TrainingSettings,
    *,
    progress: Progress = _quiet,
) -> TrainedModel:
    """Fit the chosen trial, evaluate it (and the best unmitigated trial) on the test part
    and record the run in MLflow."""
    chosen = found.chosen
    booster, evaluation = _fit_and_evaluate(data, chosen, settings)
    before = None
    if found.baseline is not None:
        before = (
            evaluation
            if found.baseline.number == chosen.number
            else _fit_and_evaluate(data, found.baseline, settings)[1]
        )
    cost = explanation_cost(booster)
    metrics = evaluation.metrics() | {
        "explanation_cost": cost,
        EXPLANATION_MS: predicted_batch_ms(cost),
        SEARCH_FEASIBLE: float(chosen.feasible),
    }
    fairness = ", ".join(
        f"{attribute} disparate impact {result.disparate_impact:.3f}"
        for attribute, result in evaluation.fairness.items()
    )
    progress("evaluate", f"test ROC AUC {evaluation.quality['roc_auc']:.4f}, {fairness}")
    bias = BiasExamination(
        mitigation=chosen.config.mitigation,
        decision=chosen.config.decision,
        after=evaluation,
        before=before,
        trials=found.n_complete,
        front=len(found.front),
        feasible=sum(trial.feasible for trial in found.trials),
        chosen_trial=chosen.number,
        baseline_trial=None if found.baseline is None else found.baseline.number,
        chosen_feasible=chosen.feasible,
        label_disparate_impact=label_disparate_impact(
            data.train[BAND].to_numpy(),
            {attribute: data.train[attribute].astype(str).tolist() for attribute in PROTECTED},
            favourable=data.n_bands - 1,
            min_group_rows=settings.min_group_rows,
        ),
    )

    # The split parts carry the snapshot's source, year, states and band edges.
    metadata = data.train_version.metadata
    schema = ModelSchema.create(
        use_protected=settings.use_protected_attributes,
        band_edges_usd=json.loads(metadata["band_edges_usd"]),
        features_uri=data.features_uri,
        train_uri=data.train_version.uri,
        test_uri=data.test_version.uri,
        source=data.source,
        year=metadata.get("year", ""),
        states=[state for state in metadata.get("states", "").split(",") if state],
        decision=chosen.config.decision,
    )
    configure(settings)
    logged = log_training(
        settings=settings,
        model=booster,
        schema=schema,
        search=found,
        evaluation=evaluation,
        train=data.train,
        test=data.test,
        bias=bias,
        extra_metrics={name: metrics[name] for name in ("explanation_cost", EXPLANATION_MS)},
        raw_uri=metadata.get("raw_uri") or None,
    )
    progress("mlflow", f"run {logged.run_id}")
    return TrainedModel(
        run_id=logged.run_id,
        model_uri=logged.model_uri,
        schema=schema,
        evaluation=evaluation,
        train_rows=len(data.train),
        metrics=metrics,
        bias=bias,
    )


def register_model(
    trained: TrainedModel,
    found: SearchResult,
    settings: TrainingSettings,
    *,
    progress: Progress = _quiet,
) -> Registration:
    """Register the recorded model (champion only if the gates pass), then write the
    version's model card, the gates' decision in it, as a new artifact of its run."""
    registration = register(trained.model_uri, trained.run_id, trained.metrics, settings)
    record_card(
        registration,
        trained.run_id,
        model_card(
            trained.schema,
            trained.evaluation,
            params=found.chosen.config.flat(trained.schema.n_bands),
            cv_roc_auc=found.best_value,
            train_rows=trained.train_rows,
            decision=registration.decision,
            title=f"{registration.name} version {registration.version}",
            bias=trained.bias,
        ),
        settings,
    )
    progress(
        "registry",
        f"{registration.name} version {registration.version}: "
        + ("promoted to champion" if registration.promoted else "not promoted"),
    )
    return registration


def train(
    features_uri: str,
    settings: TrainingSettings,
    data_settings: DataSettings,
    *,
    study_name: str | None = None,
    progress: Progress = _quiet,
) -> TrainingOutcome:
    """Train, evaluate, record and register one model on a features snapshot."""
    check_databases(settings)
    features = read_features(features_uri, data_settings)
    source = features.version.metadata.get("source", "")
    progress("features", f"{len(features.frame):,} rows, {features.n_bands} bands from {source}")
    data = split_features(features, settings, data_settings, progress=progress)
    found = search_params(data, settings, study_name=study_name, progress=progress)
    trained = fit_and_record(data, found, settings, progress=progress)
    registration = register_model(trained, found, settings, progress=progress)
    return TrainingOutcome(
        features_uri=features_uri,
        train_uri=data.train_version.uri,
        test_uri=data.test_version.uri,
        search=found,
        evaluation=trained.evaluation,
        run_id=trained.run_id,
        model_uri=trained.model_uri,
        registration=registration,
    )
