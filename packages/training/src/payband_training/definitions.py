"""The training pipeline as a Dagster code location (module `payband_training.definitions`).

  training_split            the features snapshot split by band; both parts committed to the store
  -> salary_band_study      the Optuna search on the train part (a study in PostgreSQL)
  -> salary_band_model      the final fit, its evaluation on the test part and the MLflow run
  -> salary_band_registration  a version of the registered model; champion only if gates pass

The job `train_salary_band` runs all four. Each asset calls one step of
`payband_training.pipeline`, the same steps `payband-training train` chains. The features
snapshot and the run's overrides come from the `training` resource, set per run.
"""

# No `from __future__ import annotations`: Dagster reads the annotations of asset functions.

import os
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    Definitions,
    MetadataValue,
    asset,
    define_asset_job,
    definitions,
)
from pydantic import Field

from payband_data.settings import DataSettings
from payband_training import gates, pipeline
from payband_training.features import read_features
from payband_training.mitigation import METHODS
from payband_training.registry import Registration
from payband_training.search import SearchResult
from payband_training.settings import TrainingSettings

# Nothing phones home: dagster reads this before uploading usage statistics.
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

GROUP = "training"
JOB = "train_salary_band"


class TrainingRun(ConfigurableResource):
    """What one run trains on, and the settings it overrides (empty: PAYBAND_TRAINING_*)."""

    features_uri: str = Field(
        default="",
        description="Features snapshot URI; empty: the newest features/<source> version",
    )
    source: str = Field(default="adult", description="Source whose newest snapshot to use")
    trials: int | None = Field(default=None, ge=1, description="Optuna trials of this worker")
    timeout_s: float | None = Field(default=None, gt=0, description="Stop the search after s")
    use_protected: bool | None = Field(default=None, description="Let sex and race into the model")
    mitigation: str | None = Field(
        default=None,
        description="Mitigation methods the search may choose, comma-separated "
        f"({', '.join(METHODS)})",
    )

    def settings(self, base: TrainingSettings) -> TrainingSettings:
        """`base` with this run's overrides, validated like the environment's values."""
        overrides = {
            "trials": self.trials,
            "timeout_s": self.timeout_s,
            "use_protected_attributes": self.use_protected,
            "mitigation": self.mitigation,
        }
        given = {key: value for key, value in overrides.items() if value is not None}
        return TrainingSettings(**{**base.model_dump(), **given})


@dataclass(frozen=True)
class SplitUris:
    """Where a committed split is: the features it came from and its two parts."""

    features_uri: str
    train_uri: str
    test_uri: str


@dataclass(frozen=True)
class ModelRecord:
    """The final model's MLflow run, with what registration and its card need."""

    model: pipeline.TrainedModel
    metrics: dict[str, float]

    @property
    def run_id(self) -> str:
        return self.model.run_id

    @property
    def model_uri(self) -> str:
        return self.model.model_uri


def _logger(context: AssetExecutionContext) -> pipeline.Progress:
    def progress(step: str, detail: str) -> None:
        context.log.info(f"{step}: {detail}")

    return progress


