"""Predictions with exact explanations: XGBoost's own TreeSHAP (``pred_contribs``).

The band of a row is the model's decision rule (``ModelSchema.bands``) applied to its band
probabilities: a cut-off for two bands, log-probability offsets for more, the most probable
band for models without a rule.

For every row and every band the contributions plus the base value equal the model's raw
score of that band. A binary model has one score, the log-odds of the upper band; the lower
band's score is its negation, so both bands are explained exactly (band 0 = -band 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

from payband_contracts.model import ModelSchema

__all__ = ["Explained", "Explainer", "InputError"]

_SHOWN_VALUES = 5
# A value quoted in an error is cut to this many characters.
_SHOWN_LENGTH = 40


class InputError(ValueError):
    """Inputs that do not fit the model; one readable line naming the input and the rule."""


@dataclass(frozen=True)
class Explained:
    """The prediction of N rows by a model of B bands over F features."""

    band: np.ndarray  # int64 [N]: the band of the model's decision rule
    probabilities: np.ndarray  # float64 [N, B], rows sum to 1
    contributions: np.ndarray  # float64 [N, B, F], in the model's feature order
    base_value: np.ndarray  # float64 [N, B]: the expected raw score of each band

    @property
    def margin(self) -> np.ndarray:
        """The raw score of each band [N, B]: base value plus contributions."""
        return self.base_value + self.contributions.sum(axis=2)


def _repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 3] + "..."


def _shown(values: Sequence[Any]) -> str:
    unique = sorted({_repr(value) for value in values})
    more = f" and {len(unique) - _SHOWN_VALUES} more" if len(unique) > _SHOWN_VALUES else ""
    return ", ".join(unique[:_SHOWN_VALUES]) + more


def _text(value: Any) -> Any:
    # gRPC carries BYTES as bytes, REST as str.
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


# Up to this many rows are explained on one thread (as many as MLServer batches merge
# behind the gateway); more are worth waking every core for.
ONE_THREAD_ROWS = 64


class Explainer:
    """Encodes raw feature values with the model's own levels and explains its predictions."""

    def __init__(
        self,
        booster: xgb.Booster,
        schema: ModelSchema,
        threads: int = 0,
        *,
        show_values: bool = True,
    ) -> None:
        self.booster = booster
        self.schema = schema
        # XGBoost threads per prediction; 0 uses every core.
        self.threads = threads
        if threads:
            booster.set_param({"nthread": threads})
        # A few rows are explained faster by one thread than by waking a pool for them: a copy
        # of the booster set to one thread serves them (one row costs ~30 % less CPU).
        self._one_thread = booster.copy()
        self._one_thread.set_param({"nthread": 1})
        # Whether errors quote the offending values (not when they may reach other clients).
        self.show_values = show_values
        # The position of a level in the schema is the category code XGBoost was trained on.
        self._codes = {
            name: {level: float(code) for code, level in enumerate(levels)}
            for name, levels in schema.category_levels.items()
        }

    @property
    def features(self) -> tuple[str, ...]:
        return self.schema.features

    def encode(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray:
        """The model's input matrix (float32 [N, F]) from one sequence of raw values per feature.

        InputError names a missing or unexpected column, columns of different lengths, an
        unknown category or a value that is not a whole number.
        """
        if missing := [name for name in self.features if name not in columns]:
            raise InputError(f"missing inputs: {', '.join(missing)}")
        if extra := sorted(set(columns) - set(self.features)):
            raise InputError(
                f"unexpected inputs: {', '.join(extra)}; the model takes {', '.join(self.features)}"
            )
        lengths = {name: len(columns[name]) for name in self.features}
        # The length most inputs have is the request's; the others are named.
        rows = max(set(lengths.values()), key=list(lengths.values()).count)
        if uneven := {name: n for name, n in lengths.items() if n != rows}:
            shown = ", ".join(f"{name} has {n}" for name, n in uneven.items())
            raise InputError(f"inputs differ in length: most have {rows} rows, but {shown}")
        if rows == 0:
            raise InputError("the request has no rows")
        matrix = np.empty((rows, len(self.features)), dtype=np.float32)
        for position, name in enumerate(self.features):
            codes = self._codes.get(name)
            values = columns[name]
            matrix[:, position] = (
                self._integers(name, values)
                if codes is None
                else self._categories(name, values, codes)
            )
        return matrix

    def _found(self, values: Sequence[Any]) -> str:
        return f"; found {_shown(values)}" if self.show_values else ""

    def _integers(self, name: str, values: Sequence[Any] | np.ndarray) -> np.ndarray:
        array = np.asarray(values)
        if array.dtype.kind == "O":
            # Mixed Python values: only ints (not bools) and whole floats are numbers here.
            items = array.tolist()
            wrong = [v for v in items if isinstance(v, bool) or not isinstance(v, int | float)]
            if wrong:
                raise InputError(f"input {name!r} must hold integers{self._found(wrong)}")
            array = np.asarray(items, dtype=np.float64)
        if array.dtype.kind not in "iuf":
            found = self._found(np.ravel(array).tolist())
            raise InputError(f"input {name!r} must hold integers{found}")
        if array.dtype.kind == "f":
            broken = array[~np.isfinite(array) | (array != np.round(array))]
            if len(broken):
                found = self._found(broken.tolist())
                raise InputError(f"input {name!r} must hold whole numbers{found}")
        if name in self.schema.integer_ranges:
            low, high = self.schema.integer_ranges[name]
            outside = array[(array < low) | (array > high)]
            if len(outside):
                found = self._found(outside.tolist())
                raise InputError(f"input {name!r} must be from {low} to {high}{found}")
        return array.astype(np.float32)

    def _categories(
        self, name: str, values: Sequence[Any] | np.ndarray, codes: Mapping[str, float]
    ) -> np.ndarray:
        texts = [
            _text(value)
            for value in (values.tolist() if isinstance(values, np.ndarray) else values)
        ]
        try:
            return np.fromiter((codes[text] for text in texts), dtype=np.float32, count=len(texts))
        except (KeyError, TypeError):
            unknown = [text for text in texts if not isinstance(text, str) or text not in codes]
            which = f" {_shown(unknown)}" if self.show_values else ""
            raise InputError(
                f"input {name!r} has unknown category{which}; "
                f"expected one of: {', '.join(self.schema.category_levels[name])}"
            ) from None

    def explain(self, matrix: np.ndarray) -> Explained:
        """Bands (by the model's decision rule), probabilities and exact contributions of an
        encoded input matrix."""
        rows, bands = matrix.shape[0], self.schema.n_bands
        small = rows <= ONE_THREAD_ROWS
        booster = self._one_thread if small else self.booster
        data = xgb.DMatrix(
            matrix,
            feature_names=list(self.features),
            feature_types=list(self.schema.booster_feature_types),
            enable_categorical=True,
            nthread=1 if small else self.threads,
        )
        contributions = np.asarray(
            booster.predict(data, pred_contribs=True, validate_features=False),
            dtype=np.float64,
        )
        probabilities = np.asarray(booster.predict(data, validate_features=False), dtype=np.float64)
        if bands == 2:
            # One score, the upper band's log-odds; the lower band's is its negation.
            upper = contributions.reshape(rows, 1, -1)
            contributions = np.concatenate((-upper, upper), axis=1)
            probabilities = np.column_stack((1.0 - probabilities, probabilities))
        contributions = contributions.reshape(rows, bands, -1)
        probabilities = probabilities.reshape(rows, bands)
        # XGBoost computes in float32; renormalised, the rows sum to 1 in float64.
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return Explained(
            # The rule training chose and the gates judged, on the probabilities served.
            band=self.schema.bands(probabilities),
            probabilities=probabilities,
            contributions=np.ascontiguousarray(contributions[:, :, :-1]),
            base_value=np.ascontiguousarray(contributions[:, :, -1]),
        )
