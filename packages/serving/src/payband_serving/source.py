"""Where a model comes from: a local model directory or a model registered in MLflow.

A model directory holds ``booster.json`` and ``payband_model.json`` (possibly inside an
``artifacts/`` folder, as in an MLflow model). MLflow URIs are resolved to a registered
version first, so what is served is always one exact version, and then downloaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import xgboost as xgb

from payband_contracts.database import redact, sqlalchemy_url
from payband_contracts.errors import first_line
from payband_contracts.model import METADATA_FILE, ModelSchema, ModelSchemaError
from payband_contracts.tracking import tracking_problem

__all__ = [
    "ARTIFACTS_DIR",
    "MLFLOW_SCHEMES",
    "ModelSource",
    "ModelSourceError",
    "check_tracking_database",
    "is_mlflow_uri",
    "load_booster",
    "model_folder",
    "resolve",
]

# Where MLflow keeps a pyfunc model's artifacts inside the model directory.
ARTIFACTS_DIR = "artifacts"
MLFLOW_SCHEMES = ("models", "runs")
# MLflow reads artifacts kept on S3 (MinIO in production) through boto3.
_S3_SUPPORT = importlib.util.find_spec("boto3") is not None
# A PostgreSQL tracking store is reached with psycopg 3 (payband_contracts.database.sqlalchemy_url).
_POSTGRES_SUPPORT = importlib.util.find_spec("psycopg") is not None


class ModelSourceError(RuntimeError):
    """The model cannot be found, fetched or read; one readable line, passwords redacted
    (MLflow puts its request URLs into its errors)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


@dataclass(frozen=True)
class ModelSource:
    """One exact model: the local folder with its files and what the registry says of it."""

    uri: str
    folder: Path
    schema: ModelSchema
    # The registered model's name and version; None for a directory outside the registry.
    registered_name: str | None = None
    version: str | None = None
    run_id: str | None = None

    @property
    def version_uri(self) -> str:
        """The URI of exactly this version (models:/name/version when registered)."""
        if self.registered_name and self.version:
            return f"models:/{self.registered_name}/{self.version}"
        return self.uri


def is_mlflow_uri(uri: str) -> bool:
    return urlparse(uri).scheme in MLFLOW_SCHEMES


def model_folder(directory: Path) -> Path:
    """The folder holding ``payband_model.json``: ``directory`` or its ``artifacts`` folder."""
    if (directory / ARTIFACTS_DIR / METADATA_FILE).is_file():
        return directory / ARTIFACTS_DIR
    return directory


def load_booster(folder: Path, schema: ModelSchema) -> xgb.Booster:
    """The booster of a model folder, checked against its schema."""
    path = folder / schema.booster_file
    if not path.is_file():
        raise ModelSourceError(f"{path} does not exist: the model has no booster")
    try:
        booster = xgb.Booster(model_file=str(path))
    except xgb.core.XGBoostError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise ModelSourceError(f"{path} is not an XGBoost model: {reason}") from None
    learner = json.loads(booster.save_config())["learner"]
    try:
        schema.check_booster_info(
            booster.feature_names or (),
            booster.feature_types or (),
            int(learner["learner_model_param"]["num_class"]),
            learner["objective"]["name"],
        )
    except ModelSchemaError as exc:
        raise ModelSourceError(f"{folder}: {exc}") from None
    return booster


def _read_schema(folder: Path) -> ModelSchema:
    try:
        return ModelSchema.read(folder / METADATA_FILE)
    except ModelSchemaError as exc:
        raise ModelSourceError(str(exc)) from None


def _local(uri: str) -> ModelSource:
    parsed = urlparse(uri)
    directory = Path(parsed.path if parsed.scheme == "file" else uri).expanduser()
    if not directory.is_dir():
        raise ModelSourceError(f"model directory {directory} does not exist")
    folder = model_folder(directory)
    return ModelSource(uri=uri, folder=folder, schema=_read_schema(folder))


def check_tracking_database(uri: str) -> None:
    """Fail fast, in one line, on an unreachable tracking database or server.

    MLflow itself retries an unreachable database for about 100 s, a server for minutes.
    """
    if not _POSTGRES_SUPPORT and uri.startswith("postgresql+psycopg://"):
        raise ModelSourceError("the tracking store is PostgreSQL, which needs psycopg installed")
    if problem := tracking_problem(uri):
        raise ModelSourceError(problem)


def _import_mlflow() -> None:
    with warnings.catch_warnings():
        # Importing MLflow's model code infers schemas from its own Any-typed hints and says
        # so; MLflow mutes it by patching showwarning, which "error" filters ignore.
        warnings.filterwarnings(
            "ignore", message=".*Any type hint is inferred as AnyType", category=UserWarning
        )
        importlib.import_module("mlflow.pyfunc")


def _reference(uri: str) -> tuple[str, str, str]:
    """(kind, name, alias or version) of a models:/ URI, or ("run", run id, "") of runs:/.

    Checked before MLflow is contacted, so a malformed URI fails at once.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "runs":
        run_id = (parsed.netloc or parsed.path.strip("/")).split("/")[0]
        if not run_id:
            raise ModelSourceError(f"{uri} names no run: use runs:/<run id>/<path>")
        return "run", run_id, ""
    reference = (parsed.netloc + parsed.path).strip("/")
    if "@" in reference:
        name, alias = reference.split("@", 1)
        if name and alias:
            return "alias", name, alias
    elif "/" in reference:
        name, version = reference.rsplit("/", 1)
        if name and version:
            return "version", name, version
    raise ModelSourceError(
        f"{uri} names no version: use models:/<name>@<alias> or models:/<name>/<version>"
    )


def _registered(uri: str, client: object) -> tuple[str, str, str | None, str]:
    """(name, version, run id, download URI) of a models:/ URI; runs:/ URIs have no name."""
    from mlflow.exceptions import MlflowException

    kind, name, which = _reference(uri)
    if kind == "run":
        return "", "", name, uri
    try:
        if kind == "alias":
            found = client.get_model_version_by_alias(name, which)  # type: ignore[attr-defined]
        else:
            found = client.get_model_version(name, which)  # type: ignore[attr-defined]
    except MlflowException as exc:
        reason = first_line(exc)
        raise ModelSourceError(f"cannot resolve {uri}: {reason}") from None
    return found.name, str(found.version), found.run_id, f"models:/{found.name}/{found.version}"


def resolve(uri: str, *, tracking_uri: str, download_dir: Path) -> ModelSource:
    """The exact model behind ``uri``; MLflow models are downloaded under ``download_dir``."""
    if not is_mlflow_uri(uri):
        return _local(uri)
    _reference(uri)
    tracking = sqlalchemy_url(tracking_uri)
    check_tracking_database(tracking)
    # MLflow is heavy: imported only for MLflow URIs, and after its warning is muted.
    _import_mlflow()
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    name, version, run_id, download_uri = _registered(uri, MlflowClient())
    target = download_dir / (f"{name}-{version}" if name else (run_id or "model"))
    target.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=download_uri, dst_path=str(target))
    except (MlflowException, OSError) as exc:
        reason = first_line(exc)
        if not _S3_SUPPORT and "boto3" in reason:
            reason = "the artifacts are on S3, which needs boto3 installed"
        raise ModelSourceError(f"cannot download {download_uri}: {reason}") from None
    folder = model_folder(Path(local))
    return ModelSource(
        uri=uri,
        folder=folder,
        schema=_read_schema(folder),
        registered_name=name or None,
        version=version or None,
        run_id=run_id,
    )
