"""Configuration from PAYBAND_MONITORING_* environment variables and PAYBAND_MLFLOW_TRACKING_URI
(listed in the README)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from payband_contracts.cli_support import settings_problems
from payband_contracts.settings import (
    DEFAULT_MLFLOW_TRACKING_URI,
    MlflowTrackingUri,
    payband_home,
)
from payband_monitoring.errors import MonitoringConfigError

if TYPE_CHECKING:
    from payband_audit import AuditSettings

# Distances between 0 and 1, so that one threshold fits them all (Wasserstein is in the
# feature's own units and is left out).
ContinuousMethod = Literal["kolmogorov_smirnov", "jensen_shannon", "hellinger"]
CategoricalMethod = Literal["chi2", "jensen_shannon", "l_infinity", "hellinger"]
PerformanceMetric = Literal["roc_auc", "accuracy", "f1", "precision", "recall"]


def _default_state_dir() -> Path:
    return payband_home() / "monitoring"


class MonitoringSettings(BaseSettings):
    """Every variable is listed in the package README."""

    # validate_by_name: mlflow_tracking_uri, read from PAYBAND_MLFLOW_TRACKING_URI, is also
    # given by its name in code.
    model_config = SettingsConfigDict(
        env_prefix="PAYBAND_MONITORING_", extra="ignore", frozen=True, validate_by_name=True
    )

    # Where results are stored (schema ``monitoring``, migrated by `payband-monitoring migrate`).
    database_url: str = "postgresql://postgres@127.0.0.1:5432/payband"
    # The model: its registry (PAYBAND_MLFLOW_TRACKING_URI, shared by every package), its name
    # (also the name MLServer serves it under) and alias.
    mlflow_tracking_uri: MlflowTrackingUri = DEFAULT_MLFLOW_TRACKING_URI
    model_name: str = "salary-band"
    champion_alias: str = "champion"
    # Analyse this registry version instead of the alias's.
    model_version: str | None = None
    # The audit log is read through payband_audit (PAYBAND_AUDIT_DATABASE_URL), as this role.
    audit_reader_role: str | None = None

    # Chunks: a fixed number of records, or a calendar period (pandas offset alias: h, D, W, M).
    chunk_size: Annotated[int, Field(ge=10, le=1_000_000)] = 500
    chunk_period: str | None = None
    # A period with fewer records is not analysed (its statistics would be noise).
    min_chunk_rows: Annotated[int, Field(ge=10)] = 100

    continuous_methods: tuple[ContinuousMethod, ...] = ("kolmogorov_smirnov", "jensen_shannon")
    categorical_methods: tuple[CategoricalMethod, ...] = ("jensen_shannon", "l_infinity")
    # A fixed alert threshold per distance; chi2 alerts at p < 0.05 (NannyML's fixed rule).
    drift_threshold: Annotated[float, Field(gt=0, le=1)] = 0.1
    performance_metrics: tuple[PerformanceMetric, ...] = ("roc_auc", "accuracy", "f1")

    # Fairness: a candidate is selected when the band served (the model's decision rule's) is
    # at least this one (default: the highest band), as in training's fairness gate.
    favourable_band: Annotated[int, Field(ge=1)] | None = None
    min_disparate_impact: Annotated[float, Field(ge=0, le=1)] = 0.8
    # Groups with fewer records in a chunk are left out of its disparate impact.
    min_group_rows: Annotated[int, Field(ge=1)] = 50

    # The service.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65_535)] = 8090
    interval_s: Annotated[float, Field(gt=0)] = 300.0
    state_dir: Path = Field(default_factory=_default_state_dir)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("chunk_period")
    @classmethod
    def _known_period(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        import pandas as pd

        try:
            pd.Period("2026-01-01", freq=value)
        except (ValueError, TypeError):
            raise ValueError(
                f"{value!r} is not a pandas period alias such as 'h', 'D', 'W' or 'M'"
            ) from None
        return value

    @model_validator(mode="after")
    def _methods_given(self) -> MonitoringSettings:
        if not self.continuous_methods or not self.categorical_methods:
            raise ValueError("name at least one continuous and one categorical drift method")
        if not self.performance_metrics:
            raise ValueError("name at least one performance metric")
        return self

    @property
    def chunking(self) -> str:
        """How records are chunked, as stored with each result: "size:500" or "period:D"."""
        return f"period:{self.chunk_period}" if self.chunk_period else f"size:{self.chunk_size}"

    @property
    def report_path(self) -> Path:
        return self.state_dir / "report.html"

    @property
    def download_dir(self) -> Path:
        return self.state_dir / "models"


def load_settings(**overrides: Any) -> MonitoringSettings:
    """PAYBAND_MONITORING_* with ``overrides`` (None: not given); a bad value is a
    MonitoringConfigError in one line naming it."""
    try:
        return MonitoringSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        raise MonitoringConfigError(f"invalid setting: {settings_problems(error)}") from None


def load_audit_settings() -> AuditSettings:
    """PAYBAND_AUDIT_* (where the audit log is read); MonitoringConfigError on a bad value."""
    from payband_audit import AuditSettings

    try:
        return AuditSettings()
    except ValidationError as error:
        raise MonitoringConfigError(
            f"invalid audit setting (PAYBAND_AUDIT_*): {settings_problems(error)}"
        ) from None
