"""The lifecycle's steps on the local stack, shared by `payband demo` and `payband up`.

Each step calls the packages' own public functions (the ones their CLIs and Dagster code
locations call) with settings read from the environment `Home.environment` sets, and reuses
what an earlier run left in PAYBAND_HOME unless told to start over.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = [
    "DEMO_OVERRIDE_REASON",
    "DataVersions",
    "LifecycleError",
    "ModelState",
    "prepare_data",
    "prepare_model",
    "quiet_libraries",
]

SOURCE = "adult"
BAND_EDGES = (50_000,)
OVERRIDE_ACTOR = "payband demo"
DEMO_OVERRIDE_REASON = (
    "Demonstration on the 1994 UCI Adult extract only: the model fails the four-fifths rule "
    "by sex and race, as the census labels themselves do; not for decisions about people."
)


T = TypeVar("T")


class LifecycleError(RuntimeError):
    """A step failed in a way the user can act on; the message is one line."""


@dataclass(frozen=True)
class DataVersions:
    raw_uri: str
    features_uri: str
    reused: bool


@dataclass(frozen=True)
class ModelState:
    """The champion after training (or the one reused) and what the registry decided."""

    name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    reused: bool
    gate_passed: bool
    gate_reasons: tuple[str, ...] = ()
    overridden: bool = False
    test_uri: str = ""
    features_uri: str = ""
    trials: int | None = None


def quiet_libraries() -> None:
    """Keep MLflow's, Optuna's and dbt's chatter out of the demo's output (errors still show)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow sets its loggers' level from this when it is imported.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    for name in ("mlflow", "optuna", "alembic", "dagster", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _errors() -> tuple[type[BaseException], ...]:
    from payband_audit.errors import AuditError
    from payband_data.errors import DataError
    from payband_monitoring.errors import MonitoringError
    from payband_training.registry import RegistryError

    return (AuditError, DataError, MonitoringError, RegistryError, ValueError, OSError)


def _one_line(error: BaseException) -> str:
    from payband_contracts.cli_support import first_line

    return first_line(error)


def guarded(what: str, action: Callable[[], T]) -> T:
    """Run a step; the packages' user-facing errors become one-line LifecycleErrors."""
    try:
        return action()
    except _errors() as error:
        raise LifecycleError(f"{what}: {_one_line(error)}") from error


def migrate_stores() -> None:
    """The audit log's and monitoring's schemas, with their own Alembic migrations."""
    from payband_audit.migrate import upgrade
    from payband_audit.settings import AuditSettings
    from payband_monitoring.settings import MonitoringSettings
    from payband_monitoring.store import migrate

    upgrade(AuditSettings().database_url)
    migrate(MonitoringSettings().database_url)


def prepare_data(console: Console, *, rebuild: bool = False) -> DataVersions:
    """Adult raw -> PostgreSQL -> dbt features -> features snapshot; reused when present."""
    from payband_data.settings import DataSettings
    from payband_data.steps import build, exclusive_build, ingest, load, snapshot
    from payband_data.store import open_store

    settings = DataSettings()
    with open_store(settings) as store:
        raw = store.latest(f"raw/{SOURCE}")
        features = store.latest(f"features/{SOURCE}")
    if raw is not None and features is not None and not rebuild:
        console.print(f"data: reusing {features.uri}")
        return DataVersions(raw.uri, features.uri, reused=True)
    with console.status("ingesting UCI Adult into the versioned store"):
        raw = guarded("ingest", lambda: ingest(SOURCE, settings))
    console.print(f"data: raw version {raw.uri}")
    with exclusive_build(settings):
        with console.status("loading the raw records into PostgreSQL"):
            rows = guarded("load", lambda: load(raw.uri, settings, source=SOURCE))
        with console.status("dbt seed and build (every model and test)"):
            result = guarded("dbt build", lambda: build(SOURCE, BAND_EDGES, settings))
        console.print(f"data: {rows:,} rows loaded; {result}")
        with console.status("exporting the features snapshot"):
            features = guarded("snapshot", lambda: snapshot(SOURCE, BAND_EDGES, settings))
    console.print(f"data: features version {features.uri}")
    return DataVersions(raw.uri, features.uri, reused=False)


