"""Register tiny models in a real MLflow registry, as training would (model files and, when
given, the reference data for monitoring at the run's root)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from payband_contracts.model import REFERENCE_FILE
from payband_testing.model import TinyModel

__all__ = ["register_tiny_model"]


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
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / REFERENCE_FILE
            reference.to_parquet(path, index=False)
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    version = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run_id
    )
    return str(version.version)