def build_definitions(
    settings: TrainingSettings | None = None, data_settings: DataSettings | None = None
) -> Definitions:
    """The code location; the settings fix where it reads and writes (tests pass their own)."""
    base = settings or TrainingSettings()
    data = data_settings or DataSettings()

    @asset(group_name=GROUP, description="The features split by band, committed to the store.")
    def training_split(context: AssetExecutionContext, training: TrainingRun) -> SplitUris:
        run_settings = training.settings(base)
        pipeline.check_databases(run_settings)
        uri = training.features_uri or pipeline.newest_features_uri(training.source, data)
        features = read_features(uri, data)
        context.log.info(f"features: {len(features.frame):,} rows from {features.uri}")
        parts = pipeline.split_features(features, run_settings, data, progress=_logger(context))
        context.add_output_metadata(
            {
                "features_uri": MetadataValue.text(features.uri),
                "train_uri": MetadataValue.text(parts.train_version.uri),
                "test_uri": MetadataValue.text(parts.test_version.uri),
                "train_rows": len(parts.train),
                "test_rows": len(parts.test),
                "bands": MetadataValue.json(list(parts.band_labels)),
            }
        )
        return SplitUris(
            features_uri=features.uri,
            train_uri=parts.train_version.uri,
            test_uri=parts.test_version.uri,
        )

    @asset(group_name=GROUP, description="The Optuna search for XGBoost on the train part.")
    def salary_band_study(
        context: AssetExecutionContext, training: TrainingRun, training_split: SplitUris
    ) -> SearchResult:
        run_settings = training.settings(base)
        pipeline.check_databases(run_settings)
        parts = pipeline.read_split(training_split.train_uri, training_split.test_uri, data)
        found = pipeline.search_params(parts, run_settings, progress=_logger(context))
        context.add_output_metadata(
            {
                "study_name": found.study_name,
                "chosen_cv_roc_auc": found.best_value,
                "chosen_trial": found.chosen.number,
                "mitigation": found.chosen.config.mitigation.describe(),
                "best_params": MetadataValue.json(found.chosen.config.flat(parts.n_bands)),
                "trials": found.n_trials,
                "complete": found.n_complete,
                "feasible": sum(trial.feasible for trial in found.trials),
                "pareto_front": len(found.front),
            }
        )
        return found

    @asset(
        group_name=GROUP,
        description="The final fit, its evaluation on the test part and the MLflow run.",
    )
    def salary_band_model(
        context: AssetExecutionContext,
        training: TrainingRun,
        training_split: SplitUris,
        salary_band_study: SearchResult,
    ) -> ModelRecord:
        run_settings = training.settings(base)
        parts = pipeline.read_split(training_split.train_uri, training_split.test_uri, data)
        trained = pipeline.fit_and_record(
            parts, salary_band_study, run_settings, progress=_logger(context)
        )
        metrics = trained.metrics
        metadata: dict[str, Any] = {
            "run_id": trained.run_id,
            "model_uri": MetadataValue.text(trained.model_uri),
            "metrics": MetadataValue.json(metrics),
        }
        for name in (
            "roc_auc",
            "sex_disparate_impact",
            "race_disparate_impact",
            gates.EXPLANATION_MS,
        ):
            if name in metrics:
                metadata[name] = metrics[name]
        context.add_output_metadata(metadata)
        return ModelRecord(model=trained, metrics=metrics)

    @asset(
        group_name=GROUP,
        description="A version of the registered model; champion only if every gate passes.",
    )
    def salary_band_registration(
        context: AssetExecutionContext,
        training: TrainingRun,
        salary_band_study: SearchResult,
        salary_band_model: ModelRecord,
    ) -> Registration:
        run_settings = training.settings(base)
        registration = pipeline.register_model(
            salary_band_model.model, salary_band_study, run_settings, progress=_logger(context)
        )
        context.add_output_metadata(
            {
                "model": registration.name,
                "version": registration.version,
                "decision": gates.as_tags(registration.decision)[gates.DECISION_TAG],
                "promoted": registration.promoted,
                "previous_champion": registration.previous_champion or "",
                "reasons": MetadataValue.md(
                    "\n".join(f"- {reason}" for reason in registration.decision.reasons)
                ),
                "run_id": salary_band_model.run_id,
            }
        )
        return registration

    assets = [training_split, salary_band_study, salary_band_model, salary_band_registration]
    return Definitions(
        assets=assets,
        jobs=[
            define_asset_job(
                JOB,
                selection=assets,
                description="features snapshot -> split -> search -> model -> registry",
            )
        ],
        resources={"training": TrainingRun()},
    )


@definitions
def defs() -> Definitions:
    """Loaded by Dagster when the code location starts, not when this module is imported."""
    return build_definitions()
