"""One MLflow run per training, in a real MLflow on the embedded PostgreSQL: parameters,
metrics, the split versions as inputs, the model, the card, the reference data, SHAP plots;
and the same with artifacts in S3."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from xgboost import XGBClassifier

from payband_contracts import SalaryBands
from payband_data.settings import DataSettings
from payband_data.store import open_store
from payband_testing.checks import free_port
from payband_testing.postgres import PostgresConnectionInfo
from payband_testing.s3 import S3Bucket
from payband_training.card import model_card
from payband_training.evaluate import Evaluation, evaluate
from payband_training.features import (
    BAND,
    FEATURES,
    PROTECTED,
    feature_frame,
    read_features,
    to_model_frame,
)
from payband_training.gates import GateDecision
from payband_training.model import (
    PREDICTED_BAND,
    ModelInputError,
    ModelSchema,
    ModelSchemaError,
    encode_inputs,
)
from payband_training.search import SearchResult, fit_final
from payband_training.settings import TrainingSettings
from payband_training.split import TEST_FILE, commit_split, split
from payband_training.tracking import (
    MODEL_CARD_FILE,
    REFERENCE_FILE,
    STORE_SOURCE_TYPE,
    LoggedTraining,
    TrackingError,
    configure,
    log_training,
    shap_values,
)

PARAMS = {"n_estimators": 20, "max_depth": 3, "learning_rate": 0.3}
SEARCH = SearchResult(
    best_params=PARAMS,
    best_value=0.912,
    n_trials=4,
    n_pruned=1,
    n_complete=3,
    study_name="tracking-test",
)
PNG = b"\x89PNG\r\n\x1a\n"
MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass(frozen=True)
class Backend:
    tracking_uri: str
    artifact_root: str


@dataclass(frozen=True)
class Training:
    """A model trained on a split committed to a real local store, ready to be logged."""

    settings: TrainingSettings
    data_settings: DataSettings
    model: XGBClassifier
    schema: ModelSchema
    evaluation: Evaluation
    train: pd.DataFrame
    test: pd.DataFrame

    def log(self, **overrides: object) -> LoggedTraining:
        arguments: dict[str, object] = {
            "settings": self.settings,
            "model": self.model,
            "schema": self.schema,
            "search": SEARCH,
            "evaluation": self.evaluation,
            "train": self.train,
            "test": self.test,
        }
        return log_training(**(arguments | overrides))  # type: ignore[arg-type]

    def probabilities(self) -> np.ndarray:
        return self.model.predict_proba(to_model_frame(self.test, False)).astype(np.float64)


@pytest.fixture(scope="module")
def backend(
    postgres_module_database: PostgresConnectionInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A fresh MLflow database and artifact root; MLflow's global URIs are reset afterwards."""
    saved = {name: os.environ.pop(name, None) for name in MLFLOW_URI_VARIABLES}
    try:
        yield Backend(
            tracking_uri=postgres_module_database.url,
            artifact_root=tmp_path_factory.mktemp("mlflow").as_uri(),
        )
    finally:
        # configure() sets both URIs and their variables (for subprocesses); undo all four.
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


