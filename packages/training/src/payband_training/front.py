"""The search's evidence: every trial as a table, and the Pareto front of accuracy and fairness.

Logged with the training run under ``search/``: ``trials.csv`` (one row per completed trial:
cross-validated ROC AUC, accuracy, balanced accuracy, disparate impact per attribute, equal-
opportunity difference per attribute, explanation cost, method, strength, decision rule,
whether it met every gate and whether it is on the front) and ``pareto.png`` (ROC AUC against
the worst disparate impact, the fairness gate as a line, the front and the chosen trial marked).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pandas as pd

from payband_training.search import SearchResult

__all__ = ["FRONT_DIR", "PLOT_FILE", "TRIALS_FILE", "trials_table", "write_front_plot"]

FRONT_DIR = "search"
TRIALS_FILE = "trials.csv"
PLOT_FILE = "pareto.png"


def trials_table(result: SearchResult, n_bands: int) -> pd.DataFrame:
    """One row per completed trial, in trial order."""
    rows = []
    for trial in result.trials:
        row: dict[str, object] = {
            "trial": trial.number,
            "chosen": trial.number == result.chosen.number,
            "feasible": trial.feasible,
            "pareto": trial.pareto,
            "cv_roc_auc": trial.roc_auc,
            "cv_accuracy": trial.accuracy,
            "cv_balanced_accuracy": trial.balanced_accuracy,
            "cv_worst_disparate_impact": trial.worst_disparate_impact,
            "worst_fold_disparate_impact": trial.worst_fold_disparate_impact,
        }
        for attribute, value in trial.disparate_impact.items():
            row[f"cv_disparate_impact_{attribute}"] = value
        for attribute, value in trial.equal_opportunity_difference.items():
            row[f"cv_equal_opportunity_difference_{attribute}"] = value
        row["explanation_cost"] = trial.explanation_cost
        row |= trial.config.flat(n_bands)
        rows.append(row)
    return pd.DataFrame(rows)


def write_front_plot(result: SearchResult, path: Path, *, min_disparate_impact: float) -> Path:
    """ROC AUC against the worst disparate impact of every trial, the gate and the choice."""
    # Headless: the figure only ever goes to a file.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    try:
        methods = sorted({trial.config.mitigation.method for trial in result.trials})
        for method in methods:
            trials = [t for t in result.trials if t.config.mitigation.method == method]
            axes.scatter(
                [t.worst_disparate_impact for t in trials],
                [t.roc_auc for t in trials],
                label=method,
                alpha=0.7,
            )
        front = sorted(result.front, key=lambda t: t.worst_disparate_impact)
        axes.plot(
            [t.worst_disparate_impact for t in front],
            [t.roc_auc for t in front],
            color="black",
            linewidth=1,
            label="Pareto front",
        )
        axes.axvline(
            min_disparate_impact,
            color="red",
            linestyle="--",
            label=f"fairness gate ({min_disparate_impact:.2f})",
        )
        chosen = result.chosen
        if math.isfinite(chosen.roc_auc) and math.isfinite(chosen.worst_disparate_impact):
            axes.scatter(
                [chosen.worst_disparate_impact],
                [chosen.roc_auc],
                marker="*",
                s=300,
                color="gold",
                edgecolors="black",
                label=f"chosen (trial {chosen.number})",
                zorder=3,
            )
        axes.set_xlabel("worst disparate impact over sex and race (cross-validated)")
        axes.set_ylabel("ROC AUC (cross-validated)")
        axes.set_title(f"{len(result.trials)} trials, {len(front)} on the front")
        axes.legend(loc="lower left", fontsize="small")
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path
