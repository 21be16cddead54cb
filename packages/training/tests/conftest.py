"""Synthetic features snapshots and a real MLflow registry, shared by the training tests."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from payband_contracts import FEATURE_CATALOGUE, SalaryBands
from payband_local.postgres import PostgresConnectionInfo
from payband_training.card import CARD_PATH_TAG, write_card
from payband_training.registry import Registration, record_card, register
from payband_training.settings import TrainingSettings

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


class LowestBand(mlflow.pyfunc.PythonModel):
    """Predicts band 0 for every row."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> list[int]:
        return [0] * len(model_input)


@dataclass(frozen=True)
class Trained:
    registration: Registration
    model_id: str
    run_id: str


@dataclass(frozen=True)
class Store:
    """MLflow tracking and registry in one database; tiny stand-in models to register in it.

    The models are stand-ins: what matters to these tests is the registry, not predictions.
    """

    settings: TrainingSettings
    client: MlflowClient
    experiment_id: str

    def log_model(self, metrics: dict[str, float]) -> tuple[str, str]:
        """A run with these metrics and a logged stand-in model: (model URI, run id)."""
        with mlflow.start_run(experiment_id=self.experiment_id) as run:
            mlflow.log_metrics(metrics)
            # Explicit requirements: inferring them exports the uv project, slow and irrelevant.
            info = mlflow.pyfunc.log_model(
                name="model", python_model=LowestBand(), pip_requirements=["mlflow"]
            )
        return info.model_uri, run.info.run_id

    def register(self, metrics: dict[str, float]) -> Trained:
        """Log a model in a new run and register it through this store's client."""
        model_uri, run_id = self.log_model(metrics)
        registration = register(model_uri, run_id, metrics, self.settings, client=self.client)
        return Trained(registration, model_uri.removeprefix("models:/"), run_id)

    def log_card(self, version: str, text: str) -> str:
        """Write ``text`` as the version's card, as registration does; its path."""
        found = self.client.get_model_version(self.settings.model_name, version)
        return write_card(self.client, found, text)

    def record_card(self, trained: Trained, text: str) -> str:
        """Record ``text`` as the card of the trained version, as registration does; its path."""
        return record_card(
            trained.registration, trained.run_id, text, self.settings, client=self.client
        )

    def artifact(self, run_id: str, path: str) -> bytes:
        """An artifact of the run, byte for byte."""
        with tempfile.TemporaryDirectory() as directory:
            return Path(self.client.download_artifacts(run_id, path, directory)).read_bytes()

    def card_files(self, run_id: str) -> list[str]:
        """The cards recorded for versions of the run (``model_cards/``), sorted."""
        return sorted(item.path for item in self.client.list_artifacts(run_id, "model_cards"))

    def card(self, version: str) -> str:
        """The version's current model card: the file its ``model_card.path`` tag names."""
        found = self.client.get_model_version(self.settings.model_name, version)
        return self.artifact(found.run_id, found.tags[CARD_PATH_TAG]).decode("utf-8")

    def alias_version(self) -> str:
        registered = self.client.get_registered_model(self.settings.model_name)
        return str(registered.aliases[self.settings.champion_alias])

    def version_tags(self, version: str) -> dict[str, str]:
        return self.client.get_model_version(self.settings.model_name, version).tags


@pytest.fixture
def store(
    postgres_database: PostgresConnectionInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """MLflow tracking and registry in a fresh database, artifacts under tmp_path."""
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; monkeypatch restores the variable.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(postgres_database.url)
    try:
        experiment_id = mlflow.create_experiment(
            "registry-test", artifact_location=(tmp_path / "artifacts").as_uri()
        )
        settings = TrainingSettings(
            mlflow_tracking_uri=postgres_database.url,
            mlflow_artifact_root=(tmp_path / "artifacts").as_uri(),
            min_roc_auc=0.8,
            min_disparate_impact=0.8,
            champion_tolerance=0.01,
        )
        yield Store(settings, MlflowClient(postgres_database.url), experiment_id)
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