@pytest.fixture
def prepare(
    synthetic_snapshot: Callable[..., pd.DataFrame], backend: Backend, tmp_path: Path
) -> Callable[..., Training]:
    """``prepare(edges, **settings)``: commit a synthetic snapshot and its split, fit, evaluate."""

    def make(edges: tuple[int, ...] = (50_000,), **settings: object) -> Training:
        defaults: dict[str, object] = {
            "mlflow_tracking_uri": backend.tracking_uri,
            "mlflow_artifact_root": backend.artifact_root,
            "mlflow_experiment": "tracking-tests",
        }
        training_settings = TrainingSettings(**(defaults | settings))  # type: ignore[arg-type]
        data_settings = DataSettings(store_dir=tmp_path / "store")
        raw = synthetic_snapshot(600, edges=edges)
        snapshot = tmp_path / "features.parquet"
        raw.to_parquet(snapshot, index=False)
        metadata = {
            "source": "adult",
            "year": "1994",
            "states": "",
            "row_count": str(len(raw)),
            "band_edges_usd": json.dumps(list(edges)),
        }
        with open_store(data_settings) as store:
            version = store.commit("features/adult", {"features.parquet": snapshot}, metadata)
        features = read_features(version.uri, data_settings)
        parts = split(features, test_fraction=0.2, seed=training_settings.seed)
        with open_store(data_settings) as store:
            train_version, test_version = commit_split(parts, features, store, source="adult")
        labels = features.band_labels
        model = fit_final(parts.train, PARAMS, use_protected=False, n_bands=len(labels), seed=1)
        probabilities = model.predict_proba(to_model_frame(parts.test, False))
        evaluation = evaluate(
            parts.test[BAND].to_numpy(),
            probabilities,
            {name: parts.test[name] for name in PROTECTED},
            labels,
        )
        schema = ModelSchema.create(
            use_protected=False,
            band_edges_usd=edges,
            features_uri=features.uri,
            train_uri=train_version.uri,
            test_uri=test_version.uri,
            source="adult",
            year="1994",
        )
        return Training(
            settings=training_settings,
            data_settings=data_settings,
            model=model,
            schema=schema,
            evaluation=evaluation,
            train=parts.train,
            test=parts.test,
        )

    return make


