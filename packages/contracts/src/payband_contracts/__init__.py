"""payband_contracts: the one schema for every message that crosses a process boundary.

The canonical candidate and its feature catalogue, salary bands, prediction requests and
responses, outcomes, reviews, the audit record view and the error body.
"""

from importlib.metadata import version

from payband_contracts.bands import SalaryBand, SalaryBands, format_usd
from payband_contracts.candidate import EXAMPLE_CANDIDATE, FEATURE_ENUMS, Candidate
from payband_contracts.catalogue import (
    FEATURE_CATALOGUE,
    Birthplace,
    Category,
    ClassOfWorker,
    Education,
    FeatureCatalogue,
    FeatureName,
    FeatureSpec,
    MaritalStatus,
    Occupation,
    Race,
    Sex,
)
from payband_contracts.errors import ErrorBody, FieldError, field_errors, validation_error_body
from payband_contracts.messages import (
    AuditRecord,
    BandProbability,
    BatchPrediction,
    BatchPredictionRequest,
    Explanation,
    FeatureContribution,
    ModelRef,
    Outcome,
    Prediction,
    PredictionRequest,
    RecordedError,
    RecordedOutcome,
    RecordedReview,
    Review,
    ReviewDecision,
)
from payband_contracts.settings import ContractsSettings, get_settings

__version__ = version("payband-contracts")

__all__ = [
    "EXAMPLE_CANDIDATE",
    "FEATURE_CATALOGUE",
    "FEATURE_ENUMS",
    "AuditRecord",
    "BandProbability",
    "BatchPrediction",
    "BatchPredictionRequest",
    "Birthplace",
    "Candidate",
    "Category",
    "ClassOfWorker",
    "ContractsSettings",
    "Education",
    "ErrorBody",
    "Explanation",
    "FeatureCatalogue",
    "FeatureContribution",
    "FeatureName",
    "FeatureSpec",
    "FieldError",
    "MaritalStatus",
    "ModelRef",
    "Occupation",
    "Outcome",
    "Prediction",
    "PredictionRequest",
    "Race",
    "RecordedError",
    "RecordedOutcome",
    "RecordedReview",
    "Review",
    "ReviewDecision",
    "SalaryBand",
    "SalaryBands",
    "Sex",
    "field_errors",
    "format_usd",
    "get_settings",
    "validation_error_body",
]
