"""One MLflow run per training, in a real MLflow on the embedded PostgreSQL: parameters,
metrics, lineage (code revision, the raw and features versions and the split as inputs), the
model, the reference data, SHAP plots, the search's trials and Pareto front; and the same with
artifacts in S3. The model card as rendered from a training, and written at registration."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from payband_contracts import SalaryBands
from payband_contracts.model import DecisionRule
from payband_data.settings import DataSettings
from payband_data.store import open_store
from payband_local.ports import free_port
from payband_local.postgres import PostgresConnectionInfo
from payband_testing.s3 import S3Bucket
from payband_training.card import BIAS_HEADING, CARD_PATH_TAG, BiasExamination, model_card
from payband_training.evaluate import Evaluation, label_disparate_impact
from payband_training.features import (
    BAND,
    FEATURES,
    FEATURES_FILE,
    PROTECTED,
    feature_frame,
    read_features,
    to_model_frame,
)
from payband_training.gates import EXPLANATION_MS, GateDecision
from payband_training.mitigation import Mitigation
from payband_training.model import (
    PREDICTED_BAND,
    ModelInputError,
    ModelSchema,
    ModelSchemaError,
    encode_inputs,
)
from payband_training.registry import record_card, register
from payband_training.search import (
    SearchResult,
    TrialConfig,
    TrialRecord,
    evaluate_fit,
    fit_final,
)
from payband_training.settings import TrainingSettings
from payband_training.split import TEST_FILE, commit_split, split
from payband_training.tracking import (
    GIT_COMMIT_TAG,
    REFERENCE_FILE,
    REVISION_VARIABLE,
    STORE_SOURCE_TYPE,
    UNMITIGATED_PREFIX,
    LoggedTraining,
    TrackingError,
    configure,
    log_training,
    shap_values,
)

PARAMS = {"n_estimators": 20, "max_depth": 3, "learning_rate": 0.3}
CUT_OFF = 0.4
PENALTY = Mitigation("penalty", 2.0)
PNG = b"\x89PNG\r\n\x1a\n"
MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
RAW_FILE = "adult.data"
# The columns front.py writes to search/trials.csv, two bands, in order.
TRIALS_COLUMNS = [
    "trial",
    "chosen",
    "feasible",
    "pareto",
    "cv_roc_auc",
    "cv_accuracy",
    "cv_balanced_accuracy",
    "cv_worst_disparate_impact",
    "worst_fold_disparate_impact",
    "cv_disparate_impact_sex",
    "cv_disparate_impact_race",
    "cv_equal_opportunity_difference_sex",
    "cv_equal_opportunity_difference_race",
    "explanation_cost",
    *PARAMS,
    "mitigation",
    "mitigation_strength",
    "cut_off",
]


def decision_for(n_bands: int) -> DecisionRule:
    """A rule other than the plain argmax: a cut-off, or an offset on the top band."""
    if n_bands == 2:
        return DecisionRule.with_cut_off(CUT_OFF)
    return DecisionRule(band_offsets=(0.0,) * (n_bands - 1) + (0.5,))


def config_for(n_bands: int, mitigation: Mitigation = PENALTY) -> TrialConfig:
    return TrialConfig(params=PARAMS, mitigation=mitigation, decision=decision_for(n_bands))


def trial_record(
    number: int,
    config: TrialConfig,
    roc_auc: float,
    worst: float,
    *,
    feasible: bool,
    pareto: bool,
) -> TrialRecord:
    return TrialRecord(
        number=number,
        config=config,
        roc_auc=roc_auc,
        accuracy=roc_auc - 0.1,
        balanced_accuracy=roc_auc - 0.15,
        disparate_impact={"sex": worst, "race": worst + 0.05},
        worst_disparate_impact=worst,
        worst_fold_disparate_impact=worst - 0.02,
        equal_opportunity_difference={"sex": 0.1, "race": 0.05},
        explanation_cost=1000.0 + number,
        feasible=feasible,
        pareto=pareto,
    )


def search_result(n_bands: int) -> SearchResult:
    """Five trials, one failed: the unmitigated best (the baseline) is unfair, the chosen
    penalty trial the most accurate of the two that meet every gate."""
    trials = [
        trial_record(0, config_for(n_bands, Mitigation()), 0.93, 0.55, feasible=False, pareto=True),
        trial_record(
            1,
            config_for(n_bands, Mitigation("reweigh", 1.0)),
            0.90,
            0.70,
            feasible=False,
            pareto=False,
        ),
        trial_record(3, config_for(n_bands), 0.912, 0.86, feasible=True, pareto=True),
        trial_record(
            4,
            config_for(n_bands, Mitigation("massage", 0.5)),
            0.89,
            0.84,
            feasible=True,
            pareto=False,
        ),
    ]
    return SearchResult(
        chosen=trials[2],
        baseline=trials[0],
        trials=trials,
        n_trials=5,
        n_failed=1,
        study_name="tracking-test",
    )


SEARCH = search_result(2)


@dataclass(frozen=True)
class Backend:
    tracking_uri: str
    artifact_root: str


@dataclass(frozen=True)
class Training:
    """A model trained on a split committed to a real local store, ready to be logged."""

    settings: TrainingSettings
    data_settings: DataSettings
    model: xgb.Booster
    schema: ModelSchema
    search: SearchResult
    evaluation: Evaluation
    train: pd.DataFrame
    test: pd.DataFrame
    raw_uri: str

    def log(self, **overrides: object) -> LoggedTraining:
        arguments: dict[str, object] = {
            "settings": self.settings,
            "model": self.model,
            "schema": self.schema,
            "search": self.search,
            "evaluation": self.evaluation,
            "train": self.train,
            "test": self.test,
            "raw_uri": self.raw_uri,
        }
        return log_training(**(arguments | overrides))  # type: ignore[arg-type]

    def card(self, bias: BiasExamination | None = None) -> str:
        """The model card of this training, as the pipeline renders it (without a decision)."""
        return model_card(
            self.schema,
            self.evaluation,
            params=self.search.chosen.config.flat(self.schema.n_bands),
            cv_roc_auc=self.search.best_value,
            train_rows=len(self.train),
            bias=bias,
        )

    def probabilities(self) -> np.ndarray:
        """XGBoost's own probabilities of the test rows, through a DMatrix."""
        inputs = to_model_frame(self.test, False)
        raw = self.model.predict(xgb.DMatrix(inputs, enable_categorical=True))
        if self.schema.n_bands == 2:
            raw = np.vstack((1.0 - raw, raw)).T
        return raw.astype(np.float64)

    def evaluate(self, booster: xgb.Booster, decision: DecisionRule) -> Evaluation:
        return evaluate_as_pipeline(booster, self.test, decision, self.schema, self.settings)

    def bias(self) -> BiasExamination:
        """The card's bias section as the pipeline builds it, with an unmitigated "before"."""
        baseline = self.search.baseline
        assert baseline is not None
        before = fit_final(
            self.train, baseline.config, use_protected=False, n_bands=self.schema.n_bands, seed=1
        )
        chosen = self.search.chosen
        return BiasExamination(
            mitigation=chosen.config.mitigation,
            decision=chosen.config.decision,
            after=self.evaluation,
            before=self.evaluate(before, baseline.config.decision),
            trials=self.search.n_complete,
            front=len(self.search.front),
            feasible=sum(trial.feasible for trial in self.search.trials),
            chosen_trial=chosen.number,
            baseline_trial=baseline.number,
            chosen_feasible=chosen.feasible,
            label_disparate_impact=label_disparate_impact(
                self.train[BAND].to_numpy(),
                {name: self.train[name].astype(str).tolist() for name in PROTECTED},
                favourable=self.schema.n_bands - 1,
                min_group_rows=self.settings.min_group_rows,
            ),
        )


