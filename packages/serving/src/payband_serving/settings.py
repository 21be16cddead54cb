"""Configuration from PAYBAND_SERVING_* environment variables and PAYBAND_MLFLOW_TRACKING_URI;
each is listed in the README."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from payband_contracts.settings import (
    DEFAULT_MLFLOW_TRACKING_URI,
    MlflowTrackingUri,
    payband_home,
)

__all__ = ["ServingSettings"]


class ServingSettings(BaseSettings):
    """Settings of the inference server and the serving pipeline."""

    # validate_by_name: mlflow_tracking_uri, read from PAYBAND_MLFLOW_TRACKING_URI, is also
    # given by its name in code.
    model_config = SettingsConfigDict(
        env_prefix="PAYBAND_SERVING_", extra="ignore", frozen=True, validate_by_name=True
    )

    # What to serve: an MLflow model URI (models:/name@alias, models:/name/version, runs:/...)
    # or a local model directory (booster.json + payband_model.json).
    model_uri: str = "models:/salary-band@champion"
    # The name clients use in V2 paths: /v2/models/<model_name>/infer.
    model_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] = "salary-band"
    # The MLflow registry of models:/ URIs (PAYBAND_MLFLOW_TRACKING_URI, shared by every package).
    mlflow_tracking_uri: MlflowTrackingUri = DEFAULT_MLFLOW_TRACKING_URI

    host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=1, le=65_535)] = 8080
    grpc_port: Annotated[int, Field(ge=1, le=65_535)] = 8081
    metrics_port: Annotated[int, Field(ge=1, le=65_535)] = 8082
    # MLServer inference worker processes; 0 runs inference in the server process itself.
    parallel_workers: Annotated[int, Field(ge=0, le=64)] = 0
    # Adaptive batching: requests arriving within max_batch_time_s are merged into one call
    # of up to max_batch_size requests. 1 (the default) turns it off.
    max_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 1
    max_batch_time_s: Annotated[float, Field(ge=0, le=10)] = 0.0
    # Rows accepted in one inference request (after batching merges requests).
    max_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # XGBoost threads per prediction; 0 uses every core.
    threads: Annotated[int, Field(ge=0, le=256)] = 0

    # The serving pipeline: where bundles go and how their images are built.
    bundle_dir: Path = Field(default_factory=lambda: payband_home() / "serving" / "bundles")
    container_engine: Literal["auto", "podman", "docker", "none"] = "auto"
    # The image every bundle image starts from: the payband-serving package image.
    base_image: str = f"payband-serving:{version('payband-serving')}"
    image_repository: str = "payband-model"
