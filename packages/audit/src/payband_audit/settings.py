"""Configuration from PAYBAND_AUDIT_* environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Art. 19 of the AI Act: logs are kept for at least six months.
MIN_RETENTION_DAYS = 180
MAX_RETENTION_DAYS = 36_500


class AuditSettings(BaseSettings):
    """Every variable is listed in the package README."""

    model_config = SettingsConfigDict(env_prefix="PAYBAND_AUDIT_", extra="ignore", frozen=True)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/payband"
    role: str | None = None
    retention_days: int = MIN_RETENTION_DAYS
    queue_size: Annotated[int, Field(ge=1)] = 10_000
    max_batch: Annotated[int, Field(ge=1)] = 1_000
    connections: Annotated[int, Field(ge=1, le=16)] = 1
    write_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    connect_timeout_s: Annotated[int, Field(ge=1)] = 2
    retry_interval_s: Annotated[float, Field(gt=0)] = 0.5

    @field_validator("retention_days")
    @classmethod
    def _at_least_the_legal_minimum(cls, days: int) -> int:
        check_retention(days)
        return days


def check_retention(days: int) -> None:
    """Refuse a retention period shorter than the legal minimum (or absurdly long)."""
    if days < MIN_RETENTION_DAYS:
        raise ValueError(
            f"retention of {days} days is shorter than the minimum of {MIN_RETENTION_DAYS} days"
        )
    if days > MAX_RETENTION_DAYS:
        raise ValueError(f"retention of {days} days is longer than {MAX_RETENTION_DAYS} days")
