"""What several benchmarks build: the Adult model with fixed parameters, its size, and a
durable, migrated audit database."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from _report import Row, timed  # benchmarks/ is the script's directory

from payband_audit.migrate import upgrade
from payband_contracts.catalogue import FEATURE_CATALOGUE
from payband_contracts.model import ModelSchema
from payband_local.postgres import EmbeddedPostgres, PostgresConnectionInfo

BACKGROUND_ROWS = 100
ADULT_EDGES = (50_000,)
# The middle of payband_training.search.suggest_params's space (log-scale middles rounded).
MIDDLE_PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "max_depth": 6,
    "learning_rate": 0.1,
    "min_child_weight": 3.0,
    "subsample": 0.8,
    "colsample_bytree": 0.75,
    "reg_lambda": 0.1,
    "max_cat_to_onehot": 6,
}


@dataclass(frozen=True)
class Candidates:
    """Raw candidate rows (category names, integers) in the model's feature order."""

    held_out: pd.DataFrame  # rows the model never saw
    background: pd.DataFrame  # shap's background
    origin: str
    background_origin: str  # "training" or "synthetic"
    # The held-out rows with every catalogue feature (a canonical candidate each), if known.
    people: pd.DataFrame | None = None


@dataclass(frozen=True)
class ModelSize:
    trees: int
    mean_leaves: float
    max_depth: int
    mean_leaf_depth: float


def raw_rows(frame: pd.DataFrame, schema: ModelSchema) -> pd.DataFrame:
    """The model's columns as a client sends them: category names and Python-style ints."""
    return pd.DataFrame(
        {
            name: frame[name].to_numpy(dtype=object)
            if name in schema.category_levels
            else frame[name].to_numpy(dtype=np.int64)
            for name in schema.features
        }
    )


def catalogue_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Every catalogue feature of typed rows as a client sends them (see raw_rows)."""
    return pd.DataFrame(
        {
            str(spec.name): frame[str(spec.name)].to_numpy(dtype=np.int64)
            if spec.kind == "integer"
            else frame[str(spec.name)].to_numpy(dtype=object)
            for spec in FEATURE_CATALOGUE.features
        }
    )


def adult_model(folder: Path, params: dict[str, Any]) -> tuple[Candidates, list[Row]]:
    """Adult snapshot -> committed split -> one fit with fixed parameters -> model folder."""
    # Imported here: they take seconds to import, and not every benchmark trains.
    from payband_contracts.model import DecisionRule
    from payband_data import steps
    from payband_data.settings import DataSettings
    from payband_training.features import read_features
    from payband_training.mitigation import Mitigation
    from payband_training.model import write_bundle
    from payband_training.pipeline import split_features
    from payband_training.search import TrialConfig, fit_final
    from payband_training.settings import TrainingSettings

    home = Path(os.environ["PAYBAND_HOME"])
    settings = TrainingSettings()
    with EmbeddedPostgres(durable=True) as server:
        data = DataSettings(
            database_url=server.create_database("payband").url,
            store_dir=home / "store",
            dbt_work_dir=home / "dbt",
            pums_cache_dir=home / "cache" / "pums",
        )
        started = time.perf_counter()
        version = steps.ingest("adult", data)
        loaded = steps.load(version.uri, data)
        steps.build("adult", ADULT_EDGES, data)
        snapshot = steps.snapshot("adult", ADULT_EDGES, data)
        training = split_features(read_features(snapshot.uri, data), settings, data)
        prep_s = time.perf_counter() - started
    use_protected = settings.use_protected_attributes
    # No mitigation and the plain most-probable band: a fixed model, not a search's choice.
    config = TrialConfig(dict(params), Mitigation("none", 0.0), DecisionRule())
    booster, fit_s = timed(
        lambda: fit_final(
            training.train,
            config,
            use_protected=use_protected,
            n_bands=training.n_bands,
            seed=settings.seed,
        )
    )
    # As payband_training.pipeline.fit_and_record describes a model.
    metadata = training.train_version.metadata
    schema = ModelSchema.create(
        use_protected=use_protected,
        band_edges_usd=json.loads(metadata["band_edges_usd"]),
        features_uri=training.features_uri,
        train_uri=training.train_version.uri,
        test_uri=training.test_version.uri,
        source=training.source,
        year=metadata.get("year", ""),
        states=[state for state in metadata.get("states", "").split(",") if state],
    )
    write_bundle(booster, schema, folder)
    background = training.train.sample(n=BACKGROUND_ROWS, random_state=settings.seed)
    candidates = Candidates(
        held_out=raw_rows(training.test, schema),
        background=raw_rows(background, schema),
        origin=f"Adult, edge 50,000 USD: {len(training.train):,} train rows, "
        f"{len(training.test):,} held-out",
        background_origin="training",
        people=catalogue_rows(training.test),
    )
    shown = ", ".join(f"{key} {value}" for key, value in params.items())
    return candidates, [
        Row(f"data prep: adult snapshot ({loaded:,} rows) + split", f"{prep_s:.1f} s"),
        Row("model: fixed parameters", shown),
        Row("model: final fit", f"{fit_s:.1f} s"),
    ]


def model_size(booster: xgb.Booster) -> ModelSize:
    leaves: list[int] = []
    depths: list[int] = []
    for dump in booster.get_dump(dump_format="json"):
        pending = [(json.loads(dump), 0)]
        count = 0
        while pending:
            node, depth = pending.pop()
            if "leaf" in node:
                count += 1
                depths.append(depth)
            else:
                pending += [(child, depth + 1) for child in node["children"]]
        leaves.append(count)
    return ModelSize(
        trees=len(leaves),
        mean_leaves=float(np.mean(leaves)),
        max_depth=max(depths),
        mean_leaf_depth=float(np.mean(depths)),
    )


@contextlib.contextmanager
def durable_audit_database(
    name: str,
) -> Iterator[tuple[EmbeddedPostgres, PostgresConnectionInfo]]:
    """An embedded PostgreSQL with fsync on (commits are durable) and one database in it,
    migrated to the latest audit schema; stopped and removed on exit."""
    with EmbeddedPostgres(durable=True) as server:
        info = server.create_database(name)
        upgrade(info.url)
        yield server, info
