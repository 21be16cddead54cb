"""The registration decision: a model becomes `champion` only if every gate passes.

Gates: quality (ROC AUC at least a minimum), fairness (each protected attribute's disparate
impact at least a minimum, judged on the bands of the model's own decision rule, by the groups
large enough to decide), explanation cost (a batch of 1,000 explanations predicted within the
serving budget from the model's size, ``payband_training.cost``), search (the search found a
configuration meeting every gate on its validation folds; when none did, the fairest trial is
trained to be reported, never promoted) and no regression (ROC AUC not below the current
champion's by more than a tolerance). Every gate leaves a short
reason, passed or not, so the reasons can become tags on the registered model version; the
reasons of the gates that failed are also kept apart (``GateDecision.failed``, tag
``gate.failed``) so a later override can say which failed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from payband_training.evaluate import fairness_metric_name

ROC_AUC = "roc_auc"
# Predicted milliseconds for a batch of 1,000 explanations (payband_training.cost).
EXPLANATION_MS = "explanation_ms_per_1000"
# 1 when the search's chosen trial met every gate on its validation folds, 0 when no trial did
# and the fairest was chosen to be reported: such a model is never promoted by the gates.
SEARCH_FEASIBLE = "search_chosen_feasible"
DECISION_TAG = "gate.decision"
REASONS_TAG = "gate.reasons"
# Only on a rejected version: the failed gates' reasons, one a line.
FAILED_TAG = "gate.failed"
PROMOTED = "promoted"
REJECTED = "rejected"
# MLflow's registry accepted 5000 characters per tag value in older servers; stay within it.
MAX_TAG_VALUE_LENGTH = 5000
# Champion and challenger AUCs are subtracted, so "exactly at the tolerance" needs slack.
_ROUNDING_SLACK = 1e-9


@dataclass(frozen=True)
class GateDecision:
    """Whether the model may become champion, and one sentence per gate explaining why.

    ``failed`` holds the reasons of the gates that failed (a subset of ``reasons``, in order).
    """

    passed: bool
    reasons: list[str]
    failed: list[str] = field(default_factory=list)


def decide(
    metrics: Mapping[str, float],
    *,
    min_roc_auc: float,
    min_disparate_impact: float,
    champion_metrics: Mapping[str, float] | None,
    tolerance: float,
    attributes: Sequence[str] = ("sex", "race"),
    max_explanation_ms: float | None = None,
) -> GateDecision:
    """Apply the quality, fairness, explanation-cost (when ``max_explanation_ms`` is given),
    search (when the metrics carry ``SEARCH_FEASIBLE``) and champion gates to a candidate's
    flat metrics."""
    if tolerance < 0:
        raise ValueError(f"tolerance must not be negative, got {tolerance}")
    outcomes = [_at_least(metrics, ROC_AUC, "roc_auc", min_roc_auc)]
    outcomes += [
        _at_least(
            metrics,
            fairness_metric_name(attribute, "disparate_impact"),
            f"{attribute} disparate impact",
            min_disparate_impact,
        )
        for attribute in attributes
    ]
    if max_explanation_ms is not None:
        outcomes.append(_at_most(metrics, EXPLANATION_MS, max_explanation_ms))
    if SEARCH_FEASIBLE in metrics:
        outcomes.append(_searched(metrics[SEARCH_FEASIBLE]))
    outcomes.append(not_worse_than_champion(metrics, champion_metrics, tolerance))
    return GateDecision(
        passed=all(passed for passed, _ in outcomes),
        reasons=[reason for _, reason in outcomes],
        failed=[reason for passed, reason in outcomes if not passed],
    )


def as_tags(decision: GateDecision) -> dict[str, str]:
    """Tags for the registered model version: the decision and the reasons joined by '; ',
    and on a rejected version the failed gates' reasons, one a line."""
    tags = {
        DECISION_TAG: PROMOTED if decision.passed else REJECTED,
        REASONS_TAG: _fitted("; ".join(decision.reasons)),
    }
    if not decision.passed:
        tags[FAILED_TAG] = _fitted("\n".join(decision.failed))
    return tags


