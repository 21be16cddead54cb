"""The gated model registry: every trained model becomes a version, only a good one champion.

Each call to `register` adds a version of `settings.model_name`, decides with
`gates.decide` against the current champion's run metrics, writes the decision and its
reasons as tags on the new version and moves the `settings.champion_alias` alias to it
only when every gate passed. Registrations are not serialised: two running at once may
both compare with the same champion, and the later alias move wins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import sqlalchemy
from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS
from sqlalchemy.exc import SQLAlchemyError

from payband_training import gates
from payband_training.gates import GateDecision
from payband_training.search import storage_url
from payband_training.settings import TrainingSettings
from payband_training.tracking import check_database

CHAMPION_TAG = "gate.champion_version"
NO_CHAMPION = "none"
# MLflow's SQL registry keeps no model id on a version whose source is an artifact location.
MODEL_ID_TAG = "logged_model_id"
MODEL_DESCRIPTION = (
    "Salary-band classifiers trained by payband_training. Every trained model is a version; "
    "the champion alias marks the version that passed the quality, fairness and "
    "no-regression gates (see each version's gate.* tags)."
)
# MLflow retries an unreachable database for about 100 s before failing; probe it once instead.
_NOT_FOUND = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)
_ALREADY_EXISTS = ErrorCode.Name(RESOURCE_ALREADY_EXISTS)


class RegistryError(Exception):
    """The registry cannot be reached, or the model to register cannot be found."""


@dataclass(frozen=True)
class Registration:
    """The version a trained model became and whether it is now the champion."""

    name: str
    version: str
    promoted: bool
    decision: GateDecision
    previous_champion: str | None


def register(
    model_uri: str,
    run_id: str,
    metrics: Mapping[str, float],
    settings: TrainingSettings,
    *,
    client: MlflowClient | None = None,
) -> Registration:
    """Register the logged model as a new version; make it champion if every gate passes.

    ``model_uri`` is what ``log_model`` returned (``models:/<model id>``) or
    ``runs:/<run id>/<name>``; the model must have been logged by ``run_id``.
    """
    client = _connected(settings, client)
    name, alias = settings.model_name, settings.champion_alias
    logged = _logged_model(client, model_uri, run_id)
    registered = _registered_model(client, name)
    champion_version = _alias_version(registered, alias)
    champion_metrics = None
    if champion_version is not None:
        champion_metrics = _champion_metrics(client, name, champion_version)
    decision = gates.decide(
        metrics,
        min_roc_auc=settings.min_roc_auc,
        min_disparate_impact=settings.min_disparate_impact,
        champion_metrics=champion_metrics,
        tolerance=settings.champion_tolerance,
    )
    tags = {
        **gates.as_tags(decision),
        CHAMPION_TAG: champion_version or NO_CHAMPION,
        MODEL_ID_TAG: logged.model_id,
    }
    with _translated(f"create a version of registered model {name!r}"):
        # The artifact location, not models:/<id>: MLflow's SQL registry resolves that through
        # the process-wide tracking URI (maybe a stray local default), not this client's.
        created = client.create_model_version(
            name,
            logged.artifact_location,
            run_id=run_id,
            tags=tags,
            model_id=logged.model_id,
        )
    version = str(created.version)
    _link(client, logged, name, version)
    if decision.passed:
        with _translated(f"move alias {alias!r} of {name!r} to version {version}"):
            client.set_registered_model_alias(name, alias, version)
    return Registration(
        name=name,
        version=version,
        promoted=decision.passed,
        decision=decision,
        previous_champion=champion_version,
    )


def champion(settings: TrainingSettings, client: MlflowClient | None = None) -> ModelVersion | None:
    """The version the champion alias points to, or None (no model or no champion yet)."""
    client = _connected(settings, client)
    name = settings.model_name
    with _translated(f"read registered model {name!r}"):
        try:
            registered = client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code == _NOT_FOUND:
                return None
            raise
    version = _alias_version(registered, settings.champion_alias)
    if version is None:
        return None
    with _translated(f"read version {version} of {name!r}"):
        return client.get_model_version(name, version)


def _connected(settings: TrainingSettings, client: MlflowClient | None) -> MlflowClient:
    if client is not None:
        check_database(client.tracking_uri, RegistryError)
        return client
    # postgresql:// would mean psycopg2, which is not installed; psycopg 3 is.
    uri = storage_url(settings.mlflow_tracking_uri)
    # Before the client: creating one already opens (and retries) the tracking store.
    check_database(uri, RegistryError)
    with _translated(f"open MLflow tracking store {_shown(uri)}"):
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _shown(uri: str) -> str:
    """The URI with any password masked, for messages."""
    try:
        return sqlalchemy.make_url(uri).render_as_string(hide_password=True)
    except SQLAlchemyError:
        parts = urlsplit(uri)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _logged_model(client: MlflowClient, model_uri: str, run_id: str) -> LoggedModel:
    """The logged model the URI names, checked to be complete and to come from ``run_id``."""
    parts = urlsplit(model_uri)
    path = parts.path.strip("/")
    if parts.scheme == "models" and not parts.netloc and path.startswith("m-") and "/" not in path:
        model = _logged_model_by_id(client, model_uri, path)
    elif parts.scheme == "runs" and not parts.netloc and "/" in path:
        uri_run_id, name = path.split("/", 1)
        if uri_run_id != run_id:
            raise RegistryError(
                f"model URI {model_uri!r} belongs to run {uri_run_id}, not {run_id}"
            )
        model = _logged_model_by_name(client, model_uri, run_id, name)
    else:
        raise RegistryError(
            f"unsupported model URI {model_uri!r}: expected models:/<model id> "
            "(as returned by log_model) or runs:/<run id>/<model name>"
        )
    if model.source_run_id != run_id:
        raise RegistryError(
            f"model {model_uri!r} was logged by run {model.source_run_id}, not {run_id}"
        )
    if model.status != LoggedModelStatus.READY:
        raise RegistryError(f"model {model_uri!r} is {model.status}, not READY; log it again")
    return model


def _logged_model_by_id(client: MlflowClient, model_uri: str, model_id: str) -> LoggedModel:
    with _translated(f"look up model {model_uri!r}"):
        try:
            return client.get_logged_model(model_id)
        except MlflowException as error:
            if error.error_code == _NOT_FOUND:
                raise RegistryError(
                    f"unknown model URI {model_uri!r}: no such logged model"
                ) from error
            raise


def _logged_model_by_name(
    client: MlflowClient, model_uri: str, run_id: str, name: str
) -> LoggedModel:
    """The model of that name among the run's outputs; the one logged last if there are several."""
    with _translated(f"look up model {model_uri!r}"):
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            if error.error_code == _NOT_FOUND:
                raise RegistryError(f"unknown model URI {model_uri!r}: no such run") from error
            raise
        outputs = run.outputs.model_outputs if run.outputs else []
        candidates = [
            (output.step, model)
            for output in outputs
            if (model := client.get_logged_model(output.model_id)).name == name
        ]
    if not candidates:
        raise RegistryError(
            f"unknown model URI {model_uri!r}: run {run_id} logged no model {name!r}"
        )
    return max(candidates, key=lambda candidate: candidate[0])[1]


