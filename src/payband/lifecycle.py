"""The lifecycle's pipelines on the local stack, shared by `payband demo` and `payband up`.

The data, training and serving jobs are the code locations' own (`payband_orchestration.
locations`), run in this process through Dagster on the home's persistent instance
(DAGSTER_HOME, its storage in the cluster's `dagster` database): the Dagster UI of `payband up`
shows each run, its materialisations and their metadata, the dbt tests as asset checks and the
lineage from the raw files to the bundle. What an earlier run left in PAYBAND_HOME is reused,
without a run, unless told to start over; the run that made it is named.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from dagster import DagsterInstance, JobDefinition

    from payband.home import Databases, Home

__all__ = [
    "DEMO_OVERRIDE_REASON",
    "BundleState",
    "DataVersions",
    "LifecycleError",
    "ModelState",
    "Pipelines",
    "location_job",
    "prepare_bundle",
    "prepare_data",
    "prepare_model",
    "quiet_libraries",
]

SOURCE = "adult"
BAND_EDGES = (50_000,)
# payband_data.definitions names its jobs <source>_features.
DATA_JOB = f"{SOURCE}_features"
OVERRIDE_ACTOR = "payband demo"
DEMO_OVERRIDE_REASON = (
    "Demonstration on the 1994 UCI Adult extract only: the model fails the four-fifths rule "
    "by sex and race, as the census labels themselves do; not for decisions about people."
)
# The tag on every run the launchers start ("payband demo" or "payband up").
LAUNCHER_TAG = "payband/launched_by"
# How often the console reads a run's new events from the instance.
FOLLOW_INTERVAL_S = 0.5


T = TypeVar("T")


class LifecycleError(RuntimeError):
    """A step failed in a way the user can act on; the message is one line."""


@dataclass(frozen=True)
class DataVersions:
    raw_uri: str
    features_uri: str
    reused: bool
    dagster_run: str | None = None


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
    dagster_run: str | None = None


@dataclass(frozen=True)
class BundleState:
    """The serving bundle of the champion: where it is and the run that made it."""

    path: str
    version_uri: str
    reused: bool
    dagster_run: str | None = None


def quiet_libraries() -> None:
    """Keep MLflow's, Optuna's and dbt's chatter out of the demo's output (errors still show)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow sets its loggers' level from this when it is imported.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    for name in ("mlflow", "optuna", "alembic", "dagster", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def progress_bar(console: Console, *, transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )


def _errors() -> tuple[type[BaseException], ...]:
    from payband_audit.errors import AuditError
    from payband_data.errors import DataError
    from payband_monitoring.errors import MonitoringError
    from payband_training.registry import RegistryError

    return (AuditError, DataError, MonitoringError, RegistryError, ValueError, OSError)


def _one_line(error: BaseException) -> str:
    from payband_contracts.errors import first_line

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


def location_job(location: str, job: str) -> JobDefinition:
    """A code location's job exactly as its code server loads it; at module level, so that
    Dagster can reconstruct it by name."""
    from payband_orchestration.locations import location as named

    module = importlib.import_module(named(location).module)
    return module.defs().resolve_job_def(job)


