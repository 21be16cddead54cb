"""The inference log: migrated schema, append-only hash-chained records, writer and verifier."""

from importlib.metadata import version

from payband_audit.errors import (
    AuditConfigError,
    AuditError,
    AuditRejected,
    AuditUnavailable,
    DuplicatePrediction,
    OutcomeAlreadyRecorded,
    UnknownPrediction,
)
from payband_audit.settings import AuditSettings
from payband_audit.writer import AuditWriter, PredictionRequestRecord, Receipt

__version__ = version("payband-audit")

__all__ = [
    "AuditConfigError",
    "AuditError",
    "AuditRejected",
    "AuditSettings",
    "AuditUnavailable",
    "AuditWriter",
    "DuplicatePrediction",
    "OutcomeAlreadyRecorded",
    "PredictionRequestRecord",
    "Receipt",
    "UnknownPrediction",
]
