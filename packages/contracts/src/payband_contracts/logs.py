"""Structured logs for every payband service: one JSON object per line, never a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "logging_config"]


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, the fields passed as
    ``extra={"fields": {...}}``, and the exception's type, never its traceback (which may
    quote personal data)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def logging_config(loggers: Iterable[str], level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary: `loggers` as JSON lines on stdout."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            name: {"handlers": ["stdout"], "level": level, "propagate": False} for name in loggers
        },
    }
