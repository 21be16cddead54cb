"""Prediction requests and responses, outcomes, reviews and the audit record view."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from payband_contracts.bands import SalaryBand
from payband_contracts.base import ContractModel
from payband_contracts.candidate import EXAMPLE_CANDIDATE, Candidate
from payband_contracts.catalogue import FEATURE_CATALOGUE, FeatureName
from payband_contracts.errors import ErrorBody
from payband_contracts.settings import DEFAULT_MAX_BATCH_SIZE, get_settings

PROBABILITY_TOLERANCE = 1e-6

# Per feature: allowed values (None for numbers) and the numeric range, looked up per value.
_FEATURE_RULES: dict[str, tuple[frozenset[str] | None, float, float]] = {
    spec.name: (
        frozenset(spec.values) if spec.categories is not None else None,
        spec.minimum if spec.minimum is not None else -math.inf,
        spec.maximum if spec.maximum is not None else math.inf,
    )
    for spec in FEATURE_CATALOGUE.features
}

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def _no_nul(text: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here, with the field's name, not at the database.
    if "\x00" in text:
        raise PydanticCustomError(
            "nul_character",
            "Text may not contain NUL (\\u0000) characters",
            {"rule": "text without NUL (\\u0000) characters"},
        )
    return text


# Free text people write (names, reasons, sources).
Text = AfterValidator(_no_nul)


def _in_utc(moment: datetime) -> datetime:
    # Stored in UTC: a time zone that pushes a date past year 1 or 9999 cannot be.
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_out_of_range",
            "The date-time is outside the years 1 to 9999 in UTC",
            {"rule": "date-time within the years 1 to 9999 in UTC"},
        ) from None


InUtc = AfterValidator(_in_utc)
BandIndex = Annotated[int, Field(ge=0, strict=True, description="Index of a salary band.")]


class PredictionRequest(ContractModel):
    """One candidate to predict a salary band for."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"candidate": EXAMPLE_CANDIDATE}]})

    candidate: Candidate


class BatchPredictionRequest(ContractModel):
    """Several candidates at once, answered in the same order.

    The largest accepted batch is a setting (PAYBAND_MAX_BATCH_SIZE, default 1,000); a
    validation context {"max_batch_size": n} overrides it.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"candidates": [EXAMPLE_CANDIDATE, {**EXAMPLE_CANDIDATE, "age": 52}]}]
        }
    )

    candidates: list[Candidate] = Field(
        min_length=1, json_schema_extra={"maxItems": DEFAULT_MAX_BATCH_SIZE}
    )

    @field_validator("candidates", mode="before")
    @classmethod
    def _at_most_max_batch_size(cls, value: Any, info: ValidationInfo) -> Any:
        # Checked before the items, so an oversized batch costs no per-item validation.
        context = info.context or {}
        limit = int(context.get("max_batch_size") or get_settings().max_batch_size)
        if isinstance(value, list | tuple) and len(value) > limit:
            raise PydanticCustomError(
                "batch_too_large",
                "A batch holds at most {max_batch_size} candidates, this one has {size}",
                {"max_batch_size": limit, "size": len(value), "rule": f"at most {limit} items"},
            )
        return value


class ModelRef(ContractModel):
    """A registered model version."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    version: Annotated[str, Field(min_length=1, max_length=64)]


class BandProbability(ContractModel):
    """The probability of one salary band."""

    index: BandIndex
    label: str
    probability: Annotated[float, Field(ge=0.0, le=1.0)]


