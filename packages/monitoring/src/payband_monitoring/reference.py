"""The model under watch and its reference data, from the MLflow registry.

The champion alias (or a pinned version) names a registry version; its run holds the
reference data training logged (``payband_contracts.model.REFERENCE_FILE``) and its model
artifacts hold ``payband_model.json``, which says which bands the model predicts.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pandas as pd

from payband_contracts import FEATURE_CATALOGUE
from payband_contracts.database import sqlalchemy_url
from payband_contracts.errors import first_line
from payband_contracts.model import (
    METADATA_FILE,
    REFERENCE_FILE,
    REFERENCE_PREDICTION,
    REFERENCE_TRUTH,
    ModelSchema,
    ModelSchemaError,
)
from payband_contracts.tracking import tracking_problem
from payband_monitoring.errors import MonitoringConfigError, MonitoringUnavailable
from payband_monitoring.settings import MonitoringSettings

__all__ = ["WatchedModel", "load_reference", "resolve_model"]

FEATURES = [str(spec.name) for spec in FEATURE_CATALOGUE.features]
# MLflow reads artifacts kept on S3 (MinIO in production) through boto3.
_S3_SUPPORT = find_spec("boto3") is not None
NO_S3_SUPPORT = "the artifacts are on S3, which needs boto3 installed"


@dataclass(frozen=True)
class WatchedModel:
    """A registry version of the model and what monitoring needs of it."""

    name: str
    version: str
    run_id: str
    schema: ModelSchema
    reference: pd.DataFrame  # the reference format, checked


def _client(settings: MonitoringSettings) -> object:
    with warnings.catch_warnings():
        # Importing MLflow's model code infers schemas from its own Any-typed hints and says so.
        warnings.filterwarnings(
            "ignore", message=".*Any type hint is inferred as AnyType", category=UserWarning
        )
        from mlflow.tracking import MlflowClient

    uri = sqlalchemy_url(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def resolve_model(settings: MonitoringSettings) -> tuple[str, str, str]:
    """(name, version, run id) of the pinned version, else of the champion alias."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    if problem := tracking_problem(settings.mlflow_tracking_uri):
        raise MonitoringUnavailable(problem)
    name = settings.model_name
    try:
        client = _client(settings)
        if settings.model_version:
            found = client.get_model_version(name, settings.model_version)  # type: ignore[attr-defined]
        else:
            found = client.get_model_version_by_alias(name, settings.champion_alias)  # type: ignore[attr-defined]
    except MlflowException as error:
        which = settings.model_version or f"alias {settings.champion_alias!r}"
        reason = first_line(error)
        if "Connection refused" in reason or "could not connect" in reason.lower():
            raise MonitoringUnavailable(f"cannot reach the MLflow registry: {reason}") from None
        raise MonitoringConfigError(f"cannot resolve model {name!r} {which}: {reason}") from None
    except SQLAlchemyError as error:
        reason = first_line(error)
        raise MonitoringUnavailable(f"cannot reach the MLflow registry: {reason}") from None
    if not found.run_id:
        raise MonitoringConfigError(f"model {name!r} version {found.version} has no run")
    return found.name, str(found.version), found.run_id


def _download(client: object, uri: str, target: Path) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    except ImportError as error:
        if error.name == "boto3" or not _S3_SUPPORT:
            raise MonitoringConfigError(f"cannot download {uri}: {NO_S3_SUPPORT}") from None
        raise
    except (MlflowException, OSError) as error:
        reason = first_line(error)
        if not _S3_SUPPORT and "boto3" in reason:
            raise MonitoringConfigError(f"cannot download {uri}: {NO_S3_SUPPORT}") from None
        raise MonitoringUnavailable(f"cannot download {uri}: {reason}") from None


def check_reference(reference: pd.DataFrame, schema: ModelSchema) -> pd.DataFrame:
    """The reference data if it has the contract's columns and its predicted bands are the
    model's decision rule's; MonitoringConfigError saying what is wrong otherwise."""
    needed = [*FEATURES, REFERENCE_TRUTH, REFERENCE_PREDICTION, *schema.band_labels]
    if missing := [name for name in needed if name not in reference.columns]:
        raise MonitoringConfigError(
            f"the reference data lacks columns {', '.join(missing)}; "
            "was the model trained by payband-training?"
        )
    if reference.empty:
        raise MonitoringConfigError("the reference data has no rows")
    # Thresholds and the reference's fairness are judged on these bands: they must be the
    # bands served, not, say, the most probable band of a model with a cut-off.
    probabilities = reference[list(schema.band_labels)].to_numpy(dtype="float64")
    predicted = reference[REFERENCE_PREDICTION].to_numpy()
    if differ := int((schema.bands(probabilities) != predicted).sum()):
        raise MonitoringConfigError(
            f"the reference data's {REFERENCE_PREDICTION} differs from the model's decision "
            f"rule ({schema.decision.describe(schema.band_labels)}) in {differ} of "
            f"{len(reference)} rows; was it written by payband-training?"
        )
    return reference


def load_reference(
    settings: MonitoringSettings, name: str, version: str, run_id: str
) -> WatchedModel:
    """The schema and reference data of a registry version (``resolve_model``'s answer)."""
    import mlflow

    client = _client(settings)
    uri = sqlalchemy_url(settings.mlflow_tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    settings.download_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.download_dir) as tmp:
        model_dir = _download(client, f"models:/{name}/{version}", Path(tmp) / "model")
        found = sorted(model_dir.rglob(METADATA_FILE))
        if not found:
            raise MonitoringConfigError(
                f"model {name!r} version {version} has no {METADATA_FILE} in its artifacts"
            )
        try:
            schema = ModelSchema.read(found[0])
        except ModelSchemaError as error:
            raise MonitoringConfigError(f"model {name!r} version {version}: {error}") from None
        reference_file = _download(client, f"runs:/{run_id}/{REFERENCE_FILE}", Path(tmp) / "ref")
        if find_spec("pyarrow") is None:
            raise MonitoringConfigError("reading the reference data (Parquet) needs pyarrow")
        try:
            reference = pd.read_parquet(reference_file)
        except (OSError, ValueError) as error:
            raise MonitoringConfigError(
                f"cannot read the reference data of run {run_id}: {first_line(error)}"
            ) from None
    return WatchedModel(
        name=name,
        version=version,
        run_id=run_id,
        schema=schema,
        reference=check_reference(reference, schema),
    )
