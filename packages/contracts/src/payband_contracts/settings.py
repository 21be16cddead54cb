"""Settings shared by every service, read from PAYBAND_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from payband_contracts.bands import DEFAULT_EDGES_USD, SalaryBands

DEFAULT_MAX_BATCH_SIZE = 1_000

# The MLflow tracking and registry store: one variable for every package that talks to MLflow
# (training, serving, monitoring), so that they cannot be pointed at different stores.
MLFLOW_TRACKING_URI_VARIABLE = "PAYBAND_MLFLOW_TRACKING_URI"
DEFAULT_MLFLOW_TRACKING_URI = "postgresql+psycopg://postgres@127.0.0.1:5432/mlflow"
# What each of them read before. Their settings take the field by name (validate_by_name, for
# code and tests), which makes pydantic-settings read the prefixed name too: refused instead.
_FORMER_TRACKING_VARIABLES = tuple(
    f"PAYBAND_{package}_MLFLOW_TRACKING_URI" for package in ("TRAINING", "SERVING", "MONITORING")
)


def _no_former_variable(uri: str) -> str:
    if MLFLOW_TRACKING_URI_VARIABLE not in os.environ:
        for name in _FORMER_TRACKING_VARIABLES:
            if name in os.environ:
                raise ValueError(
                    f"{name} is no longer read: set {MLFLOW_TRACKING_URI_VARIABLE}, "
                    "the MLflow store of every package"
                )
    return uri


# The field `mlflow_tracking_uri: MlflowTrackingUri = DEFAULT_MLFLOW_TRACKING_URI` of a settings
# class whose model_config sets validate_by_name=True.
MlflowTrackingUri = Annotated[
    str,
    Field(validation_alias=MLFLOW_TRACKING_URI_VARIABLE),
    AfterValidator(_no_former_variable),
]


def payband_home() -> Path:
    """The directory that holds payband's local state (PAYBAND_HOME, default ~/.payband)."""
    return Path(os.environ.get("PAYBAND_HOME") or Path.home() / ".payband").expanduser()


class ContractsSettings(BaseSettings):
    """PAYBAND_MAX_BATCH_SIZE and PAYBAND_SALARY_BAND_EDGES_USD (a JSON list)."""

    model_config = SettingsConfigDict(env_prefix="PAYBAND_", extra="ignore", frozen=True)

    max_batch_size: Annotated[int, Field(ge=1, le=100_000)] = DEFAULT_MAX_BATCH_SIZE
    salary_band_edges_usd: tuple[float, ...] = DEFAULT_EDGES_USD

    @property
    def salary_bands(self) -> SalaryBands:
        return SalaryBands(edges_usd=self.salary_band_edges_usd)


@lru_cache(maxsize=1)
def get_settings() -> ContractsSettings:
    """The process's settings, read once from the environment."""
    return ContractsSettings()