class FeatureContribution(ContractModel):
    """The signed contribution of one feature to the explained band's score."""

    feature: FeatureName
    label: str = Field(description="Human label of the feature, from the feature catalogue.")
    value: int | str = Field(description="The candidate's value of the feature.")
    value_label: str | None = Field(
        default=None,
        description="The value in words, from the feature catalogue, e.g. 'Bachelor's degree'.",
    )
    contribution: float = Field(
        description="Signed contribution to the raw score (log-odds) of the explained band: "
        "positive values make the band more likely."
    )

    @model_validator(mode="after")
    def _value_is_valid_for_feature(self) -> FeatureContribution:
        allowed, low, high = _FEATURE_RULES[self.feature]
        if allowed is not None:
            if self.value not in allowed:
                raise ValueError(
                    f"value of {self.feature} must be {FEATURE_CATALOGUE[self.feature].rule}"
                )
        elif type(self.value) is not int or not low <= self.value <= high:
            raise ValueError(
                f"value of {self.feature} must be an {FEATURE_CATALOGUE[self.feature].rule}"
            )
        if self.value_label is not None:
            expected = FEATURE_CATALOGUE[self.feature].display(self.value)
            if self.value_label != expected:
                raise ValueError(f"value_label of {self.feature} must be {expected!r}")
        return self


class Explanation(ContractModel):
    """Exact per-feature contributions (TreeSHAP) to the score of one band.

    base_value plus the sum of the contributions is the model's raw score for the band.
    """

    band_index: BandIndex = Field(description="The band whose score is explained.")
    base_value: float = Field(description="The expected raw score over the training data.")
    contributions: list[FeatureContribution] = Field(
        min_length=1, description="One per model input, largest magnitude first."
    )
    summary: list[str] = Field(
        default_factory=list,
        description="The largest contributions in words, largest first: the feature, the "
        "candidate's value, the direction and the size of its effect on the explained band.",
    )

    @field_validator("contributions")
    @classmethod
    def _one_per_feature_by_magnitude(
        cls, contributions: list[FeatureContribution]
    ) -> list[FeatureContribution]:
        features = [c.feature for c in contributions]
        if len(set(features)) != len(features):
            raise ValueError("each feature may contribute only once")
        magnitudes = [abs(c.contribution) for c in contributions]
        if magnitudes != sorted(magnitudes, reverse=True):
            raise ValueError("contributions must be ordered by magnitude, largest first")
        return contributions


EXAMPLE_PREDICTION: dict[str, Any] = {
    "id": "0b6f1d3e-6a8e-4f55-9a4c-2f5d8c1e7a90",
    "created_at": "2026-11-27T10:00:00Z",
    "model": {"name": "salary-band", "version": "3"},
    "band": {"index": 1, "label": ">50K", "lower_usd": 50000.0, "upper_usd": None},
    "probabilities": [
        {"index": 0, "label": "<=50K", "probability": 0.31},
        {"index": 1, "label": ">50K", "probability": 0.69},
    ],
    "explanation": {
        "band_index": 1,
        "base_value": -1.3,
        "contributions": [
            {
                "feature": "marital_status",
                "label": "Marital status",
                "value": "married",
                "value_label": "Married",
                "contribution": 1.12,
            },
            {
                "feature": "education",
                "label": "Education",
                "value": "bachelors_degree",
                "value_label": "Bachelor's degree",
                "contribution": 0.74,
            },
            {
                "feature": "age",
                "label": "Age",
                "value": 38,
                "value_label": "38 years",
                "contribution": 0.21,
            },
        ],
        "summary": [
            "Marital status is Married: strongly raises the likelihood of >50K (+1.12)",
            "Education is Bachelor's degree: moderately raises the likelihood of >50K (+0.74)",
            "Age is 38 years: slightly raises the likelihood of >50K (+0.21)",
        ],
    },
}


