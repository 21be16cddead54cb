"""The gated model registry: every trained model becomes a version, only a good one champion.

Each call to `register` adds a version of `settings.model_name`, decides with
`gates.decide` against the current champion's run metrics, writes the decision and its
reasons as tags on the new version and moves the `settings.champion_alias` alias to it
only when every gate passed. Registrations are not serialised: two running at once may
both compare with the same champion, and the later alias move wins.

`promote` moves the alias to an existing version whose gates passed. The gates are never
lowered: a version that failed them becomes champion only through `promote_with_override`,
which records who overrode them, when, why and which gates failed, as `gate.override*` tags on
the version and as an "Override" section of its model card, before moving the alias.

The card itself, its files and the tags naming them are `payband_training.card`'s: `record_card`
writes a new version's card once the gates have decided, an override writes it again with the
override's section.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

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

from payband_contracts.database import redact, sqlalchemy_url
from payband_contracts.errors import first_line
from payband_training import gates
from payband_training.card import MissingCardError, Override, read_card, write_card
from payband_training.gates import GateDecision
from payband_training.settings import TrainingSettings
from payband_training.tracking import check_database

CHAMPION_TAG = "gate.champion_version"
NO_CHAMPION = "none"
# MLflow's SQL registry keeps no model id on a version whose source is an artifact location.
MODEL_ID_TAG = "logged_model_id"
# Set on a version that became champion although its gates failed.
OVERRIDE_TAG = "gate.override"
OVERRIDE_REASON_TAG = "gate.override_reason"
OVERRIDE_BY_TAG = "gate.override_by"
OVERRIDE_AT_TAG = "gate.override_at"
OVERRIDE_PREVIOUS_TAG = "gate.override_previous_champion"
MIN_OVERRIDE_REASON_LENGTH = 20
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


class GatesFailed(RegistryError):
    """The version failed its gates, so plain promotion refuses it; see `failed_reasons`."""

    def __init__(self, name: str, version: str, failed_reasons: tuple[str, ...]) -> None:
        super().__init__(
            f"version {version} of {name!r} failed its gates: {'; '.join(failed_reasons)}"
        )
        self.failed_reasons = failed_reasons


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
        max_explanation_ms=settings.max_explanation_ms,
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
        _move_alias(client, settings, version)
    return Registration(
        name=name,
        version=version,
        promoted=decision.passed,
        decision=decision,
        previous_champion=champion_version,
    )


@dataclass(frozen=True)
class Promotion:
    """A version made champion because its gates passed."""

    name: str
    version: str
    previous_champion: str | None


def promote(
    version: str, settings: TrainingSettings, *, client: MlflowClient | None = None
) -> Promotion:
    """Make an existing version champion; `GatesFailed` if its gates did not pass."""
    client = _connected(settings, client)
    name = settings.model_name
    previous, found = _existing_version(client, name, version, settings.champion_alias)
    number = str(found.version)
    failed = _failed_now(client, settings, found, previous)
    if failed:
        raise GatesFailed(name, number, failed)
    _move_alias(client, settings, number)
    return Promotion(name=name, version=number, previous_champion=previous)


def _failed_now(
    client: MlflowClient, settings: TrainingSettings, found: ModelVersion, champion: str | None
) -> tuple[str, ...]:
    """The gates the version failed at registration, and the no-regression gate against the
    champion of now (an older version that passed then may be worse than today's)."""
    failed = list(gates.failed_reasons(found.tags))
    version = str(found.version)
    if champion is None or champion == version:
        return tuple(failed)
    metrics = _champion_metrics(client, found.name, version)
    if metrics:  # a version whose run is gone keeps the decision of its registration
        passed, reason = gates.not_worse_than_champion(
            metrics,
            _champion_metrics(client, found.name, champion),
            settings.champion_tolerance,
        )
        if not passed and reason not in failed:
            failed.append(reason)
    return tuple(failed)


def promote_with_override(
    version: str,
    reason: str,
    actor: str,
    settings: TrainingSettings,
    *,
    client: MlflowClient | None = None,
) -> Override:
    """Make a version champion even though its gates failed, recording the override.

    The override is recorded first (``gate.override*`` tags on the version, an "Override"
    section in its run's model card, replacing an earlier one), then the alias moves. A
    version whose gates pass (those of its registration, and no regression against the
    current champion) is promoted without recording anything (``failed_reasons`` is then
    empty). Whitespace in ``reason`` and ``actor`` is collapsed to single spaces.
    """
    reason, actor = _override_reason(reason), _required("actor", actor)
    client = _connected(settings, client)
    name = settings.model_name
    previous, found = _existing_version(client, name, version, settings.champion_alias)
    if previous == str(found.version):  # already champion: nothing to override, or record
        return Override(
            name=name,
            version=previous,
            previous_champion=previous,
            reason=reason,
            actor=actor,
            at=datetime.now(UTC).replace(microsecond=0),
            failed_reasons=(),
        )
    override = Override(
        name=name,
        version=str(found.version),
        previous_champion=previous,
        reason=reason,
        actor=actor,
        at=datetime.now(UTC).replace(microsecond=0),
        failed_reasons=_failed_now(client, settings, found, previous),
    )
    if override.failed_reasons:
        # Read before anything changes: a version without a card fails here, with nothing
        # recorded.
        with _translated(f"read the model card of run {found.run_id}"):
            try:
                card = read_card(client, found)
            except MissingCardError as missing:
                raise RegistryError(f"{missing} to record the override in") from missing
        _tag_override(client, override)
        with _translated(f"log the model card of run {found.run_id}"):
            write_card(client, found, card, override=override)
    _move_alias(client, settings, override.version)
    return override


def record_card(
    registration: Registration,
    run_id: str,
    card: str,
    settings: TrainingSettings,
    *,
    client: MlflowClient | None = None,
) -> str:
    """Write the card of a newly registered version, the gates' decision in it
    (`payband_training.card.write_card`); the artifact path."""
    client = _connected(settings, client)
    with _translated(f"read version {registration.version} of {registration.name!r}"):
        found = client.get_model_version(registration.name, registration.version)
    if found.run_id != run_id:
        raise RegistryError(
            f"version {registration.version} of {registration.name!r} belongs to run "
            f"{found.run_id}, not {run_id}"
        )
    with _translated(f"log the model card of run {run_id}"):
        return write_card(client, found, card)


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


def _required(argument: str, value: str) -> str:
    """The value with its whitespace collapsed; ValueError naming the argument if it is blank."""
    collapsed = " ".join(value.split())
    if not collapsed:
        raise ValueError(f"{argument}: must not be empty")
    if len(collapsed) > gates.MAX_TAG_VALUE_LENGTH:
        raise ValueError(f"{argument}: at most {gates.MAX_TAG_VALUE_LENGTH} characters")
    return collapsed


def _override_reason(reason: str) -> str:
    collapsed = _required("reason", reason)
    if len(collapsed) < MIN_OVERRIDE_REASON_LENGTH:
        raise ValueError(
            f"reason: at least {MIN_OVERRIDE_REASON_LENGTH} characters are required, got "
            f"{len(collapsed)}; say why the failed gates may be overridden"
        )
    return collapsed


def _existing_version(
    client: MlflowClient, name: str, version: str, alias: str
) -> tuple[str | None, ModelVersion]:
    """The current champion's version (or None) and the version asked for, which must exist."""
    with _translated(f"read registered model {name!r}"):
        try:
            registered = client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code != _NOT_FOUND:
                raise
            raise RegistryError(
                f"unknown version {version!r}: there is no registered model {name!r} yet"
            ) from error
    unknown = RegistryError(f"unknown version {version!r} of registered model {name!r}")
    if not version.isdecimal():
        raise unknown
    with _translated(f"read version {version} of {name!r}"):
        try:
            found = client.get_model_version(name, version)
        except MlflowException as error:
            if error.error_code != _NOT_FOUND:
                raise
            raise unknown from error
    return _alias_version(registered, alias), found


def _tag_override(client: MlflowClient, override: Override) -> None:
    # The flag last: an interrupted call never leaves a flagged version without who and why.
    tags = {
        OVERRIDE_REASON_TAG: override.reason,
        OVERRIDE_BY_TAG: override.actor,
        OVERRIDE_AT_TAG: override.at.isoformat(),
        OVERRIDE_PREVIOUS_TAG: override.previous_champion or NO_CHAMPION,
        OVERRIDE_TAG: "true",
    }
    with _translated(f"tag the override on version {override.version} of {override.name!r}"):
        for key, value in tags.items():
            client.set_model_version_tag(override.name, override.version, key, value)


def _move_alias(client: MlflowClient, settings: TrainingSettings, version: str) -> None:
    name, alias = settings.model_name, settings.champion_alias
    with _translated(f"move alias {alias!r} of {name!r} to version {version}"):
        client.set_registered_model_alias(name, alias, version)


def _connected(settings: TrainingSettings, client: MlflowClient | None) -> MlflowClient:
    if client is not None:
        check_database(client.tracking_uri, RegistryError)
        return client
    # postgresql:// would mean psycopg2, which is not installed; psycopg 3 is.
    uri = sqlalchemy_url(settings.mlflow_tracking_uri)
    # Before the client: creating one already opens (and retries) the tracking store.
    check_database(uri, RegistryError)
    with _translated(f"open MLflow tracking store {redact(uri)}"):
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


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
        raise RegistryError(f"could not {action}: {first_line(error)}") from error
    except SQLAlchemyError as error:
        raise RegistryError(f"could not {action}: {first_line(error)}") from error