def test_configure_creates_the_experiment_once(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = TrainingSettings(
        mlflow_tracking_uri=backend.tracking_uri,
        mlflow_artifact_root=backend.artifact_root,
        mlflow_experiment="configure-test",
    )
    experiment_id = configure(settings)
    assert mlflow.get_tracking_uri() == backend.tracking_uri
    assert mlflow.get_registry_uri() == backend.tracking_uri
    experiment = mlflow.get_experiment(experiment_id)
    assert experiment.name == "configure-test"
    assert experiment.artifact_location == backend.artifact_root

    moved = settings.model_copy(update={"mlflow_artifact_root": tmp_path.as_uri()})
    with caplog.at_level(logging.WARNING, logger="payband_training.tracking"):
        assert configure(moved) == experiment_id
    assert mlflow.get_experiment(experiment_id).artifact_location == backend.artifact_root
    assert f"keeps its artifact location {backend.artifact_root}" in caplog.text
    assert f"not the configured {tmp_path.as_uri()}" in caplog.text

    mlflow.delete_experiment(experiment_id)
    with pytest.raises(TrackingError, match=r"'configure-test' .* is deleted: restore it"):
        configure(settings)


def test_configure_fails_fast_when_the_database_is_unreachable() -> None:
    url = f"postgresql://mlflow:hunter2@127.0.0.1:{free_port()}/mlflow"
    started = time.monotonic()
    with pytest.raises(TrackingError, match="cannot reach the MLflow database") as raised:
        configure(TrainingSettings(mlflow_tracking_uri=url, mlflow_artifact_root="file:///x"))
    assert time.monotonic() - started < 5
    assert "hunter2" not in str(raised.value)
    assert "postgresql+psycopg://mlflow:***@127.0.0.1" in str(raised.value)


def test_a_run_records_params_metrics_and_tags(prepare: Callable[..., Training]) -> None:
    training = prepare(reweigh=True, trials=4, cv_folds=3)
    logged = training.log(run_name="params")
    run = mlflow.get_run(logged.run_id)

    assert run.info.status == "FINISHED"
    assert run.info.run_name == "params"
    assert run.data.params == {
        "n_estimators": "20",
        "max_depth": "3",
        "learning_rate": "0.3",
        "seed": str(training.settings.seed),
        "trials": "4",
        "timeout_s": "none",
        "cv_folds": "3",
        "test_fraction": "0.2",
        "use_protected": "false",
        "reweigh": "true",
        "n_bands": "2",
        "band_edges_usd": "[50000.0]",
        "features": ",".join(training.schema.features),
        "study_name": "tracking-test",
    }
    metrics = run.data.metrics
    expected = training.evaluation.metrics()
    assert {name: metrics[name] for name in expected} == pytest.approx(expected)
    assert metrics["roc_auc"] == pytest.approx(training.evaluation.quality["roc_auc"])
    assert "sex_disparate_impact" in metrics
    assert "race_equalized_odds_difference" in metrics
    assert metrics["search_best_cv_roc_auc"] == pytest.approx(0.912)
    assert (metrics["search_trials"], metrics["search_pruned"]) == (4.0, 1.0)
    assert metrics["search_complete"] == 3.0
    # The evaluation is linked to the logged model and the test data, the search to the model.
    model = mlflow.get_logged_model(logged.model_info.model_id)
    linked = {metric.key: metric for metric in model.metrics or []}
    assert linked["roc_auc"].dataset_name == "adult-test"
    assert linked["search_best_cv_roc_auc"].dataset_name is None
    assert set(linked) == set(metrics)
    tags = run.data.tags
    assert tags["source"] == "adult"
    assert tags["year"] == "1994"
    assert tags["features_uri"] == training.schema.features_uri
    assert tags["features_uri"].startswith("local://features/adult@")
    assert tags["train_uri"] == training.schema.train_uri
    assert tags["test_uri"] == training.schema.test_uri


def test_the_inputs_are_the_split_versions(
    prepare: Callable[..., Training], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    training = prepare()
    run = mlflow.get_run(training.log().run_id)

    inputs = {
        {tag.key: tag.value for tag in item.tags}["mlflow.data.context"]: item.dataset
        for item in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "testing"}
    for context, uri, rows, name in (
        ("training", training.schema.train_uri, len(training.train), "adult-train"),
        ("testing", training.schema.test_uri, len(training.test), "adult-test"),
    ):
        dataset = inputs[context]
        assert dataset.name == name
        assert dataset.source_type == STORE_SOURCE_TYPE
        assert json.loads(dataset.source) == {"uri": uri}
        assert json.loads(dataset.profile)["num_rows"] == rows
        columns = json.loads(dataset.schema)["mlflow_colspec"]
        assert {"name": "band", "type": "long", "required": True} in columns
        assert {"name": "education", "type": "string", "required": True} in columns
    assert training.schema.train_uri.startswith("local://splits/adult/train@")

    # The source leads back to the data: MLflow resolves it and the store fetches the file.
    monkeypatch.setenv("PAYBAND_DATA_STORE_DIR", str(training.data_settings.store_dir))
    source = mlflow.data.get_source(inputs["testing"])
    fetched = Path(source.load(str(tmp_path / "fetched")))
    assert sorted(path.name for path in fetched.iterdir()) == [TEST_FILE]
    assert pd.read_parquet(fetched / TEST_FILE)["record_id"].tolist() == (
        training.test["record_id"].tolist()
    )


def test_the_run_holds_the_card_reference_data_and_plots(
    prepare: Callable[..., Training], tmp_path: Path
) -> None:
    training = prepare()
    run_id = training.log().run_id

    listed = {item.path for item in mlflow.artifacts.list_artifacts(run_id=run_id)}
    assert {MODEL_CARD_FILE, REFERENCE_FILE, "shap"} <= listed
    card = mlflow.artifacts.load_text(f"runs:/{run_id}/{MODEL_CARD_FILE}")
    assert training.evaluation.fairness_table().strip() in card
    for uri in (training.schema.features_uri, training.schema.train_uri, training.schema.test_uri):
        assert f"`{uri}`" in card
    assert "## Gate decision\n\nPending" in card

    reference = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=REFERENCE_FILE, dst_path=str(tmp_path)
        )
    )
    assert list(reference.columns) == [
        "record_id",
        *FEATURES,
        "band",
        PREDICTED_BAND,
        *training.schema.band_labels,
    ]
    assert len(reference) == len(training.test)
    assert reference["record_id"].tolist() == training.test["record_id"].tolist()
    assert reference["band"].tolist() == training.test[BAND].tolist()
    for name in PROTECTED:
        assert reference[name].tolist() == training.test[name].astype(str).tolist()
    probabilities = training.probabilities()
    np.testing.assert_array_equal(
        reference[list(training.schema.band_labels)].to_numpy(), probabilities
    )
    assert reference[PREDICTED_BAND].tolist() == probabilities.argmax(axis=1).tolist()

    plots = {
        item.path: item.file_size
        for item in mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path="shap")
    }
    assert set(plots) == {"shap/summary_band_1.png", "shap/importance.png"}
    assert all(size > 10_000 for size in plots.values())
    plot = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="shap/summary_band_1.png", dst_path=str(tmp_path)
    )
    assert Path(plot).read_bytes().startswith(PNG)