class Prediction(ContractModel):
    """The answer to one prediction request."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_PREDICTION]})

    id: UUID
    created_at: AwareDatetime
    model: ModelRef
    band: SalaryBand
    probabilities: list[BandProbability] = Field(
        min_length=2, description="One per band, in band order; they sum to 1."
    )
    explanation: Explanation

    @model_validator(mode="after")
    def _consistent(self) -> Prediction:
        indexes = [p.index for p in self.probabilities]
        if indexes != list(range(len(indexes))):
            raise ValueError("probabilities must list every band once, in band order from 0")
        total = sum(p.probability for p in self.probabilities)
        if abs(total - 1.0) > PROBABILITY_TOLERANCE * len(indexes):
            raise ValueError(f"probabilities must sum to 1, not {total:.8f}")
        if self.band.index >= len(indexes):
            raise ValueError(f"band index {self.band.index} has no probability")
        if self.band.label != self.probabilities[self.band.index].label:
            raise ValueError("band label differs from the label of its probability")
        if self.explanation.band_index >= len(indexes):
            raise ValueError(f"explained band {self.explanation.band_index} does not exist")
        return self


class BatchPrediction(ContractModel):
    """The answers to a batch request, in the order of its candidates."""

    predictions: list[Prediction]


class Outcome(ContractModel):
    """The true salary band of an earlier prediction (ground truth, at most once)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"band": 1, "observed_at": "2026-11-01T00:00:00Z", "source": "payroll 2026-11"}
            ]
        }
    )

    band: BandIndex = Field(description="Index of the true salary band.")
    observed_at: Annotated[AwareDatetime, InUtc] | None = Field(
        default=None, description="When the true salary was observed."
    )
    source: Annotated[str, Field(min_length=1, max_length=200), Text] | None = Field(
        default=None, description="Where the truth comes from, e.g. 'payroll 2026-11'."
    )


class ReviewDecision(StrEnum):
    """What a human reviewer decided about a prediction."""

    CONFIRM = "confirm"
    OVERRIDE = "override"


class Review(ContractModel):
    """A human oversight decision: confirm the predicted band or override it, with a reason."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"reviewer": "Dana Example", "decision": "confirm"},
                {
                    "reviewer": "Sam Example",
                    "decision": "override",
                    "band": 0,
                    "reason": "The collective agreement sets this role's band.",
                },
            ]
        }
    )

    reviewer: Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S"), Text]
    decision: ReviewDecision
    band: BandIndex | None = Field(
        default=None, description="The band decided on; required when overriding."
    )
    reason: Annotated[str, Field(max_length=2_000), Text] | None = Field(
        default=None, description="Why; required when overriding."
    )

    @model_validator(mode="after")
    def _override_has_band_and_reason(self) -> Review:
        if self.decision is ReviewDecision.OVERRIDE:
            if self.band is None:
                raise PydanticCustomError(
                    "override_needs_band",
                    "An override must name the band decided on",
                    {"rule": "band is required when decision is override"},
                )
            if not (self.reason or "").strip():
                raise PydanticCustomError(
                    "override_needs_reason",
                    "An override must give a reason",
                    {"rule": "reason is required when decision is override"},
                )
        return self


class RecordedOutcome(Outcome):
    """An outcome as stored in the audit log."""

    recorded_at: AwareDatetime
    recorded_by: str


class RecordedReview(Review):
    """A review as stored in the audit log."""

    recorded_at: AwareDatetime


class RecordedError(ContractModel):
    """A failed request as stored in the audit log."""

    status_code: Annotated[int, Field(ge=400, le=599)]
    error: ErrorBody
    upstream_body: str | None = Field(
        default=None, description="What the inference server answered, if it answered."
    )


class AuditRecord(ContractModel):
    """The audit log's view of one prediction request: what came in, what went out, and
    everything recorded about it since."""

    prediction_id: UUID
    received_at: AwareDatetime
    caller: str = Field(description="The API key's name that made the request.")
    request_id: str | None = None
    candidate: Candidate | None = Field(
        default=None, description="The validated candidate; null if the request was invalid."
    )
    model: ModelRef | None = None
    prediction: Prediction | None = None
    error: RecordedError | None = None
    outcome: RecordedOutcome | None = None
    reviews: list[RecordedReview] = Field(default_factory=list)
    record_hash: Sha256Hex = Field(description="SHA-256 of the record, chained to the previous.")

    @model_validator(mode="after")
    def _answered_or_failed(self) -> AuditRecord:
        if (self.prediction is None) == (self.error is None):
            raise ValueError("a record holds either a prediction or an error")
        return self
