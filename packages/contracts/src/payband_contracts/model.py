"""The model metadata format (``payband_model.json``): what a trained model needs at prediction.

Training writes it next to the booster; serving reads it to decode inputs. It crosses a
process boundary (training's artifact, MLServer's input), so it lives here and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from payband_contracts.bands import SalaryBands
from payband_contracts.catalogue import FEATURE_CATALOGUE
from payband_contracts.errors import first_problem

__all__ = [
    "BOOSTER_FEATURE_TYPES",
    "BOOSTER_FILE",
    "METADATA_FILE",
    "MODEL_FORMAT",
    "MULTICLASS_OBJECTIVE",
    "REFERENCE_FILE",
    "REFERENCE_PREDICTION",
    "REFERENCE_TRUTH",
    "DecisionRule",
    "ModelSchema",
    "ModelSchemaError",
]

MODEL_FORMAT = "payband-model/1"
BOOSTER_FILE = "booster.json"
METADATA_FILE = "payband_model.json"
# XGBoost's feature type names for our two kinds of input.
BOOSTER_FEATURE_TYPES = {"integer": "int", "categorical": "c"}
# The objectives whose outputs are band probabilities (and whose margins are log-odds).
BINARY_OBJECTIVE = "binary:logistic"
MULTICLASS_OBJECTIVE = "multi:softprob"
# Reference data for monitoring, logged by training at the root of the model's MLflow run:
# one row per test row with every catalogue feature (raw values), the true band index, the
# predicted band index and one probability column per band label (``band_labels``).
REFERENCE_FILE = "reference.parquet"
REFERENCE_TRUTH = "band"
REFERENCE_PREDICTION = "predicted_band"


class ModelSchemaError(ValueError):
    """A model's metadata is missing, malformed or does not match its booster."""