@dataclass
class RunView:
    """A run as the console shows it: the step in progress, a line per asset that matters, a
    bar for the search's trials, the step's own messages for training and serving."""

    console: Console
    location: str
    trials: int | None = None
    failed_step: str | None = None
    _bar: Progress | None = None
    _step: Any = None
    _trial: Any = None
    _counts: Counter[str] = field(default_factory=Counter)
    _check: str = ""
    _running: set[str | None] = field(default_factory=set)

    def __enter__(self) -> RunView:
        if not self.console.is_terminal:
            return self  # lines only: a log or a pipe keeps no bars
        self._bar = progress_bar(self.console, transient=True)
        self._bar.start()
        self._step = self._bar.add_task(f"{self.location}: starting", total=None)
        if self.trials is not None:
            self._trial = self._bar.add_task("Optuna search (trials)", total=self.trials)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def print(self, line: str) -> None:
        (self._bar.console if self._bar else self.console).print(line, soft_wrap=True)

    def event(self, entry: Any) -> None:
        """One entry of the run's event log, as the instance stored it."""
        from dagster import DagsterEventType

        event, step = entry.dagster_event, entry.step_key
        if event is None:
            # A step's own messages (not Dagster's about steps it skips).
            if step in self._running:
                self._message(entry.user_message, entry.level)
        elif event.event_type == DagsterEventType.STEP_START:
            self._running.add(step)
            if self._bar is not None:
                self._bar.update(self._step, description=f"{self.location}: {step}")
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            self._counts["materialized"] += 1
            line = _materialized_line(event.asset_key.to_user_string(), _values(event))
            if line:
                self.print(line)
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            self._counts["checks passed" if evaluation.passed else "checks failed"] += 1
            self._check = f"{evaluation.check_name} {'passed' if evaluation.passed else 'failed'}"
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            self._running.discard(step)
            self._step_done(str(step))
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            self._running.discard(step)
            self.failed_step = str(step)

    def _message(self, message: str, level: int) -> None:
        if self.location == "training" and message.startswith("search: trial "):
            if self._bar is not None and self._trial is not None:
                self._bar.advance(self._trial)
        elif level >= logging.WARNING or (level >= logging.INFO and self.location != "data"):
            self.print(f"{self.location}: {message}")

    def _step_done(self, step: str) -> None:
        """A step of many assets (dbt's) says how many it made; one with checks, how they went."""
        made, passed = self._counts["materialized"], self._counts["checks passed"]
        checks = passed + self._counts["checks failed"]
        if made <= 1 and checks == 1:
            self.print(f"{self.location}: asset check {self._check}")
        elif made > 1 or checks:
            done = [f"{made} assets materialised"] if made > 1 else []
            done += [f"{passed} of {checks} asset checks passed"] if checks else []
            self.print(f"{self.location}: {step}: {', '.join(done)}")
        self._counts.clear()


def _values(event: Any) -> dict[str, Any]:
    """A materialisation's metadata as plain values."""
    return {key: value.value for key, value in event.materialization.metadata.items()}


def _materialized_line(key: str, metadata: Mapping[str, Any]) -> str | None:
    if key == f"raw_files/{SOURCE}":
        return f"data: raw version {metadata['uri']} ({metadata['row_count']:,} records)"
    if key == f"raw/{SOURCE}":
        return f"data: {metadata['row_count']:,} rows loaded into PostgreSQL"
    if key == f"features_snapshot/{SOURCE}":
        return f"data: features version {metadata['uri']} ({metadata['row_count']:,} rows)"
    return None


@dataclass(frozen=True)
class Run:
    """A finished run: its id and the metadata of what it materialised, by asset key."""

    run_id: str
    job: str
    materialized: dict[str, dict[str, Any]]


