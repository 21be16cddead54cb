"""One MLflow run per training: parameters, metrics, data lineage, model, evidence.

A run holds the chosen trial's parameters (booster, mitigation, decision rule) and the settings
that shaped the training, the evaluation's metrics, its lineage (the code revision it was
trained from as ``mlflow.source.git.commit``; the raw data version, the features snapshot and
the train and test parts as dataset inputs with their versioned-store URIs as source), the
model (``payband_training.model``), SHAP summary plots from XGBoost's exact TreeSHAP, the
search's trials and Pareto front (``payband_training.front``) and the reference data for
monitoring. The model card is not written here: it states the gates' decision, so
registration writes it (``payband_training.card``).

MLflow's telemetry is switched off by ``payband_training/__init__.py``, which runs before
this module imports mlflow.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SADeprecationWarning, SQLAlchemyError
from xgboost import XGBClassifier

from payband_contracts.database import redact, sqlalchemy_url
from payband_contracts.errors import first_line
from payband_contracts.model import REFERENCE_FILE, REFERENCE_TRUTH
from payband_contracts.tracking import tracking_problem
from payband_data.settings import DataSettings
from payband_data.store import open_store
from payband_training import __version__
from payband_training.card import BiasExamination
from payband_training.evaluate import Evaluation
from payband_training.features import BAND, FEATURES
from payband_training.front import FRONT_DIR, PLOT_FILE, TRIALS_FILE, trials_table, write_front_plot
from payband_training.gates import SEARCH_FEASIBLE
from payband_training.model import (
    ModelSchema,
    check_booster,
    encode_inputs,
    log_model,
    make_input_example,
    predict_frame,
)
from payband_training.search import SearchResult
from payband_training.settings import TrainingSettings

__all__ = [
    "REFERENCE_FILE",
    "SHAP_DIR",
    "STORE_SOURCE_TYPE",
    "UNMITIGATED_PREFIX",
    "LoggedTraining",
    "TrackingError",
    "VersionedStoreSource",
    "configure",
    "log_training",
    "reference_frame",
    "shap_values",
    "training_metrics",
    "training_params",
    "write_shap_plots",
]

log = logging.getLogger(__name__)

SHAP_DIR = "shap"
SHAP_IMPORTANCE_FILE = "importance.png"
STORE_SOURCE_TYPE = "payband_store"
TRAINING_CONTEXT = "training"
TESTING_CONTEXT = "testing"
FEATURES_CONTEXT = "features"
RAW_CONTEXT = "raw"
# Metrics of the best unmitigated trial, refitted and tested like the model.
UNMITIGATED_PREFIX = "unmitigated_"
# MLflow's own tag for the code version of a run (shown as the run's source version).
GIT_COMMIT_TAG = "mlflow.source.git.commit"
# Set by images and CI, where there is no git checkout; else asked of git, else "unknown".
REVISION_VARIABLE = "PAYBAND_REVISION"
RECORD_ID = "record_id"
# Rows drawn into the SHAP plots; contributions are exact whatever the sample.
SHAP_SAMPLE_ROWS = 2000
_STORE_SCHEMES = ("local://", "lakefs://")
_RESERVED_PARAMS = frozenset(
    {
        "seed",
        "trials",
        "timeout_s",
        "cv_folds",
        "test_fraction",
        "use_protected",
        "mitigation_methods",
        "min_group_rows",
        "bootstrap_samples",
        "max_explanation_ms",
        "decision_rule",
        "n_bands",
        "band_edges_usd",
        "features",
        "study_name",
    }
)


class TrackingError(RuntimeError):
    """MLflow cannot be reached or used as configured, or the results do not fit together."""


class VersionedStoreSource(DatasetSource):
    """A dataset version in payband's versioned store (``local://...`` or ``lakefs://...``).

    ``load()`` fetches the version's files with the store configured by ``PAYBAND_DATA_*``.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return STORE_SOURCE_TYPE

    def load(self, dst_path: str | None = None) -> str:
        """Fetch the version's files into ``dst_path`` (a new temporary folder if None)."""
        target = Path(dst_path or tempfile.mkdtemp(prefix="payband-dataset-"))
        with open_store(DataSettings()) as store:
            store.fetch(self.uri, target)
        return str(target)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith(_STORE_SCHEMES)

    @classmethod
    def _resolve(cls, raw_source: Any) -> VersionedStoreSource:
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> VersionedStoreSource:
        return cls(str(source_dict["uri"]))


