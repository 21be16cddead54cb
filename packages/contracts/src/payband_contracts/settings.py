"""Settings shared by every service, read from PAYBAND_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from payband_contracts.bands import DEFAULT_EDGES_USD, SalaryBands

DEFAULT_MAX_BATCH_SIZE = 1_000


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
