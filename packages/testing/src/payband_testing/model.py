"""A trained tiny model for tests: a real XGBoost booster plus its ``payband_model.json``.

Trained in the test session on synthetic candidates drawn from the feature catalogue, with a
band that really depends on the features (education, hours, age and occupation), so that
predictions and explanations are not trivial. Written exactly as training writes a model:
``booster.json`` (XGBoost JSON) and ``payband_model.json`` (``payband_contracts.model``),
with the decision rule a test gives (the most probable band by default).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from payband_contracts import FEATURE_CATALOGUE
from payband_contracts.model import (
    METADATA_FILE,
    REFERENCE_PREDICTION,
    REFERENCE_TRUTH,
    DecisionRule,
    ModelSchema,
)

__all__ = ["TinyModel", "synthetic_candidates", "train_tiny_model"]


@dataclass(frozen=True)
class TinyModel:
    """A model directory and what a test needs to use it."""

    directory: Path
    schema: ModelSchema
    booster: xgb.Booster
    # Candidates the model never saw in training (raw values: strings and ints).
    holdout: pd.DataFrame

    def v2_request(self, frame: pd.DataFrame) -> dict[str, object]:
        """A V2 inference request (JSON) for raw candidate rows, one input per model feature."""
        return {
            "inputs": [
                {
                    "name": name,
                    "shape": [len(frame), 1],
                    "datatype": "BYTES" if name in self.schema.category_levels else "INT64",
                    "data": frame[name].tolist(),
                }
                for name in self.schema.features
            ]
        }

    def encoded(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``'s model columns typed as in training (categoricals with the levels)."""
        return _typed(frame, self.schema)

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        """Band probabilities of raw candidate rows: rows x bands."""
        matrix = xgb.DMatrix(self.encoded(frame), enable_categorical=True)
        output = self.booster.predict(matrix, validate_features=True)
        return np.column_stack([1 - output, output]) if output.ndim == 1 else output

    def bands(self, frame: pd.DataFrame) -> np.ndarray:
        """The band of each raw candidate row under the model's decision rule."""
        return self.schema.bands(self.probabilities(frame))

    def reference(self, rows: int = 3_000, seed: int = 11) -> pd.DataFrame:
        """Reference data in ``payband_contracts.model``'s format, as training logs it: new
        candidates, a true band drawn from the model's own probabilities (so the model is
        calibrated on it), the predicted band (by the model's decision rule) and one
        probability column per band label."""
        candidates = synthetic_candidates(rows, seed)
        probabilities = self.probabilities(candidates)
        rng = np.random.default_rng(seed + 1)
        truth = (rng.random(rows)[:, np.newaxis] > probabilities.cumsum(axis=1)).sum(axis=1)
        # A cumulative sum that rounds below 1 must not make a band past the last.
        truth = np.minimum(truth, self.schema.n_bands - 1)
        frame = candidates.assign(
            record_id=[f"reference-{i:05d}" for i in range(rows)],
            **{REFERENCE_TRUTH: truth.astype(np.int64)},
            **{REFERENCE_PREDICTION: self.schema.bands(probabilities)},
        )
        for index, label in enumerate(self.schema.band_labels):
            frame[label] = probabilities[:, index]
        return frame


def synthetic_candidates(rows: int, seed: int = 0) -> pd.DataFrame:
    """Candidates with every catalogue feature: categories as strings, integers in range."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for spec in FEATURE_CATALOGUE.features:
        if spec.categories is not None:
            columns[str(spec.name)] = rng.choice(np.asarray(spec.values, dtype=object), rows)
        else:
            low = int(spec.minimum if spec.minimum is not None else 0)
            high = int(spec.maximum if spec.maximum is not None else 100)
            columns[str(spec.name)] = rng.integers(low, high + 1, rows, dtype=np.int64)
    return pd.DataFrame(columns)


def _score(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    education = pd.Categorical(
        frame["education"], categories=FEATURE_CATALOGUE["education"].values
    ).codes
    hours = frame["hours_per_week"].to_numpy(dtype=float)
    age = frame["age"].to_numpy(dtype=float)
    occupation = pd.Categorical(frame["occupation"]).codes % 3
    return (
        0.5 * education
        + 0.04 * np.minimum(hours, 60)
        - 0.0015 * (age - 45) ** 2
        + 0.6 * occupation
        + rng.normal(0, 0.8, len(frame))
    )


def _typed(frame: pd.DataFrame, schema: ModelSchema) -> pd.DataFrame:
    columns = {}
    for name in schema.features:
        levels = schema.category_levels.get(name)
        columns[name] = (
            frame[name].astype(np.int64)
            if levels is None
            else pd.Categorical(frame[name], categories=list(levels))
        )
    return pd.DataFrame(columns, index=frame.index)


def train_tiny_model(
    directory: Path,
    *,
    band_edges_usd: Sequence[float] = (50_000,),
    rows: int = 3_000,
    trees: int = 40,
    max_depth: int = 4,
    seed: int = 0,
    use_protected: bool = False,
    decision: DecisionRule | None = None,
) -> TinyModel:
    """Train a small booster with one band per edge + 1 and write it into ``directory``;
    ``decision`` is the model's decision rule (None: the most probable band)."""
    candidates = synthetic_candidates(rows + 500, seed)
    train, holdout = candidates.iloc[:rows], candidates.iloc[rows:].reset_index(drop=True)
    n_bands = len(band_edges_usd) + 1
    score = _score(train, np.random.default_rng(seed + 1))
    # Equal-sized bands by the score's quantiles.
    cuts = np.quantile(score, np.linspace(0, 1, n_bands + 1)[1:-1])
    labels = np.searchsorted(cuts, score, side="right")
    tag = hashlib.sha256(f"{rows}-{trees}-{max_depth}-{seed}-{n_bands}".encode()).hexdigest()
    schema = ModelSchema.create(
        use_protected=use_protected,
        band_edges_usd=band_edges_usd,
        features_uri=f"local://features/synthetic@{tag}",
        train_uri=f"local://splits/synthetic/train@{tag}",
        test_uri=f"local://splits/synthetic/test@{tag}",
        source="synthetic",
        year="2026",
        decision=decision,
    )
    params: dict[str, object] = {
        "tree_method": "hist",
        "max_depth": max_depth,
        "learning_rate": 0.3,
        "max_cat_to_onehot": 1,
        "seed": seed,
        "nthread": 1,
    }
    if n_bands == 2:
        params["objective"] = "binary:logistic"
    else:
        params |= {"objective": "multi:softprob", "num_class": n_bands}
    data = xgb.DMatrix(_typed(train, schema), label=labels, enable_categorical=True)
    booster = xgb.train(params, data, num_boost_round=trees)
    directory.mkdir(parents=True, exist_ok=True)
    booster.save_model(directory / schema.booster_file)
    schema.write(directory / METADATA_FILE)
    return TinyModel(directory=directory, schema=schema, booster=booster, holdout=holdout)
