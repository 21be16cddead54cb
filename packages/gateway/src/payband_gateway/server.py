"""Run the gateway under uvicorn: checks first, then JSON logs, SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
from collections.abc import Iterator
from importlib.util import find_spec

import uvicorn

from payband_audit import AuditConfigError, AuditSettings, AuditUnavailable, AuditWriter
from payband_contracts import logs
from payband_contracts.cli_support import bind_error
from payband_gateway.app import create_app
from payband_gateway.settings import GatewaySettings

__all__ = ["ServeError", "logging_config", "serve"]

_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "payband_gateway",
    "payband_gateway.access",
    "payband_audit",
)


class ServeError(Exception):
    """The gateway cannot start; the message says why and what to do."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                # uvicorn raises the signal again after its graceful stop, so SIGTERM would end
                # the process with -15: the stop was asked for and done, so exit 0.
                self._captured_signals.clear()


def logging_config(level: str = "INFO") -> dict[str, object]:
    return logs.logging_config(_LOGGERS, level)


def _check_port(host: str, port: int) -> None:
    error = bind_error(host, port)
    if error is None:
        return
    if error.errno == errno.EADDRINUSE:
        raise ServeError(f"port {port} on {host} is already in use")
    raise ServeError(f"cannot listen on {host}:{port}: {error.strerror}")


async def _check_audit(audit_settings: AuditSettings, role: str | None) -> str | None:
    """None when the audit log is usable; a warning when it is down (the gateway starts and
    refuses predictions until it is back); AuditConfigError when it is not migrated."""
    try:
        await AuditWriter(settings=audit_settings, role=role).check()
    except AuditUnavailable as error:
        return str(error)
    return None


def serve(settings: GatewaySettings, audit_settings: AuditSettings | None = None) -> None:
    """Serve until SIGINT/SIGTERM; ServeError for a port in use or an unmigrated audit log."""
    audit_settings = audit_settings or AuditSettings()
    _check_port(settings.host, settings.port)
    try:
        warning = asyncio.run(_check_audit(audit_settings, settings.audit_writer_role))
    except AuditConfigError as error:
        raise ServeError(str(error)) from None
    config = uvicorn.Config(
        create_app(settings, audit_settings),
        host=settings.host,
        port=settings.port,
        log_config=logging_config(settings.log_level),
        access_log=False,  # the gateway logs each request itself, with its route and caller
        server_header=False,
        proxy_headers=False,
        # The C parser and event loop this package depends on; the pure-Python ones only where
        # they cannot be installed.
        http="httptools" if find_spec("httptools") else "h11",
        loop="uvloop" if find_spec("uvloop") else "asyncio",
    )
    server = _Server(config)
    # Everything imported so far lives as long as the process: out of the collector's sight,
    # full collections stay short and stop adding tens of milliseconds to random requests.
    gc.collect()
    gc.freeze()
    if warning:
        logging.getLogger("payband_gateway").warning(
            "the audit log is unavailable; predictions are refused until it is back: %s", warning
        )
    server.run()
    if not server.started:
        raise ServeError("the gateway did not start; its log says why")
