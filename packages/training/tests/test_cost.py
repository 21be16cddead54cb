"""The explanation cost of a model: exact on trees of known shape, equal to an independent
count over trees_to_dataframe, growing with trees and depth, every class's trees counted, and
the latency budget and the cost limit each other's inverse."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from payband_training.cost import (
    CALIBRATION_ROWS,
    FIXED_MS_PER_1000_ROWS,
    explanation_cost,
    max_cost_for,
    predicted_batch_ms,
)

# Exact splits on tiny data: no sampling, no regularisation that could stop a split.
EXACT = {"tree_method": "exact", "lambda": 0.0, "min_child_weight": 0.0, "nthread": 1, "seed": 0}


def train(features: np.ndarray, labels: np.ndarray, rounds: int, **params: object) -> xgb.Booster:
    matrix = xgb.DMatrix(features, label=labels)
    return xgb.train(EXACT | params, matrix, num_boost_round=rounds)


def direct_cost(booster: xgb.Booster) -> float:
    """The sum over leaves of (distinct features above the leaf + 1)^2, walked over
    trees_to_dataframe (another reader of the model than explanation_cost's JSON)."""
    frame = booster.trees_to_dataframe()
    splits = {
        row.ID: (row.Feature, row.Yes, row.No)
        for row in frame.itertuples()
        if row.Feature != "Leaf"
    }
    total = 0
    for tree in frame["Tree"].unique():
        pending: list[tuple[str, frozenset[str]]] = [(f"{tree}-0", frozenset())]
        while pending:
            node, above = pending.pop()
            if node not in splits:
                total += (len(above) + 1) ** 2
                continue
            feature, yes, no = splits[node]
            pending += [(yes, above | {feature}), (no, above | {feature})]
    return float(total)


def leaves_per_tree(booster: xgb.Booster) -> list[int]:
    frame = booster.trees_to_dataframe()
    return frame[frame["Feature"] == "Leaf"].groupby("Tree").size().tolist()


def steps(rows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One feature, a target with four levels: every tree splits on x0 alone."""
    x0 = np.arange(rows, dtype=np.float64)
    return x0[:, np.newaxis], (x0 * 4 // rows) * 10.0


def test_two_stumps_cost_two_leaves_of_one_feature_each() -> None:
    features, target = steps()
    booster = train(features, target, 2, max_depth=1, objective="reg:squarederror")

    assert leaves_per_tree(booster) == [2, 2]
    # Per tree: 2 leaves, 1 feature above each: 2 x (1 + 1)^2 = 8.
    assert explanation_cost(booster) == 16.0


def test_splitting_again_on_a_feature_does_not_lengthen_the_path() -> None:
    features, target = steps()
    booster = train(features, target, 3, max_depth=2, objective="reg:squarederror")

    assert leaves_per_tree(booster) == [4, 4, 4]
    # Depth 2 in splits, but x0 twice: 4 leaves x (1 + 1)^2 = 16 per tree, not 4 x 3^2 = 36.
    assert explanation_cost(booster) == 48.0


def test_two_features_on_the_path_cost_nine_per_leaf() -> None:
    # y = 10 x1 + x0 on a 2 x 2 grid (repeated): the root splits on x1, its children on x0.
    grid = np.array([[x0, x1] for x0 in (0.0, 1.0) for x1 in (0.0, 1.0)] * 8)
    target = 10 * grid[:, 1] + grid[:, 0]
    booster = train(grid, target, 2, max_depth=2, objective="reg:squarederror")

    frame = booster.trees_to_dataframe()
    assert frame.loc[frame["Node"] == 0, "Feature"].tolist() == ["f1", "f1"]
    assert leaves_per_tree(booster) == [4, 4]
    # Per tree: 4 leaves, 2 features above each: 4 x (2 + 1)^2 = 36.
    assert explanation_cost(booster) == 72.0


def test_a_tree_without_a_split_costs_one() -> None:
    features = np.zeros((20, 1))
    booster = train(features, np.ones(20), 2, max_depth=3, objective="reg:squarederror")

    assert leaves_per_tree(booster) == [1, 1]
    assert explanation_cost(booster) == 2.0


@pytest.fixture(scope="module")
def candidates() -> tuple[pd.DataFrame, np.ndarray]:
    """Integer and categorical features with a noisy binary band, as the models see them."""
    rng = np.random.default_rng(3)
    rows = 2_000
    frame = pd.DataFrame(
        {
            "age": rng.integers(17, 80, rows),
            "hours": rng.integers(1, 99, rows),
            "occupation": pd.Categorical(rng.choice(list("abcdefghij"), rows)),
            "education": pd.Categorical(rng.choice(list("pqrstu"), rows)),
        }
    )
    score = (
        frame["age"] / 20
        + frame["hours"] / 25
        + frame["occupation"].cat.codes % 3
        + frame["education"].cat.codes / 2
        + rng.normal(0, 1, rows)
    )
    return frame, (score > score.median()).to_numpy(dtype=np.int64)


def fitted(
    data: tuple[pd.DataFrame, np.ndarray], rounds: int, depth: int, **params: object
) -> xgb.Booster:
    frame, labels = data
    matrix = xgb.DMatrix(frame, label=labels, enable_categorical=True)
    settings = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": depth,
        "max_cat_to_onehot": 4,
        "nthread": 1,
        "seed": 0,
    }
    return xgb.train(settings | params, matrix, num_boost_round=rounds)


@pytest.mark.parametrize("depth", [3, 6])
def test_equals_a_direct_count_on_a_model_with_categorical_splits(
    candidates: tuple[pd.DataFrame, np.ndarray], depth: int
) -> None:
    booster = fitted(candidates, 30, depth)

    assert explanation_cost(booster) == direct_cost(booster)


def test_grows_with_trees(candidates: tuple[pd.DataFrame, np.ndarray]) -> None:
    costs = [explanation_cost(fitted(candidates, rounds, 4)) for rounds in (10, 20, 40)]

    assert costs == sorted(costs)
    assert len(set(costs)) == 3


def test_grows_with_depth(candidates: tuple[pd.DataFrame, np.ndarray]) -> None:
    costs = [explanation_cost(fitted(candidates, 20, depth)) for depth in (2, 3, 4, 6)]

    assert costs == sorted(costs)
    assert len(set(costs)) == 4


def test_a_multiclass_booster_counts_every_class_tree() -> None:
    # Three classes by x0's thirds: each class's tree splits on x0 (2 leaves x 4 = 8).
    x0 = np.arange(90, dtype=np.float64)
    labels = x0 // 30
    booster = train(
        x0[:, np.newaxis], labels, 5, max_depth=1, objective="multi:softprob", num_class=3
    )

    assert leaves_per_tree(booster) == [2] * 15
    assert explanation_cost(booster) == 5 * 3 * 8.0
    assert explanation_cost(booster) == direct_cost(booster)


def test_a_dart_booster_counts_its_trees(candidates: tuple[pd.DataFrame, np.ndarray]) -> None:
    booster = fitted(candidates, 10, 3, booster="dart", rate_drop=0.1)

    assert explanation_cost(booster) == direct_cost(booster) > 0


def test_a_linear_booster_has_no_tree_cost() -> None:
    features, target = steps()
    booster = xgb.train(
        {"booster": "gblinear", "nthread": 1}, xgb.DMatrix(features, label=target), 2
    )

    with pytest.raises(ValueError, match="tree booster"):
        explanation_cost(booster)


@pytest.mark.parametrize("rows", [65, CALIBRATION_ROWS, 5_000])
@pytest.mark.parametrize("model_cost", [0.0, 1_800.0, 60_000.0, 1_400_000.0])
def test_max_cost_for_inverts_predicted_batch_ms(rows: int, model_cost: float) -> None:
    budget = predicted_batch_ms(model_cost, rows)

    assert max_cost_for(budget, rows) == pytest.approx(model_cost, abs=1e-6)
    assert predicted_batch_ms(max_cost_for(budget, rows), rows) == pytest.approx(budget)


def test_predicted_time_grows_with_cost_and_rows() -> None:
    assert predicted_batch_ms(2_000.0) < predicted_batch_ms(4_000.0)
    assert predicted_batch_ms(2_000.0, 500) < predicted_batch_ms(2_000.0, 1_000)
    assert max_cost_for(100.0) < max_cost_for(200.0)
    assert max_cost_for(100.0, 2_000) < max_cost_for(100.0, 1_000)


def test_a_budget_below_the_fixed_part_admits_no_model() -> None:
    assert max_cost_for(FIXED_MS_PER_1000_ROWS / 2) == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: predicted_batch_ms(-1.0), "not negative"),
        (lambda: predicted_batch_ms(10.0, 0), "at least one row"),
        (lambda: max_cost_for(0.0), "positive"),
        (lambda: max_cost_for(100.0, 0), "at least one row"),
    ],
)
def test_rejects_impossible_arguments(call: Callable[[], float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