def evaluate_as_pipeline(
    booster: xgb.Booster,
    test: pd.DataFrame,
    decision: DecisionRule,
    schema: ModelSchema,
    settings: TrainingSettings,
) -> Evaluation:
    """The evaluation the pipeline makes: the rule's bands, intervals, sex x race."""
    return evaluate_fit(
        booster,
        test,
        decision,
        use_protected=False,
        n_bands=schema.n_bands,
        min_group_rows=settings.min_group_rows,
        bootstrap_samples=settings.bootstrap_samples,
        seed=settings.seed,
        band_labels=schema.band_labels,
        intersection=PROTECTED,
    )


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
    """``prepare(edges, **settings)``: commit a raw version, a synthetic snapshot built from it
    and its split, fit the chosen trial's configuration, evaluate it as the pipeline does."""

    def make(edges: tuple[int, ...] = (50_000,), **settings: object) -> Training:
        defaults: dict[str, object] = {
            "mlflow_tracking_uri": backend.tracking_uri,
            "mlflow_artifact_root": backend.artifact_root,
            "mlflow_experiment": "tracking-tests",
            "min_group_rows": 10,
            "bootstrap_samples": 20,
        }
        training_settings = TrainingSettings(**(defaults | settings))  # type: ignore[arg-type]
        data_settings = DataSettings(store_dir=tmp_path / "store")
        raw_file = tmp_path / RAW_FILE
        raw_file.write_text("39, State-gov, 77516, Bachelors, 13, ...\n", encoding="utf-8")
        raw = synthetic_snapshot(600, edges=edges)
        snapshot = tmp_path / FEATURES_FILE
        raw.to_parquet(snapshot, index=False)
        with open_store(data_settings) as store:
            raw_version = store.commit("raw/adult", {RAW_FILE: raw_file}, {"source": "adult"})
            metadata = {
                "source": "adult",
                "year": "1994",
                "states": "",
                "row_count": str(len(raw)),
                "band_edges_usd": json.dumps(list(edges)),
                "raw_uri": raw_version.uri,
            }
            version = store.commit("features/adult", {FEATURES_FILE: snapshot}, metadata)
        features = read_features(version.uri, data_settings)
        parts = split(features, test_fraction=0.2, seed=training_settings.seed)
        with open_store(data_settings) as store:
            train_version, test_version = commit_split(parts, features, store, source="adult")
        n_bands = len(features.band_labels)
        found = search_result(n_bands)
        config = found.chosen.config
        model = fit_final(
            parts.train,
            config,
            use_protected=False,
            n_bands=n_bands,
            seed=1,
            min_group_rows=training_settings.min_group_rows,
        )
        schema = ModelSchema.create(
            use_protected=False,
            band_edges_usd=edges,
            features_uri=features.uri,
            train_uri=train_version.uri,
            test_uri=test_version.uri,
            source="adult",
            year="1994",
            decision=config.decision,
        )
        return Training(
            settings=training_settings,
            data_settings=data_settings,
            model=model,
            schema=schema,
            search=found,
            evaluation=evaluate_as_pipeline(
                model, parts.test, config.decision, schema, training_settings
            ),
            train=parts.train,
            test=parts.test,
            raw_uri=train_version.metadata["raw_uri"],
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


def test_a_run_records_params_metrics_and_tags(
    prepare: Callable[..., Training], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REVISION_VARIABLE, "0123abc")
    training = prepare(mitigation="none,penalty", trials=4, cv_folds=3)
    logged = training.log(
        run_name="params", extra_metrics={"explanation_cost": 1234.0, EXPLANATION_MS: 42.0}
    )
    run = mlflow.get_run(logged.run_id)

    assert run.info.status == "FINISHED"
    assert run.info.run_name == "params"
    params = run.data.params
    decision_rule = params.pop("decision_rule")
    assert params == {
        "n_estimators": "20",
        "max_depth": "3",
        "learning_rate": "0.3",
        "mitigation": "penalty",
        "mitigation_strength": "2",
        "cut_off": "0.4",
        "seed": str(training.settings.seed),
        "trials": "4",
        "timeout_s": "none",
        "cv_folds": "3",
        "test_fraction": "0.2",
        "use_protected": "false",
        "mitigation_methods": "none,penalty",
        "min_group_rows": "10",
        "bootstrap_samples": "20",
        "max_explanation_ms": "100",
        "n_bands": "2",
        "band_edges_usd": "[50000.0]",
        "features": ",".join(training.schema.features),
        "study_name": "tracking-test",
    }
    # The rule the model applies, exactly as stored with it.
    rule = DecisionRule.model_validate_json(decision_rule)
    assert rule == training.schema.decision == SEARCH.chosen.config.decision
    assert rule.cut_off == pytest.approx(CUT_OFF)

    metrics = run.data.metrics
    expected = training.evaluation.metrics()
    assert {name: metrics[name] for name in expected} == pytest.approx(expected)
    assert metrics["roc_auc"] == pytest.approx(training.evaluation.quality["roc_auc"])
    assert "sex_disparate_impact" in metrics
    assert "race_equalized_odds_difference" in metrics
    # The bootstrap intervals and the sex x race intersection (reported, not gated).
    low, high = training.evaluation.fairness["sex"].disparate_impact_interval
    assert (metrics["sex_disparate_impact_ci_low"], metrics["sex_disparate_impact_ci_high"]) == (
        pytest.approx(low),
        pytest.approx(high),
    )
    assert low <= metrics["sex_disparate_impact"] <= high
    for group in training.evaluation.fairness["sex"].groups:
        assert f"sex_group_{group.group}_selection_rate_ci_low" in metrics
        assert f"sex_group_{group.group}_selection_rate_ci_high" in metrics
    assert "sex_x_race_disparate_impact" in metrics
    assert {name: metrics[name] for name in metrics if name.startswith("search_")} == {
        "search_chosen_cv_roc_auc": pytest.approx(0.912),
        "search_cv_worst_disparate_impact": pytest.approx(0.86),
        "search_trials": 5.0,
        "search_complete": 4.0,
        "search_failed": 1.0,
        "search_feasible": 2.0,
        "search_front_size": 2.0,
        "search_chosen_feasible": 1.0,
    }
    assert (metrics["explanation_cost"], metrics[EXPLANATION_MS]) == (1234.0, 42.0)
    # The evaluation is linked to the logged model and the test data, the rest to the model.
    model = mlflow.get_logged_model(logged.model_info.model_id)
    linked = {metric.key: metric for metric in model.metrics or []}
    assert linked["roc_auc"].dataset_name == "adult-test"
    assert linked["search_chosen_cv_roc_auc"].dataset_name is None
    assert linked[EXPLANATION_MS].dataset_name is None
    assert set(linked) == set(metrics)
    tags = run.data.tags
    assert tags["source"] == "adult"
    assert tags["year"] == "1994"
    assert tags["features_uri"] == training.schema.features_uri
    assert tags["features_uri"].startswith("local://features/adult@")
    assert tags["train_uri"] == training.schema.train_uri
    assert tags["test_uri"] == training.schema.test_uri
    assert tags["raw_uri"] == training.raw_uri
    assert tags[GIT_COMMIT_TAG] == "0123abc"


def test_without_a_given_revision_the_run_names_the_checkout(
    prepare: Callable[..., Training], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REVISION_VARIABLE, raising=False)
    training = prepare()

    tags = mlflow.get_run(training.log().run_id).data.tags

    # A git commit (marked when the checkout has uncommitted changes), or "unknown" outside one.
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", tags[GIT_COMMIT_TAG])


def inputs_by_context(run_id: str) -> dict[str, mlflow.entities.Dataset]:
    run = mlflow.get_run(run_id)
    return {
        {tag.key: tag.value for tag in item.tags}["mlflow.data.context"]: item.dataset
        for item in run.inputs.dataset_inputs
    }


def test_the_inputs_are_the_raw_and_features_versions_and_the_split(
    prepare: Callable[..., Training], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    training = prepare()
    inputs = inputs_by_context(training.log().run_id)

    assert set(inputs) == {"training", "testing", "features", "raw"}
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
    # The versions the split came from: named by their store URIs, digested by their ids.
    for context, uri, name in (
        ("features", training.schema.features_uri, "adult-features"),
        ("raw", training.raw_uri, "adult-raw"),
    ):
        dataset = inputs[context]
        assert dataset.name == name
        assert dataset.source_type == STORE_SOURCE_TYPE
        assert json.loads(dataset.source) == {"uri": uri}
        assert dataset.digest == uri.rpartition("@")[2][:16]
    assert training.raw_uri.startswith("local://raw/adult@")

    # Each source leads back to the data: MLflow resolves it and the store fetches the files.
    monkeypatch.setenv("PAYBAND_DATA_STORE_DIR", str(training.data_settings.store_dir))
    source = mlflow.data.get_source(inputs["testing"])
    fetched = Path(source.load(str(tmp_path / "fetched")))
    assert sorted(path.name for path in fetched.iterdir()) == [TEST_FILE]
    assert pd.read_parquet(fetched / TEST_FILE)["record_id"].tolist() == (
        training.test["record_id"].tolist()
    )
    raw = Path(mlflow.data.get_source(inputs["raw"]).load(str(tmp_path / "raw")))
    assert sorted(path.name for path in raw.iterdir()) == [RAW_FILE]
    features = Path(mlflow.data.get_source(inputs["features"]).load(str(tmp_path / "features")))
    assert sorted(path.name for path in features.iterdir()) == [FEATURES_FILE]


def test_a_run_without_a_raw_version_has_no_raw_input(prepare: Callable[..., Training]) -> None:
    training = prepare()
    run_id = training.log(raw_uri=None).run_id

    assert set(inputs_by_context(run_id)) == {"training", "testing", "features"}
    assert mlflow.get_run(run_id).data.tags["raw_uri"] == ""


def test_the_run_holds_the_reference_data_and_plots_but_no_card(
    prepare: Callable[..., Training], tmp_path: Path
) -> None:
    training = prepare()
    run_id = training.log().run_id

    listed = {item.path for item in mlflow.artifacts.list_artifacts(run_id=run_id)}
    assert {REFERENCE_FILE, "shap", "search"} <= listed
    # The card states the gates' decision: registration writes it, once the gates decided.
    assert not [path for path in listed if "card" in path]

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
    # The predicted band is the model's decision rule's: band 1 above the cut-off.
    assert (
        reference[PREDICTED_BAND].tolist() == (probabilities[:, 1] > CUT_OFF).astype(int).tolist()
    )

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


def test_the_run_holds_every_trial_and_the_pareto_front(
    prepare: Callable[..., Training], tmp_path: Path
) -> None:
    training = prepare()
    run_id = training.log().run_id

    listed = {
        item.path for item in mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path="search")
    }
    assert listed == {"search/trials.csv", "search/pareto.png"}
    table = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="search/trials.csv", dst_path=str(tmp_path)
        )
    )
    assert list(table.columns) == TRIALS_COLUMNS
    trials = training.search.trials
    assert table["trial"].tolist() == [trial.number for trial in trials]
    assert table["chosen"].tolist() == [False, False, True, False]
    assert table["feasible"].tolist() == [trial.feasible for trial in trials]
    assert table["pareto"].tolist() == [trial.pareto for trial in trials]
    assert table["mitigation"].tolist() == ["none", "reweigh", "penalty", "massage"]
    assert table["mitigation_strength"].tolist() == [0.0, 1.0, 2.0, 0.5]
    assert table["cut_off"].tolist() == pytest.approx([CUT_OFF] * 4)
    assert table["cv_roc_auc"].tolist() == pytest.approx([t.roc_auc for t in trials])
    assert table["cv_worst_disparate_impact"].tolist() == pytest.approx(
        [t.worst_disparate_impact for t in trials]
    )
    assert table["cv_disparate_impact_race"].tolist() == pytest.approx(
        [t.disparate_impact["race"] for t in trials]
    )
    assert table["explanation_cost"].tolist() == pytest.approx([t.explanation_cost for t in trials])

    plot = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="search/pareto.png", dst_path=str(tmp_path)
        )
    )
    assert plot.read_bytes().startswith(PNG)
    # It decodes as an image of a figure.
    pixels = matplotlib.image.imread(plot, format="png")
    height, width, channels = pixels.shape
    assert width > 300
    assert height > 200
    assert channels in (3, 4)