# So mlflow.data.get_source() turns a logged input back into a VersionedStoreSource.
register_dataset_source(VersionedStoreSource)


@dataclass(frozen=True)
class LoggedTraining:
    """Where a training was recorded."""

    run_id: str
    experiment_id: str
    model_info: ModelInfo

    @property
    def model_uri(self) -> str:
        return f"runs:/{self.run_id}/{self.model_info.name}"


def _import_sql_store() -> None:
    with warnings.catch_warnings():
        # MLflow's SQL store maps one relationship with SQLAlchemy's deprecated "noload"
        # strategy; the warning fires once, when the module is imported.
        warnings.filterwarnings(
            "ignore",
            message="The ``noload`` loader strategy is deprecated",
            category=SADeprecationWarning,
        )
        importlib.import_module("mlflow.store.tracking.sqlalchemy_store")


def check_database(uri: str, error: type[Exception] = TrackingError) -> None:
    """Fail fast, in one line, on an unreachable tracking database (``error`` names the caller).

    MLflow itself retries an unreachable database for about 100 s.
    """
    if problem := tracking_problem(uri):
        raise error(problem)


def configure(settings: TrainingSettings) -> str:
    """Point MLflow's tracking and registry at the settings; return the experiment's id.

    The experiment is created with the configured artifact root if it does not exist. An
    existing one keeps its artifact location (MLflow cannot move it); a log line says so.
    """
    # postgresql:// would mean psycopg2, which is not installed; psycopg 3 is.
    uri = sqlalchemy_url(settings.mlflow_tracking_uri)
    check_database(uri)
    _import_sql_store()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name, root = settings.mlflow_experiment, settings.mlflow_artifact_root
    if root.startswith("s3://") and importlib.util.find_spec("boto3") is None:
        raise TrackingError(f"the artifact root {root} is on S3, which needs boto3 installed")
    try:
        client = MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(name, artifact_location=root)
            except MlflowException as exc:
                # Another worker created it between the lookup and here.
                if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                    raise
                experiment = client.get_experiment_by_name(name)
            else:
                log.info("created MLflow experiment %r with artifacts in %s", name, root)
                return experiment_id
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        raise TrackingError(
            f"cannot use MLflow at {redact(uri)} (experiment {name!r}): {first_line(exc)}"
        ) from None
    if experiment is None:
        raise TrackingError(f"MLflow experiment {name!r} vanished while it was being created")
    if experiment.lifecycle_stage != "active":
        raise TrackingError(
            f"MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted: restore it "
            "(mlflow experiments restore) or set PAYBAND_TRAINING_MLFLOW_EXPERIMENT to another name"
        )
    if experiment.artifact_location.rstrip("/") != root.rstrip("/"):
        log.warning(
            "MLflow experiment %r keeps its artifact location %s, not the configured %s",
            name,
            experiment.artifact_location,
            root,
        )
    return str(experiment.experiment_id)


def training_params(
    settings: TrainingSettings, schema: ModelSchema, search: SearchResult
) -> dict[str, str]:
    """The run's parameters: the chosen trial's (booster, mitigation, decision rule) and
    what shaped the training."""
    chosen = search.chosen.config.flat(schema.n_bands)
    if clash := sorted(_RESERVED_PARAMS & set(chosen)):
        raise TrackingError(f"search parameters {clash} clash with the run's own parameters")
    params = dict(chosen)
    params |= {
        "seed": str(settings.seed),
        "trials": str(settings.trials),
        "timeout_s": "none" if settings.timeout_s is None else f"{settings.timeout_s:g}",
        "cv_folds": str(settings.cv_folds),
        "test_fraction": repr(float(settings.test_fraction)),
        "use_protected": str(schema.use_protected).lower(),
        "mitigation_methods": ",".join(settings.mitigation),
        "min_group_rows": str(settings.min_group_rows),
        "bootstrap_samples": str(settings.bootstrap_samples),
        "max_explanation_ms": f"{settings.max_explanation_ms:g}",
        "decision_rule": schema.decision.model_dump_json(),
        "n_bands": str(schema.n_bands),
        "band_edges_usd": json.dumps(list(schema.band_edges_usd)),
        "features": ",".join(schema.features),
        "study_name": search.study_name,
    }
    return params


