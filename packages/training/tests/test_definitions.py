"""The Dagster code location, materialised in process on a real Adult features snapshot."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import mlflow
import pytest
from dagster import AssetKey, DagsterInstance
from mlflow import MlflowClient

from payband_data import steps
from payband_data.settings import DataSettings
from payband_data.store import open_store
from payband_testing.dagster import validate_code_location
from payband_training.card import BIAS_HEADING
from payband_training.definitions import JOB, TrainingRun, build_definitions, defs
from payband_training.gates import EXPLANATION_MS
from payband_training.settings import TrainingSettings

ASSETS = ("training_split", "salary_band_study", "salary_band_model", "salary_band_registration")


MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(scope="module")
def mlflow_database(postgres_server):
    """MLflow's own database: it and Optuna's study storage each keep an alembic_version table.

    An in-process run's configure() sets MLflow's global URIs (and their variables): reset after.
    """
    saved = {name: os.environ.pop(name, None) for name in MLFLOW_URI_VARIABLES}
    info = postgres_server.create_database("training_dagster_mlflow")
    try:
        yield info
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
        postgres_server.drop_database("training_dagster_mlflow")


@pytest.fixture(scope="module")
def data_settings(postgres_module_database, tmp_path_factory) -> DataSettings:
    home = tmp_path_factory.mktemp("training-dagster")
    settings = DataSettings(
        database_url=postgres_module_database.url,
        store_dir=home / "store",
        dbt_work_dir=home / "dbt",
    )
    raw = steps.ingest("adult", settings)
    steps.load(raw.uri, settings)
    steps.build("adult", [50_000], settings)
    steps.snapshot("adult", [50_000], settings)
    return settings


@pytest.fixture(scope="module")
def settings(postgres_module_database, mlflow_database, data_settings) -> TrainingSettings:
    return TrainingSettings(
        cv_folds=2,
        study_storage_url=postgres_module_database.url,
        mlflow_tracking_uri=mlflow_database.url,
        mlflow_artifact_root=(data_settings.store_dir.parent / "mlflow-artifacts").as_uri(),
    )


def test_four_assets_in_one_job(settings, data_settings) -> None:
    assert callable(defs), "the module's `defs` loads lazily, when Dagster asks for it"
    definitions = build_definitions(settings, data_settings)
    keys = {key.to_user_string() for key in definitions.resolve_asset_graph().get_all_asset_keys()}
    assert keys == set(ASSETS)
    job = definitions.resolve_job_def(JOB)
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == set(ASSETS)
    graph = definitions.resolve_asset_graph()
    parents = graph.get(AssetKey("salary_band_model")).parent_keys
    assert parents == {AssetKey("training_split"), AssetKey("salary_band_study")}


def test_run_overrides_are_validated_like_settings(settings) -> None:
    run = TrainingRun(trials=3, mitigation="none, penalty")
    overridden = run.settings(settings)
    assert (overridden.trials, overridden.mitigation, overridden.cv_folds) == (
        3,
        ("none", "penalty"),
        2,
    )
    assert overridden.mlflow_tracking_uri == settings.mlflow_tracking_uri
    assert TrainingRun().settings(settings) == settings
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        TrainingRun(trials=0)
    with pytest.raises(ValueError, match="mitigation"):
        TrainingRun(mitigation="reweigh,bogus").settings(settings)
    with pytest.raises(ValueError, match="a method is named twice"):
        TrainingRun(mitigation="none,none").settings(settings)


def test_job_trains_and_registers_the_newest_adult_snapshot(settings, data_settings) -> None:
    definitions = build_definitions(settings, data_settings)
    with DagsterInstance.ephemeral() as instance:
        result = definitions.resolve_job_def(JOB).execute_in_process(
            instance=instance,
            raise_on_error=False,
            resources={"training": TrainingRun(trials=2)},
        )
    assert result.success

    with open_store(data_settings) as store:
        features_uri = store.latest("features/adult").uri
    split = result.output_for_node("training_split")
    assert split.features_uri == features_uri
    assert re.fullmatch(r"local://splits/adult/train@[0-9a-f]{64}", split.train_uri)
    assert re.fullmatch(r"local://splits/adult/test@[0-9a-f]{64}", split.test_uri)
    with open_store(data_settings) as store:
        train, test = store.get(split.train_uri), store.get(split.test_uri)
    assert int(train.metadata["row_count"]) + int(test.metadata["row_count"]) == 45_222
    assert train.metadata["features_uri"] == features_uri

    study = result.output_for_node("salary_band_study")
    # Two trials ran; the other starting points wait in the study for the next worker.
    assert study.n_trials == study.n_complete == 2
    # The first trials of a new study: the unmitigated default, then the parity penalty.
    assert [trial.config.mitigation.method for trial in study.trials] == ["none", "penalty"]
    model = result.output_for_node("salary_band_model")
    assert 0.8 < model.metrics["roc_auc"] < 1
    assert 0 < model.metrics[EXPLANATION_MS] <= settings.max_explanation_ms
    registration = result.output_for_node("salary_band_registration")

    materialized = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert set(materialized) == set(ASSETS)
    assert materialized["training_split"]["train_uri"].value == split.train_uri
    assert materialized["salary_band_study"]["chosen_trial"].value == study.chosen.number
    assert materialized["salary_band_study"]["pareto_front"].value == len(study.front)
    assert materialized["salary_band_model"]["run_id"].value == model.run_id
    assert materialized["salary_band_model"][EXPLANATION_MS].value == pytest.approx(
        model.metrics[EXPLANATION_MS]
    )
    assert materialized["salary_band_registration"]["decision"].value in {"promoted", "rejected"}

    # The run and the registry, through MLflow itself.
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    (version,) = client.search_model_versions("name = 'salary-band'")
    assert str(version.version) == registration.version == "1"
    assert version.run_id == model.run_id
    expected = "promoted" if registration.promoted else "rejected"
    assert version.tags["gate.decision"] == expected
    assert version.tags["gate.reasons"]
    run = client.get_run(model.run_id)
    assert run.data.metrics["roc_auc"] == pytest.approx(model.metrics["roc_auc"])
    assert (run.data.metrics["search_trials"], run.data.metrics["search_complete"]) == (2.0, 2.0)
    card_path = version.tags["model_card.path"]
    assert card_path == "model_cards/version-1-registered.md"
    card_file = Path(client.download_artifacts(model.run_id, card_path))
    assert hashlib.sha256(card_file.read_bytes()).hexdigest() == version.tags["model_card.sha256"]
    card = card_file.read_text(encoding="utf-8")
    assert card.startswith("# Model card: salary-band version 1\n")
    assert "Pending" not in card, "the version's card states the registry's decision"
    assert split.train_uri in card
    assert BIAS_HEADING in card
    cards = {item.path for item in client.list_artifacts(model.run_id, "model_cards")}
    assert cards == {card_path}, "the card is written once, with the registry's decision"

    # Adult without sex and race still selects men far more often: the unmitigated model fails
    # the fairness gate. The parity penalty brings it above the gate, so the mitigated model
    # becomes champion; the card and the run keep the "before".
    before = model.model.bias.before
    assert before is not None
    assert study.baseline is not None
    assert study.baseline.config.mitigation.method == "none"
    assert before.fairness["sex"].disparate_impact < settings.min_disparate_impact
    assert study.chosen.config.mitigation.method == "penalty"
    assert model.metrics["sex_disparate_impact"] >= settings.min_disparate_impact
    assert registration.promoted
    assert "sex disparate impact" in version.tags["gate.reasons"]
    aliases = client.get_registered_model("salary-band").aliases
    assert str(aliases[settings.champion_alias]) == "1"
    assert run.data.metrics["unmitigated_sex_disparate_impact"] == pytest.approx(
        before.fairness["sex"].disparate_impact
    )

    sources = {
        {tag.key: tag.value for tag in dataset_input.tags}[
            "mlflow.data.context"
        ]: dataset_input.dataset.source
        for dataset_input in run.inputs.dataset_inputs
    }
    assert set(sources) == {"training", "testing", "features", "raw"}
    assert split.train_uri in sources["training"]
    assert split.test_uri in sources["testing"]
    assert features_uri in sources["features"]
    assert train.metadata["raw_uri"].startswith("local://raw/adult@")
    assert train.metadata["raw_uri"] in sources["raw"]
    assert run.data.tags["raw_uri"] == train.metadata["raw_uri"]
    assert run.data.tags["mlflow.source.git.commit"]
    artifacts = {item.path for item in client.list_artifacts(model.run_id)}
    assert {"model_cards", "reference.parquet", "shap", "search"} <= artifacts
    assert "model_card.md" not in artifacts
    plots = {item.path for item in client.list_artifacts(model.run_id, "shap")}
    assert {"shap/importance.png", "shap/summary_band_1.png"} <= plots


def test_dagster_loads_the_code_location_by_module(settings, data_settings, tmp_path) -> None:
    """What a code server does: `dagster definitions validate -m payband_training.definitions`."""
    env = {
        "PAYBAND_DATA_DATABASE_URL": data_settings.database_url,
        "PAYBAND_DATA_STORE_DIR": str(data_settings.store_dir),
        "PAYBAND_TRAINING_STUDY_STORAGE_URL": settings.study_storage_url,
        "PAYBAND_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
    }
    result = validate_code_location("payband_training.definitions", env, tmp_path / "dagster")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful for code location payband_training.definitions" in (
        result.stdout + result.stderr
    )
