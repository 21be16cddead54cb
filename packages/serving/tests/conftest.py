"""Fixtures shared by the serving tests: a real MLflow registry holding the tiny models."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from payband_local.postgres import PostgresConnectionInfo
from payband_testing.model import TinyModel
from payband_testing.registry import register_tiny_model, restored_mlflow_globals

MODEL_NAME = "salary-band"
CHAMPION = "champion"


@dataclass(frozen=True)
class MlflowRegistry:
    """Where the registry is, and what it holds: {version: the model registered as it}."""

    tracking_uri: str
    artifact_root: Path
    name: str
    versions: dict[str, TinyModel]

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.name}@{CHAMPION}"


@pytest.fixture(scope="module")
def mlflow_registry(
    postgres_module_database: PostgresConnectionInfo,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model: TinyModel,
    tiny_model_three_bands: TinyModel,
) -> Iterator[MlflowRegistry]:
    """MLflow tracking and registry in a fresh PostgreSQL database (MLflow creates its tables).

    "salary-band" version 1 is ``tiny_model`` with the alias "champion"; version 2 is
    ``tiny_model_three_bands`` without an alias. MLflow's global URIs (and their variables),
    which the code under test sets, are restored afterwards.
    """
    artifact_root = tmp_path_factory.mktemp("mlflow-artifacts")
    uri = postgres_module_database.url
    with restored_mlflow_globals():
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment_id = client.create_experiment(
            "serving", artifact_location=artifact_root.as_uri()
        )
        client.create_registered_model(MODEL_NAME)
        champion = register_tiny_model(client, experiment_id, tiny_model, MODEL_NAME)
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, champion)
        challenger = register_tiny_model(client, experiment_id, tiny_model_three_bands, MODEL_NAME)
        yield MlflowRegistry(
            tracking_uri=uri,
            artifact_root=artifact_root,
            name=MODEL_NAME,
            versions={champion: tiny_model, challenger: tiny_model_three_bands},
        )
