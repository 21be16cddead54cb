"""Quality and fairness of a salary-band classifier, from its class probabilities.

Quality comes from scikit-learn; fairness is counted per group (the tests check it against
fairlearn's MetricFrame). Fairness looks at one favourable outcome, "band >= favourable_band"
(by default the highest band), for both prediction and truth, and compares the groups of each
protected attribute (sex, race).

Conventions for cases the textbook formulas leave open:
- The prediction is the band of the model's decision rule (``payband_contracts.model``); without
  one, the argmax of the probabilities (ties go to the lower band).
- Small groups: a group with fewer than ``min_group_rows`` rows is reported with its rates and
  their interval but does not decide the summaries (disparate impact and the differences),
  whose estimate it would make unstable. If fewer than two groups of an attribute are that
  large, every group decides, and a note says so.
- Intervals: 95 % percentile bootstrap over the rows (``bootstrap_samples`` resamples, seeded),
  for each group's selection rate and each attribute's disparate impact.
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
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from payband_contracts.model import DecisionRule

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
# Groups below this many rows are reported but do not decide the fairness summaries.
MIN_GROUP_ROWS = 100
INTERSECTION_SEPARATOR = " x "
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
    # Whether the group is large enough to decide the summaries (the small-group rule).
    decides: bool = True
    # 95 % bootstrap interval of the selection rate; NaNs without a bootstrap.
    selection_rate_interval: tuple[float, float] = (math.nan, math.nan)


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
    disparate_impact_interval: tuple[float, float] = (math.nan, math.nan)

    def summary(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in FAIRNESS_SUMMARIES}

    @property
    def small_groups(self) -> list[GroupRates]:
        """The groups that are reported but do not decide (fewer rows than the minimum)."""
        return [rates for rates in self.groups if not rates.decides]


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
    # Reported, never gated: selection by the combination of attributes (e.g. sex x race).
    intersectional: GroupFairness | None = None
    min_group_rows: int = 1
    bootstrap_samples: int = 0

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
        results = list(self.fairness.items())
        if self.intersectional is not None:
            results.append((self.intersectional.attribute, self.intersectional))
        for attribute, result in results:
            named += [
                (fairness_metric_name(attribute, summary), value)
                for summary, value in result.summary().items()
            ]
            low, high = result.disparate_impact_interval
            named += [
                (fairness_metric_name(attribute, "disparate_impact_ci_low"), low),
                (fairness_metric_name(attribute, "disparate_impact_ci_high"), high),
            ]
            for rates in result.groups:
                prefix = (attribute, "group", rates.group)
                named += [
                    (metric_name(*prefix, "count"), float(rates.count)),
                    (metric_name(*prefix, "selection_rate"), rates.selection_rate),
                    (
                        metric_name(*prefix, "selection_rate_ci_low"),
                        rates.selection_rate_interval[0],
                    ),
                    (
                        metric_name(*prefix, "selection_rate_ci_high"),
                        rates.selection_rate_interval[1],
                    ),
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
        if self.bootstrap_samples:
            lines += [
                f"Intervals: 95 % bootstrap over the test rows ({self.bootstrap_samples} "
                "resamples).",
                "",
            ]
        if self.min_group_rows > 1:
            lines += [
                f"Groups with fewer than {self.min_group_rows} test rows are shown, marked "
                '"small", but do not decide disparate impact or the differences.',
                "",
            ]
        results = list(self.fairness.items())
        if self.intersectional is not None:
            results.append((self.intersectional.attribute, self.intersectional))
        for attribute, result in results:
            lines += [
                f"#### By {_cell(attribute)}"
                + (" (reported, not gated)" if result is self.intersectional else ""),
                "",
                "| Group | Count | Selection rate | 95 % interval | True positive rate "
                "| False positive rate |",
                "| --- | ---: | ---: | --- | ---: | ---: |",
            ]
            lines += [
                f"| {_cell(rates.group)}{'' if rates.decides else ' (small)'} | {rates.count} "
                f"| {_number(rates.selection_rate)} "
                f"| {_shown_interval(rates.selection_rate_interval)} "
                f"| {_number(rates.true_positive_rate)} | {_number(rates.false_positive_rate)} |"
                for rates in result.groups
            ]
            lines += [
                "",
                "| Measure | Value |",
                "| --- | ---: |",
                "| Disparate impact (min/max selection rate) | "
                + " ".join(
                    part
                    for part in (
                        _number(result.disparate_impact),
                        _shown_interval(result.disparate_impact_interval),
                    )
                    if part
                )
                + " |",
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
    decision: DecisionRule | None = None,
    min_group_rows: int = 1,
    bootstrap_samples: int = 0,
    seed: int = 0,
    intersection: Sequence[str] = (),
    deciding_groups: Mapping[str, Collection[str]] | None = None,
) -> Evaluation:
    """Evaluate class probabilities `proba` (n rows x k bands) against the true bands.

    ``decision`` turns probabilities into bands (argmax without it); ``intersection`` names
    attributes of ``groups`` whose combination is reported as well (never gated);
    ``deciding_groups`` fixes, per attribute, which groups decide the summaries (the search
    judges its folds by the groups the gate will judge on the test rows); without it, the
    groups with at least ``min_group_rows`` rows here decide.
    """
    truth, probabilities = _checked_arrays(y_true, proba, band_labels)
    n_bands = probabilities.shape[1]
    favourable = n_bands - 1 if favourable_band is None else favourable_band
    if not 1 <= favourable < n_bands:
        raise EvaluationInputError(
            f"favourable_band must be between 1 and {n_bands - 1}, got {favourable}"
        )
    group_columns = _checked_groups(groups, len(truth))
    if unknown := [name for name in intersection if name not in group_columns]:
        raise EvaluationInputError(f"intersection of unknown group columns: {unknown}")
    if min_group_rows < 1 or bootstrap_samples < 0:
        raise EvaluationInputError("min_group_rows must be >= 1 and bootstrap_samples >= 0")
    predicted = (decision or DecisionRule()).bands(probabilities)

    notes: list[str] = []
    quality = _quality(truth, predicted, probabilities, notes)
    per_band = _per_band(truth, predicted, band_labels)
    truth_favourable = (truth >= favourable).astype(int)
    predicted_favourable = (predicted >= favourable).astype(int)
    columns = dict(group_columns)
    if intersection:
        combined = INTERSECTION_SEPARATOR.join(intersection)
        columns[combined] = np.asarray(
            [
                "/".join(values)
                for values in zip(*(group_columns[name] for name in intersection), strict=True)
            ],
            dtype=object,
        )
    resamples = _Resamples(len(truth), bootstrap_samples, seed)
    results = {
        attribute: _group_fairness(
            attribute,
            truth_favourable,
            predicted_favourable,
            column,
            min_group_rows,
            resamples,
            None if deciding_groups is None else deciding_groups.get(attribute),
        )
        for attribute, column in columns.items()
    }
    intersectional = results.pop(INTERSECTION_SEPARATOR.join(intersection), None)
    return Evaluation(
        band_labels=tuple(band_labels),
        favourable_band=favourable,
        quality=quality,
        per_band=per_band,
        fairness=results,
        notes=notes,
        intersectional=intersectional,
        min_group_rows=min_group_rows,
        bootstrap_samples=bootstrap_samples,
    )


def deciding_groups(
    groups: Mapping[str, Sequence[str]], min_group_rows: int
) -> dict[str, set[str]]:
    """Per attribute, the groups with at least ``min_group_rows`` of these rows."""
    return {
        attribute: {
            str(group)
            for group, size in pd.Series(values, dtype=object).astype(str).value_counts().items()
            if size >= min_group_rows
        }
        for attribute, values in groups.items()
    }


def label_disparate_impact(
    bands: np.ndarray,
    groups: Mapping[str, Sequence[str]],
    *,
    favourable: int,
    min_group_rows: int = 1,
) -> dict[str, float]:
    """Per attribute, min/max over its groups (large enough to decide) of the share of rows
    whose true band is favourable: the bias already in the labels."""
    truth = (np.asarray(bands, dtype=np.int64) >= favourable).astype(int)
    return {
        attribute: _group_fairness(
            attribute,
            truth,
            truth,
            _checked_groups({attribute: values}, len(truth))[attribute],
            min_group_rows,
        ).disparate_impact
        for attribute, values in groups.items()
    }


@dataclass(frozen=True)
class _Resamples:
    """The row indices of each bootstrap resample, drawn again from the seed on every pass
    (every attribute sees the same resamples) and one at a time: holding them all would take
    8 bytes x rows x samples (gigabytes for a large test split)."""

    rows: int
    samples: int
    seed: int

    def __len__(self) -> int:
        return self.samples

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.samples):
            yield rng.integers(0, self.rows, self.rows)


def _percentile_interval(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return (math.nan, math.nan)
    low, high = np.percentile(finite, [2.5, 97.5])
    return (float(low), float(high))


def _ratio(rates: np.ndarray) -> float:
    """min/max of the rates; 1.0 when every rate is 0 (all equal); NaN without rates."""
    rates = rates[np.isfinite(rates)]
    if not len(rates):
        return math.nan
    top = rates.max()
    return 1.0 if top == 0 else float(rates.min() / top)


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


def _group_fairness(
    attribute: str,
    truth: np.ndarray,
    predicted: np.ndarray,
    column: np.ndarray,
    min_group_rows: int = 1,
    resamples: Collection[np.ndarray] = (),
    deciding: Collection[str] | None = None,
) -> GroupFairness:
    # Groups in sorted order, rates by counting (fairlearn's MetricFrame gives the same numbers,
    # as the tests check, at a hundred times the cost: the search evaluates every fold).
    names_found, codes = np.unique(np.asarray(column, dtype=str), return_inverse=True)
    names = [str(name) for name in names_found]
    sizes = np.bincount(codes, minlength=len(names)).astype(float)
    chosen = np.bincount(codes, weights=predicted, minlength=len(names))
    positives = np.bincount(codes, weights=truth, minlength=len(names))
    hits = np.bincount(codes, weights=truth * predicted, minlength=len(names))
    false_hits = np.bincount(codes, weights=(1 - truth) * predicted, minlength=len(names))
    with np.errstate(invalid="ignore", divide="ignore"):
        selection_rates = chosen / sizes
        # Undefined (NaN), not 0, for a group without favourable (or unfavourable) truth.
        tprs = np.where(positives > 0, hits / positives, math.nan)
        fprs = np.where(sizes - positives > 0, false_hits / (sizes - positives), math.nan)
    notes: list[str] = []
    if deciding is None:
        decides = sizes >= min_group_rows
    else:
        decides = np.asarray([name in deciding for name in names], dtype=bool)
    if decides.sum() < 2:
        if len(names) > 1 and min_group_rows > 1:
            notes.append(
                f"fewer than two {attribute} groups have {min_group_rows} rows: every group "
                "decides the summaries"
            )
        decides = np.ones(len(names), dtype=bool)
    for name, size, decided in zip(names, sizes, decides, strict=True):
        if not decided and deciding is None:
            notes.append(
                f"{attribute} = {name} has {int(size)} rows, fewer than {min_group_rows}: "
                "reported with its interval, not counted in the summaries"
            )

    # Bootstrap: the same resampled rows for every group and the summary.
    position = {name: index for index, name in enumerate(names)}
    codes = np.fromiter(
        (position[str(value)] for value in column), dtype=np.int64, count=len(column)
    )
    rates_by_sample = np.full((len(resamples), len(names)), math.nan)
    for sample, rows in enumerate(resamples):
        counts = np.bincount(codes[rows], minlength=len(names))
        chosen = np.bincount(codes[rows], weights=predicted[rows], minlength=len(names))
        with np.errstate(invalid="ignore", divide="ignore"):
            rates_by_sample[sample] = np.where(counts > 0, chosen / counts, math.nan)
    ratio_samples = np.array([_ratio(rates[decides]) for rates in rates_by_sample])

    groups = [
        GroupRates(
            group=name,
            count=int(sizes[index]),
            selection_rate=float(selection_rates[index]),
            true_positive_rate=float(tprs[index]),
            false_positive_rate=float(fprs[index]),
            decides=bool(decides[index]),
            selection_rate_interval=_percentile_interval(rates_by_sample[:, index]),
        )
        for index, name in enumerate(names)
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

    deciding = [rates for rates in groups if rates.decides]
    selection = np.array([rates.selection_rate for rates in deciding])
    disparate_impact = _ratio(selection)
    if selection.max() == 0:
        notes.append(f"no {attribute} group is ever selected; disparate impact taken as 1.0")
    equal_opportunity = _rate_difference("true_positive_rate", deciding)
    false_positive = _rate_difference("false_positive_rate", deciding)
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
        selection_rate_difference=float(selection.max() - selection.min()),
        equal_opportunity_difference=equal_opportunity,
        equalized_odds_difference=equalized_odds,
        notes=notes,
        disparate_impact_interval=_percentile_interval(ratio_samples),
    )


def _rate_difference(column: str, groups: list[GroupRates]) -> float:
    """max - min of a rate over the groups where it is defined (between groups, as
    fairlearn's difference); NaN when fewer than two of several groups have it."""
    defined = [getattr(g, column) for g in groups if not math.isnan(getattr(g, column))]
    if not defined or (len(groups) > 1 and len(defined) < 2):
        return math.nan
    return float(max(defined) - min(defined))


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _shown_interval(bounds: tuple[float, float]) -> str:
    low, high = bounds
    return "" if math.isnan(low) or math.isnan(high) else f"[{low:.3f}, {high:.3f}]"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