class Pipelines:
    """The home's Dagster instance, and the code locations' jobs run on it in this process.

    On entry: the cluster's `dagster` database (created if missing), dagster.yaml and the
    workspace of every code location written into DAGSTER_HOME by payband_orchestration,
    then the instance opened as `dagster dev` opens it.
    """

    def __init__(self, home: Home, databases: Databases, console: Console, launcher: str) -> None:
        self.home, self.databases, self.console = home, databases, console
        self.launcher = launcher
        self._instance: DagsterInstance | None = None

    def __enter__(self) -> Pipelines:
        from dagster import DagsterInstance

        from payband.home import DAGSTER_DATABASE
        from payband_orchestration.instance import write_instance
        from payband_orchestration.settings import OrchestrationSettings

        _ensure_database(self.databases.warehouse, DAGSTER_DATABASE)
        settings = guarded("Dagster's settings", OrchestrationSettings)
        guarded(
            "Dagster's home", lambda: write_instance(self.home.dagster, settings, from_modules=True)
        )
        try:
            instance = DagsterInstance.get()
        except Exception as error:  # dagster-postgres and SQLAlchemy raise their own kinds
            raise LifecycleError(
                f"Dagster's instance in {self.home.dagster}: {_one_line(error)}"
            ) from error
        # A run writes hundreds of events (dbt's alone: a materialisation per model, an
        # evaluation per test). Dagster's storage opens a connection per query by default,
        # each a password handshake (about half of a data run's time); held open instead, as
        # the webserver holds them. No statement timeout (0), as by default.
        instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)
        self._instance = instance
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None

    @property
    def instance(self) -> DagsterInstance:
        if self._instance is None:
            raise RuntimeError("Pipelines is used outside its `with` block")
        return self._instance

    def run(
        self,
        location: str,
        job: str,
        resources: Mapping[str, Mapping[str, Any]],
        *,
        trials: int | None = None,
    ) -> Run:
        """Run ``job`` of ``location`` with its resources so configured, its steps in this
        process; LifecycleError with the failed step's one-line error if the run fails."""
        from dagster import build_reconstructable_job, execute_job

        run_config = {
            # The steps in this process: nothing is imported twice, the console follows them.
            "execution": {"config": {"in_process": {}}},
            # The event log keeps every message; the console shows them as RunView does.
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            "resources": {name: {"config": dict(config)} for name, config in resources.items()},
        }
        reconstructable = build_reconstructable_job(
            __name__, location_job.__name__, reconstructable_args=(location, job)
        )
        tags = {LAUNCHER_TAG: self.launcher}
        with (
            _stop_signals() as stop_asked,
            _beside_the_capture(self.console),
            RunView(self.console, location, trials) as view,
            _Follower(self.instance, job, tags, view),
        ):
            # What fails before a run exists (loading the code location, its settings) too.
            result = guarded(
                f"{location}: {job}",
                lambda: execute_job(
                    reconstructable, self.instance, run_config=run_config, tags=tags
                ),
            )
        shown = f"Dagster run {result.run_id[:8]} of {job}"
        if stop_asked() or (not result.success and _interrupted(result)):
            # Dagster records the run as failed by the interrupt and returns: stop as asked.
            raise KeyboardInterrupt(shown)
        if not result.success:
            raise LifecycleError(f"{location}: {shown} failed: {_failure(result, view)}")
        self.console.print(f"{location}: {shown} succeeded", soft_wrap=True)
        materialized = {
            event.asset_key.to_user_string(): _values(event)
            for event in result.get_asset_materialization_events()
        }
        return Run(result.run_id, job, materialized)

    def latest(self, key: str) -> Run | None:
        """The run of the newest materialisation of ``key`` (an asset key's user string),
        with that materialisation's metadata."""
        from dagster import AssetKey

        event = self.instance.get_latest_materialization_event(AssetKey.from_user_string(key))
        if event is None or event.asset_materialization is None:
            return None
        values = {name: value.value for name, value in event.asset_materialization.metadata.items()}
        return Run(event.run_id, event.job_name or "", {key: values})


class _Follower(threading.Thread):
    """Hands a run's events to its view while it runs: the run is found by its job, its tags
    and its start after this one's, then its event log read from the instance as it grows."""

    def __init__(
        self, instance: DagsterInstance, job: str, tags: Mapping[str, str], view: RunView
    ) -> None:
        super().__init__(name="payband-run-follower", daemon=True)
        self.instance, self.job, self.tags, self.view = instance, job, tags, view
        self.since = datetime.now(UTC) - timedelta(seconds=1)
        self.run_id: str | None = None
        self._cursor: str | None = None
        self._done = threading.Event()

    def __enter__(self) -> _Follower:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        try:
            while not self._done.wait(FOLLOW_INTERVAL_S):
                self._read()
            self._read()  # what came after the last look
        except Exception:  # only the progress shown stops; the run goes on
            logging.getLogger(__name__).debug("following the run failed", exc_info=True)

    def _read(self) -> None:
        from dagster import RunsFilter

        if self.run_id is None:
            found = self.instance.get_runs(
                RunsFilter(job_name=self.job, tags=dict(self.tags), created_after=self.since),
                limit=1,
            )
            if not found:
                return
            self.run_id = found[0].run_id
        while True:
            page = self.instance.get_records_for_run(self.run_id, cursor=self._cursor, limit=500)
            for record in page.records:
                self.view.event(record.event_log_entry)
            self._cursor = page.cursor
            if not page.has_more:
                return


