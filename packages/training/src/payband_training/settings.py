"""Configuration from PAYBAND_TRAINING_* environment variables; each is listed in the README."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from payband_data.settings import payband_home


class TrainingSettings(BaseSettings):
    """Settings of a training run; read once per command or pipeline run."""

    model_config = SettingsConfigDict(env_prefix="PAYBAND_TRAINING_", extra="ignore", frozen=True)

    seed: int = 20_261_127
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    # Optuna: several workers may join one study kept in PostgreSQL.
    trials: Annotated[int, Field(ge=1)] = 20
    timeout_s: Annotated[float | None, Field(gt=0)] = None
    cv_folds: Annotated[int, Field(ge=2, le=10)] = 3
    study_storage_url: str = "postgresql://postgres@127.0.0.1:5432/payband"
    # Protected attributes (sex, race) enter the model only when allowed.
    use_protected_attributes: bool = False
    # Mitigation by sample reweighing (group x band), off by default.
    reweigh: bool = False
    # Gates at registration.
    min_roc_auc: Annotated[float, Field(ge=0, le=1)] = 0.80
    min_disparate_impact: Annotated[float, Field(ge=0, le=1)] = 0.80
    champion_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.01
    # MLflow: tracking and registry in PostgreSQL, artifacts in a directory or s3://bucket/prefix.
    mlflow_tracking_uri: str = "postgresql+psycopg://postgres@127.0.0.1:5432/mlflow"
    mlflow_artifact_root: str = Field(
        default_factory=lambda: (payband_home() / "mlflow-artifacts").as_uri()
    )
    mlflow_experiment: str = "salary-band"
    model_name: str = "salary-band"
    champion_alias: str = "champion"
