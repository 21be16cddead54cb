"""PAYBAND_MLFLOW_TRACKING_URI: one variable names the MLflow store of every package."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from payband_contracts.settings import (
    DEFAULT_MLFLOW_TRACKING_URI,
    MLFLOW_TRACKING_URI_VARIABLE,
    MlflowTrackingUri,
)


class ServingLike(BaseSettings):
    """As training, serving and monitoring declare it."""

    model_config = SettingsConfigDict(
        env_prefix="PAYBAND_SERVING_", extra="ignore", frozen=True, validate_by_name=True
    )

    mlflow_tracking_uri: MlflowTrackingUri = DEFAULT_MLFLOW_TRACKING_URI


@pytest.fixture(autouse=True)
def no_tracking_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for package in ("", "TRAINING_", "SERVING_", "MONITORING_"):
        monkeypatch.delenv(f"PAYBAND_{package}MLFLOW_TRACKING_URI", raising=False)


def test_the_one_variable_is_read_and_the_default_is_shared(monkeypatch) -> None:
    assert MLFLOW_TRACKING_URI_VARIABLE == "PAYBAND_MLFLOW_TRACKING_URI"
    assert ServingLike().mlflow_tracking_uri == DEFAULT_MLFLOW_TRACKING_URI
    monkeypatch.setenv("PAYBAND_MLFLOW_TRACKING_URI", "postgresql://u@db/mlflow")
    assert ServingLike().mlflow_tracking_uri == "postgresql://u@db/mlflow"


def test_code_gives_the_field_by_its_name(monkeypatch) -> None:
    monkeypatch.setenv("PAYBAND_MLFLOW_TRACKING_URI", "postgresql://u@db/mlflow")
    assert ServingLike(mlflow_tracking_uri="sqlite:///x.db").mlflow_tracking_uri == "sqlite:///x.db"


def test_a_former_variable_alone_is_an_error_naming_the_one(monkeypatch) -> None:
    monkeypatch.setenv("PAYBAND_SERVING_MLFLOW_TRACKING_URI", "postgresql://u@old/mlflow")
    with pytest.raises(ValidationError, match="PAYBAND_SERVING_MLFLOW_TRACKING_URI is no longer"):
        ServingLike()


def test_a_former_variable_beside_the_one_is_not_read(monkeypatch) -> None:
    monkeypatch.setenv("PAYBAND_SERVING_MLFLOW_TRACKING_URI", "postgresql://u@old/mlflow")
    monkeypatch.setenv("PAYBAND_MLFLOW_TRACKING_URI", "postgresql://u@new/mlflow")
    assert ServingLike().mlflow_tracking_uri == "postgresql://u@new/mlflow"