def _search_metrics(search: SearchResult) -> dict[str, float]:
    metrics = {
        "search_chosen_cv_roc_auc": search.best_value,
        SEARCH_FEASIBLE: float(search.chosen.feasible),
        "search_cv_worst_disparate_impact": search.chosen.worst_disparate_impact,
        "search_trials": float(search.n_trials),
        "search_complete": float(search.n_complete),
        "search_failed": float(search.n_failed),
        "search_feasible": float(sum(trial.feasible for trial in search.trials)),
        "search_front_size": float(len(search.front)),
    }
    return {name: value for name, value in metrics.items() if math.isfinite(value)}


def code_revision() -> str:
    """The git commit the code was trained from: $PAYBAND_REVISION, else the checkout this
    package is installed from (with ``-dirty`` for uncommitted changes), else "unknown"."""
    if revision := os.environ.get(REVISION_VARIABLE, "").strip():
        return revision
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if status else commit or "unknown"


def training_metrics(evaluation: Evaluation, search: SearchResult) -> dict[str, float]:
    """The evaluation's flat metrics plus the search's best CV ROC AUC and trial counts."""
    metrics, search_metrics = evaluation.metrics(), _search_metrics(search)
    if clash := sorted(set(metrics) & set(search_metrics)):
        raise TrackingError(f"evaluation metrics {clash} clash with the search's metrics")
    return metrics | search_metrics