class DecisionRule(BaseModel):
    """How a band follows from a candidate's band probabilities: one rule for every candidate.

    The band is the one with the highest ``log p(band) + band_offsets[band]`` (ties go to
    the lower band); no offsets is the plain most-probable band. For two bands this is a
    cut-off: band 1 exactly when ``p(band 1) > cut_off``. The rule is part of the model:
    training chooses it, the gates judge the bands it gives, serving applies it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    band_offsets: tuple[float, ...] = ()

    @model_validator(mode="after")
    def _finite(self) -> DecisionRule:
        if not all(math.isfinite(offset) for offset in self.band_offsets):
            raise ValueError(f"band offsets must be finite numbers: {list(self.band_offsets)}")
        return self

    @classmethod
    def with_cut_off(cls, cut_off: float) -> DecisionRule:
        """The two-band rule "band 1 when p(band 1) > cut_off" (0 < cut_off < 1)."""
        if not 0 < cut_off < 1:
            raise ValueError(f"a cut-off lies strictly between 0 and 1, not {cut_off}")
        return cls(band_offsets=(0.0, math.log((1 - cut_off) / cut_off)))

    @property
    def cut_off(self) -> float:
        """The two-band cut-off on p(band 1) (0.5 without offsets); ValueError for more bands."""
        if not self.band_offsets:
            return 0.5
        if len(self.band_offsets) != 2:
            raise ValueError(f"a rule over {len(self.band_offsets)} bands has no single cut-off")
        low, high = self.band_offsets
        return 1.0 / (1.0 + math.exp(high - low))

    def describe(self, band_labels: Sequence[str]) -> str:
        """The rule in words, for model cards and notices."""
        if len(band_labels) == 2:
            return (
                f"band {band_labels[1]} when its probability is above {self.cut_off:.3f}, "
                f"otherwise {band_labels[0]}"
            )
        if not any(self.band_offsets):
            return "the most probable band"
        shifts = ", ".join(
            f"{label} {offset:+.3f}"
            for label, offset in zip(band_labels, self.band_offsets, strict=True)
        )
        return f"the band with the highest log-probability plus its offset ({shifts})"

    def bands(self, probabilities: np.ndarray) -> np.ndarray:
        """The band (int64 [N]) of each row of band probabilities [N, B]."""
        matrix = np.asarray(probabilities, dtype=np.float64)
        if matrix.ndim != 2:
            raise ValueError(f"probabilities must have shape (rows, bands), not {matrix.shape}")
        if self.band_offsets and matrix.shape[1] != len(self.band_offsets):
            raise ValueError(
                f"{matrix.shape[1]} probability columns for a rule over "
                f"{len(self.band_offsets)} bands"
            )
        if not any(self.band_offsets):
            return matrix.argmax(axis=1).astype(np.int64)
        if matrix.shape[1] == 2:
            # Compared on the probability itself, as the cut-off is stated.
            return (matrix[:, 1] > self.cut_off).astype(np.int64)
        with np.errstate(divide="ignore"):
            scores = np.log(matrix) + np.asarray(self.band_offsets)
        return scores.argmax(axis=1).astype(np.int64)


class ModelSchema(BaseModel):
    """What a model was trained with and needs at prediction time (``payband_model.json``).

    ``features`` is the booster's column order; a feature with ``category_levels`` is
    categorical (the position of a level is its XGBoost category code), every other one an
    integer.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["payband-model/1"] = MODEL_FORMAT
    booster_file: str = BOOSTER_FILE
    features: tuple[str, ...]
    category_levels: dict[str, tuple[str, ...]]
    # The accepted range (inclusive) of integer features; empty in models that predate it.
    integer_ranges: dict[str, tuple[int, int]] = {}
    band_labels: tuple[str, ...]
    band_edges_usd: tuple[float, ...]
    use_protected: bool
    features_uri: str
    train_uri: str
    test_uri: str
    # The training population: data source, census year and states ("" / () for all).
    source: str
    year: str
    states: tuple[str, ...] = ()
    # The band from the probabilities; models that predate it take the most probable band.
    decision: DecisionRule = Field(default_factory=DecisionRule)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSchema:
        if not self.features or len(set(self.features)) != len(self.features):
            raise ValueError(f"features must be distinct and not empty: {list(self.features)}")
        if stray := sorted(set(self.category_levels) - set(self.features)):
            raise ValueError(f"category levels for features the model lacks: {stray}")
        if stray := sorted(set(self.integer_ranges) - set(self.integer_features)):
            raise ValueError(f"integer ranges for features that are not integer inputs: {stray}")
        for name, (low, high) in self.integer_ranges.items():
            if low > high:
                raise ValueError(f"the range of {name!r} is empty: {low} > {high}")
        for name, levels in self.category_levels.items():
            if not levels or len(set(levels)) != len(levels):
                raise ValueError(f"levels of {name!r} must be distinct and not empty")
        expected = SalaryBands(edges_usd=self.band_edges_usd).labels
        if self.band_labels != expected:
            raise ValueError(
                f"band labels {list(self.band_labels)} do not match the band edges "
                f"{list(self.band_edges_usd)} (expected {list(expected)})"
            )
        if self.decision.band_offsets and len(self.decision.band_offsets) != len(expected):
            raise ValueError(
                f"the decision rule has {len(self.decision.band_offsets)} band offsets for "
                f"{len(expected)} bands"
            )
        return self

    @classmethod
    def create(
        cls,
        *,
        use_protected: bool,
        band_edges_usd: Sequence[float],
        features_uri: str,
        train_uri: str,
        test_uri: str,
        source: str,
        year: str,
        states: Sequence[str] = (),
        decision: DecisionRule | None = None,
    ) -> ModelSchema:
        """The schema of a model over the catalogue's features, in catalogue order; sex and
        race only if ``use_protected``; levels in catalogue order."""
        specs = [spec for spec in FEATURE_CATALOGUE.features if use_protected or not spec.protected]
        edges = tuple(float(edge) for edge in band_edges_usd)
        return cls(
            features=tuple(str(spec.name) for spec in specs),
            category_levels={
                str(spec.name): tuple(spec.values) for spec in specs if spec.categories is not None
            },
            integer_ranges={
                str(spec.name): (spec.minimum, spec.maximum)
                for spec in specs
                if spec.kind == "integer" and spec.minimum is not None and spec.maximum is not None
            },
            band_labels=SalaryBands(edges_usd=edges).labels,
            band_edges_usd=edges,
            use_protected=use_protected,
            features_uri=features_uri,
            train_uri=train_uri,
            test_uri=test_uri,
            source=source,
            year=year,
            states=tuple(states),
            decision=decision or DecisionRule(),
        )

    @property
    def n_bands(self) -> int:
        return len(self.band_labels)

    def bands(self, probabilities: np.ndarray) -> np.ndarray:
        """The band of each row of probabilities under the model's decision rule."""
        return self.decision.bands(probabilities)

    @property
    def integer_features(self) -> tuple[str, ...]:
        return tuple(name for name in self.features if name not in self.category_levels)

    @property
    def objective(self) -> str:
        """The XGBoost objective a booster for these bands must have."""
        return BINARY_OBJECTIVE if self.n_bands == 2 else MULTICLASS_OBJECTIVE

    @property
    def booster_feature_types(self) -> tuple[str, ...]:
        """XGBoost's type of each feature, in order: ``int`` or ``c`` (categorical)."""
        return tuple(
            BOOSTER_FEATURE_TYPES["categorical" if name in self.category_levels else "integer"]
            for name in self.features
        )

    def write(self, path: Path) -> Path:
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> ModelSchema:
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise ModelSchemaError(f"{path} does not exist: not a payband model") from None
        except ValidationError as exc:
            raise ModelSchemaError(f"{path}: {first_problem(exc)}") from None

    def check_booster_info(
        self,
        feature_names: Sequence[str],
        feature_types: Sequence[str],
        n_classes: int,
        objective: str | None = None,
    ) -> None:
        """ModelSchemaError unless a booster with these features, types, classes and objective
        fits; ``n_classes`` as XGBoost's ``num_class`` (0 for a binary objective)."""
        if list(feature_names) != list(self.features):
            raise ModelSchemaError(
                f"the booster's features {list(feature_names)} differ from the schema's "
                f"{list(self.features)}"
            )
        if list(feature_types) != list(self.booster_feature_types):
            raise ModelSchemaError(
                f"the booster's feature types {list(feature_types)} differ from the schema's "
                f"{list(self.booster_feature_types)}"
            )
        classes = max(int(n_classes), 2)
        if classes != self.n_bands:
            raise ModelSchemaError(
                f"the booster predicts {classes} classes, the schema has {self.n_bands} bands"
            )
        if objective is not None and objective != self.objective:
            raise ModelSchemaError(
                f"the booster's objective is {objective}; {self.n_bands} bands need "
                f"{self.objective} (probabilities per band, log-odds margins)"
            )
