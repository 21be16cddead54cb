"""The registration gates: every combination of pass and fail, and their tags."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mlflow.utils.validation import _validate_tag_name

from payband_training.evaluate import evaluate
from payband_training.gates import (
    EXPLANATION_MS,
    MAX_TAG_VALUE_LENGTH,
    SEARCH_FEASIBLE,
    GateDecision,
    as_tags,
    decide,
    failed_reasons,
)

GOOD = {"roc_auc": 0.912, "sex_disparate_impact": 0.9, "race_disparate_impact": 0.85}


def gate(
    metrics: dict[str, float],
    champion: dict[str, float] | None = None,
    tolerance: float = 0.01,
) -> GateDecision:
    return decide(
        metrics,
        min_roc_auc=0.8,
        min_disparate_impact=0.8,
        champion_metrics=champion,
        tolerance=tolerance,
    )


def test_everything_passes_without_a_champion() -> None:
    decision = gate(GOOD)
    assert decision == GateDecision(
        passed=True,
        reasons=[
            "roc_auc 0.912 >= 0.800",
            "sex disparate impact 0.900 >= 0.800",
            "race disparate impact 0.850 >= 0.800",
            "no champion to compare with",
        ],
    )


def test_thresholds_are_inclusive() -> None:
    decision = gate({"roc_auc": 0.8, "sex_disparate_impact": 0.8, "race_disparate_impact": 0.8})
    assert decision.passed
    assert decision.reasons[0] == "roc_auc 0.800 >= 0.800"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"roc_auc": 0.75}, "roc_auc 0.750 < 0.800"),
        ({"sex_disparate_impact": 0.31}, "sex disparate impact 0.310 < 0.800"),
        ({"race_disparate_impact": 0.0}, "race disparate impact 0.000 < 0.800"),
        # Three decimals would print "0.800 < 0.800"; more are shown instead.
        ({"sex_disparate_impact": 0.7996}, "sex disparate impact 0.7996 < 0.8000"),
        (
            {"race_disparate_impact": math.nan},
            "race disparate impact is not a number (metric 'race_disparate_impact'); "
            "at least 0.800 is required",
        ),
        (
            {"roc_auc": math.inf},
            "roc_auc is not a number (metric 'roc_auc'); at least 0.800 is required",
        ),
    ],
)
def test_one_failing_gate_rejects(change: dict[str, float], reason: str) -> None:
    decision = gate(GOOD | change)
    assert not decision.passed
    assert reason in decision.reasons
    assert len(decision.reasons) == 4


def test_a_missing_fairness_metric_fails() -> None:
    metrics = {k: v for k, v in GOOD.items() if k != "race_disparate_impact"}
    decision = gate(metrics)
    assert not decision.passed
    assert decision.reasons[2] == (
        "race disparate impact is missing (metric 'race_disparate_impact'); "
        "at least 0.800 is required"
    )


def test_several_failures_are_all_reported() -> None:
    decision = gate({"roc_auc": 0.7, "sex_disparate_impact": 0.5, "race_disparate_impact": 0.6})
    assert not decision.passed
    assert decision.reasons[:3] == [
        "roc_auc 0.700 < 0.800",
        "sex disparate impact 0.500 < 0.800",
        "race disparate impact 0.600 < 0.800",
    ]


def test_the_attributes_checked_are_configurable() -> None:
    decision = decide(
        {"roc_auc": 0.9, "sex_disparate_impact": 0.9, "race_disparate_impact": 0.1},
        min_roc_auc=0.8,
        min_disparate_impact=0.8,
        champion_metrics=None,
        tolerance=0.0,
        attributes=("sex",),
    )
    assert decision.passed
    assert not any("race" in reason for reason in decision.reasons)


def test_better_than_the_champion_passes() -> None:
    decision = gate(GOOD, champion={"roc_auc": 0.9})
    assert decision.passed
    assert decision.reasons[-1] == "roc_auc 0.912 >= champion 0.900"


def test_within_tolerance_of_the_champion_passes() -> None:
    decision = gate(GOOD, champion={"roc_auc": 0.917})
    assert decision.passed
    assert decision.reasons[-1] == (
        "roc_auc 0.912 is 0.005 below champion 0.917, within tolerance 0.010"
    )


def test_exactly_at_the_tolerance_passes() -> None:
    # In floating point 0.85 - 0.84 is a hair above 0.01; the gate must still pass it.
    assert 0.85 - 0.84 > 0.01
    decision = gate(GOOD | {"roc_auc": 0.84}, champion={"roc_auc": 0.85}, tolerance=0.01)
    assert decision.passed
    assert decision.reasons[-1] == (
        "roc_auc 0.840 is 0.010 below champion 0.850, within tolerance 0.010"
    )


def test_beyond_the_tolerance_fails() -> None:
    decision = gate(GOOD | {"roc_auc": 0.8399}, champion={"roc_auc": 0.85}, tolerance=0.01)
    assert not decision.passed
    assert decision.reasons[0] == "roc_auc 0.840 >= 0.800"  # the quality gate itself passes
    assert decision.reasons[-1] == (
        "roc_auc 0.840 is 0.0101 below champion 0.850, more than tolerance 0.0100"
    )


def test_zero_tolerance_accepts_only_a_tie_or_better() -> None:
    assert gate(GOOD, champion={"roc_auc": 0.912}, tolerance=0.0).passed
    assert not gate(GOOD, champion={"roc_auc": 0.913}, tolerance=0.0).passed


def test_a_champion_without_roc_auc_does_not_block() -> None:
    decision = gate(GOOD, champion={"accuracy": 0.9})
    assert decision.passed
    assert decision.reasons[-1] == "champion has no roc_auc; comparison skipped"
    assert gate(GOOD, champion={"roc_auc": math.nan}).passed


def test_a_candidate_without_roc_auc_cannot_beat_the_champion() -> None:
    metrics = {k: v for k, v in GOOD.items() if k != "roc_auc"}
    decision = gate(metrics, champion={"roc_auc": 0.85})
    assert not decision.passed
    assert decision.reasons[0].startswith("roc_auc is missing")
    assert decision.reasons[-1] == "roc_auc is unavailable; cannot compare with champion 0.850"


def test_a_negative_tolerance_is_refused() -> None:
    with pytest.raises(ValueError, match="tolerance must not be negative"):
        gate(GOOD, tolerance=-0.01)


def test_tags_of_a_promotion_and_a_rejection() -> None:
    assert as_tags(gate(GOOD)) == {
        "gate.decision": "promoted",
        "gate.reasons": "roc_auc 0.912 >= 0.800; sex disparate impact 0.900 >= 0.800; "
        "race disparate impact 0.850 >= 0.800; no champion to compare with",
    }
    tags = as_tags(gate(GOOD | {"sex_disparate_impact": 0.31}))
    assert tags["gate.decision"] == "rejected"
    assert "sex disparate impact 0.310 < 0.800" in tags["gate.reasons"]
    for key in tags:
        _validate_tag_name(key)


def test_a_rejection_records_the_failed_gates_one_a_line() -> None:
    decision = gate(GOOD | {"roc_auc": 0.7, "race_disparate_impact": math.nan})
    assert decision.failed == [
        "roc_auc 0.700 < 0.800",
        "race disparate impact is not a number (metric 'race_disparate_impact'); "
        "at least 0.800 is required",
    ]
    tags = as_tags(decision)
    assert tags["gate.failed"] == "\n".join(decision.failed)
    assert failed_reasons(tags) == tuple(decision.failed)
    assert gate(GOOD).failed == []
    assert failed_reasons(as_tags(gate(GOOD))) == ()


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        # Tagged before gate.failed existed: the whole recorded reasons.
        ({"gate.decision": "rejected", "gate.reasons": "a >= b; c < d"}, ("a >= b; c < d",)),
        ({"gate.decision": "rejected"}, ("rejected, reason unknown",)),
        ({}, ("no gate decision is recorded on this version",)),
    ],
)
def test_failed_reasons_of_versions_without_the_failed_tag(
    tags: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert failed_reasons(tags) == expected


def test_long_reasons_are_cut_to_the_tag_limit() -> None:
    decision = GateDecision(passed=False, reasons=["x" * 3000, "y" * 3000])
    reasons = as_tags(decision)["gate.reasons"]
    assert len(reasons) == MAX_TAG_VALUE_LENGTH == 5000
    assert reasons.startswith("x" * 3000 + "; y")
    assert reasons.endswith("…")


def test_gates_read_the_names_evaluate_writes() -> None:
    # Female rows: truth 1 1 0 0, selected 1 0 0 0; male rows: truth 1 0 0 0, selected 1 1 1 1.
    truth = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    p1 = np.array([0.9, 0.45, 0.3, 0.1, 0.95, 0.6, 0.7, 0.8])
    evaluation = evaluate(
        truth,
        np.column_stack([1 - p1, p1]),
        {"sex": ["female"] * 4 + ["male"] * 4, "race": ["white"] * 8},
        ["<=50K", ">50K"],
    )
    decision = decide(
        evaluation.metrics(),
        min_roc_auc=0.5,
        min_disparate_impact=0.8,
        champion_metrics=None,
        tolerance=0.01,
    )
    assert not decision.passed
    # Selection rates 1/4 and 4/4: disparate impact 0.25.
    assert "sex disparate impact 0.250 < 0.800" in decision.reasons
    assert "race disparate impact 1.000 >= 0.800" in decision.reasons
    assert decision.reasons[0].startswith("roc_auc ")
    assert decision.reasons[0].endswith(" >= 0.500")


@pytest.mark.parametrize(
    ("milliseconds", "passed", "reason"),
    [
        (72.4, True, "explanation of 1,000 candidates predicted 72.4 ms <= 100 ms"),
        (100.0, True, "explanation of 1,000 candidates predicted 100.0 ms <= 100 ms"),
        (301.9, False, "explanation of 1,000 candidates predicted 301.9 ms > 100 ms"),
        (
            None,
            False,
            "explanation of 1,000 candidates is missing (metric 'explanation_ms_per_1000'); "
            "at most 100 ms is allowed",
        ),
    ],
)
def test_the_explanation_gate(milliseconds: float | None, passed: bool, reason: str) -> None:
    metrics = dict(GOOD)
    if milliseconds is not None:
        metrics[EXPLANATION_MS] = milliseconds
    decision = decide(
        metrics,
        min_roc_auc=0.8,
        min_disparate_impact=0.8,
        champion_metrics=None,
        tolerance=0.01,
        max_explanation_ms=100.0,
    )
    assert decision.passed is passed
    assert reason in decision.reasons
    assert (reason in decision.failed) is not passed
    # Without a budget there is no such gate.
    assert not any("explanation" in r for r in gate(metrics).reasons)


@pytest.mark.parametrize(("feasible", "passed"), [(1.0, True), (0.0, False)])
def test_a_model_whose_search_met_no_gate_is_never_promoted(feasible: float, passed: bool) -> None:
    # The test metrics pass every gate; the search found no trial meeting them on its
    # validation folds, so it reported the fairest, which the gates refuse.
    decision = gate({**GOOD, SEARCH_FEASIBLE: feasible})
    assert decision.passed is passed
    reason = (
        "the search's chosen trial met every gate on its validation folds"
        if passed
        else "no trial of the search met every gate on its validation folds "
        "(the fairest was chosen to be reported)"
    )
    assert reason in decision.reasons
    assert decision.failed == ([] if passed else [reason])
