"""Configuration from PAYBAND_GATEWAY_* environment variables; each is listed in the README.

The audit log's database comes from PAYBAND_AUDIT_* (payband_audit.AuditSettings) and the
largest batch from PAYBAND_MAX_BATCH_SIZE (payband_contracts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from payband_gateway.keys import ApiKey, check_unique, read_key_file

__all__ = ["GatewaySettings"]


class GatewaySettings(BaseSettings):
    """Settings of the gateway."""

    model_config = SettingsConfigDict(env_prefix="PAYBAND_GATEWAY_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65_535)] = 8000

    # MLServer's V2 REST base URL and the model name in its paths.
    inference_url: str = "http://127.0.0.1:8080"
    model_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] = "salary-band"
    # Longest wait for an inference answer, and for a connection to MLServer.
    inference_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    inference_connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    # Connections kept open to MLServer (the client's pool).
    inference_connections: Annotated[int, Field(ge=1, le=1_024)] = 64

    # API keys: name, roles and the SHA-256 of the key, never the key itself. A JSON list here
    # and/or a JSON file (e.g. a mounted secret); both are used.
    api_keys: tuple[ApiKey, ...] = ()
    api_keys_file: Path | None = None

    # Largest request body accepted, in bytes (a batch of 1,000 candidates is about 250 KB).
    max_body_bytes: Annotated[int, Field(ge=1_024, le=64 * 1024 * 1024)] = 1024 * 1024
    # Contributions stated in words in each explanation's summary.
    summary_features: Annotated[int, Field(ge=0, le=50)] = 3
    # Largest number of contributions drawn as their own bar in explanation.png.
    chart_features: Annotated[int, Field(ge=1, le=50)] = 8

    # Roles to SET after connecting to the audit database (least privilege); unset: the
    # login user's own rights (or PAYBAND_AUDIT_ROLE for the writer).
    audit_writer_role: str | None = None
    audit_reader_role: str | None = None

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _keys_are_unique(self) -> GatewaySettings:
        check_unique(self.all_keys())
        return self

    def all_keys(self) -> tuple[ApiKey, ...]:
        """The keys of PAYBAND_GATEWAY_API_KEYS followed by those of the key file."""
        from_file = read_key_file(self.api_keys_file) if self.api_keys_file else ()
        return (*self.api_keys, *from_file)
