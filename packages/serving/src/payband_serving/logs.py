"""One JSON object per log line for the inference server (MLServer, uvicorn, payband)."""

from __future__ import annotations

from typing import Any

from payband_contracts import logs

__all__ = ["logging_config"]

_LOGGERS = (
    "mlserver",
    "mlserver.rest",
    "mlserver.grpc",
    "mlserver.parallel",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "payband_serving",
)


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary: every server logger as JSON on stdout."""
    return logs.logging_config(_LOGGERS, level)