def test_the_card_examines_bias_before_and_after_mitigation(
    prepare: Callable[..., Training],
) -> None:
    training = prepare()
    bias = training.bias()
    assert bias.before is not None
    run_id = training.log(bias=bias).run_id

    card = training.card(bias=bias)
    sections = [line for line in card.splitlines() if line.startswith("## ")]
    assert sections.index(BIAS_HEADING) == sections.index("## Fairness") + 1
    examination = card.split(BIAS_HEADING, 1)[1].split("\n## ", 1)[0]
    assert f"Mitigation: {PENALTY.describe()}." in examination
    assert training.schema.decision.describe(training.schema.band_labels) in examination
    assert "4 trials, 2 on the Pareto front, 2 meeting every gate" in examination
    assert "the model is trial 3, the most accurate of those." in examination
    assert "| Test set | before (no mitigation, trial 0) | after (this model) |" in examination
    after = training.evaluation.quality["roc_auc"]
    assert f"| ROC AUC | {bias.before.quality['roc_auc']:.3f} | {after:.3f} |" in examination
    assert "The price: ROC AUC" in examination
    sex = bias.label_disparate_impact["sex"]
    assert f"sex {sex:.3f}" in examination
    # The "before" is on the run too, under its own names.
    metrics = mlflow.get_run(run_id).data.metrics
    assert metrics[f"{UNMITIGATED_PREFIX}roc_auc"] == pytest.approx(bias.before.quality["roc_auc"])
    assert metrics[f"{UNMITIGATED_PREFIX}sex_disparate_impact"] == pytest.approx(
        bias.before.fairness["sex"].disparate_impact
    )


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
    probabilities = training.probabilities()
    np.testing.assert_array_equal(
        prediction[list(training.schema.band_labels)].to_numpy(), probabilities
    )
    np.testing.assert_array_equal(
        prediction[PREDICTED_BAND].to_numpy(), probabilities[:, 1] > CUT_OFF
    )
    with pytest.raises(ModelInputError, match="column 'marital_status' has unknown category"):
        loaded.predict(rows.assign(marital_status="engaged"))


