"""`payband-monitoring serve`: runs monitoring every interval and shows what it found.

The service's own loop is the schedule (one place, no second scheduler to configure): a run at
start, then one every ``PAYBAND_MONITORING_INTERVAL_S``. A failed run is logged and counted,
and the loop goes on.

- ``/metrics``: Prometheus metrics (see metrics.py);
- ``/report``: the latest HTML report;
- ``/healthz``: the process is up; ``/readyz``: the latest run succeeded.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from payband_audit import AuditSettings
from payband_contracts import ErrorBody, logs
from payband_contracts.cli_support import bind_error
from payband_monitoring.errors import MonitoringError
from payband_monitoring.metrics import MonitoringMetrics
from payband_monitoring.runner import Monitor
from payband_monitoring.settings import MonitoringSettings

__all__ = ["Loop", "ServeError", "create_app", "serve"]

logger = logging.getLogger("payband_monitoring")
LOGGERS = ("uvicorn", "uvicorn.error", "payband_monitoring")


class ServeError(Exception):
    """The service cannot start; the message says why."""


class Loop:
    """Runs the monitor now and then every interval, in a thread, until stopped."""

    def __init__(self, monitor: Monitor, metrics: MonitoringMetrics, interval_s: float) -> None:
        self.monitor, self.metrics, self.interval_s = monitor, metrics, interval_s
        self.last_error: str | None = "no run has finished yet"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitoring-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def run_once(self) -> None:
        started = time.monotonic()
        try:
            analysis = self.monitor.run()
        except MonitoringError as error:
            self.last_error = str(error)
            self.metrics.failed(time.time(), time.monotonic() - started)
            logger.error("monitoring run failed", extra={"fields": {"error": str(error)}})
            return
        except Exception as error:
            # The loop must outlive a bug in one run. Its message may quote SQL or data, so
            # only its type is shown (and logged: the JSON log never holds a traceback).
            self.last_error = f"the latest run failed unexpectedly ({type(error).__name__})"
            self.metrics.failed(time.time(), time.monotonic() - started)
            logger.exception("monitoring run failed unexpectedly")
            return
        self.last_error = None
        # The report is written: NannyML's results (and the chunks' data in them) can go.
        analysis.nannyml.clear()
        self.metrics.succeeded(analysis, time.time(), time.monotonic() - started)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)


def _error(status: int, code: str, message: str) -> JSONResponse:
    body = ErrorBody(code=code, message=message)
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


def create_app(settings: MonitoringSettings, loop: Loop) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop.start()
        try:
            yield
        finally:
            loop.stop()

    app = FastAPI(title="payband monitoring", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    def readyz() -> dict[str, str] | JSONResponse:
        if loop.last_error is not None:
            return _error(503, "not_ready", loop.last_error)
        return {"status": "ready"}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(loop.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/report", response_model=None)
    def report() -> FileResponse | JSONResponse:
        path = settings.report_path
        if not path.is_file():
            return _error(404, "no_report", "no monitoring run has written a report yet")
        return FileResponse(path, media_type="text/html; charset=utf-8")

    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                # uvicorn raises the signal again after its graceful stop: the stop was asked
                # for and done, so the process exits 0.
                self._captured_signals.clear()


def serve(settings: MonitoringSettings, audit_settings: AuditSettings | None = None) -> None:
    """Serve until SIGINT/SIGTERM; ServeError when the port is taken or results cannot be
    stored (a missing model or an unreachable audit log only fail runs, which are retried)."""
    error = bind_error(settings.host, settings.port)
    if error is not None:
        if error.errno == errno.EADDRINUSE:
            raise ServeError(f"port {settings.port} on {settings.host} is already in use")
        raise ServeError(f"cannot listen on {settings.host}:{settings.port}: {error.strerror}")
    monitor = Monitor(settings, audit_settings)
    try:
        monitor.store.check()
    except MonitoringError as problem:
        raise ServeError(str(problem)) from None
    loop = Loop(monitor, MonitoringMetrics(), settings.interval_s)
    config = uvicorn.Config(
        create_app(settings, loop),
        host=settings.host,
        port=settings.port,
        log_config=logs.logging_config(LOGGERS, settings.log_level),
        access_log=False,
    )
    _Server(config).run()
