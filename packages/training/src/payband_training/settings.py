"""Configuration from PAYBAND_TRAINING_* environment variables and PAYBAND_MLFLOW_TRACKING_URI;
each is listed in the README."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from payband_contracts.settings import DEFAULT_MLFLOW_TRACKING_URI, MlflowTrackingUri
from payband_data.settings import payband_home
from payband_training.mitigation import METHODS, Method


class TrainingSettings(BaseSettings):
    """Settings of a training run; read once per command or pipeline run."""

    # validate_by_name: mlflow_tracking_uri, read from PAYBAND_MLFLOW_TRACKING_URI, is also
    # given by its name in code.
    model_config = SettingsConfigDict(
        env_prefix="PAYBAND_TRAINING_", extra="ignore", frozen=True, validate_by_name=True
    )

    seed: int = 20_261_127
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    # Optuna: several workers may join one study kept in PostgreSQL.
    trials: Annotated[int, Field(ge=1)] = 20
    timeout_s: Annotated[float | None, Field(gt=0)] = None
    cv_folds: Annotated[int, Field(ge=2, le=10)] = 3
    study_storage_url: str = "postgresql://postgres@127.0.0.1:5432/payband"
    # Protected attributes (sex, race) enter the model only when allowed.
    use_protected_attributes: bool = False
    # The mitigation methods the search may choose from ("none" alone: no mitigation).
    mitigation: Annotated[tuple[Method, ...], NoDecode] = METHODS
    # Gates at registration (and constraints of the search).
    min_roc_auc: Annotated[float, Field(ge=0, le=1)] = 0.80
    min_disparate_impact: Annotated[float, Field(ge=0, le=1)] = 0.80
    champion_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.01
    # Headroom over the fairness gate the search asks of every validation fold: the gate is
    # judged again on the test rows, where a model chosen at its edge falls below half the time.
    search_fairness_margin: Annotated[float, Field(ge=0, le=0.5)] = 0.03
    # Smaller groups are reported with their interval but do not decide fairness.
    min_group_rows: Annotated[int, Field(ge=1)] = 100
    # Resamples of the test rows behind the fairness intervals.
    bootstrap_samples: Annotated[int, Field(ge=0, le=100_000)] = 1000
    # Serving budget: a batch of 1,000 explanations, predicted from the model's size.
    max_explanation_ms: Annotated[float, Field(gt=0)] = 100.0
    # MLflow: tracking and registry in PostgreSQL (PAYBAND_MLFLOW_TRACKING_URI, shared by every
    # package), artifacts in a directory or s3://bucket/prefix.
    mlflow_tracking_uri: MlflowTrackingUri = DEFAULT_MLFLOW_TRACKING_URI
    mlflow_artifact_root: str = Field(
        default_factory=lambda: (payband_home() / "mlflow-artifacts").as_uri()
    )
    mlflow_experiment: str = "salary-band"
    model_name: str = "salary-band"
    champion_alias: str = "champion"

    @field_validator("mitigation", mode="before")
    @classmethod
    def _methods(cls, value: object) -> object:
        # From the environment: a comma-separated list ("none,penalty").
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError(f"name at least one of {', '.join(METHODS)}")
            if len(set(value)) != len(value):
                raise ValueError("a method is named twice")
        return value
