"""Bias mitigation inside training, every method keeping one XGBoost booster per model.

None of the methods lets sex or race reach the booster: they change what it learns from
(weights, labels, the objective), never its inputs, so the served model is group-blind and
TreeSHAP explains the very score that decides the band.

- ``reweigh`` (pre-processing, Kamiran and Calders 2012): each row weighted by
  P(group) P(band) / P(group, band) over sex x race cells, raised to the strength (0..1).
- ``massage`` (pre-processing, Kamiran and Calders 2012): in each sex x race cell, labels
  of the rows a ranker scores nearest the other side are flipped, moving the cell's share
  of favourable labels the strength's fraction of the way to the overall share.
- ``penalty`` (in-processing): XGBoost's log loss plus a demographic-parity penalty,
  ``lambda * N * sum over attributes, over groups g (mean S of g - mean S)^2``, where S is a
  row's probability of a favourable band. Its gradient and (Gauss-Newton) hessian are
  written out in ``ParityPenalty``; with lambda = 0 it is exactly XGBoost's own objective.
- ``selection_penalty``: the same with S the decision rule's own selection made smooth,
  ``sigmoid((margin - logit(cut-off)) / temperature)`` (two bands; more bands: as
  ``penalty``). It evens out the very selection the gate judges and costs less accuracy,
  at more ROC AUC, than evening out mean probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
import xgboost as xgb

from payband_training.features import BAND, PROTECTED

__all__ = [
    "METHODS",
    "Method",
    "Mitigation",
    "MitigationError",
    "ParityPenalty",
    "group_codes",
    "massage",
    "reweigh",
]

Method = Literal["none", "reweigh", "massage", "penalty", "selection_penalty"]
METHODS: tuple[Method, ...] = get_args(Method)
# XGBoost's own floor for a softmax hessian; the penalty's multi-band objective matches it.
_HESSIAN_FLOOR = 1e-16


class MitigationError(ValueError):
    """A mitigation cannot be applied as asked; one readable line."""


@dataclass(frozen=True)
class Mitigation:
    """One method with its strength: 0..1 for reweigh and massage, lambda >= 0 for penalty."""

    method: Method = "none"
    strength: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise MitigationError(
                f"unknown mitigation {self.method!r}; one of {', '.join(METHODS)}"
            )
        if not np.isfinite(self.strength) or self.strength < 0:
            raise MitigationError(f"a mitigation's strength is a number >= 0, not {self.strength}")
        if self.method in ("reweigh", "massage") and self.strength > 1:
            raise MitigationError(
                f"{self.method} takes a strength from 0 to 1, not {self.strength}"
            )

    def describe(self) -> str:
        """The method and strength in words, for the model card."""
        match self.method:
            case "none":
                return "none"
            case "reweigh":
                return f"reweighing by sex x race and band, strength {self.strength:.2f}"
            case "massage":
                return f"massaging labels towards equal base rates, strength {self.strength:.2f}"
            case "penalty":
                return (
                    "demographic-parity penalty on mean probabilities in the objective, "
                    f"lambda {self.strength:.3g}"
                )
            case _:
                return (
                    "demographic-parity penalty on the decision rule's selection in the "
                    f"objective, lambda {self.strength:.3g}"
                )


def group_codes(frame: pd.DataFrame, attributes: Sequence[str]) -> np.ndarray:
    """One integer code per row for the combination of ``attributes`` (positional)."""
    if not attributes:
        raise MitigationError("mitigation needs at least one protected attribute")
    if missing := [name for name in attributes if name not in frame.columns]:
        raise MitigationError(f"the training rows lack columns {', '.join(missing)}")
    keys = pd.MultiIndex.from_arrays([frame[name].to_numpy(dtype=object) for name in attributes])
    codes, _ = pd.factorize(keys)
    return codes.astype(np.int64)


def reweigh(
    train: pd.DataFrame, attributes: Sequence[str] = PROTECTED, strength: float = 1.0
) -> np.ndarray:
    """Kamiran-Calders reweighing: weight = (P(group) P(band) / P(group, band)) ** strength.

    The group is the combination of ``attributes``; at strength 1, band and group are
    independent in the weighted rows (weighted P(band | group) = P(band)).
    """
    if BAND not in train.columns:
        raise MitigationError(f"the training rows lack the {BAND!r} column")
    cells = group_codes(train, attributes)
    band = train[BAND].to_numpy(dtype=np.int64)
    n_group = np.bincount(cells)[cells].astype(float)
    n_band = np.bincount(band)[band].astype(float)
    cell_band = cells * (band.max() + 1) + band
    n_cell = np.bincount(cell_band)[cell_band].astype(float)
    return (n_group * n_band / (len(train) * n_cell)) ** strength


def massage(
    bands: np.ndarray,
    scores: np.ndarray,
    cells: np.ndarray,
    *,
    favourable: int,
    strength: float = 1.0,
) -> np.ndarray:
    """Labels moved towards equal favourable shares per cell (Kamiran-Calders massaging).

    ``scores``: a ranker's probability of a favourable band per row. In a cell below the
    overall favourable share the highest-scored unfavourable rows are promoted to
    ``favourable``; in a cell above it the lowest-scored favourable rows are demoted to
    ``favourable - 1``; each cell moves ``strength`` of the way to the overall share.
    """
    truth = np.asarray(bands, dtype=np.int64)
    if not (len(truth) == len(scores) == len(cells)):
        raise MitigationError("bands, scores and cells must have one value per row")
    if not 0 <= strength <= 1:
        raise MitigationError(f"massaging takes a strength from 0 to 1, not {strength}")
    selected = truth >= favourable
    overall = float(selected.mean()) if len(truth) else 0.0
    massaged = truth.copy()
    for cell in np.unique(cells):
        rows = np.flatnonzero(cells == cell)
        have = int(selected[rows].sum())
        want = round(have + strength * (overall * len(rows) - have))
        if want > have:
            candidates = rows[~selected[rows]]
            chosen = candidates[np.argsort(-scores[candidates], kind="stable")[: want - have]]
            massaged[chosen] = favourable
        elif want < have:
            candidates = rows[selected[rows]]
            chosen = candidates[np.argsort(scores[candidates], kind="stable")[: have - want]]
            massaged[chosen] = favourable - 1
    return massaged


@dataclass(frozen=True)
class _Groups:
    """One attribute's groups over the fitted rows: a code per row, and which groups count."""

    codes: np.ndarray  # int64 [N]
    sizes: np.ndarray  # float [G]
    counted: np.ndarray  # bool [G]: groups large enough to be penalised


