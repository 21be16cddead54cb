"""What can go wrong in a monitoring run, in words a user can act on."""

from __future__ import annotations


class MonitoringError(Exception):
    """A monitoring run could not be done."""


class MonitoringConfigError(MonitoringError):
    """Something is set up wrong (model, reference data, schema); retrying will not help."""


class MonitoringUnavailable(MonitoringError):
    """A store (audit log, MLflow, results database) cannot be reached; a retry may help."""
