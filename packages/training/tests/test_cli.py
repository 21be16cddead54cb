"""payband-training through its console script: train on a real Adult features snapshot;
promote on a registry of stand-in models (the ``store`` fixture)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from payband_data import steps
from payband_data.settings import DataSettings

CLI = Path(sys.executable).with_name("payband-training")


@pytest.fixture(scope="module")
def mlflow_database(postgres_server):
    """MLflow's own database: it and Optuna's study storage each keep an alembic_version table."""
    info = postgres_server.create_database("training_cli_mlflow")
    yield info
    postgres_server.drop_database("training_cli_mlflow")


@pytest.fixture(scope="module")
def environment(postgres_module_database, mlflow_database, tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("payband-home")
    url = postgres_module_database.url
    settings = DataSettings(database_url=url, store_dir=home / "store", dbt_work_dir=home / "dbt")
    raw = steps.ingest("adult", settings)
    steps.load(raw.uri, settings)
    steps.build("adult", [50_000], settings)
    steps.snapshot("adult", [50_000], settings)
    return {
        **os.environ,
        "PAYBAND_HOME": str(home),
        "PAYBAND_DATA_DATABASE_URL": url,
        "PAYBAND_TRAINING_STUDY_STORAGE_URL": url,
        "PAYBAND_MLFLOW_TRACKING_URI": mlflow_database.url,
        "PAYBAND_TRAINING_CV_FOLDS": "2",
        "COLUMNS": "160",
    }


def payband_training(environment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], env=environment, capture_output=True, text=True, timeout=600
    )


def test_train_registers_the_newest_adult_snapshot(environment) -> None:
    result = payband_training(environment, "train", "--trials", "2", "--mitigation", "none,penalty")
    assert result.returncode == 0, result.stderr[-3000:]
    for step in ("features", "split", "search", "evaluate", "mlflow", "registry"):
        assert re.search(rf"^{step} ", result.stderr, re.MULTILINE), result.stderr
    assert "45,222 rows, 2 bands from adult" in result.stderr
    summary = result.stdout
    assert "training summary" in summary
    assert "salary-band version 1" in summary
    auc = float(re.search(r"test roc_auc\s+\│?\s*([0-9.]+)", summary).group(1))
    assert 0.8 < auc < 1
    assert "sex disparate impact" in summary
    assert "roc_auc" in summary
    assert re.search(r"2 trials, \d on the Pareto front, \d meeting every gate", summary)
    assert re.search(r"trial [01]: (none|demographic-parity penalty)", summary)

    # The run and the registry, through MLflow itself.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=environment["PAYBAND_MLFLOW_TRACKING_URI"])
    (version,) = client.search_model_versions("name = 'salary-band'")
    run = client.get_run(version.run_id)
    assert run.data.metrics["roc_auc"] == pytest.approx(auc, abs=1e-4)
    assert run.data.params["mitigation_methods"] == "none,penalty"
    assert run.data.params["mitigation"] in {"none", "penalty"}
    assert version.tags["gate.decision"] in {"promoted", "rejected"}
    # The search's own verdict is a gate: a model chosen as the fairest of infeasible trials
    # is never promoted by the gates.
    searched = (
        "the search's chosen trial met every gate on its validation folds"
        if run.data.metrics["search_chosen_feasible"] == 1.0
        else "no trial of the search met every gate on its validation folds"
    )
    assert searched in version.tags["gate.reasons"]
    # The card is written once, with the registry's decision: no pending card in the run.
    cards = [a.path for a in client.list_artifacts(version.run_id) if "card" in a.path]
    assert cards == ["model_cards"]
    assert version.tags["model_card.path"] == "model_cards/version-1-registered.md"
    card = Path(client.download_artifacts(version.run_id, version.tags["model_card.path"]))
    assert hashlib.sha256(card.read_bytes()).hexdigest() == version.tags["model_card.sha256"]
    text = card.read_text(encoding="utf-8")
    assert text.startswith("# Model card: salary-band version 1\n")
    assert "Pending" not in text
    verdict = {"promoted": "Passed", "rejected": "Rejected"}[version.tags["gate.decision"]]
    assert f"## Gate decision\n\n{verdict}: " in text
    for reason in version.tags["gate.reasons"].split("; "):
        assert f"- {reason}\n" in text
    assert "## Bias examination and mitigation" in text


def test_no_snapshot_of_a_source_is_one_line(environment) -> None:
    result = payband_training(environment, "train", "--source", "pums")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: the store has no features/pums version: run `payband-data snapshot` first"
    )


def test_mlflow_and_the_study_in_one_database_is_refused(environment) -> None:
    shared = {
        **environment,
        "PAYBAND_MLFLOW_TRACKING_URI": environment["PAYBAND_TRAINING_STUDY_STORAGE_URL"],
    }
    result = payband_training(shared, "train", "--trials", "1")
    assert result.returncode == 2
    assert "MLflow and the Optuna study need separate databases" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "error: invalid setting: trials:"),
        (
            ["--mitigation", "reweigh,bogus"],
            "error: invalid setting: mitigation.1: Input should be",
        ),
        (
            ["--mitigation", "none,none"],
            "error: invalid setting: mitigation: Value error, a method",
        ),
    ],
)
def test_a_bad_setting_is_one_line(environment, args: list[str], message: str) -> None:
    result = payband_training(environment, "train", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


PASSED = {
    "roc_auc": 0.90,
    "sex_disparate_impact": 0.90,
    "race_disparate_impact": 0.90,
    "explanation_ms_per_1000": 50.0,
}
UNFAIR = PASSED | {"roc_auc": 0.95, "sex_disparate_impact": 0.32}
REASON = "Demonstration only: the labels of UCI Adult fail the fairness gate themselves"


def promote(store, *args: str) -> subprocess.CompletedProcess[str]:
    """payband-training promote against the store's MLflow."""
    environment = {
        **os.environ,
        "PAYBAND_MLFLOW_TRACKING_URI": store.settings.mlflow_tracking_uri,
    }
    return payband_training(environment, "promote", *args)