class ParityPenalty:
    """XGBoost's log loss plus a demographic-parity penalty on a soft selection.

    For margins m (rows x bands; one column for two bands), S_i is row i's soft selection
    (two bands with a ``cut_off``: sigmoid((m_i - logit(cut_off)) / temperature); otherwise
    P(band >= favourable)) and, per attribute, gap_g = mean S over group g - mean S over all
    rows, the objective is ``sum_i logloss_i + lambda * N * sum_attributes sum_g gap_g ** 2``
    over the groups with at least ``min_group_rows`` rows. Its gradient per row is

        dlogloss/dm + dS/dm * 2 lambda * sum_attributes (N gap_g(i) / n_g(i) - sum_g gap_g),

    (the first term only when row i's group counts) and its hessian the log loss's (p(1-p),
    or 2p(1-p) per band as XGBoost's softmax) plus the Gauss-Newton term of the penalty,
    ``2 lambda N (dS/dm)^2 sum_attributes sum_g (1[i in g] / n_g - 1 / N)^2``, which is
    never negative, so each boosting step is a descent step.
    """

    def __init__(
        self,
        strength: float,
        groups: Sequence[np.ndarray],
        *,
        n_bands: int,
        favourable: int | None = None,
        min_group_rows: int = 1,
        cut_off: float | None = None,
        temperature: float = 0.5,
    ) -> None:
        if cut_off is not None and (n_bands != 2 or not 0 < cut_off < 1):
            raise MitigationError(
                f"a soft-selection cut-off is for two bands and lies in (0, 1), not {cut_off}"
            )
        if not temperature > 0:
            raise MitigationError(f"the temperature is a positive number, not {temperature}")
        self.cut_off = cut_off
        self.temperature = float(temperature)
        if not np.isfinite(strength) or strength < 0:
            raise MitigationError(f"the penalty's lambda is a number >= 0, not {strength}")
        if n_bands < 2:
            raise MitigationError(f"a model needs at least 2 bands, not {n_bands}")
        self.strength = float(strength)
        self.n_bands = n_bands
        self.favourable = n_bands - 1 if favourable is None else favourable
        if not 1 <= self.favourable < n_bands:
            raise MitigationError(f"favourable band {self.favourable} outside 1..{n_bands - 1}")
        if not groups:
            raise MitigationError("the penalty needs at least one protected attribute")
        rows = {len(codes) for codes in groups}
        if len(rows) != 1:
            raise MitigationError("every attribute's group codes must cover the same rows")
        self.rows = rows.pop()
        self._groups = []
        for codes in groups:
            codes = np.asarray(codes, dtype=np.int64)
            sizes = np.bincount(codes).astype(float)
            self._groups.append(_Groups(codes, sizes, sizes >= max(min_group_rows, 1)))

    def _probabilities(self, margins: np.ndarray) -> np.ndarray:
        if self.n_bands == 2:
            return 1.0 / (1.0 + np.exp(-margins))
        shifted = margins - margins.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    def _margins(self, predt: np.ndarray) -> np.ndarray:
        margins = np.asarray(predt, dtype=np.float64)
        if self.n_bands == 2:
            return margins.reshape(-1)
        return margins.reshape(-1, self.n_bands)

    def _selection(self, m: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """S per row and dS/dm (rows, or rows x bands), from margins and probabilities."""
        if self.n_bands == 2 and self.cut_off is not None:
            # The margin shifted by the cut-off's log-odds, sharpened by the temperature.
            shift = math.log(self.cut_off / (1.0 - self.cut_off))
            soft = 1.0 / (1.0 + np.exp(-(m - shift) / self.temperature))
            return soft, soft * (1.0 - soft) / self.temperature
        if self.n_bands == 2:
            return p, p * (1.0 - p)
        upper = np.arange(self.n_bands) >= self.favourable
        score = p[:, upper].sum(axis=1)
        return score, p * (upper[np.newaxis, :] - score[:, np.newaxis])

    def _gaps(self, score: np.ndarray) -> list[np.ndarray]:
        mean = score.mean()
        gaps = []
        for groups in self._groups:
            sums = np.bincount(groups.codes, weights=score, minlength=len(groups.sizes))
            gap = np.where(groups.counted, sums / np.maximum(groups.sizes, 1) - mean, 0.0)
            gaps.append(gap)
        return gaps

    def penalty(self, margins: np.ndarray) -> float:
        """lambda * N * sum of squared gaps at these margins."""
        m = self._margins(margins)
        score, _ = self._selection(m, self._probabilities(m))
        return self.strength * self.rows * sum(float((gap**2).sum()) for gap in self._gaps(score))

    def loss(self, margins: np.ndarray, labels: np.ndarray) -> float:
        """The whole objective: summed log loss plus the penalty."""
        p = self._probabilities(self._margins(margins))
        truth = np.asarray(labels, dtype=np.int64)
        if self.n_bands == 2:
            logloss = -(truth * np.log(p) + (1 - truth) * np.log1p(-p)).sum()
        else:
            logloss = -np.log(p[np.arange(len(truth)), truth]).sum()
        return float(logloss) + self.penalty(margins)

    def gradient_hessian(
        self, margins: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The objective's gradient and hessian per row (and band), as XGBoost takes them."""
        m = self._margins(margins)
        if len(m) != self.rows:
            raise MitigationError(f"{len(m)} rows of margins for a penalty over {self.rows} rows")
        p = self._probabilities(m)
        truth = np.asarray(labels, dtype=np.int64)
        if self.n_bands == 2:
            grad, hess = p - truth, p * (1.0 - p)
        else:
            onehot = np.eye(self.n_bands)[truth]
            grad, hess = p - onehot, np.maximum(2.0 * p * (1.0 - p), _HESSIAN_FLOOR)
        if self.strength == 0:
            return grad, hess
        score, slope = self._selection(m, p)
        n = float(self.rows)
        pull = np.zeros(self.rows)
        curvature = np.zeros(self.rows)
        for groups, gap in zip(self._groups, self._gaps(score), strict=True):
            own = groups.codes
            counted = groups.counted[own]
            pull += np.where(counted, n * gap[own] / groups.sizes[own], 0.0) - gap.sum()
            # sum over counted groups g of (1[i in g] / n_g - 1 / N)^2
            others = groups.counted.sum() - counted
            curvature += others / n**2 + np.where(
                counted, (1.0 / groups.sizes[own] - 1.0 / n) ** 2, 0.0
            )
        if self.n_bands == 2:
            grad = grad + 2.0 * self.strength * pull * slope
            hess = hess + 2.0 * self.strength * n * curvature * slope**2
        else:
            grad = grad + 2.0 * self.strength * pull[:, np.newaxis] * slope
            hess = hess + 2.0 * self.strength * n * curvature[:, np.newaxis] * slope**2
        return grad, hess

    def objective(self, predt: np.ndarray, dtrain: xgb.DMatrix) -> tuple[np.ndarray, np.ndarray]:
        """XGBoost's custom objective: ``xgb.train(..., obj=penalty.objective)``."""
        return self.gradient_hessian(predt, dtrain.get_label())