def _registered_model(client: MlflowClient, name: str) -> RegisteredModel:
    """The registered model, created with a description on first use."""
    with _translated(f"read or create registered model {name!r}"):
        try:
            return client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code != _NOT_FOUND:
                raise
        try:
            return client.create_registered_model(name, description=MODEL_DESCRIPTION)
        except MlflowException as error:
            # Another registration created it in the meantime.
            if error.error_code != _ALREADY_EXISTS:
                raise
        return client.get_registered_model(name)


def _alias_version(registered: RegisteredModel, alias: str) -> str | None:
    version = registered.aliases.get(alias)
    return None if version is None else str(version)


def _champion_metrics(client: MlflowClient, name: str, version: str) -> dict[str, float]:
    """The champion's run metrics; empty (the gate then skips the comparison) if its run is gone."""
    with _translated(f"read the champion (version {version} of {name!r})"):
        run_id = client.get_model_version(name, version).run_id
        if not run_id:
            return {}
        try:
            return dict(client.get_run(run_id).data.metrics)
        except MlflowException as error:
            if error.error_code == _NOT_FOUND:
                return {}
            raise


def _link(client: MlflowClient, logged: LoggedModel, name: str, version: str) -> None:
    """Record the new version on the logged model, as `mlflow.register_model` does (UI link)."""
    with _translated(f"link model {logged.model_id} to version {version} of {name!r}"):
        current = client.get_logged_model(logged.model_id).tags.get(MLFLOW_MODEL_VERSIONS)
        links = [*json.loads(current or "[]"), {"name": name, "version": version}]
        client.set_logged_model_tags(logged.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(links)})


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """MLflow and database failures as a one-line `RegistryError` saying what was attempted."""
    try:
        yield
    except MlflowException as error:
        raise RegistryError(f"could not {action}: {_first_line(error.message)}") from error
    except SQLAlchemyError as error:
        raise RegistryError(f"could not {action}: {_first_line(error)}") from error


def _first_line(error: object) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
