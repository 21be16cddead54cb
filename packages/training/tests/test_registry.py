"""The gated registry against a real MLflow on the embedded PostgreSQL.

The models are tiny stand-ins: what matters here is the registry, not what the model predicts.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow import MlflowClient

from payband_testing.postgres import PostgresConnectionInfo
from payband_training.evaluate import FAIRNESS_SUMMARIES, QUALITY_METRICS, fairness_metric_name
from payband_training.gates import DECISION_TAG, REASONS_TAG
from payband_training.registry import (
    CHAMPION_TAG,
    MODEL_DESCRIPTION,
    MODEL_ID_TAG,
    NO_CHAMPION,
    Registration,
    RegistryError,
    champion,
    register,
)
from payband_training.settings import TrainingSettings

ROC_AUC = "roc_auc"
SEX_DI = fairness_metric_name("sex", "disparate_impact")
RACE_DI = fairness_metric_name("race", "disparate_impact")


class LowestBand(mlflow.pyfunc.PythonModel):
    """Predicts band 0 for every row."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> list[int]:
        return [0] * len(model_input)


@dataclass(frozen=True)
class Store:
    settings: TrainingSettings
    client: MlflowClient
    experiment_id: str


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


def candidate_metrics(
    roc_auc: float, sex_di: float = 0.9, race_di: float = 0.9
) -> dict[str, float]:
    """A full set of evaluate's flat metric names with the gated ones set as asked."""
    metrics = dict.fromkeys(QUALITY_METRICS, 0.5)
    for attribute in ("sex", "race"):
        for summary in FAIRNESS_SUMMARIES:
            metrics[fairness_metric_name(attribute, summary)] = 0.05
    return {**metrics, ROC_AUC: roc_auc, SEX_DI: sex_di, RACE_DI: race_di}


def log_model(store: Store, metrics: dict[str, float]) -> tuple[str, str]:
    """A run with these metrics and a logged stand-in model: (model URI, run id)."""
    with mlflow.start_run(experiment_id=store.experiment_id) as run:
        mlflow.log_metrics(metrics)
        # Explicit requirements: inferring them exports the uv project, slow and beside the point.
        info = mlflow.pyfunc.log_model(
            name="model", python_model=LowestBand(), pip_requirements=["mlflow"]
        )
    return info.model_uri, run.info.run_id


@dataclass(frozen=True)
class Trained:
    registration: Registration
    model_id: str
    run_id: str


def train_and_register(store: Store, metrics: dict[str, float]) -> Trained:
    """Log a model in a new run and register it through the test's client."""
    model_uri, run_id = log_model(store, metrics)
    registration = register(model_uri, run_id, metrics, store.settings, client=store.client)
    return Trained(registration, model_uri.removeprefix("models:/"), run_id)


def alias_version(store: Store) -> str:
    registered = store.client.get_registered_model(store.settings.model_name)
    return str(registered.aliases[store.settings.champion_alias])


def version_tags(store: Store, version: str) -> dict[str, str]:
    return store.client.get_model_version(store.settings.model_name, version).tags


