"""Synthetic features snapshots shared by the training tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pytest

from payband_contracts import FEATURE_CATALOGUE, SalaryBands

RAW_URI = "local://raw/adult@" + "0" * 64


def _synthetic_snapshot(
    rows: int = 600,
    *,
    edges: tuple[int, ...] = (50_000,),
    seed: int = 7,
    shares: Sequence[float] | None = None,
    leave_out: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Raw features-snapshot rows; the band rises with education and hours, and men earn more.

    ``shares`` are the bands' shares of the rows (equal by default); ``leave_out`` maps a
    categorical feature to one catalogue level that no row takes.
    """
    rng = np.random.default_rng(seed)
    skipped = leave_out or {}
    columns: dict[str, np.ndarray] = {}
    for spec in FEATURE_CATALOGUE.features:
        name = str(spec.name)
        if spec.kind == "integer":
            columns[name] = rng.integers(17, 80, rows)
        else:
            columns[name] = rng.choice([v for v in spec.values if v != skipped.get(name)], rows)
    levels = FEATURE_CATALOGUE["education"].values
    rank = pd.Series(columns["education"]).map({value: i for i, value in enumerate(levels)})
    score = (
        rank.to_numpy()
        + (columns["hours_per_week"] - 40) / 10
        + 1.5 * (columns["sex"] == "male")
        + rng.normal(0, 1, rows)
    )
    n_bands = len(edges) + 1
    cuts = np.cumsum(shares)[:-1] if shares else np.linspace(0, 1, n_bands + 1)[1:-1]
    band = np.digitize(score, np.quantile(score, cuts))
    labels = np.asarray(SalaryBands(edges_usd=edges).labels, dtype=object)
    return pd.DataFrame(
        {
            "record_id": [f"adult-{i:05d}" for i in range(rows)],
            "source": "adult",
            **columns,
            "band": band,
            "band_label": labels[band],
            "dataset_uri": RAW_URI,
        }
    )


@pytest.fixture
def synthetic_snapshot() -> Callable[..., pd.DataFrame]:
    """Make rows shaped like a features.parquet: ``synthetic_snapshot(rows, *, edges, seed)``."""
    return _synthetic_snapshot
