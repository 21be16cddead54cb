"""Bias mitigation: the penalty's calculus, the pre-processing methods, and what each does to
disparate impact on a data set biased on purpose."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from payband_contracts import SalaryBands
from payband_contracts.model import DecisionRule
from payband_training.evaluate import evaluate
from payband_training.features import feature_frame, to_model_frame
from payband_training.mitigation import (
    Mitigation,
    MitigationError,
    ParityPenalty,
    group_codes,
    massage,
    reweigh,
)
from payband_training.search import TrialConfig, fit_model

# Fixed here, not the search's defaults, so the measured numbers below stay put.
TREES = {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.1}


def _numeric_gradient(
    penalty: ParityPenalty, margins: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    step = 1e-6
    gradient = np.zeros_like(margins)
    for index in np.ndindex(margins.shape):
        up, down = margins.copy(), margins.copy()
        up[index] += step
        down[index] -= step
        gradient[index] = (penalty.loss(up, labels) - penalty.loss(down, labels)) / (2 * step)
    return gradient


def _gaps(penalty: ParityPenalty, margins: np.ndarray) -> np.ndarray:
    """Every counted group's gap (mean S of the group - mean S), flattened."""
    m = penalty._margins(margins)
    score, _ = penalty._selection(m, penalty._probabilities(m))
    return np.concatenate(
        [
            gap[groups.counted]
            for groups, gap in zip(penalty._groups, penalty._gaps(score), strict=False)
        ]
    )


def _gauss_newton(penalty: ParityPenalty, margins: np.ndarray) -> np.ndarray:
    """2 lambda N sum_g (d gap_g / d m)^2 from a numeric Jacobian of the gaps."""
    step = 1e-6
    result = np.zeros_like(margins)
    for index in np.ndindex(margins.shape):
        up, down = margins.copy(), margins.copy()
        up[index] += step
        down[index] -= step
        jacobian = (_gaps(penalty, up) - _gaps(penalty, down)) / (2 * step)
        result[index] = 2 * penalty.strength * penalty.rows * (jacobian**2).sum()
    return result


def _small_case(
    n_bands: int, seed: int = 3, cut_off: float | None = None
) -> tuple[ParityPenalty, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = 40
    sex = rng.integers(0, 2, rows)
    race = rng.integers(0, 3, rows)
    race[:2] = 3  # a group of two rows: below min_group_rows, so not penalised
    penalty = ParityPenalty(
        2.5, [sex, race], n_bands=n_bands, min_group_rows=3, cut_off=cut_off, temperature=0.7
    )
    shape = (rows,) if n_bands == 2 else (rows, n_bands)
    return penalty, rng.normal(size=shape), rng.integers(0, n_bands, rows)


CASES = [(2, None), (2, 0.3), (3, None)]


@pytest.mark.parametrize(("n_bands", "cut_off"), CASES)
def test_the_penalty_gradient_is_the_objective_s_derivative(n_bands, cut_off) -> None:
    penalty, margins, labels = _small_case(n_bands, cut_off=cut_off)
    gradient, _ = penalty.gradient_hessian(margins, labels)
    np.testing.assert_allclose(
        gradient, _numeric_gradient(penalty, margins, labels), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(("n_bands", "cut_off"), CASES)
def test_the_penalty_hessian_is_log_loss_s_plus_gauss_newton(n_bands, cut_off) -> None:
    penalty, margins, labels = _small_case(n_bands, cut_off=cut_off)
    _, hessian = penalty.gradient_hessian(margins, labels)
    plain = ParityPenalty(0.0, [np.zeros(len(labels), dtype=int)], n_bands=n_bands)
    _, log_loss_hessian = plain.gradient_hessian(margins, labels)
    np.testing.assert_allclose(
        hessian - log_loss_hessian, _gauss_newton(penalty, margins), rtol=1e-4, atol=1e-8
    )
    assert (hessian > 0).all()


def test_with_lambda_zero_the_objective_is_xgboost_s_own_log_loss() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    y = (x[:, 0] + rng.normal(scale=0.5, size=500) > 0).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 3, "base_score": 0.5, "seed": 1}
    builtin = xgb.train(params, xgb.DMatrix(x, label=y), 20)
    penalty = ParityPenalty(0.0, [rng.integers(0, 2, 500)], n_bands=2)
    custom = xgb.train(params, xgb.DMatrix(x, label=y), 20, obj=penalty.objective)
    np.testing.assert_allclose(
        custom.predict(xgb.DMatrix(x)), builtin.predict(xgb.DMatrix(x)), atol=1e-6
    )
    margins = rng.normal(size=500)
    gradient, hessian = penalty.gradient_hessian(margins, y)
    p = 1 / (1 + np.exp(-margins))
    np.testing.assert_allclose(gradient, p - y)
    np.testing.assert_allclose(hessian, p * (1 - p))


def test_reweighing_makes_band_independent_of_group_at_full_strength() -> None:
    frame = pd.DataFrame(
        {
            "sex": ["female"] * 4 + ["male"] * 6,
            "race": ["white"] * 10,
            "band": [0, 0, 0, 1, 0, 0, 1, 1, 1, 1],
        }
    )
    weights = reweigh(frame, ("sex", "race"))
    for sex in ("female", "male"):
        rows = (frame["sex"] == sex).to_numpy()
        share = weights[rows & (frame["band"] == 1).to_numpy()].sum() / weights[rows].sum()
        assert share == pytest.approx(0.5)  # P(band 1) overall
    assert reweigh(frame, ("sex", "race"), strength=0.0) == pytest.approx(np.ones(10))


def test_massaging_flips_the_labels_nearest_the_other_side() -> None:
    bands = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    cells = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.3, 0.9, 0.2, 0.4, 0.8, 0.7])
    # Overall share 0.5: cell 0 has 1 of 4, cell 1 has 3 of 4; one flip each.
    massaged = massage(bands, scores, cells, favourable=1)
    assert massaged.tolist() == [0, 1, 0, 1, 0, 0, 1, 1]
    assert massage(bands, scores, cells, favourable=1, strength=0.0).tolist() == bands.tolist()
    assert massaged.sum() == bands.sum()