def test_the_champion_alias_moves_only_when_every_gate_passes(store: Store) -> None:
    name = store.settings.model_name
    assert champion(store.settings) is None

    trained = train_and_register(store, candidate_metrics(0.90))
    first = trained.registration
    assert (first.name, first.version, first.promoted, first.previous_champion) == (
        name,
        "1",
        True,
        None,
    )
    assert store.client.get_registered_model(name).description == MODEL_DESCRIPTION
    assert alias_version(store) == "1"
    assert version_tags(store, "1") == {
        DECISION_TAG: "promoted",
        REASONS_TAG: "; ".join(first.decision.reasons),
        CHAMPION_TAG: NO_CHAMPION,
        MODEL_ID_TAG: trained.model_id,
    }
    assert "no champion to compare with" in first.decision.reasons

    # Worse than the champion (read from version 1's run) by more than the tolerance.
    worse = train_and_register(store, candidate_metrics(0.85)).registration
    assert (worse.version, worse.promoted, worse.previous_champion) == ("2", False, "1")
    tags = version_tags(store, "2")
    assert tags[DECISION_TAG] == "rejected"
    assert tags[CHAMPION_TAG] == "1"
    assert (
        "roc_auc 0.850 is 0.050 below champion 0.900, more than tolerance 0.010"
        in tags[REASONS_TAG]
    )
    assert alias_version(store) == "1"

    # Better AUC, but fails the fairness gate.
    unfair = train_and_register(store, candidate_metrics(0.95, sex_di=0.5)).registration
    assert (unfair.version, unfair.promoted) == ("3", False)
    tags = version_tags(store, "3")
    assert tags[DECISION_TAG] == "rejected"
    assert "sex disparate impact 0.500 < 0.800" in tags[REASONS_TAG]
    assert "roc_auc 0.950 >= champion 0.900" in tags[REASONS_TAG]
    assert alias_version(store) == "1"

    # Slightly below the champion, within the tolerance.
    trained = train_and_register(store, candidate_metrics(0.895))
    close = trained.registration
    assert (close.version, close.promoted, close.previous_champion) == ("4", True, "1")
    tags = version_tags(store, "4")
    assert tags[DECISION_TAG] == "promoted"
    assert tags[CHAMPION_TAG] == "1"
    assert "within tolerance 0.010" in tags[REASONS_TAG]
    assert alias_version(store) == "4"

    current = champion(store.settings)
    assert current is not None
    assert (str(current.version), current.run_id) == ("4", trained.run_id)
    versions = store.client.search_model_versions(f"name = '{name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]


def test_the_version_points_at_the_logged_model(store: Store) -> None:
    metrics = candidate_metrics(0.9)
    model_uri, run_id = log_model(store, metrics)
    model_id = model_uri.removeprefix("models:/")

    registration = register(model_uri, run_id, metrics, store.settings)

    version = store.client.get_model_version(registration.name, registration.version)
    assert (version.run_id, version.tags[MODEL_ID_TAG]) == (run_id, model_id)
    assert version.source == store.client.get_logged_model(model_id).artifact_location
    link = store.client.get_logged_model(model_id).tags["mlflow.modelVersions"]
    assert json.loads(link) == [{"name": registration.name, "version": "1"}]
    loaded = mlflow.pyfunc.load_model(f"models:/{registration.name}@champion")
    assert list(loaded.predict(pd.DataFrame({"age": [30, 40]}))) == [0, 0]


def test_a_runs_uri_names_the_model_the_run_logged(store: Store) -> None:
    metrics = candidate_metrics(0.9)
    model_uri, run_id = log_model(store, metrics)

    registration = register(f"runs:/{run_id}/model", run_id, metrics, store.settings)

    version = store.client.get_model_version(registration.name, registration.version)
    assert version.tags[MODEL_ID_TAG] == model_uri.removeprefix("models:/")
    with pytest.raises(RegistryError, match=r"run \w+ logged no model 'other'"):
        register(f"runs:/{run_id}/other", run_id, metrics, store.settings)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/m-00000000000000000000000000000000", "unknown model URI .*no such logged model"),
        ("runs:/0123456789abcdef0123456789abcdef/model", "belongs to run"),
        ("models:/salary-band/1", "unsupported model URI"),
        ("file:///tmp/model", "unsupported model URI"),
    ],
)
def test_a_model_uri_that_names_no_logged_model_is_refused(
    store: Store, uri: str, message: str
) -> None:
    _, run_id = log_model(store, candidate_metrics(0.9))

    with pytest.raises(RegistryError, match=message) as raised:
        register(uri, run_id, candidate_metrics(0.9), store.settings)

    assert "\n" not in str(raised.value)
    assert store.client.search_registered_models() == []


def test_a_model_logged_by_another_run_is_refused(store: Store) -> None:
    model_uri, run_id = log_model(store, candidate_metrics(0.9))
    _, other_run_id = log_model(store, candidate_metrics(0.9))

    with pytest.raises(RegistryError, match=f"logged by run {run_id}, not {other_run_id}"):
        register(model_uri, other_run_id, candidate_metrics(0.9), store.settings)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_tracking_store_fails_fast_in_one_line() -> None:
    url = f"postgresql+psycopg://mlflow:secret@127.0.0.1:{closed_port()}/mlflow"
    settings = TrainingSettings(mlflow_tracking_uri=url)
    started = time.monotonic()

    with pytest.raises(RegistryError, match=r"cannot reach the MLflow database .*127\.0\.0\.1"):
        register("models:/m-0", "run", candidate_metrics(0.9), settings)
    with pytest.raises(RegistryError, match="cannot reach the MLflow database") as raised:
        champion(settings)

    # MLflow alone would retry for about 100 s before failing.
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert "\n" not in message
    assert "secret" not in message
