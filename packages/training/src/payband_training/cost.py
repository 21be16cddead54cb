"""What explaining a model's predictions costs, judged from the model alone.

Serving explains every prediction with XGBoost's exact TreeSHAP (``pred_contribs``). Its time
per row is set by the trees' shapes, so a deterministic count over the trees stands in for
a timing at training time: ``explanation_cost`` counts, ``predicted_batch_ms`` turns a count
into milliseconds on this machine and ``max_cost_for`` gives the largest count a latency
budget allows (a constraint for the search, a gate for registration).

The milliseconds are calibrated by ``benchmarks/explanation_cost.py``, which times
``payband_serving.explain.Explainer.explain`` (TreeSHAP and probabilities, as served) on
batches of 1,000 rows for a grid of models and fits a straight line to its medians.
"""

from __future__ import annotations

import json
from typing import Any

import xgboost as xgb

__all__ = [
    "CALIBRATION_ROWS",
    "FIXED_MS_PER_1000_ROWS",
    "MS_PER_COST_UNIT_PER_1000_ROWS",
    "explanation_cost",
    "max_cost_for",
    "predicted_batch_ms",
]

# Measured with `uv run python benchmarks/explanation_cost.py` on 2026-12-07, on this 2-core
# machine with every core explaining (as serving does for more than 64 rows): the line
# through 4 runs' 92 medians (23 models, 50-400 trees of depth 2-8, batches that had every
# core), least squares on the relative error. R^2 0.995, largest error 16 %, median 3 %;
# the runs alone gave slopes of 4.84e-3 to 5.29e-3 and fixed parts of 3.3 to 4.9 ms.
MS_PER_COST_UNIT_PER_1000_ROWS = 5.12e-3
# Mostly per-tree work at every row (the path buffer, the probabilities), which the line
# absorbs over 50-400 trees: models of only a few trees take less (a single tree: 1.6 ms).
FIXED_MS_PER_1000_ROWS = 4.05
# The batch size the constants were measured at.
CALIBRATION_ROWS = 1_000


def explanation_cost(booster: xgb.Booster) -> float:
    """The cost of explaining one row: the sum over every leaf of every tree of (u + 1)^2.

    ``u`` is the leaf's depth as TreeSHAP sees it: the number of *distinct* features split
    on between the root and the leaf (root alone: 0). TreeSHAP carries a path with one
    element per distinct feature plus one for the root, and splitting again on a feature
    already on the path replaces its element instead of adding one. At a leaf it sums u
    unwound paths of u + 1 terms each and extends the path once: u(u + 1) + (u + 1) =
    (u + 1)^2 steps. Summing per leaf, over all trees (a multiclass booster has one tree per
    band per round, all explained), is the "trees x leaves x depth^2" of the literature made
    exact. It predicts measured times far better than depth in splits: with seven model
    features, deep trees split on the same features again, so splits overstate the path. In
    the benchmark's runs, a straight line on this cost has R^2 0.994-0.999 and errors up to
    13-19 %; on a tree's leaves x (its deepest leaf's depth)^2, R^2 0.74-0.78 and errors up
    to 66 %; on the sum over leaves of (depth + 1)^2, R^2 0.80-0.85.

    Read from the booster's JSON model (``save_raw("json")``), which parses in a third of
    the time of ``get_dump(dump_format="json")`` (a sixth of ``trees_to_dataframe``): about
    0.15 s for 400 trees of depth 6, 0.3 s of depth 8. ValueError for a booster without
    trees (gblinear).
    """
    model = json.loads(bytes(booster.save_raw("json")))
    return float(sum(_tree_cost(tree) for tree in _trees(model)))


def _trees(model: dict[str, Any]) -> list[dict[str, Any]]:
    gradient_booster = model["learner"]["gradient_booster"]
    name = gradient_booster["name"]
    if name == "gbtree":
        return list(gradient_booster["model"]["trees"])
    if name == "dart":
        # DART keeps its trees in an inner gbtree; every tree is explained, whatever its weight.
        return list(gradient_booster["gbtree"]["model"]["trees"])
    raise ValueError(f"explanation_cost needs a tree booster (gbtree or dart), not {name!r}")


def _tree_cost(tree: dict[str, Any]) -> int:
    left, right, feature = tree["left_children"], tree["right_children"], tree["split_indices"]
    cost = 0
    # From the root, with the set of features split on above each node as a bit mask; deleted
    # (pruned) nodes are never reached.
    pending = [(0, 0)]
    while pending:
        node, seen = pending.pop()
        child = left[node]
        if child == -1:
            cost += (seen.bit_count() + 1) ** 2
        else:
            seen |= 1 << feature[node]
            pending += ((child, seen), (right[node], seen))
    return cost


def predicted_batch_ms(cost: float, rows: int = CALIBRATION_ROWS) -> float:
    """Milliseconds ``Explainer.explain`` takes for ``rows`` rows of a model of this cost.

    Linear in the rows: TreeSHAP explains row by row, and the fixed part of the fit is
    per-row work too. Holds for batches served on every core (more than 64 rows; fewer run on
    one thread) of a machine with no other work: a process holding a core doubles it or worse.
    """
    if cost < 0:
        raise ValueError(f"an explanation cost is not negative, got {cost}")
    if rows < 1:
        raise ValueError(f"a batch has at least one row, got {rows}")
    per_1000 = FIXED_MS_PER_1000_ROWS + MS_PER_COST_UNIT_PER_1000_ROWS * cost
    return per_1000 * rows / CALIBRATION_ROWS


def max_cost_for(batch_ms: float = 100.0, rows: int = CALIBRATION_ROWS) -> float:
    """The largest explanation cost whose ``rows`` rows are explained within ``batch_ms``.

    The inverse of ``predicted_batch_ms``; 0.0 when even a model of no cost would miss
    the budget (the fixed part alone exceeds it).
    """
    if batch_ms <= 0:
        raise ValueError(f"a latency budget is positive, got {batch_ms} ms")
    if rows < 1:
        raise ValueError(f"a batch has at least one row, got {rows}")
    per_1000 = batch_ms * CALIBRATION_ROWS / rows
    return max(0.0, (per_1000 - FIXED_MS_PER_1000_ROWS) / MS_PER_COST_UNIT_PER_1000_ROWS)