def _plain(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Columns as a reader expects them: categories as strings, integers as int64."""
    plain = {}
    for name in columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            plain[name] = column.astype(object).astype(str)
        elif pd.api.types.is_integer_dtype(column.dtype):
            plain[name] = column.astype(np.int64)
        else:
            plain[name] = column
    return pd.DataFrame(plain, index=frame.index)


def reference_frame(booster: xgb.Booster, schema: ModelSchema, test: pd.DataFrame) -> pd.DataFrame:
    """Reference data for monitoring: per test row its record_id, every catalogue feature
    (protected ones included), the true ``band``, ``predicted_band`` and one probability
    column per band label."""
    if missing := [name for name in (RECORD_ID, *FEATURES, BAND) if name not in test.columns]:
        raise TrackingError(f"the test rows lack columns {', '.join(missing)}")
    # The column names are payband_contracts' reference format, which monitoring reads.
    inputs = _plain(test, [RECORD_ID, *FEATURES, BAND]).rename(columns={BAND: REFERENCE_TRUTH})
    prediction = predict_frame(booster, schema, test)
    if clash := sorted(set(inputs.columns) & set(prediction.columns)):
        raise TrackingError(f"prediction columns {clash} clash with input columns")
    return pd.concat([inputs, prediction], axis=1).reset_index(drop=True)


def shap_values(booster: xgb.Booster, inputs: pd.DataFrame) -> np.ndarray:
    """Exact TreeSHAP contributions from XGBoost: rows x outputs x (features + bias).

    One output (the log-odds of band 1) for two bands, one per band otherwise; each row's
    contributions plus its bias sum to the model's raw margin.
    """
    matrix = xgb.DMatrix(inputs, enable_categorical=True)
    contributions = booster.predict(matrix, pred_contribs=True, validate_features=True)
    return contributions[:, np.newaxis, :] if contributions.ndim == 2 else contributions


def _colour_values(inputs: pd.DataFrame) -> pd.DataFrame:
    # The beeswarm colours points by value: category codes follow the catalogue's order.
    return pd.DataFrame(
        {
            name: column.cat.codes if isinstance(column.dtype, pd.CategoricalDtype) else column
            for name, column in inputs.items()
        }
    )


def write_shap_plots(
    booster: xgb.Booster,
    schema: ModelSchema,
    frame: pd.DataFrame,
    directory: Path,
    *,
    seed: int,
    max_rows: int = SHAP_SAMPLE_ROWS,
) -> list[Path]:
    """SHAP summary plots of ``frame``'s rows (at most ``max_rows``, drawn with ``seed``).

    ``summary_band_<i>.png`` per explained band (band 1 only for two bands, whose log-odds
    the binary model predicts; every band otherwise) and ``importance.png`` (mean |SHAP|).
    """
    with warnings.catch_warnings():
        # shap's colour maps call matplotlib setters deprecated in 3.10 when it is imported.
        warnings.filterwarnings(
            "ignore",
            message="The set_(bad|over|under) function will be deprecated",
            category=PendingDeprecationWarning,
        )
        import shap
    # Headless: the figures only ever go to files.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = encode_inputs(frame, schema)
    if len(inputs) > max_rows:
        inputs = inputs.sample(n=max_rows, random_state=seed)
    values = shap_values(booster, inputs)[:, :, :-1]
    colours = _colour_values(inputs)
    features = list(schema.features)
    bands = [1] if schema.n_bands == 2 else list(range(schema.n_bands))
    per_band = [values[:, output, :] for output in range(len(bands))]
    # (file name, title, shap.summary_plot arguments) per figure.
    figures: list[tuple[str, str, dict[str, Any]]] = [
        (
            f"summary_band_{band}.png",
            f"SHAP values for band {schema.band_labels[band]} (log-odds, {len(inputs)} rows)",
            {"shap_values": per_band[output]},
        )
        for output, band in enumerate(bands)
    ]
    figures.append(
        (
            SHAP_IMPORTANCE_FILE,
            f"Mean |SHAP value| ({len(inputs)} rows)",
            {
                "shap_values": per_band[0] if len(bands) == 1 else per_band,
                "plot_type": "bar",
                "class_names": [schema.band_labels[band] for band in bands],
            },
        )
    )
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    open_before = set(plt.get_fignums())
    try:
        for file_name, title, arguments in figures:
            shap.summary_plot(
                features=colours,
                feature_names=features,
                max_display=len(features),
                show=False,
                # Its own generator: the same plot every time, whoever seeded NumPy's global
                # one (shap warns about the global one otherwise).
                rng=np.random.default_rng(0),
                **arguments,
            )
            figure = plt.gcf()
            figure.axes[0].set_title(title)
            figure.savefig(directory / file_name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            written.append(directory / file_name)
    finally:
        for number in set(plt.get_fignums()) - open_before:
            plt.close(number)
    return written


def _check_results(
    settings: TrainingSettings,
    booster: xgb.Booster,
    schema: ModelSchema,
    evaluation: Evaluation,
    parts: Mapping[str, pd.DataFrame],
) -> None:
    check_booster(schema, booster)
    if tuple(evaluation.band_labels) != schema.band_labels:
        raise TrackingError(
            f"the evaluation's bands {list(evaluation.band_labels)} differ from the model's "
            f"{list(schema.band_labels)}"
        )
    if schema.use_protected != settings.use_protected_attributes:
        raise TrackingError(
            f"the model was trained with use_protected={schema.use_protected}, the settings "
            f"say {settings.use_protected_attributes}"
        )
    for part, frame in parts.items():
        if missing := [name for name in (RECORD_ID, *FEATURES, BAND) if name not in frame.columns]:
            raise TrackingError(f"the {part} rows lack columns {', '.join(missing)}")


def _digest(frame: pd.DataFrame) -> str:
    # Ours rather than MLflow's: its digest calls DataFrame.all positionally (pandas 4 warns).
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    columns = "\x1f".join(str(name) for name in frame.columns).encode()
    return hashlib.sha256(rows.tobytes() + columns).hexdigest()[:16]


def _version_dataset(uri: str, name: str) -> MetaDataset:
    # The store's version id is a content hash: the dataset's digest without reading it.
    digest = uri.rpartition("@")[2][:16] or hashlib.sha256(uri.encode()).hexdigest()[:16]
    return MetaDataset(source=VersionedStoreSource(uri), name=name, digest=digest)


def _dataset(frame: pd.DataFrame, uri: str, name: str) -> PandasDataset:
    plain = _plain(frame, [column for column in frame.columns if column != "dataset_uri"])
    return mlflow.data.from_pandas(
        plain, source=VersionedStoreSource(uri), name=name, targets=BAND, digest=_digest(plain)
    )


def log_training(
    *,
    settings: TrainingSettings,
    model: XGBClassifier | xgb.Booster,
    schema: ModelSchema,
    search: SearchResult,
    evaluation: Evaluation,
    train: pd.DataFrame,
    test: pd.DataFrame,
    run_name: str | None = None,
    bias: BiasExamination | None = None,
    extra_metrics: Mapping[str, float] | None = None,
    raw_uri: str | None = None,
) -> LoggedTraining:
    """Record one training as one MLflow run in the configured experiment.

    ``model`` is the final fit on ``train``; ``evaluation`` its result on ``test`` (both typed
    by ``feature_frame``, with record_id); ``schema.train_uri``/``test_uri`` name their store
    versions. ``bias`` brings the metrics of the best trial without mitigation (logged as
    ``unmitigated_*``); ``extra_metrics`` (explanation cost) are logged with the model;
    ``raw_uri`` is the raw data version the features were built from.
    """
    booster = model if isinstance(model, xgb.Booster) else model.get_booster()
    _check_results(settings, booster, schema, evaluation, {"train": train, "test": test})
    experiment_id = configure(settings)
    params = training_params(settings, schema, search)
    metrics = training_metrics(evaluation, search)
    # Logged in two parts: the evaluation belongs to the test data, the search does not.
    search_metrics = {name: metrics.pop(name) for name in _search_metrics(search)}
    tags = {
        "source": schema.source,
        "year": schema.year,
        "states": ",".join(schema.states),
        "features_uri": schema.features_uri,
        "train_uri": schema.train_uri,
        "test_uri": schema.test_uri,
        "payband_training_version": __version__,
        GIT_COMMIT_TAG: code_revision(),
        "raw_uri": raw_uri or "",
    }
    trials = trials_table(search, schema.n_bands)
    reference = reference_frame(booster, schema, test)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params(params)
        mlflow.set_tags(tags)
        train_data = _dataset(train, schema.train_uri, f"{schema.source}-train")
        test_data = _dataset(test, schema.test_uri, f"{schema.source}-test")
        with warnings.catch_warnings():
            # Logging a dataset infers its schema; MLflow hints that integer columns cannot
            # hold missing values, which the feature checks already rule out.
            warnings.filterwarnings(
                "ignore", message="Hint: Inferred schema contains integer", category=UserWarning
            )
            mlflow.log_input(train_data, context=TRAINING_CONTEXT)
            mlflow.log_input(test_data, context=TESTING_CONTEXT)
        features_data = _version_dataset(schema.features_uri, f"{schema.source}-features")
        mlflow.log_input(features_data, context=FEATURES_CONTEXT)
        if raw_uri:
            mlflow.log_input(_version_dataset(raw_uri, f"{schema.source}-raw"), context=RAW_CONTEXT)
        info = log_model(booster, schema, make_input_example(test, schema))
        # Linked to the logged model too, so MLflow shows them with it.
        mlflow.log_metrics(metrics, model_id=info.model_id, dataset=test_data)
        mlflow.log_metrics(search_metrics, model_id=info.model_id)
        if extra_metrics:
            mlflow.log_metrics(dict(extra_metrics), model_id=info.model_id)
        if bias is not None and bias.before is not None:
            # The best trial without mitigation on the same test rows: the "before".
            before = {
                f"{UNMITIGATED_PREFIX}{name}": value
                for name, value in bias.before.metrics().items()
            }
            mlflow.log_metrics(before)
        with tempfile.TemporaryDirectory(prefix="payband-run-") as tmp:
            reference_path = Path(tmp) / REFERENCE_FILE
            reference.to_parquet(reference_path, index=False)
            mlflow.log_artifact(str(reference_path))
            plots = Path(tmp) / SHAP_DIR
            write_shap_plots(booster, schema, test, plots, seed=settings.seed)
            mlflow.log_artifacts(str(plots), artifact_path=SHAP_DIR)
            front = Path(tmp) / FRONT_DIR
            front.mkdir()
            trials.to_csv(front / TRIALS_FILE, index=False)
            write_front_plot(
                search, front / PLOT_FILE, min_disparate_impact=settings.min_disparate_impact
            )
            mlflow.log_artifacts(str(front), artifact_path=FRONT_DIR)
    log.info("logged training run %s in experiment %s", run.info.run_id, experiment_id)
    return LoggedTraining(run_id=run.info.run_id, experiment_id=experiment_id, model_info=info)