def test_the_run_model_predicts_like_the_booster(prepare: Callable[..., Training]) -> None:
    training = prepare()
    logged = training.log()

    assert logged.model_uri == f"runs:/{logged.run_id}/model"
    assert logged.model_info.run_id == logged.run_id
    loaded = mlflow.pyfunc.load_model(logged.model_uri)
    rows = training.test.loc[:, list(training.schema.features)].astype(
        dict.fromkeys(training.schema.category_levels, str)
    )
    prediction = loaded.predict(rows)
    np.testing.assert_array_equal(
        prediction[list(training.schema.band_labels)].to_numpy(), training.probabilities()
    )
    with pytest.raises(ModelInputError, match="column 'marital_status' has unknown category"):
        loaded.predict(rows.assign(marital_status="engaged"))


def test_a_three_band_run_has_one_shap_plot_per_band(prepare: Callable[..., Training]) -> None:
    training = prepare(edges=(30_000, 60_000))
    run_id = training.log().run_id

    run = mlflow.get_run(run_id)
    assert run.data.params["n_bands"] == "3"
    assert {f"band_{band}_recall" for band in range(3)} <= set(run.data.metrics)
    plots = {
        item.path for item in mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path="shap")
    }
    assert plots == {
        "shap/summary_band_0.png",
        "shap/summary_band_1.png",
        "shap/summary_band_2.png",
        "shap/importance.png",
    }
    card = mlflow.artifacts.load_text(f"runs:/{run_id}/{MODEL_CARD_FILE}")
    assert "| 1 | 30K-60K | more than 30,000, up to 60,000 |" in card
    assert "softmax over 3 bands" in card


@pytest.mark.parametrize("edges", [(50_000,), (30_000, 60_000)])
def test_shap_values_are_exact(
    edges: tuple[int, ...], synthetic_snapshot: Callable[..., pd.DataFrame]
) -> None:
    labels = SalaryBands(edges_usd=edges).labels
    frame = feature_frame(synthetic_snapshot(300, edges=edges), labels)
    model = fit_final(frame, PARAMS, use_protected=False, n_bands=len(labels), seed=1)
    schema = ModelSchema.create(
        use_protected=False,
        band_edges_usd=edges,
        features_uri="f",
        train_uri="t",
        test_uri="e",
        source="adult",
        year="1994",
    )
    inputs = encode_inputs(frame, schema)
    values = shap_values(model.get_booster(), inputs)
    outputs = 1 if len(labels) == 2 else len(labels)
    assert values.shape == (len(frame), outputs, len(schema.features) + 1)
    margin = model.get_booster().predict(
        xgb.DMatrix(inputs, enable_categorical=True), output_margin=True
    )
    np.testing.assert_allclose(values.sum(axis=2), margin.reshape(len(frame), outputs), atol=1e-4)


