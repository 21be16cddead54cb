"""A real gateway for tests: ``payband-gateway serve`` in a subprocess on a free port.

Keys are given in plain text and configured as the gateway stores them (SHA-256 hashes).
Stopped (SIGTERM, then SIGKILL) when the test is done, whether it passed or failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from payband_local.ports import free_port
from payband_local.process import HttpServer, healthy_server

__all__ = ["GatewayServer", "TestKey", "gateway_server"]


@dataclass(frozen=True)
class TestKey:
    """A plain API key for tests, with its name and roles."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    name: str
    key: str
    roles: tuple[str, ...]

    def entry(self) -> dict[str, object]:
        digest = hashlib.sha256(self.key.encode()).hexdigest()
        return {"name": self.name, "roles": list(self.roles), "sha256": digest}

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


class GatewayServer(HttpServer):
    """A running ``payband-gateway serve``."""


@contextlib.contextmanager
def gateway_server(
    *,
    inference_url: str,
    database_url: str,
    keys: Sequence[TestKey] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[GatewayServer]:
    """Run the gateway against `inference_url` (MLServer) and the audit log at `database_url`
    until it answers ``/healthz``."""
    port = free_port()
    command = [sys.executable, "-m", "payband_gateway", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--inference-url", inference_url]
    settings = {
        "PAYBAND_AUDIT_DATABASE_URL": database_url,
        "PAYBAND_GATEWAY_API_KEYS": json.dumps([key.entry() for key in keys]),
        **(env or {}),
    }
    with (
        tempfile.TemporaryDirectory(prefix="payband-gateway-") as tmp,
        healthy_server(
            GatewayServer,
            command,
            port=port,
            log_path=Path(tmp) / "gateway.log",
            env=settings,
            what="payband-gateway",
            timeout=startup_timeout,
        ) as server,
    ):
        yield server