def _state(client: Any, name: str, version: str, *, reused: bool) -> ModelState:
    from payband_training.gates import DECISION_TAG, failed_reasons

    model_version = client.get_model_version(name, version)
    run = client.get_run(model_version.run_id)
    tags = dict(model_version.tags)
    return ModelState(
        name=name,
        version=version,
        run_id=model_version.run_id,
        metrics=dict(run.data.metrics),
        reused=reused,
        gate_passed=tags.get(DECISION_TAG) == "promoted",
        gate_reasons=failed_reasons(tags),
        overridden=tags.get("gate.override") == "true",
        test_uri=run.data.tags.get("test_uri", ""),
        features_uri=run.data.tags.get("features_uri", ""),
        trials=int(run.data.metrics["search_trials"])
        if "search_trials" in run.data.metrics
        else None,
    )


def _client(settings: Any) -> Any:
    from mlflow import MlflowClient

    from payband_contracts.database import sqlalchemy_url

    uri = sqlalchemy_url(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def current_champion() -> ModelState | None:
    """The champion of the local registry, or None."""
    from payband_training.registry import champion
    from payband_training.settings import TrainingSettings

    settings = TrainingSettings()
    found = guarded("registry", lambda: champion(settings))
    if found is None:
        return None
    return _state(_client(settings), found.name, str(found.version), reused=True)


def prepare_model(
    console: Console,
    features_uri: str,
    *,
    trials: int,
    timeout_s: float | None,
    retrain: bool = False,
    override_gates: bool = True,
) -> ModelState:
    """Train, register and promote a model on ``features_uri``; reuse the champion trained on
    it unless ``retrain``. A model that fails the gates is promoted only through the recorded
    override (``override_gates``), never by lowering a gate."""
    from payband_data.settings import DataSettings
    from payband_training.pipeline import train
    from payband_training.registry import promote_with_override
    from payband_training.settings import TrainingSettings

    existing = current_champion()
    if existing is not None and existing.features_uri == features_uri and not retrain:
        if existing.overridden and not override_gates:
            raise LifecycleError(
                f"the champion, {existing.name} version {existing.version}, is champion by an "
                "override of its failed gates, and --no-override-gates was given: use "
                "--override-gates, or --retrain for a model that passes them"
            )
        console.print(f"model: reusing {existing.name} version {existing.version} (champion)")
        return existing
    settings = TrainingSettings(trials=trials, timeout_s=timeout_s)
    data_settings = DataSettings()
    with progress_bar(console) as bar:
        search = bar.add_task("Optuna search (trials)", total=trials)

        def progress(step: str, detail: str) -> None:
            if step == "search" and detail.startswith("trial "):
                bar.advance(search)
            else:
                bar.console.print(f"training: {step}: {detail}")

        outcome = guarded(
            "training", lambda: train(features_uri, settings, data_settings, progress=progress)
        )
    registration = outcome.registration
    name, version = registration.name, registration.version
    if not registration.promoted and override_gates:
        console.print(
            f"registry: version {version} failed the gates "
            f"({'; '.join(registration.decision.failed)}); promoting it through a recorded "
            f"override by {OVERRIDE_ACTOR!r}"
        )
        guarded(
            "override",
            lambda: promote_with_override(version, DEMO_OVERRIDE_REASON, OVERRIDE_ACTOR, settings),
        )
    elif not registration.promoted:
        raise LifecycleError(
            f"version {version} failed the gates ({'; '.join(registration.decision.failed)}) "
            "and --no-override-gates was given: there is no champion to serve"
        )
    return _state(_client(settings), name, version, reused=False)
