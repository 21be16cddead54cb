"""Configuration from PAYBAND_ORCHESTRATION_* environment variables.

Every variable is listed in the package README. The defaults fit one machine: PostgreSQL and
the code servers on 127.0.0.1; the image and the compose file set the hosts of a deployment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "DEFAULT_CODE_LOCATIONS",
    "ENV_PREFIX",
    "CodeLocation",
    "OrchestrationSettings",
    "parse_code_locations",
]

ENV_PREFIX = "PAYBAND_ORCHESTRATION_"

# The packages with a Dagster code location, one code server each (ports 4000 and up when
# they share a machine; in the compose file each is `dagster-<name>:4000`).
DEFAULT_CODE_LOCATIONS = (
    "data=127.0.0.1:4000,training=127.0.0.1:4001,serving=127.0.0.1:4002,monitoring=127.0.0.1:4003"
)

Port = Annotated[int, Field(ge=1, le=65535)]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# A DNS name or IPv4 address (labels of letters, digits and hyphens), or [IPv6].
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class CodeLocation:
    """A Dagster code location served by a gRPC code server at ``host:port`` (an IPv6 host
    keeps its brackets: Dagster joins the two into the gRPC target as they are)."""

    name: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.name}={self.host}:{self.port}"


def _parse_entry(entry: str) -> CodeLocation:
    def bad(rule: str) -> ValueError:
        return ValueError(f"code location {entry!r}: {rule}")

    name, equals, address = (part.strip() for part in entry.partition("="))
    if not equals:
        raise bad("write it as name=host:port")
    if not _NAME.fullmatch(name):
        raise bad("the name must start with a letter and have only letters, digits, '_' and '-'")
    host, colon, port_text = address.rpartition(":")
    if not colon or not host:
        raise bad("the address must be host:port")
    if not _HOST.fullmatch(host):
        raise bad("the host must be a host name, an IPv4 address or an [IPv6] address in brackets")
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise bad("the port must be a whole number from 1 to 65535")
    return CodeLocation(name=name, host=host, port=int(port_text))


def parse_code_locations(text: str) -> tuple[CodeLocation, ...]:
    """``name=host:port`` entries separated by commas (blank entries are ignored).

    ValueError naming the entry and the rule it breaks: each entry is ``name=host:port`` with
    a name of letters, digits, ``_`` and ``-`` (starting with a letter), a host name or IP
    address and a port from 1 to 65535; names are unique (case-insensitively), and so are
    addresses; there is at least one entry.
    """
    locations: list[CodeLocation] = []
    names: dict[str, CodeLocation] = {}
    addresses: dict[tuple[str, int], CodeLocation] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        location = _parse_entry(entry)
        earlier = names.get(location.name.lower())
        if earlier is not None:
            raise ValueError(
                f"code location {entry!r}: the name {location.name!r} is used twice "
                f"(also {str(earlier)!r}); names must be unique"
            )
        address = (location.host.lower(), location.port)
        earlier = addresses.get(address)
        if earlier is not None:
            raise ValueError(
                f"code location {entry!r}: {str(earlier)!r} has the same address; each code "
                "location has its own code server"
            )
        names[location.name.lower()] = addresses[address] = location
        locations.append(location)
    if not locations:
        raise ValueError("no code location: give at least one name=host:port")
    return tuple(locations)


class OrchestrationSettings(BaseSettings):
    """Settings of the Dagster instance; read once per command."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # PostgreSQL holding Dagster's run, event log and schedule storage. The password is never
    # written to dagster.yaml: Dagster reads it from PAYBAND_ORCHESTRATION_POSTGRES_PASSWORD.
    postgres_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    postgres_port: Port = 5432
    postgres_user: Annotated[str, Field(min_length=1)] = "postgres"
    postgres_password: SecretStr = SecretStr("")
    postgres_db: Annotated[str, Field(min_length=1)] = "dagster"

    # The gRPC code servers (`dagster code-server start`) of the code locations.
    code_locations: Annotated[tuple[CodeLocation, ...], NoDecode] = Field(
        default_factory=lambda: parse_code_locations(DEFAULT_CODE_LOCATIONS)
    )

    # Where `payband-orchestration webserver` listens (the image sets 0.0.0.0).
    webserver_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    webserver_port: Port = 3000

    # Runs in progress at once; the queued run coordinator keeps the others waiting.
    max_concurrent_runs: Annotated[int, Field(ge=1, le=1000)] = 4

    @field_validator("code_locations", mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        return parse_code_locations(value) if isinstance(value, str) else value