@contextmanager
def _beside_the_capture(console: Console) -> Iterator[None]:
    """While a run lasts, Dagster captures this process's stdout and stderr into the run's
    logs and mirrors them back (`tail`). Meanwhile the console writes to its own copy of the
    terminal (its progress stays out of the run's logs, and on time), and the mirrored stdout,
    dbt's log, goes nowhere: the launcher's stdout holds its summary only."""
    try:
        descriptor = console.file.fileno()
    except (AttributeError, OSError, ValueError):
        yield  # not a real file (a test's buffer): nothing is captured from it
        return
    sys.stdout.flush()
    saved_file, saved_stdout = console.file, os.dup(1)
    terminal = os.fdopen(os.dup(descriptor), "w", encoding="utf-8", errors="replace")
    nowhere = os.open(os.devnull, os.O_WRONLY)
    os.dup2(nowhere, 1)
    os.close(nowhere)
    console.file = terminal
    try:
        yield
    finally:
        console.file = saved_file
        terminal.close()
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)


_STOPPING = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@contextmanager
def _stop_signals() -> Iterator[Callable[[], bool]]:
    """Whether Ctrl-C, SIGTERM or SIGHUP came meanwhile, also when the exception a handler
    raised for it was lost: Python drops one raised inside a garbage collector's callback, and
    Dagster forgets the interrupts it held back when its run ends. Signals are noticed through
    the wakeup descriptor, which Python writes before any handler runs."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    reader, writer = os.pipe()
    os.set_blocking(reader, False)
    os.set_blocking(writer, False)
    previous = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    arrived: set[int] = set()
    try:
        yield lambda: bool(arrived & _STOPPING)
    finally:
        signal.set_wakeup_fd(previous)
        with suppress(BlockingIOError):
            while chunk := os.read(reader, 512):
                arrived.update(chunk)
        os.close(reader)
        os.close(writer)


def _interrupted(result: Any) -> bool:
    """Whether Ctrl-C (or SIGTERM, raised as KeyboardInterrupt) ended the run."""
    failure = result.get_run_failure_event()
    error = getattr(failure.event_specific_data, "error", None) if failure else None
    return error is not None and error.cls_name in (
        "KeyboardInterrupt",
        "DagsterExecutionInterruptedError",
    )


def _failure(result: Any, view: RunView) -> str:
    """The failed step and its error in one line (the traceback stays in Dagster's run)."""
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        described = data.user_failure_data.description if data.user_failure_data else None
        return f"step {event.step_key}: {_first(described) if described else _error(data.error)}"
    failure = result.get_run_failure_event()
    return _first(failure.message) if failure is not None else f"step {view.failed_step}"


def _error(error: Any) -> str:
    """What user code raised, from Dagster's serialised error: the cause of its wrapper, its
    message without the type's name in front."""
    while error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    message = _first(error.message)
    prefix = message.partition(": ")[0]
    if prefix.rpartition(".")[2] == error.cls_name:
        message = message.partition(": ")[2] or message
    return message or error.cls_name


def _first(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _ensure_database(url: str, name: str) -> None:
    """Create database ``name`` beside the one of ``url`` unless it exists."""
    import psycopg
    from psycopg import errors, sql

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return
            with suppress(errors.DuplicateDatabase):  # made meanwhile
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as error:
        raise LifecycleError(
            f"PostgreSQL: cannot create Dagster's database {name!r}: {_one_line(error)}"
        ) from None


def prepare_data(console: Console, pipelines: Pipelines, *, rebuild: bool = False) -> DataVersions:
    """The data job (Adult raw -> PostgreSQL -> dbt features -> features snapshot); the
    versions in the store are reused, without a run, when present."""
    from payband_data.settings import DataSettings
    from payband_data.store import open_store

    with open_store(DataSettings()) as store:
        raw = store.latest(f"raw/{SOURCE}")
        features = store.latest(f"features/{SOURCE}")
    if raw is not None and features is not None and not rebuild:
        made = _made_by(pipelines, f"features_snapshot/{SOURCE}", uri=features.uri)
        console.print(f"data: reusing {features.uri} ({_shown(made)})", soft_wrap=True)
        return DataVersions(raw.uri, features.uri, reused=True, dagster_run=made)
    run = pipelines.run(
        "data", DATA_JOB, {"pipeline": {"source": SOURCE, "band_edges": list(BAND_EDGES)}}
    )
    raw_uri = run.materialized[f"raw_files/{SOURCE}"]["uri"]
    features_uri = run.materialized[f"features_snapshot/{SOURCE}"]["uri"]
    return DataVersions(raw_uri, features_uri, reused=False, dagster_run=run.run_id)


def _made_by(pipelines: Pipelines, key: str, **metadata: Any) -> str | None:
    """The run whose materialisation of ``key`` is the newest, if it has these values."""
    run = pipelines.latest(key)
    if run is None:
        return None
    values = run.materialized[key]
    return run.run_id if all(str(values.get(k)) == str(v) for k, v in metadata.items()) else None


def _shown(run: str | None) -> str:
    return f"Dagster run {run[:8]}" if run else "made before the pipelines ran through Dagster"


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
    pipelines: Pipelines,
    features_uri: str,
    *,
    trials: int,
    timeout_s: float | None,
    retrain: bool = False,
    override_gates: bool = True,
) -> ModelState:
    """The training job on ``features_uri`` (split, search, model, registration); the
    champion trained on it is reused, without a run, unless ``retrain``. A model that fails
    the gates is promoted only through the recorded override (``override_gates``), never by
    lowering a gate."""
    from dataclasses import replace

    from payband_training.definitions import JOB
    from payband_training.settings import TrainingSettings

    existing = current_champion()
    if existing is not None and existing.features_uri == features_uri and not retrain:
        if existing.overridden and not override_gates:
            raise LifecycleError(
                f"the champion, {existing.name} version {existing.version}, is champion by an "
                "override of its failed gates, and --no-override-gates was given: use "
                "--override-gates, or --retrain for a model that passes them"
            )
        made = _made_by(pipelines, "salary_band_registration", version=existing.version)
        console.print(
            f"model: reusing {existing.name} version {existing.version} (champion; {_shown(made)})"
        )
        return replace(existing, dagster_run=made)
    training: dict[str, Any] = {"source": SOURCE, "features_uri": features_uri, "trials": trials}
    if timeout_s is not None:
        training["timeout_s"] = timeout_s
    if override_gates:
        training |= {"override_reason": DEMO_OVERRIDE_REASON, "override_actor": OVERRIDE_ACTOR}
    run = pipelines.run("training", JOB, {"training": training}, trials=trials)
    registration = run.materialized["salary_band_registration"]
    name, version = str(registration["model"]), str(registration["version"])
    state = _state(_client(TrainingSettings()), name, version, reused=False)
    if not registration["champion"]:
        raise LifecycleError(
            f"version {version} failed the gates ({'; '.join(state.gate_reasons)}) "
            "and --no-override-gates was given: there is no champion to serve"
        )
    return replace(state, dagster_run=run.run_id)


def prepare_bundle(console: Console, pipelines: Pipelines, model: ModelState) -> BundleState:
    """The serving job for the champion (its bundle, verified, and its image where an engine
    answers); the bundle an earlier run made of this version is reused if it still verifies."""
    from payband_serving.bundle import BundleError, verify_bundle
    from payband_serving.definitions import JOB

    uri = f"models:/{model.name}/{model.version}"
    made = pipelines.latest("serving_bundle")
    if made is not None and str(made.materialized["serving_bundle"].get("model_version")) == (
        model.version
    ):
        path = str(made.materialized["serving_bundle"]["bundle_path"])
        try:
            manifest = verify_bundle(Path(path))
        except (BundleError, OSError):
            pass  # removed or changed since: made again
        else:
            console.print(f"serving: reusing the bundle in {path} ({_shown(made.run_id)})")
            return BundleState(
                path, manifest.model.version_uri, reused=True, dagster_run=made.run_id
            )
    run = pipelines.run("serving", JOB, {"serving": {"model_uri": uri}})
    bundle = run.materialized["serving_bundle"]
    return BundleState(
        str(bundle["bundle_path"]), str(bundle["version_uri"]), reused=False, dagster_run=run.run_id
    )
