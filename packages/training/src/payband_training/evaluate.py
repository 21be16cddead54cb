"""Quality and fairness of a salary-band classifier, from its class probabilities.

Quality comes from scikit-learn, fairness from fairlearn. Fairness looks at one favourable
outcome, "band >= favourable_band" (by default the highest band), for both prediction and
truth, and compares the groups of each protected attribute (sex, race).

Conventions for cases the textbook formulas leave open:
- The prediction is the argmax of the probabilities (ties go to the lower band).
- Per-band precision, recall and F1 are 0 where undefined (no prediction or no support), and
  macro F1 averages over every band, so a band missing from the test set counts as 0.
- Brier score: binary, scikit-learn's `brier_score_loss` on the probability of band 1; more
  bands, the mean over rows of the sum over bands of (probability - one-hot truth)^2, i.e.
  scikit-learn's multiclass `brier_score_loss` with `scale_by_half=False` (range 0 to 2).
- ROC AUC is NaN (with a note) when the test truth lacks a band, since one-vs-rest is undefined.
- A group's true positive rate is NaN when it has no favourable truth, its false positive rate
  NaN when it has no unfavourable truth; each such case is listed in `GroupFairness.notes`.
- Differences of a rate are taken between the groups where it is defined; they are NaN when
  fewer than two groups of a multi-group attribute have it (a group compared with itself would
  read as perfect parity). An attribute with a single group has differences 0 and ratio 1.
- Disparate impact is min/max selection rate; when no group is ever selected, all rates are
  equal (0) and it is 1.0.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

# Rows of float32 probabilities (XGBoost) sum to 1 only within float32 rounding.
_ROW_SUM_TOLERANCE = 1e-4
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_-]+")

QUALITY_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "roc_auc",
    "log_loss",
    "brier_score",
)
FAIRNESS_SUMMARIES = (
    "disparate_impact",
    "selection_rate_difference",
    "equal_opportunity_difference",
    "equalized_odds_difference",
)


class EvaluationInputError(ValueError):
    """The arrays handed to `evaluate` do not describe one classifier's test predictions."""


@dataclass(frozen=True)
class BandMetrics:
    """Precision, recall and F1 of one band against the rest; support = rows truly in it."""

    band: int
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class GroupRates:
    """One group of a protected attribute: its size and how the favourable outcome reaches it."""

    group: str
    count: int
    selection_rate: float
    true_positive_rate: float  # NaN: the group has no favourable truth
    false_positive_rate: float  # NaN: the group has no unfavourable truth


@dataclass(frozen=True)
class GroupFairness:
    """Fairness of the favourable outcome across the groups of one protected attribute."""

    attribute: str
    groups: list[GroupRates]
    disparate_impact: float
    selection_rate_difference: float
    equal_opportunity_difference: float
    equalized_odds_difference: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in FAIRNESS_SUMMARIES}


def metric_name(*parts: str | int) -> str:
    """An MLflow-safe metric name: parts joined by '_', other characters replaced by '_'."""
    return "_".join(_UNSAFE_NAME_CHARACTERS.sub("_", str(part)).strip("_") for part in parts)


def fairness_metric_name(attribute: str, summary: str) -> str:
    """The flat name of a fairness summary, e.g. ('sex', 'disparate_impact')."""
    return metric_name(attribute, summary)


@dataclass(frozen=True)
class Evaluation:
    """Quality and fairness of one model on one test set."""

    band_labels: tuple[str, ...]
    favourable_band: int
    quality: dict[str, float]
    per_band: list[BandMetrics]
    fairness: dict[str, GroupFairness]
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Flat, MLflow-ready metrics; undefined (NaN) values are left out."""
        named: list[tuple[str, float]] = list(self.quality.items())
        for band in self.per_band:
            named += [
                (metric_name("band", band.band, "precision"), band.precision),
                (metric_name("band", band.band, "recall"), band.recall),
                (metric_name("band", band.band, "f1"), band.f1),
                (metric_name("band", band.band, "support"), float(band.support)),
            ]
        for attribute, result in self.fairness.items():
            named += [
                (fairness_metric_name(attribute, summary), value)
                for summary, value in result.summary().items()
            ]
            for rates in result.groups:
                prefix = (attribute, "group", rates.group)
                named += [
                    (metric_name(*prefix, "count"), float(rates.count)),
                    (metric_name(*prefix, "selection_rate"), rates.selection_rate),
                    (metric_name(*prefix, "true_positive_rate"), rates.true_positive_rate),
                    (metric_name(*prefix, "false_positive_rate"), rates.false_positive_rate),
                ]
        flat: dict[str, float] = {}
        for name, value in named:
            # Group names are made MLflow-safe, so two of them could meet in one name.
            if name in flat:
                raise EvaluationInputError(f"two metrics would both be named {name!r}")
            flat[name] = float(value)
        return {name: value for name, value in flat.items() if math.isfinite(value)}

    def fairness_table(self) -> str:
        """Markdown for the model card: per attribute, the groups' rates, then the summaries."""
        favourable = self.band_labels[self.favourable_band]
        outcome = f"predicted band {favourable} or higher (band index >= {self.favourable_band})"
        lines = [f"Favourable outcome: {_cell(outcome)}.", ""]
        for attribute, result in self.fairness.items():
            lines += [
                f"#### By {_cell(attribute)}",
                "",
                "| Group | Count | Selection rate | True positive rate | False positive rate |",
                "| --- | ---: | ---: | ---: | ---: |",
            ]
            lines += [
                f"| {_cell(rates.group)} | {rates.count} | {_number(rates.selection_rate)} "
                f"| {_number(rates.true_positive_rate)} | {_number(rates.false_positive_rate)} |"
                for rates in result.groups
            ]
            lines += [
                "",
                "| Measure | Value |",
                "| --- | ---: |",
                f"| Disparate impact (min/max selection rate) | "
                f"{_number(result.disparate_impact)} |",
                f"| Selection-rate difference | {_number(result.selection_rate_difference)} |",
                f"| Equal-opportunity difference | "
                f"{_number(result.equal_opportunity_difference)} |",
                f"| Equalized-odds difference | {_number(result.equalized_odds_difference)} |",
                "",
            ]
            if result.notes:
                lines += [f"- {_cell(note)}" for note in result.notes] + [""]
        return "\n".join(lines).rstrip() + "\n"