def test_a_three_band_run_has_one_shap_plot_per_band(prepare: Callable[..., Training]) -> None:
    training = prepare(edges=(30_000, 60_000))
    run_id = training.log().run_id

    run = mlflow.get_run(run_id)
    assert run.data.params["n_bands"] == "3"
    assert run.data.params["band_offsets"] == "0,0,0.5"
    assert "cut_off" not in run.data.params
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
    card = training.card()
    assert "| 1 | 30K-60K | more than 30,000, up to 60,000 |" in card
    assert "softmax over 3 bands" in card


@pytest.mark.parametrize("edges", [(50_000,), (30_000, 60_000)])
def test_shap_values_are_exact(
    edges: tuple[int, ...], synthetic_snapshot: Callable[..., pd.DataFrame]
) -> None:
    labels = SalaryBands(edges_usd=edges).labels
    frame = feature_frame(synthetic_snapshot(300, edges=edges), labels)
    booster = fit_final(
        frame, config_for(len(labels)), use_protected=False, n_bands=len(labels), seed=1
    )
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
    values = shap_values(booster, inputs)
    outputs = 1 if len(labels) == 2 else len(labels)
    assert values.shape == (len(frame), outputs, len(schema.features) + 1)
    margin = booster.predict(xgb.DMatrix(inputs, enable_categorical=True), output_margin=True)
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
    params = SEARCH.chosen.config.flat(2)
    card = model_card(
        training.schema,
        training.evaluation,
        params=params,
        cv_roc_auc=0.912,
        train_rows=len(training.train),
        decision=rejected,
    )
    assert card.startswith("# Model card: salary-band\n")
    assert training.evaluation.fairness_table().strip() in card
    for uri in (training.schema.features_uri, training.schema.train_uri, training.schema.test_uri):
        assert f"`{uri}`" in card
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
    assert "| mitigation | penalty |" in card
    assert "| cut_off | 0.4 |" in card
    roc_auc = training.evaluation.quality["roc_auc"]
    assert f"| ROC AUC | {roc_auc:.3f} |" in card
    assert "US dollars of 1994" in card
    assert card.rstrip().endswith(
        "Rejected: the model is registered but does not become champion.\n\n"
        "- roc_auc 0.700 < 0.800\n- sex disparate impact 0.900 >= 0.800"
    )
    passed = model_card(
        training.schema, training.evaluation, params=params, decision=GateDecision(True, [])
    )
    assert "Passed: the model may become champion." in passed
    pending = training.card()
    assert "## Gate decision\n\nPending" in pending
    assert "Cross-validated ROC AUC of the chosen trial: 0.912." in pending
    assert BIAS_HEADING not in pending
    examined = model_card(training.schema, training.evaluation, params=params, bias=training.bias())
    assert [line for line in examined.splitlines() if line.startswith("## ")] == [
        *sections[:5],
        BIAS_HEADING,
        *sections[5:],
    ]


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
    logged = training.log()
    run_id = logged.run_id

    run = mlflow.get_run(run_id)
    assert run.info.artifact_uri == f"{s3_bucket.uri}/mlflow/{run_id}/artifacts"
    # The card goes to the run's artifacts in S3 too, when the version is registered.
    registration = register(logged.model_uri, run_id, run.data.metrics, training.settings)
    card_path = record_card(registration, run_id, training.card(), training.settings)
    version = mlflow.MlflowClient().get_model_version(registration.name, registration.version)
    assert version.tags[CARD_PATH_TAG] == card_path
    card = mlflow.artifacts.load_text(f"runs:/{run_id}/{card_path}")
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
    assert f"mlflow/{run_id}/artifacts/{card_path}" in keys
    assert f"mlflow/{run_id}/artifacts/{REFERENCE_FILE}" in keys
    assert f"mlflow/{run_id}/artifacts/search/trials.csv" in keys
    assert f"mlflow/{run_id}/artifacts/search/pareto.png" in keys
    assert any(key.endswith("/artifacts/artifacts/booster.json") for key in keys)
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model", dst_path=str(tmp_path))
    rows = training.test.loc[:, list(training.schema.features)].astype(
        dict.fromkeys(training.schema.category_levels, str)
    )
    np.testing.assert_array_equal(
        loaded.predict(rows)[list(training.schema.band_labels)].to_numpy(),
        training.probabilities(),
    )
