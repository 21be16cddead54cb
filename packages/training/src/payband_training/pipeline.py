"""One training, end to end: features snapshot (by URI) in, a registered model version out.

read -> split (committed to the versioned store) -> Optuna search -> final fit -> evaluation
-> MLflow run (params, metrics, data inputs, model, SHAP plots, model card, reference data)
-> registry version, promoted to `champion` only if the gates pass.
The CLI and the Dagster code location call these steps; they hold no logic of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from mlflow import MlflowClient

from payband_data.settings import DataSettings
from payband_data.store import open_store
from payband_training.card import model_card
from payband_training.evaluate import Evaluation, evaluate
from payband_training.features import PROTECTED, read_features, to_model_frame
from payband_training.model import ModelSchema, predict_probabilities
from payband_training.registry import Registration, register
from payband_training.search import SearchResult, fit_final, reweigh, search, storage_url
from payband_training.settings import TrainingSettings
from payband_training.split import Split, commit_split, split
from payband_training.tracking import MODEL_CARD_FILE, configure, log_training

# (step name, detail) for progress output; the CLI prints it, Dagster logs it.
Progress = Callable[[str, str], None]


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


def train(
    features_uri: str,
    settings: TrainingSettings,
    data_settings: DataSettings,
    *,
    study_name: str | None = None,
    progress: Progress = _quiet,
) -> TrainingOutcome:
    """Train, evaluate, record and register one model on a features snapshot."""
    if storage_url(settings.mlflow_tracking_uri) == storage_url(settings.study_storage_url):
        raise ValueError(
            "MLflow and the Optuna study need separate databases (each keeps its own "
            "alembic_version table): set PAYBAND_TRAINING_MLFLOW_TRACKING_URI or "
            "PAYBAND_TRAINING_STUDY_STORAGE_URL to another database"
        )
    features = read_features(features_uri, data_settings)
    source = features.version.metadata.get("source", "")
    progress("features", f"{len(features.frame):,} rows, {features.n_bands} bands from {source}")

    parts: Split = split(features, test_fraction=settings.test_fraction, seed=settings.seed)
    with open_store(data_settings) as store:
        train_version, test_version = commit_split(parts, features, store, source=source)
    progress("split", f"train {train_version.uri}, test {test_version.uri}")

    weights = reweigh(parts.train) if settings.reweigh else None
    # One study per training data version: workers training on the same split join it.
    name = study_name or f"salary-band-{train_version.version[:16]}"
    found = search(
        parts.train,
        use_protected=settings.use_protected_attributes,
        n_bands=features.n_bands,
        settings=settings,
        storage=settings.study_storage_url,
        study_name=name,
        sample_weight=weights,
        progress=lambda done, best: progress("search", f"trial {done}: best ROC AUC {best:.4f}"),
    )
    progress("search", f"best ROC AUC {found.best_value:.4f} after {found.n_trials} trials")

    model = fit_final(
        parts.train,
        found.best_params,
        use_protected=settings.use_protected_attributes,
        n_bands=features.n_bands,
        seed=settings.seed,
        sample_weight=weights,
    )
    booster = model.get_booster()
    inputs = to_model_frame(parts.test, settings.use_protected_attributes)
    probabilities = predict_probabilities(booster, inputs, features.n_bands)
    evaluation = evaluate(
        parts.test["band"].to_numpy(),
        probabilities,
        {attribute: parts.test[attribute].astype(str).tolist() for attribute in PROTECTED},
        features.band_labels,
    )
    progress("evaluate", f"test ROC AUC {evaluation.quality['roc_auc']:.4f}")

    metadata = features.version.metadata
    schema = ModelSchema.create(
        use_protected=settings.use_protected_attributes,
        band_edges_usd=json.loads(metadata["band_edges_usd"]),
        features_uri=features_uri,
        train_uri=train_version.uri,
        test_uri=test_version.uri,
        source=source,
        year=metadata.get("year", ""),
        states=[state for state in metadata.get("states", "").split(",") if state],
    )
    configure(settings)
    logged = log_training(
        settings=settings,
        model=booster,
        schema=schema,
        search=found,
        evaluation=evaluation,
        train=parts.train,
        test=parts.test,
    )
    progress("mlflow", f"run {logged.run_id}")
    registration = register(logged.model_uri, logged.run_id, evaluation.metrics(), settings)
    # The card was written before the registry decided; it now says what was decided.
    card = model_card(
        schema,
        evaluation,
        params=found.best_params,
        cv_roc_auc=found.best_value,
        train_rows=len(parts.train),
        decision=registration.decision,
    )
    MlflowClient().log_text(logged.run_id, card, MODEL_CARD_FILE)
    progress(
        "registry",
        f"{registration.name} version {registration.version}: "
        + ("promoted to champion" if registration.promoted else "not promoted"),
    )
    return TrainingOutcome(
        features_uri=features_uri,
        train_uri=train_version.uri,
        test_uri=test_version.uri,
        search=found,
        evaluation=evaluation,
        run_id=logged.run_id,
        model_uri=logged.model_uri,
        registration=registration,
    )