def evaluate(
    y_true: np.ndarray,
    proba: np.ndarray,
    groups: Mapping[str, Sequence[str]],
    band_labels: Sequence[str],
    *,
    favourable_band: int | None = None,
) -> Evaluation:
    """Evaluate class probabilities `proba` (n rows x k bands) against the true bands."""
    truth, probabilities = _checked_arrays(y_true, proba, band_labels)
    n_bands = probabilities.shape[1]
    favourable = n_bands - 1 if favourable_band is None else favourable_band
    if not 1 <= favourable < n_bands:
        raise EvaluationInputError(
            f"favourable_band must be between 1 and {n_bands - 1}, got {favourable}"
        )
    group_columns = _checked_groups(groups, len(truth))
    predicted = probabilities.argmax(axis=1)

    notes: list[str] = []
    quality = _quality(truth, predicted, probabilities, notes)
    per_band = _per_band(truth, predicted, band_labels)
    truth_favourable = (truth >= favourable).astype(int)
    predicted_favourable = (predicted >= favourable).astype(int)
    fairness = {
        attribute: _group_fairness(attribute, truth_favourable, predicted_favourable, column)
        for attribute, column in group_columns.items()
    }
    return Evaluation(
        band_labels=tuple(band_labels),
        favourable_band=favourable,
        quality=quality,
        per_band=per_band,
        fairness=fairness,
        notes=notes,
    )


