"""Quality and fairness numbers against expectations worked out by hand on tiny arrays."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, selection_rate, true_positive_rate
from mlflow.utils.validation import _validate_metric_name

from payband_contracts.model import DecisionRule
from payband_training.evaluate import (
    Evaluation,
    EvaluationInputError,
    GroupRates,
    deciding_groups,
    evaluate,
    label_disparate_impact,
)

BINARY_LABELS = ("<=50K", ">50K")
THREE_LABELS = ("<=30K", "30K-60K", ">60K")

# Eight rows; the prediction (p1 > 0.5) is [1, 1, 0, 0, 1, 1, 1, 0].
BINARY_TRUTH = np.array([1, 1, 0, 0, 1, 0, 0, 0])
BINARY_P1 = np.array([0.9, 0.8, 0.3, 0.1, 0.58, 0.6, 0.55, 0.2])
SEX = ["female"] * 4 + ["male"] * 4
RACE = ["white", "black", "white", "asian", "black", "asian", "white", "white"]


def binary_proba(p1: np.ndarray) -> np.ndarray:
    return np.column_stack([1 - p1, p1])


def rates(evaluation: Evaluation, attribute: str) -> dict[str, GroupRates]:
    return {g.group: g for g in evaluation.fairness[attribute].groups}


@pytest.fixture
def binary() -> Evaluation:
    return evaluate(
        BINARY_TRUTH, binary_proba(BINARY_P1), {"sex": SEX, "race": RACE}, BINARY_LABELS
    )


def test_binary_quality(binary: Evaluation) -> None:
    q = binary.quality
    # Right on rows 0-4 and 7; wrong on 5 and 6.
    assert q["accuracy"] == pytest.approx(6 / 8)
    # Recall of band 0: 3 of 5; of band 1: 3 of 3.
    assert q["balanced_accuracy"] == pytest.approx((3 / 5 + 1) / 2)
    # Band 0: precision 1, recall 3/5 -> F1 0.75; band 1: precision 3/5, recall 1 -> F1 0.75.
    assert q["macro_f1"] == pytest.approx(0.75)
    # Positives .9 .8 .58, negatives .3 .1 .6 .55 .2: of 15 pairs only (.58, .6) is misordered.
    assert q["roc_auc"] == pytest.approx(14 / 15)
    p_true = [0.9, 0.8, 0.7, 0.9, 0.58, 0.4, 0.45, 0.8]
    assert q["log_loss"] == pytest.approx(-sum(math.log(p) for p in p_true) / 8)
    squared = [0.1**2, 0.2**2, 0.3**2, 0.1**2, 0.42**2, 0.6**2, 0.55**2, 0.2**2]
    assert q["brier_score"] == pytest.approx(sum(squared) / 8)
    assert binary.notes == []


def test_binary_per_band(binary: Evaluation) -> None:
    band_0, band_1 = binary.per_band
    assert (band_0.band, band_0.label, band_0.support) == (0, "<=50K", 5)
    assert (band_0.precision, band_0.recall, band_0.f1) == pytest.approx((1.0, 0.6, 0.75))
    assert (band_1.band, band_1.label, band_1.support) == (1, ">50K", 3)
    assert (band_1.precision, band_1.recall, band_1.f1) == pytest.approx((0.6, 1.0, 0.75))


def test_binary_fairness_by_sex(binary: Evaluation) -> None:
    sex = rates(binary, "sex")
    # Female: truth 1 1 0 0, predicted 1 1 0 0. Male: truth 1 0 0 0, predicted 1 1 1 0.
    assert sex["female"] == GroupRates("female", 4, 0.5, 1.0, 0.0)
    assert sex["male"].count == 4
    assert sex["male"].selection_rate == pytest.approx(3 / 4)
    assert sex["male"].true_positive_rate == pytest.approx(1.0)
    assert sex["male"].false_positive_rate == pytest.approx(2 / 3)
    result = binary.fairness["sex"]
    assert result.disparate_impact == pytest.approx(0.5 / 0.75)
    assert result.selection_rate_difference == pytest.approx(0.25)
    assert result.equal_opportunity_difference == pytest.approx(0.0)
    # The false positive rates (0 vs 2/3) differ more than the true positive rates (1 vs 1).
    assert result.equalized_odds_difference == pytest.approx(2 / 3)
    assert result.notes == []


def test_binary_fairness_by_race_leaves_undefined_rates_out(binary: Evaluation) -> None:
    race = rates(binary, "race")
    assert list(race) == ["asian", "black", "white"]
    # white rows 0 2 6 7: truth 1 0 0 0, predicted 1 0 1 0.
    assert race["white"].count == 4
    assert race["white"].selection_rate == pytest.approx(0.5)
    assert race["white"].true_positive_rate == pytest.approx(1.0)
    assert race["white"].false_positive_rate == pytest.approx(1 / 3)
    # black rows 1 4: truth 1 1, predicted 1 1 -> no unfavourable truth, FPR undefined.
    assert race["black"].count == 2
    assert race["black"].selection_rate == pytest.approx(1.0)
    assert race["black"].true_positive_rate == pytest.approx(1.0)
    assert math.isnan(race["black"].false_positive_rate)
    # asian rows 3 5: truth 0 0, predicted 0 1 -> no favourable truth, TPR undefined.
    assert race["asian"].count == 2
    assert race["asian"].selection_rate == pytest.approx(0.5)
    assert math.isnan(race["asian"].true_positive_rate)
    assert race["asian"].false_positive_rate == pytest.approx(0.5)
    result = binary.fairness["race"]
    assert result.disparate_impact == pytest.approx(0.5)
    assert result.selection_rate_difference == pytest.approx(0.5)
    assert result.equal_opportunity_difference == pytest.approx(0.0)  # white vs black
    assert result.equalized_odds_difference == pytest.approx(0.5 - 1 / 3)  # asian vs white FPR
    assert len(result.notes) == 2
    assert any("true positive rate undefined for race = asian" in n for n in result.notes)
    assert any("false positive rate undefined for race = black" in n for n in result.notes)


def test_three_bands() -> None:
    truth = np.array([0, 1, 2, 2, 1, 0])
    proba = np.array(
        [
            [0.6, 0.3, 0.1],
            [0.2, 0.5, 0.3],
            [0.1, 0.2, 0.7],
            [0.3, 0.4, 0.3],
            [0.1, 0.1, 0.8],
            [0.5, 0.4, 0.1],
        ]
    )  # predicted bands 0 1 2 1 2 0
    sex = ["female", "male"] * 3
    result = evaluate(truth, proba, {"sex": sex}, THREE_LABELS)
    q = result.quality
    assert q["accuracy"] == pytest.approx(4 / 6)
    assert q["balanced_accuracy"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert q["macro_f1"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # One-vs-rest AUCs: band 0 4/4 pairs, band 1 4/8, band 2 (3 + 2 + a tie's 0.5)/8.
    assert q["roc_auc"] == pytest.approx((1 + 0.5 + 5.5 / 8) / 3)
    assert q["log_loss"] == pytest.approx(
        -sum(math.log(p) for p in [0.6, 0.5, 0.7, 0.3, 0.1, 0.5]) / 6
    )
    # Per row, the squared distance to the one-hot truth summed over the three bands.
    assert q["brier_score"] == pytest.approx((0.26 + 0.38 + 0.14 + 0.74 + 1.46 + 0.42) / 6)
    assert [(b.band, b.label, b.support) for b in result.per_band] == [
        (0, "<=30K", 2),
        (1, "30K-60K", 2),
        (2, ">60K", 2),
    ]
    scores = [score for b in result.per_band for score in (b.precision, b.recall, b.f1)]
    assert scores == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    # Favourable = the top band. Female rows 0 2 4: truth 0 1 0, predicted 0 1 1.
    # Male rows 1 3 5: truth 0 1 0, predicted 0 0 0.
    assert result.favourable_band == 2
    by_sex = rates(result, "sex")
    assert by_sex["female"].selection_rate == pytest.approx(2 / 3)
    assert by_sex["female"].true_positive_rate == pytest.approx(1.0)
    assert by_sex["female"].false_positive_rate == pytest.approx(0.5)
    assert by_sex["male"] == GroupRates("male", 3, 0.0, 0.0, 0.0)
    fairness = result.fairness["sex"]
    assert fairness.disparate_impact == pytest.approx(0.0)
    assert fairness.selection_rate_difference == pytest.approx(2 / 3)
    assert fairness.equal_opportunity_difference == pytest.approx(1.0)
    assert fairness.equalized_odds_difference == pytest.approx(1.0)


def test_three_bands_with_a_lower_favourable_band() -> None:
    truth = np.array([0, 1, 2, 2, 1, 0])
    proba = np.array(
        [
            [0.6, 0.3, 0.1],
            [0.2, 0.5, 0.3],
            [0.1, 0.2, 0.7],
            [0.3, 0.4, 0.3],
            [0.1, 0.1, 0.8],
            [0.5, 0.4, 0.1],
        ]
    )
    sex = ["female", "male"] * 3
    result = evaluate(truth, proba, {"sex": sex}, THREE_LABELS, favourable_band=1)
    # "Band 1 or higher": truth and prediction are both 0 1 1 1 1 0, parity everywhere.
    assert rates(result, "sex")["female"] == GroupRates("female", 3, 2 / 3, 1.0, 0.0)
    assert rates(result, "sex")["male"] == GroupRates("male", 3, 2 / 3, 1.0, 0.0)
    fairness = result.fairness["sex"]
    assert fairness.disparate_impact == pytest.approx(1.0)
    assert fairness.selection_rate_difference == pytest.approx(0.0)
    assert fairness.equal_opportunity_difference == pytest.approx(0.0)
    assert fairness.equalized_odds_difference == pytest.approx(0.0)
    assert "30K-60K or higher" in result.fairness_table()


def test_nobody_selected_gives_disparate_impact_one() -> None:
    p1 = np.array([0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4])
    result = evaluate(BINARY_TRUTH, binary_proba(p1), {"sex": SEX}, BINARY_LABELS)
    fairness = result.fairness["sex"]
    assert [g.selection_rate for g in fairness.groups] == [0.0, 0.0]
    assert fairness.disparate_impact == 1.0
    assert fairness.selection_rate_difference == 0.0
    assert fairness.notes == ["no sex group is ever selected; disparate impact taken as 1.0"]
    assert result.metrics()["sex_disparate_impact"] == 1.0


def test_a_single_group_is_at_parity_with_itself() -> None:
    result = evaluate(BINARY_TRUTH, binary_proba(BINARY_P1), {"sex": ["female"] * 8}, BINARY_LABELS)
    fairness = result.fairness["sex"]
    # All eight rows: selected 5 of 8; 3 of 3 positives found; 2 of 5 negatives selected.
    assert fairness.groups == [GroupRates("female", 8, 5 / 8, 1.0, 2 / 5)]
    assert fairness.disparate_impact == 1.0
    assert fairness.selection_rate_difference == 0.0
    assert fairness.equal_opportunity_difference == 0.0
    assert fairness.equalized_odds_difference == 0.0
    assert fairness.notes == []


def test_a_group_without_favourable_truth_has_no_tpr_and_no_difference() -> None:
    truth = np.array([1, 1, 0, 0, 0, 0, 0, 0])  # every male row is unfavourable
    result = evaluate(truth, binary_proba(BINARY_P1), {"sex": SEX}, BINARY_LABELS)
    by_sex = rates(result, "sex")
    assert by_sex["female"].true_positive_rate == pytest.approx(1.0)
    assert math.isnan(by_sex["male"].true_positive_rate)
    assert by_sex["male"].false_positive_rate == pytest.approx(3 / 4)
    fairness = result.fairness["sex"]
    # Only one group has a TPR: comparing it with itself would claim parity, so it is undefined.
    assert math.isnan(fairness.equal_opportunity_difference)
    assert math.isnan(fairness.equalized_odds_difference)
    assert fairness.disparate_impact == pytest.approx(0.5 / 0.75)
    assert fairness.notes == [
        "true positive rate undefined for sex = male: no row with favourable truth; "
        "left out of the differences"
    ]
    metrics = result.metrics()
    assert "sex_group_male_true_positive_rate" not in metrics
    assert "sex_equal_opportunity_difference" not in metrics
    assert "sex_equalized_odds_difference" not in metrics
    assert metrics["sex_group_female_true_positive_rate"] == pytest.approx(1.0)
    assert metrics["sex_disparate_impact"] == pytest.approx(2 / 3)
    table = result.fairness_table()
    assert "| male | 4 | 0.750 |  | n/a | 0.750 |" in table
    assert "| Equal-opportunity difference | n/a |" in table
    assert "true positive rate undefined for sex = male" in table


def test_a_band_missing_from_the_truth() -> None:
    truth = np.array([0, 0, 1])
    proba = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])  # predicted 0 2 1
    result = evaluate(truth, proba, {"sex": ["female", "male", "male"]}, THREE_LABELS)
    assert math.isnan(result.quality["roc_auc"])
    assert result.notes == ["roc_auc undefined: bands [2] do not occur in the truth"]
    assert "roc_auc" not in result.metrics()
    # Band 2 is predicted but absent: balanced accuracy averages recall over bands 0 and 1.
    assert result.quality["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert result.quality["accuracy"] == pytest.approx(2 / 3)
    # F1: band 0 (P 1, R 1/2) 2/3, band 1 1, band 2 0 (no support).
    assert result.quality["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert result.per_band[2].support == 0
    assert result.per_band[2].f1 == 0.0
    assert result.quality["log_loss"] == pytest.approx(
        -(math.log(0.9) + math.log(0.2)) / 3, rel=1e-6
    )
    assert result.quality["brier_score"] == pytest.approx((0.02 + 0.64 + 0.09 + 0.25 + 0) / 3)
    # Nobody's truth reaches the top band, so no TPR anywhere.
    fairness = result.fairness["sex"]
    assert all(math.isnan(g.true_positive_rate) for g in fairness.groups)
    assert math.isnan(fairness.equal_opportunity_difference)
    assert fairness.disparate_impact == pytest.approx(0.0)


def test_binary_truth_of_one_band_only() -> None:
    truth = np.zeros(8, dtype=np.int64)
    result = evaluate(truth, binary_proba(BINARY_P1), {"sex": SEX}, BINARY_LABELS)
    assert math.isnan(result.quality["roc_auc"])
    assert result.quality["brier_score"] == pytest.approx(float(np.mean(BINARY_P1**2)))
    assert result.quality["accuracy"] == pytest.approx(3 / 8)


def test_float32_probabilities_are_accepted() -> None:
    proba = binary_proba(BINARY_P1).astype(np.float32)
    proba[:, 1] += np.float32(1e-7)  # rounding like a float32 softmax
    result = evaluate(BINARY_TRUTH, proba, {"sex": SEX}, BINARY_LABELS)
    assert result.quality["roc_auc"] == pytest.approx(14 / 15)


def test_argmax_ties_go_to_the_lower_band() -> None:
    p1 = np.array([0.5] * 8)
    result = evaluate(BINARY_TRUTH, binary_proba(p1), {"sex": SEX}, BINARY_LABELS)
    assert result.per_band[1].recall == 0.0
    assert result.quality["accuracy"] == pytest.approx(5 / 8)


def test_metric_names_are_valid_for_mlflow(binary: Evaluation) -> None:
    odd_groups = ["Asian / Pac: Islander", "white (non-hispanic)", "Ünïcode", "a.b"] * 2
    result = evaluate(
        BINARY_TRUTH,
        binary_proba(BINARY_P1),
        {"sex": SEX, "race": RACE, "odd group": odd_groups},
        BINARY_LABELS,
    )
    metrics = result.metrics()
    for name, value in metrics.items():
        _validate_metric_name(name)
        assert isinstance(value, float)
        assert math.isfinite(value)
    assert "odd_group_group_Asian_Pac_Islander_selection_rate" in metrics
    assert "odd_group_group_white_non-hispanic_count" in metrics
    assert "odd_group_group_n_code_count" in metrics
    assert "odd_group_group_a_b_count" in metrics
    for name in (
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "roc_auc",
        "log_loss",
        "brier_score",
        "band_0_f1",
        "band_1_precision",
        "band_1_recall",
        "band_1_support",
        "sex_disparate_impact",
        "sex_selection_rate_difference",
        "sex_equal_opportunity_difference",
        "race_equalized_odds_difference",
        "race_group_white_true_positive_rate",
    ):
        assert name in metrics
    assert metrics == binary.metrics() | {k: v for k, v in metrics.items() if "odd" in k}
    assert binary.metrics()["band_1_support"] == 3.0
    assert "race_group_black_false_positive_rate" not in binary.metrics()  # NaN left out


def test_group_names_that_meet_in_one_metric_name_are_refused() -> None:
    groups = ["a b", "a_b"] * 4
    result = evaluate(BINARY_TRUTH, binary_proba(BINARY_P1), {"g": groups}, BINARY_LABELS)
    with pytest.raises(EvaluationInputError, match="g_group_a_b_count"):
        result.metrics()


def test_fairness_table(binary: Evaluation) -> None:
    table = binary.fairness_table()
    assert table.startswith("Favourable outcome: predicted band >50K or higher")
    assert "#### By sex" in table
    assert "#### By race" in table
    assert table.index("#### By sex") < table.index("#### By race")
    assert "| female | 4 | 0.500 |  | 1.000 | 0.000 |" in table
    assert "| male | 4 | 0.750 |  | 1.000 | 0.667 |" in table
    assert "| black | 2 | 1.000 |  | 1.000 | n/a |" in table
    assert "| Disparate impact (min/max selection rate) | 0.667 |" in table
    assert "| Equalized-odds difference | 0.167 |" in table
    assert "- false positive rate undefined for race = black" in table


def test_fairness_table_escapes_pipes() -> None:
    groups = ["a|b"] * 4 + ["c"] * 4
    result = evaluate(BINARY_TRUTH, binary_proba(BINARY_P1), {"sex": groups}, BINARY_LABELS)
    assert "| a\\|b | 4 |" in result.fairness_table()


def test_evaluation_is_frozen(binary: Evaluation) -> None:
    with pytest.raises(FrozenInstanceError):
        binary.favourable_band = 0  # type: ignore[misc]


def test_group_columns_may_be_pandas_categoricals() -> None:
    sex = pd.Series(SEX, dtype="category", index=range(10, 18))
    result = evaluate(BINARY_TRUTH, binary_proba(BINARY_P1), {"sex": sex}, BINARY_LABELS)
    assert rates(result, "sex")["male"].selection_rate == pytest.approx(3 / 4)


@pytest.mark.parametrize(
    ("truth", "proba", "groups", "labels", "favourable", "message"),
    [
        (BINARY_TRUTH, BINARY_P1, {}, BINARY_LABELS, None, "shape"),
        (BINARY_TRUTH, binary_proba(BINARY_P1), {}, THREE_LABELS, None, "3 band labels for 2"),
        (BINARY_TRUTH[:7], binary_proba(BINARY_P1), {}, BINARY_LABELS, None, "y_true has shape"),
        (BINARY_TRUTH * 1.0, binary_proba(BINARY_P1), {}, BINARY_LABELS, None, "integer"),
        (BINARY_TRUTH * 2, binary_proba(BINARY_P1), {}, BINARY_LABELS, None, "outside 0..1"),
        (BINARY_TRUTH, binary_proba(BINARY_P1) * 0.9, {}, BINARY_LABELS, None, "sum to 1"),
        (BINARY_TRUTH, binary_proba(BINARY_P1 * np.nan), {}, BINARY_LABELS, None, "finite"),
        (BINARY_TRUTH, binary_proba(BINARY_P1), {"sex": SEX[:7]}, BINARY_LABELS, None, "7 values"),
        (
            BINARY_TRUTH,
            binary_proba(BINARY_P1),
            {"sex": [*SEX[:7], None]},
            BINARY_LABELS,
            None,
            "missing values",
        ),
        (BINARY_TRUTH, binary_proba(BINARY_P1), {}, BINARY_LABELS, 2, "favourable_band"),
        (BINARY_TRUTH, binary_proba(BINARY_P1), {}, BINARY_LABELS, 0, "favourable_band"),
        (np.array([], dtype=int), np.empty((0, 2)), {}, BINARY_LABELS, None, "no rows"),
    ],
)
def test_bad_input_is_refused_with_a_message(
    truth: np.ndarray,
    proba: np.ndarray,
    groups: dict[str, list[str]],
    labels: tuple[str, ...],
    favourable: int | None,
    message: str,
) -> None:
    with pytest.raises(EvaluationInputError, match=message):
        evaluate(truth, proba, groups, labels, favourable_band=favourable)


def test_bands_come_from_the_decision_rule() -> None:
    # A cut-off of 0.25 selects the rows with p1 0.3 too: [1, 1, 1, 0, 1, 1, 1, 0].
    rule = DecisionRule.with_cut_off(0.25)
    result = evaluate(
        BINARY_TRUTH, binary_proba(BINARY_P1), {"sex": SEX}, BINARY_LABELS, decision=rule
    )
    by_sex = rates(result, "sex")
    assert by_sex["female"].selection_rate == pytest.approx(3 / 4)
    assert by_sex["male"].selection_rate == pytest.approx(3 / 4)
    assert result.fairness["sex"].disparate_impact == pytest.approx(1.0)
    assert result.quality["accuracy"] == pytest.approx(5 / 8)
    plain = evaluate(BINARY_TRUTH, binary_proba(BINARY_P1), {"sex": SEX}, BINARY_LABELS)
    assert plain.fairness["sex"].disparate_impact == pytest.approx(0.5 / 0.75)


def test_the_numbers_are_fairlearn_s(tmp_path) -> None:
    rng = np.random.default_rng(5)
    rows = 3000
    truth = rng.integers(0, 2, rows)
    p1 = np.clip(truth * 0.3 + rng.random(rows) * 0.7, 0, 1)
    race = rng.choice(["white", "black", "asian", "other"], rows, p=[0.6, 0.2, 0.15, 0.05])
    result = evaluate(truth, binary_proba(p1), {"race": race}, BINARY_LABELS)
    predicted = (p1 > 0.5).astype(int)
    frame = MetricFrame(
        metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate},
        y_true=truth,
        y_pred=predicted,
        sensitive_features=pd.Series(race, name="race"),
    )
    ours = {g.group: g for g in result.fairness["race"].groups}
    for group, row in frame.by_group.iterrows():
        assert ours[group].selection_rate == pytest.approx(row["selection_rate"])
        assert ours[group].true_positive_rate == pytest.approx(row["true_positive_rate"])
    ratios = frame.ratio(method="between_groups")
    differences = frame.difference(method="between_groups")
    fairness = result.fairness["race"]
    assert fairness.disparate_impact == pytest.approx(ratios["selection_rate"])
    assert fairness.selection_rate_difference == pytest.approx(differences["selection_rate"])
    assert fairness.equal_opportunity_difference == pytest.approx(differences["true_positive_rate"])


def test_small_groups_are_reported_but_do_not_decide() -> None:
    rng = np.random.default_rng(1)
    rows = 1000
    truth = rng.integers(0, 2, rows)
    race = np.array(["white"] * 600 + ["black"] * 350 + ["other"] * 50, dtype=object)
    # The small group is never selected: counted, it would make disparate impact 0.
    p1 = np.where(race == "other", 0.1, np.where(race == "white", 0.9, 0.6 + 0.4 * truth))
    result = evaluate(truth, binary_proba(p1), {"race": race}, BINARY_LABELS, min_group_rows=100)
    fairness = result.fairness["race"]
    by_race = rates(result, "race")
    assert by_race["other"].selection_rate == 0.0
    assert by_race["other"].decides is False
    assert by_race["white"].decides
    assert by_race["black"].decides
    assert fairness.disparate_impact == pytest.approx(1.0)  # white 1.0, black 1.0
    assert [g.group for g in fairness.small_groups] == ["other"]
    assert any("other has 50 rows, fewer than 100" in note for note in fairness.notes)
    table = result.fairness_table()
    assert "| other (small) | 50 |" in table
    assert "fewer than 100 test rows are shown" in table
    # With every group deciding, the small group's zero decides.
    every = evaluate(truth, binary_proba(p1), {"race": race}, BINARY_LABELS)
    assert every.fairness["race"].disparate_impact == 0.0
    # Groups named to decide win over the sizes here (the search judges its folds so).
    fixed = evaluate(
        truth,
        binary_proba(p1),
        {"race": race},
        BINARY_LABELS,
        min_group_rows=100,
        deciding_groups={"race": {"white", "other"}},
    )
    assert fixed.fairness["race"].disparate_impact == 0.0
    assert deciding_groups({"race": race.tolist()}, 100) == {"race": {"white", "black"}}


def test_when_fewer_than_two_groups_are_large_every_group_decides() -> None:
    race = ["white"] * 6 + ["black"] * 2
    result = evaluate(
        BINARY_TRUTH, binary_proba(BINARY_P1), {"race": race}, BINARY_LABELS, min_group_rows=5
    )
    fairness = result.fairness["race"]
    assert all(g.decides for g in fairness.groups)
    assert any("fewer than two race groups have 5 rows" in note for note in fairness.notes)


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_rows() -> None:
    def interval(rows: int, seed: int = 2) -> tuple[float, float, float]:
        rng = np.random.default_rng(seed)
        truth = rng.integers(0, 2, rows)
        sex = rng.choice(["female", "male"], rows)
        p1 = np.where(sex == "female", 0.3, 0.5) + 0.4 * rng.random(rows)
        result = evaluate(
            truth, binary_proba(p1), {"sex": sex}, BINARY_LABELS, bootstrap_samples=400, seed=9
        )
        low, high = result.fairness["sex"].disparate_impact_interval
        return low, result.fairness["sex"].disparate_impact, high

    small, large = interval(400), interval(8000)
    assert small[0] < small[1] < small[2]
    assert large[0] < large[1] < large[2]
    assert large[2] - large[0] < (small[2] - small[0]) / 3  # about 1/sqrt(20)
    assert interval(400) == small  # seeded: the same resamples every time
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 500)
    result = evaluate(
        truth,
        binary_proba(rng.random(500)),
        {"sex": rng.choice(["female", "male"], 500)},
        BINARY_LABELS,
        bootstrap_samples=200,
    )
    for group in result.fairness["sex"].groups:
        low, high = group.selection_rate_interval
        assert low <= group.selection_rate <= high
    metrics = result.metrics()
    assert metrics["sex_disparate_impact_ci_low"] <= metrics["sex_disparate_impact"]
    assert (
        metrics["sex_group_female_selection_rate_ci_high"]
        >= (metrics["sex_group_female_selection_rate"])
    )
    assert "95 % bootstrap over the test rows (200 resamples)" in result.fairness_table()


def test_intersections_are_reported_and_never_gated() -> None:
    result = evaluate(
        BINARY_TRUTH,
        binary_proba(BINARY_P1),
        {"sex": SEX, "race": RACE},
        BINARY_LABELS,
        intersection=("sex", "race"),
    )
    assert set(result.fairness) == {"sex", "race"}
    cells = {g.group: g for g in result.intersectional.groups}
    assert result.intersectional.attribute == "sex x race"
    # female/white: rows 0 and 2, predicted 1 and 0.
    assert cells["female/white"].count == 2
    assert cells["female/white"].selection_rate == pytest.approx(0.5)
    assert cells["male/white"].selection_rate == pytest.approx(0.5)  # rows 6 and 7
    metrics = result.metrics()
    assert metrics["sex_x_race_group_female_white_selection_rate"] == pytest.approx(0.5)
    assert "#### By sex x race (reported, not gated)" in result.fairness_table()
    with pytest.raises(EvaluationInputError, match="intersection of unknown group columns"):
        evaluate(
            BINARY_TRUTH,
            binary_proba(BINARY_P1),
            {"sex": SEX},
            BINARY_LABELS,
            intersection=("sex", "race"),
        )


def test_the_labels_own_disparate_impact() -> None:
    # Favourable truth: female 2 of 4, male 1 of 4.
    found = label_disparate_impact(BINARY_TRUTH, {"sex": SEX}, favourable=1)
    assert found == {"sex": pytest.approx(0.5)}