def test_promote_refuses_a_version_that_failed_its_gates_in_one_line(store) -> None:
    store.register(PASSED)
    store.register(UNFAIR)

    result = promote(store, "2")

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: version 2 of 'salary-band' failed its gates: sex disparate impact 0.320 < 0.800; "
        "to promote it anyway, record an override with --override-gates --reason TEXT --by NAME"
    )
    assert store.alias_version() == "1"


def test_promote_with_override_records_it_and_moves_the_champion(store) -> None:
    store.register(PASSED)
    unfair = store.register(UNFAIR)
    registered = store.log_card("2", "# Model card: salary-band\n")

    result = promote(store, "2", "--override-gates", "--reason", REASON, "--by", "Jane Doe")

    assert result.returncode == 0, result.stderr
    assert "salary-band version 2 is champion (before: 1)" in result.stdout
    assert "gates overridden by Jane Doe" in result.stdout
    assert store.alias_version() == "2"
    tags = store.version_tags("2")
    assert (tags["gate.override"], tags["gate.override_by"]) == ("true", "Jane Doe")
    assert tags["gate.override_reason"] == REASON
    card = store.card("2")
    assert "- Why: " + REASON in card
    assert store.version_tags("2")["model_card.path"].startswith("model_cards/version-2-override-")
    assert store.artifact(unfair.run_id, registered) == b"# Model card: salary-band\n"


def test_promote_moves_the_champion_to_a_version_that_passed(store) -> None:
    store.register(PASSED)
    # Within the no-regression tolerance of version 1, so 1 may come back.
    store.register(PASSED | {"roc_auc": PASSED["roc_auc"] + 0.005})
    assert store.alias_version() == "2"

    result = promote(store, "1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "salary-band version 1 is champion (before: 2)"
    assert store.alias_version() == "1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["2", "--override-gates", "--by", "Jane Doe"],
            "error: --override-gates needs --reason TEXT and --by NAME: "
            "an override records who and why",
        ),
        (
            ["2", "--reason", REASON, "--by", "Jane Doe"],
            "error: --reason and --by go with --override-gates; "
            "a version that passed needs neither",
        ),
        (
            ["2", "--override-gates", "--reason", "because", "--by", "Jane Doe"],
            "error: reason: at least 20 characters are required, got 7; "
            "say why the failed gates may be overridden",
        ),
        (
            ["7", "--override-gates", "--reason", REASON, "--by", "Jane Doe"],
            "error: unknown version '7' of registered model 'salary-band'",
        ),
    ],
)
def test_a_refused_promotion_is_one_line_and_changes_nothing(
    store, args: list[str], message: str
) -> None:
    store.register(PASSED)
    store.register(UNFAIR)

    result = promote(store, *args)

    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert store.alias_version() == "1"
    assert "gate.override" not in store.version_tags("2")


def test_the_help_names_every_mitigation_method() -> None:
    from typer.testing import CliRunner

    from payband_training.cli import app
    from payband_training.mitigation import METHODS

    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert all(method in result.output for method in METHODS)