def _checked_arrays(
    y_true: np.ndarray, proba: np.ndarray, band_labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(proba, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise EvaluationInputError(
            f"proba must have shape (rows, bands) with at least 2 bands, got {probabilities.shape}"
        )
    rows, n_bands = probabilities.shape
    if len(band_labels) != n_bands:
        raise EvaluationInputError(
            f"{len(band_labels)} band labels for {n_bands} probability columns"
        )
    if rows == 0:
        raise EvaluationInputError("nothing to evaluate: no rows")
    truth = np.asarray(y_true)
    if truth.shape != (rows,):
        raise EvaluationInputError(f"y_true has shape {truth.shape}; expected ({rows},)")
    if not np.issubdtype(truth.dtype, np.integer):
        raise EvaluationInputError(f"y_true must hold integer bands, got dtype {truth.dtype}")
    if truth.min() < 0 or truth.max() >= n_bands:
        raise EvaluationInputError(f"y_true holds bands outside 0..{n_bands - 1}")
    if not np.isfinite(probabilities).all() or probabilities.min() < 0 or probabilities.max() > 1:
        raise EvaluationInputError("proba must hold finite probabilities between 0 and 1")
    row_sums = probabilities.sum(axis=1)
    if not np.allclose(row_sums, 1.0, rtol=0, atol=_ROW_SUM_TOLERANCE):
        worst = float(row_sums[np.argmax(np.abs(row_sums - 1.0))])
        raise EvaluationInputError(f"each row of proba must sum to 1; one sums to {worst:.6f}")
    # Renormalised in float64 so scikit-learn's strict sum check does not warn on float32 rounding.
    return truth.astype(np.int64), probabilities / row_sums[:, np.newaxis]


def _checked_groups(groups: Mapping[str, Sequence[str]], rows: int) -> dict[str, np.ndarray]:
    checked: dict[str, np.ndarray] = {}
    for attribute, values in groups.items():
        column = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values
        if len(column) != rows:
            raise EvaluationInputError(
                f"group column {attribute!r} has {len(column)} values for {rows} rows"
            )
        if bool(column.isna().any()):
            raise EvaluationInputError(f"group column {attribute!r} has missing values")
        checked[attribute] = column.astype(str).to_numpy(dtype=object)
    return checked


def _quality(
    truth: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray, notes: list[str]
) -> dict[str, float]:
    n_bands = probabilities.shape[1]
    labels = list(range(n_bands))
    with warnings.catch_warnings():
        # A band predicted but absent from the truth is left out of the average; that is the
        # definition we want, and scikit-learn's warning about it would fail the tests.
        warnings.filterwarnings(
            "ignore", message="y_pred contains classes not in y_true", category=UserWarning
        )
        balanced_accuracy = balanced_accuracy_score(truth, predicted)
    absent = sorted(set(labels) - set(np.unique(truth).tolist()))
    if absent:
        roc_auc = math.nan
        notes.append(f"roc_auc undefined: bands {absent} do not occur in the truth")
    elif n_bands == 2:
        roc_auc = roc_auc_score(truth, probabilities[:, 1])
    else:
        roc_auc = roc_auc_score(
            truth, probabilities, multi_class="ovr", average="macro", labels=labels
        )
    if n_bands == 2:
        brier = brier_score_loss(truth, probabilities[:, 1], labels=labels)
    else:
        brier = brier_score_loss(truth, probabilities, labels=labels, scale_by_half=False)
    values = {
        "accuracy": accuracy_score(truth, predicted),
        "balanced_accuracy": balanced_accuracy,
        "macro_f1": f1_score(truth, predicted, labels=labels, average="macro", zero_division=0.0),
        "roc_auc": roc_auc,
        "log_loss": log_loss(truth, probabilities, labels=labels),
        "brier_score": brier,
    }
    return {name: float(values[name]) for name in QUALITY_METRICS}


def _per_band(
    truth: np.ndarray, predicted: np.ndarray, band_labels: Sequence[str]
) -> list[BandMetrics]:
    labels = list(range(len(band_labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0.0
    )
    return [
        BandMetrics(
            band=band,
            label=band_labels[band],
            precision=float(precision[band]),
            recall=float(recall[band]),
            f1=float(f1[band]),
            support=int(support[band]),
        )
        for band in labels
    ]


def _defined_tpr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    # fairlearn reports 0 for a group without positives; undefined is the honest answer.
    if not np.any(np.asarray(y_true) == 1):
        return math.nan
    return float(true_positive_rate(y_true, y_pred, pos_label=1))


def _defined_fpr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if not np.any(np.asarray(y_true) == 0):
        return math.nan
    return float(false_positive_rate(y_true, y_pred, pos_label=1))


def _group_fairness(
    attribute: str, truth: np.ndarray, predicted: np.ndarray, column: np.ndarray
) -> GroupFairness:
    frame = MetricFrame(
        metrics={
            "count": count,
            "selection_rate": selection_rate,
            "true_positive_rate": _defined_tpr,
            "false_positive_rate": _defined_fpr,
        },
        y_true=truth,
        y_pred=predicted,
        sensitive_features=pd.Series(column, name=attribute),
    )
    by_group = frame.by_group
    # MetricFrame's difference skips NaN groups, so each rate is compared where it is defined.
    differences = frame.difference(method="between_groups")
    ratios = frame.ratio(method="between_groups")
    notes: list[str] = []
    groups = [
        GroupRates(
            group=str(group),
            count=int(row["count"]),
            selection_rate=float(row["selection_rate"]),
            true_positive_rate=float(row["true_positive_rate"]),
            false_positive_rate=float(row["false_positive_rate"]),
        )
        for group, row in by_group.iterrows()
    ]
    for rates in groups:
        if math.isnan(rates.true_positive_rate):
            notes.append(
                f"true positive rate undefined for {attribute} = {rates.group}: "
                "no row with favourable truth; left out of the differences"
            )
        if math.isnan(rates.false_positive_rate):
            notes.append(
                f"false positive rate undefined for {attribute} = {rates.group}: "
                "no row with unfavourable truth; left out of the differences"
            )

    disparate_impact = float(ratios["selection_rate"])
    if math.isnan(disparate_impact):
        # Only 0/0 gives NaN: no group is ever selected, so all selection rates are equal.
        disparate_impact = 1.0
        notes.append(f"no {attribute} group is ever selected; disparate impact taken as 1.0")
    equal_opportunity = _rate_difference("true_positive_rate", groups, differences)
    false_positive = _rate_difference("false_positive_rate", groups, differences)
    # fairlearn's equalized_odds_difference (worst case) is the larger of the two differences.
    equalized_odds = (
        math.nan
        if math.isnan(equal_opportunity) or math.isnan(false_positive)
        else max(equal_opportunity, false_positive)
    )
    return GroupFairness(
        attribute=attribute,
        groups=groups,
        disparate_impact=disparate_impact,
        selection_rate_difference=float(differences["selection_rate"]),
        equal_opportunity_difference=equal_opportunity,
        equalized_odds_difference=equalized_odds,
        notes=notes,
    )


def _rate_difference(column: str, groups: list[GroupRates], differences: pd.Series) -> float:
    defined = [g for g in groups if not math.isnan(getattr(g, column))]
    if not defined or (len(groups) > 1 and len(defined) < 2):
        return math.nan
    return float(differences[column])


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
