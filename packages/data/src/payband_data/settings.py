"""Configuration from PAYBAND_DATA_* (and PAYBAND_HOME) environment variables.

Every variable is listed in the package README. The defaults work on a laptop: the local
versioned store and the PUMS download cache live under PAYBAND_HOME.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from payband_contracts.settings import payband_home

__all__ = ["DataSettings", "payband_home"]


class DataSettings(BaseSettings):
    """Settings of the data layer; read once per command or pipeline run."""

    model_config = SettingsConfigDict(env_prefix="PAYBAND_DATA_", extra="ignore", frozen=True)

    # PostgreSQL that receives the raw records and is dbt's target.
    database_url: str = "postgresql://postgres@127.0.0.1:5432/payband"

    # The versioned store: "local" (content-addressed directory) or "lakefs".
    store: Literal["local", "lakefs"] = "local"
    store_dir: Path = Field(default_factory=lambda: payband_home() / "store")

    lakefs_endpoint: str = "http://127.0.0.1:8000"
    lakefs_access_key_id: str = ""
    lakefs_secret_access_key: SecretStr = SecretStr("")
    lakefs_repository: str = "payband"
    lakefs_branch: str = "main"
    lakefs_storage_namespace: str = "s3://payband-lakefs/payband"

    # ACS PUMS downloads: where the per-state person zips come from and where they are cached.
    pums_base_url: str = "https://www2.census.gov/programs-surveys/acs/data/pums"
    pums_cache_dir: Path = Field(default_factory=lambda: payband_home() / "cache" / "pums")
    pums_retries: Annotated[int, Field(ge=0, le=10)] = 3
    pums_timeout_s: Annotated[float, Field(gt=0)] = 60.0

    # Where dbt writes its target (manifest, compiled SQL) and logs.
    dbt_work_dir: Path = Field(default_factory=lambda: payband_home() / "dbt")