def test_results_that_do_not_fit_together_are_refused(prepare: Callable[..., Training]) -> None:
    training = prepare()
    with pytest.raises(
        TrackingError, match="trained with use_protected=False, the settings say True"
    ):
        training.log(
            settings=training.settings.model_copy(update={"use_protected_attributes": True})
        )
    three = ModelSchema.create(
        use_protected=False,
        band_edges_usd=(30_000, 60_000),
        features_uri="f",
        train_uri="t",
        test_uri="e",
        source="adult",
        year="1994",
    )
    with pytest.raises(ModelSchemaError, match="predicts 2 classes, the schema has 3 bands"):
        training.log(schema=three)
    with pytest.raises(TrackingError, match="the test rows lack columns record_id"):
        training.log(test=training.test.drop(columns="record_id"))


def test_the_card_states_use_data_limits_and_the_gate_decision(
    prepare: Callable[..., Training],
) -> None:
    training = prepare()
    rejected = GateDecision(
        passed=False, reasons=["roc_auc 0.700 < 0.800", "sex disparate impact 0.900 >= 0.800"]
    )
    card = model_card(
        training.schema,
        training.evaluation,
        params=PARAMS,
        cv_roc_auc=0.912,
        train_rows=len(training.train),
        decision=rejected,
    )
    assert card.startswith("# Model card: salary-band\n")
    sections = [line for line in card.splitlines() if line.startswith("## ")]
    assert sections == [
        "## Intended use",
        "## Data",
        "## Model",
        "## Metrics (test set)",
        "## Fairness",
        "## Limitations",
        "## Gate decision",
    ]
    assert "support, not replace" in card
    assert "high-risk AI system under the EU AI Act" in card
    assert "Not for individuals outside it" in card
    assert f"| Training | `{training.schema.train_uri}` | {len(training.train)} |" in card
    assert "Protected attributes used as inputs: no" in card
    assert "| learning_rate | 0.3 |" in card
    roc_auc = training.evaluation.quality["roc_auc"]
    assert f"| ROC AUC | {roc_auc:.3f} |" in card
    assert "US dollars of 1994" in card
    assert card.rstrip().endswith(
        "Rejected: the model is registered but does not become champion.\n\n"
        "- roc_auc 0.700 < 0.800\n- sex disparate impact 0.900 >= 0.800"
    )
    passed = model_card(
        training.schema, training.evaluation, params=PARAMS, decision=GateDecision(True, [])
    )
    assert "Passed: the model may become champion." in passed


def test_an_s3_artifact_root_holds_the_run(
    prepare: Callable[..., Training],
    s3_bucket: S3Bucket,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in s3_bucket.endpoint.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    training = prepare(
        mlflow_experiment="tracking-s3", mlflow_artifact_root=f"{s3_bucket.uri}/mlflow"
    )
    run_id = training.log().run_id

    run = mlflow.get_run(run_id)
    assert run.info.artifact_uri == f"{s3_bucket.uri}/mlflow/{run_id}/artifacts"
    card = mlflow.artifacts.load_text(f"runs:/{run_id}/{MODEL_CARD_FILE}")
    assert f"`{training.schema.test_uri}`" in card
    client = s3_bucket.endpoint.client()
    try:
        keys = {
            item["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket.name)
            for item in page.get("Contents", [])
        }
    finally:
        client.close()
    assert f"mlflow/{run_id}/artifacts/{MODEL_CARD_FILE}" in keys
    assert f"mlflow/{run_id}/artifacts/{REFERENCE_FILE}" in keys
    assert any(key.endswith("/artifacts/artifacts/booster.json") for key in keys)
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model", dst_path=str(tmp_path))
    rows = training.test.loc[:, list(training.schema.features)].astype(
        dict.fromkeys(training.schema.category_levels, str)
    )
    np.testing.assert_array_equal(
        loaded.predict(rows)[list(training.schema.band_labels)].to_numpy(),
        training.probabilities(),
    )
