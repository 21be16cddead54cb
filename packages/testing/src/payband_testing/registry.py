"""Register tiny models in a real MLflow registry, as training would (model files and, when
given, the reference data for monitoring at the run's root)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pandas as pd

from payband_contracts.model import REFERENCE_FILE
from payband_testing.model import TinyModel

__all__ = ["MlflowChampion", "champion_registry", "register_tiny_model", "restored_mlflow_globals"]

MODEL_NAME = "salary-band"
_MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass(frozen=True)
class MlflowChampion:
    """A registry whose champion is a tiny model with its reference data."""

    uri: str  # tracking and registry (PostgreSQL)
    name: str
    version: str
    model: TinyModel


def register_tiny_model(
    client: Any,
    experiment_id: str,
    model: TinyModel,
    name: str,
    *,
    reference: pd.DataFrame | None = None,
) -> str:
    """Log the model folder as a run's "model" artifacts (and ``reference`` as its
    reference data), register it as a new version of ``name``; the version."""
    run = client.create_run(experiment_id, run_name=f"tiny-{model.schema.n_bands}-bands")
    run_id = run.info.run_id
    client.log_artifacts(run_id, str(model.directory), "model")
    if reference is not None:
        if find_spec("pyarrow") is None:
            raise RuntimeError("writing the reference data as Parquet needs pyarrow")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / REFERENCE_FILE
            reference.to_parquet(path, index=False)
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    version = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run_id
    )
    return str(version.version)


@contextlib.contextmanager
def restored_mlflow_globals() -> Iterator[None]:
    """Restore MLflow's global URIs and their variables, which code under test sets."""
    import mlflow

    saved = {name: os.environ.get(name) for name in _MLFLOW_URI_VARIABLES}
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def champion_registry(
    database_url: str, artifact_dir: Path, model: TinyModel
) -> Iterator[MlflowChampion]:
    """MLflow in ``database_url`` (an empty database; MLflow creates its tables): ``model``
    is version 1 of "salary-band" with the alias "champion" and 3,000 rows of reference data."""
    from mlflow.tracking import MlflowClient

    with restored_mlflow_globals():
        client = MlflowClient(tracking_uri=database_url, registry_uri=database_url)
        experiment = client.create_experiment("tiny", artifact_location=artifact_dir.as_uri())
        client.create_registered_model(MODEL_NAME)
        version = register_tiny_model(
            client, experiment, model, MODEL_NAME, reference=model.reference()
        )
        client.set_registered_model_alias(MODEL_NAME, "champion", version)
        yield MlflowChampion(uri=database_url, name=MODEL_NAME, version=version, model=model)