def test_mitigations_are_checked() -> None:
    with pytest.raises(MitigationError, match="unknown mitigation 'smote'"):
        Mitigation("smote", 1.0)  # type: ignore[arg-type]
    with pytest.raises(MitigationError, match="reweigh takes a strength from 0 to 1"):
        Mitigation("reweigh", 2.0)
    with pytest.raises(MitigationError, match="lambda is a number >= 0"):
        ParityPenalty(-1.0, [np.zeros(3, dtype=int)], n_bands=2)
    with pytest.raises(MitigationError, match="lack columns race"):
        group_codes(pd.DataFrame({"sex": ["female"]}), ("sex", "race"))


@pytest.fixture(scope="module")
def biased() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Candidates whose band depends on education and hours, and on sex through the label
    and through occupation (a proxy): women are under-selected on purpose."""
    rng = np.random.default_rng(42)
    rows = 6000
    sex = rng.choice(["female", "male"], rows)
    female = sex == "female"
    education = rng.choice(["high_school_graduate", "bachelors_degree", "masters_degree"], rows)
    # The proxy: women mostly in office work, men mostly in management.
    occupation = np.where(
        rng.random(rows) < np.where(female, 0.8, 0.2),
        "office_administrative",
        "management_business_financial",
    )
    hours = rng.integers(20, 60, rows)
    merit = (
        (education == "bachelors_degree") * 1.0
        + (education == "masters_degree") * 2.0
        + (hours - 40) / 10
        + rng.normal(scale=0.7, size=rows)
    )
    band = (merit - 1.2 * female > 0.8).astype(int)
    raw = pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(rows)],
            "age": rng.integers(20, 65, rows),
            "sex": sex,
            "race": rng.choice(["white", "black"], rows, p=[0.8, 0.2]),
            "education": education,
            "marital_status": "married",
            "class_of_worker": "private",
            "occupation": occupation,
            "hours_per_week": hours,
            "birthplace": "united_states",
            "band": band,
        }
    )
    frame = feature_frame(raw, SalaryBands(edges_usd=(50_000,)).labels)
    return frame.iloc[:4000].reset_index(drop=True), frame.iloc[4000:].reset_index(drop=True)


def _sex_disparate_impact(booster: xgb.Booster, test: pd.DataFrame, cut_off: float) -> float:
    matrix = xgb.DMatrix(to_model_frame(test, False), enable_categorical=True)
    upper = booster.predict(matrix)
    result = evaluate(
        test["band"].to_numpy(),
        np.column_stack([1 - upper, upper]),
        {"sex": test["sex"].astype(str).tolist()},
        ("<=50K", ">50K"),
        decision=DecisionRule.with_cut_off(cut_off),
    )
    return result.fairness["sex"].disparate_impact


def test_each_method_raises_disparate_impact_as_it_claims(biased) -> None:
    train, test = biased
    trees = TREES
    impact = {}
    for method, strength in (
        ("none", 0),
        ("reweigh", 1.0),
        ("massage", 1.0),
        ("penalty", 20.0),
        ("selection_penalty", 5.0),
    ):
        config = TrialConfig(trees, Mitigation(method, strength), DecisionRule())
        booster = fit_model(train, config, use_protected=False, n_bands=2, seed=3)
        impact[method] = _sex_disparate_impact(booster, test, 0.5)
    # Measured with these seeds (2026-12-07): the labels' own ratio is 0.46 (24.5 % of women,
    # 53.2 % of men in the upper band); each method moves the model's ratio up by as much.
    assert impact["none"] == pytest.approx(0.642, abs=0.01)
    assert impact["reweigh"] == pytest.approx(0.799, abs=0.01)
    assert impact["massage"] == pytest.approx(0.784, abs=0.01)
    assert impact["penalty"] == pytest.approx(0.861, abs=0.01)
    assert impact["selection_penalty"] == pytest.approx(0.858, abs=0.01)
    # Sex never reaches the booster: every method keeps the model group-blind.
    booster = fit_model(
        train,
        TrialConfig(trees, Mitigation("penalty", 20.0), DecisionRule()),
        use_protected=False,
        n_bands=2,
        seed=3,
    )
    assert "sex" not in booster.feature_names
    assert "race" not in booster.feature_names


def test_the_penalty_is_stronger_with_a_larger_lambda(biased) -> None:
    train, test = biased
    trees = TREES
    impacts = [
        _sex_disparate_impact(
            fit_model(
                train,
                TrialConfig(trees, Mitigation("penalty", strength), DecisionRule()),
                use_protected=False,
                n_bands=2,
                seed=3,
            ),
            test,
            0.5,
        )
        for strength in (0.0, 2.0, 20.0)
    ]
    assert impacts == pytest.approx([0.642, 0.723, 0.861], abs=0.01)