def failed_reasons(tags: Mapping[str, str]) -> tuple[str, ...]:
    """The failed gates' reasons recorded in a version's tags; empty if its gates passed.

    A version tagged before ``gate.failed`` existed gives its whole ``gate.reasons``; one
    with no decision at all (not registered through the gates) never passed them.
    """
    if tags.get(DECISION_TAG) == PROMOTED:
        return ()
    if tags.get(DECISION_TAG) != REJECTED:
        return ("no gate decision is recorded on this version",)
    recorded = tags.get(FAILED_TAG) or tags.get(REASONS_TAG) or ""
    return tuple(line for line in recorded.splitlines() if line) or ("rejected, reason unknown",)


def _fitted(value: str) -> str:
    """The value cut to the tag limit, its end marked."""
    if len(value) > MAX_TAG_VALUE_LENGTH:
        return value[: MAX_TAG_VALUE_LENGTH - 1] + "…"
    return value


def _value(metrics: Mapping[str, float] | None, key: str) -> float | None:
    """The metric as a float, or None when it is missing or not a finite number."""
    if metrics is None or key not in metrics:
        return None
    value = float(metrics[key])
    return value if math.isfinite(value) else None


def _at_least(
    metrics: Mapping[str, float], key: str, label: str, minimum: float
) -> tuple[bool, str]:
    value = _value(metrics, key)
    if value is None:
        state = "missing" if key not in metrics else "not a number"
        return False, f"{label} is {state} (metric {key!r}); at least {minimum:.3f} is required"
    shown, shown_minimum = _distinct(value, minimum)
    if value >= minimum:
        return True, f"{label} {shown} >= {shown_minimum}"
    return False, f"{label} {shown} < {shown_minimum}"


def _at_most(metrics: Mapping[str, float], key: str, maximum: float) -> tuple[bool, str]:
    label = "explanation of 1,000 candidates"
    value = _value(metrics, key)
    if value is None:
        state = "missing" if key not in metrics else "not a number"
        return False, f"{label} is {state} (metric {key!r}); at most {maximum:.0f} ms is allowed"
    if value <= maximum:
        return True, f"{label} predicted {value:.1f} ms <= {maximum:.0f} ms"
    return False, f"{label} predicted {value:.1f} ms > {maximum:.0f} ms"


def _searched(feasible: float) -> tuple[bool, str]:
    if feasible == 1.0:
        return True, "the search's chosen trial met every gate on its validation folds"
    return False, (
        "no trial of the search met every gate on its validation folds "
        "(the fairest was chosen to be reported)"
    )


def not_worse_than_champion(
    metrics: Mapping[str, float], champion_metrics: Mapping[str, float] | None, tolerance: float
) -> tuple[bool, str]:
    """The no-regression gate: (passed, reason)."""
    if champion_metrics is None:
        return True, "no champion to compare with"
    champion = _value(champion_metrics, ROC_AUC)
    if champion is None:
        # A champion without a usable AUC cannot block every successor; say so instead.
        return True, "champion has no roc_auc; comparison skipped"
    value = _value(metrics, ROC_AUC)
    if value is None:
        return False, f"roc_auc is unavailable; cannot compare with champion {champion:.3f}"
    shown, shown_champion = _distinct(value, champion)
    if value >= champion:
        return True, f"roc_auc {shown} >= champion {shown_champion}"
    shortfall = champion - value
    if shortfall <= tolerance + _ROUNDING_SLACK:
        return True, (
            f"roc_auc {shown} is {shortfall:.3f} below champion {shown_champion}, "
            f"within tolerance {tolerance:.3f}"
        )
    shown_shortfall, shown_tolerance = _distinct(shortfall, tolerance)
    return False, (
        f"roc_auc {shown} is {shown_shortfall} below champion {shown_champion}, "
        f"more than tolerance {shown_tolerance}"
    )


def _distinct(value: float, reference: float) -> tuple[str, str]:
    """Both numbers with 3 decimals, or more when 3 would print two different numbers alike."""
    for decimals in range(3, 16):
        shown, shown_reference = f"{value:.{decimals}f}", f"{reference:.{decimals}f}"
        if (shown == shown_reference) == (value == reference):
            return shown, shown_reference
    return repr(value), repr(reference)
