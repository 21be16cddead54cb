"""A real ``payband-monitoring serve`` process for tests."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from payband_local.ports import free_port
from payband_local.process import HttpServer, healthy_server

__all__ = ["MonitoringServer", "monitoring_server"]


class MonitoringServer(HttpServer):
    """A running ``payband-monitoring serve``."""


@contextlib.contextmanager
def monitoring_server(
    *,
    database_url: str,
    tracking_uri: str,
    state_dir: Path,
    env: Mapping[str, str] | None = None,
    interval_s: float = 300.0,
    startup_timeout: float = 60.0,
) -> Iterator[MonitoringServer]:
    """Run the monitoring service (results and audit log in ``database_url``, the model in
    the MLflow registry at ``tracking_uri``) until it answers ``/healthz``."""
    port = free_port()
    command = [sys.executable, "-m", "payband_monitoring", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--interval-s", str(interval_s)]
    settings = {
        "PAYBAND_AUDIT_DATABASE_URL": database_url,
        "PAYBAND_MONITORING_DATABASE_URL": database_url,
        "PAYBAND_MLFLOW_TRACKING_URI": tracking_uri,
        "PAYBAND_MONITORING_STATE_DIR": str(state_dir),
        **(env or {}),
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    with healthy_server(
        MonitoringServer,
        command,
        port=port,
        log_path=state_dir / "monitoring.log",
        env=settings,
        what="payband-monitoring",
        timeout=startup_timeout,
    ) as server:
        yield server
