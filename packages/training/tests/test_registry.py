"""The gated registry against a real MLflow on the embedded PostgreSQL (``store`` fixture).

The models are tiny stand-ins: what matters here is the registry, not what the model predicts.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest

from payband_training.evaluate import FAIRNESS_SUMMARIES, QUALITY_METRICS, fairness_metric_name
from payband_training.gates import DECISION_TAG, FAILED_TAG, REASONS_TAG
from payband_training.registry import (
    CHAMPION_TAG,
    MODEL_DESCRIPTION,
    MODEL_ID_TAG,
    NO_CHAMPION,
    OVERRIDE_AT_TAG,
    OVERRIDE_BY_TAG,
    OVERRIDE_PREVIOUS_TAG,
    OVERRIDE_REASON_TAG,
    OVERRIDE_TAG,
    GatesFailed,
    Override,
    RegistryError,
    champion,
    promote,
    promote_with_override,
    register,
)
from payband_training.settings import TrainingSettings

ROC_AUC = "roc_auc"
SEX_DI = fairness_metric_name("sex", "disparate_impact")
RACE_DI = fairness_metric_name("race", "disparate_impact")


def candidate_metrics(
    roc_auc: float, sex_di: float = 0.9, race_di: float = 0.9
) -> dict[str, float]:
    """A full set of evaluate's flat metric names with the gated ones set as asked."""
    metrics = dict.fromkeys(QUALITY_METRICS, 0.5)
    for attribute in ("sex", "race"):
        for summary in FAIRNESS_SUMMARIES:
            metrics[fairness_metric_name(attribute, summary)] = 0.05
    return {**metrics, ROC_AUC: roc_auc, SEX_DI: sex_di, RACE_DI: race_di}


def test_the_champion_alias_moves_only_when_every_gate_passes(store) -> None:
    name = store.settings.model_name
    assert champion(store.settings) is None

    trained = store.register(candidate_metrics(0.90))
    first = trained.registration
    assert (first.name, first.version, first.promoted, first.previous_champion) == (
        name,
        "1",
        True,
        None,
    )
    assert store.client.get_registered_model(name).description == MODEL_DESCRIPTION
    assert store.alias_version() == "1"
    assert store.version_tags("1") == {
        DECISION_TAG: "promoted",
        REASONS_TAG: "; ".join(first.decision.reasons),
        CHAMPION_TAG: NO_CHAMPION,
        MODEL_ID_TAG: trained.model_id,
    }
    assert "no champion to compare with" in first.decision.reasons

    # Worse than the champion (read from version 1's run) by more than the tolerance.
    worse = store.register(candidate_metrics(0.85)).registration
    assert (worse.version, worse.promoted, worse.previous_champion) == ("2", False, "1")
    tags = store.version_tags("2")
    assert tags[DECISION_TAG] == "rejected"
    assert tags[CHAMPION_TAG] == "1"
    assert (
        "roc_auc 0.850 is 0.050 below champion 0.900, more than tolerance 0.010"
        in tags[REASONS_TAG]
    )
    assert tags[FAILED_TAG] == (
        "roc_auc 0.850 is 0.050 below champion 0.900, more than tolerance 0.010"
    )
    assert store.alias_version() == "1"

    # Better AUC, but fails the fairness gate.
    unfair = store.register(candidate_metrics(0.95, sex_di=0.5)).registration
    assert (unfair.version, unfair.promoted) == ("3", False)
    tags = store.version_tags("3")
    assert tags[DECISION_TAG] == "rejected"
    assert "sex disparate impact 0.500 < 0.800" in tags[REASONS_TAG]
    assert "roc_auc 0.950 >= champion 0.900" in tags[REASONS_TAG]
    assert tags[FAILED_TAG] == "sex disparate impact 0.500 < 0.800"
    assert store.alias_version() == "1"

    # Slightly below the champion, within the tolerance.
    trained = store.register(candidate_metrics(0.895))
    close = trained.registration
    assert (close.version, close.promoted, close.previous_champion) == ("4", True, "1")
    tags = store.version_tags("4")
    assert tags[DECISION_TAG] == "promoted"
    assert tags[CHAMPION_TAG] == "1"
    assert "within tolerance 0.010" in tags[REASONS_TAG]
    assert store.alias_version() == "4"

    current = champion(store.settings)
    assert current is not None
    assert (str(current.version), current.run_id) == ("4", trained.run_id)
    versions = store.client.search_model_versions(f"name = '{name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]


def test_the_version_points_at_the_logged_model(store) -> None:
    metrics = candidate_metrics(0.9)
    model_uri, run_id = store.log_model(metrics)
    model_id = model_uri.removeprefix("models:/")

    registration = register(model_uri, run_id, metrics, store.settings)

    version = store.client.get_model_version(registration.name, registration.version)
    assert (version.run_id, version.tags[MODEL_ID_TAG]) == (run_id, model_id)
    assert version.source == store.client.get_logged_model(model_id).artifact_location
    link = store.client.get_logged_model(model_id).tags["mlflow.modelVersions"]
    assert json.loads(link) == [{"name": registration.name, "version": "1"}]
    loaded = mlflow.pyfunc.load_model(f"models:/{registration.name}@champion")
    assert list(loaded.predict(pd.DataFrame({"age": [30, 40]}))) == [0, 0]


def test_a_runs_uri_names_the_model_the_run_logged(store) -> None:
    metrics = candidate_metrics(0.9)
    model_uri, run_id = store.log_model(metrics)

    registration = register(f"runs:/{run_id}/model", run_id, metrics, store.settings)

    version = store.client.get_model_version(registration.name, registration.version)
    assert version.tags[MODEL_ID_TAG] == model_uri.removeprefix("models:/")
    with pytest.raises(RegistryError, match=r"run \w+ logged no model 'other'"):
        register(f"runs:/{run_id}/other", run_id, metrics, store.settings)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/m-00000000000000000000000000000000", "unknown model URI .*no such logged model"),
        ("runs:/0123456789abcdef0123456789abcdef/model", "belongs to run"),
        ("models:/salary-band/1", "unsupported model URI"),
        ("file:///tmp/model", "unsupported model URI"),
    ],
)
def test_a_model_uri_that_names_no_logged_model_is_refused(store, uri: str, message: str) -> None:
    _, run_id = store.log_model(candidate_metrics(0.9))

    with pytest.raises(RegistryError, match=message) as raised:
        register(uri, run_id, candidate_metrics(0.9), store.settings)

    assert "\n" not in str(raised.value)
    assert store.client.search_registered_models() == []


def test_a_model_logged_by_another_run_is_refused(store) -> None:
    model_uri, run_id = store.log_model(candidate_metrics(0.9))
    _, other_run_id = store.log_model(candidate_metrics(0.9))

    with pytest.raises(RegistryError, match=f"logged by run {run_id}, not {other_run_id}"):
        register(model_uri, other_run_id, candidate_metrics(0.9), store.settings)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_tracking_store_fails_fast_in_one_line() -> None:
    url = f"postgresql+psycopg://mlflow:secret@127.0.0.1:{closed_port()}/mlflow"
    settings = TrainingSettings(mlflow_tracking_uri=url)
    started = time.monotonic()

    with pytest.raises(RegistryError, match=r"cannot reach the MLflow database .*127\.0\.0\.1"):
        register("models:/m-0", "run", candidate_metrics(0.9), settings)
    with pytest.raises(RegistryError, match="cannot reach the MLflow database") as raised:
        champion(settings)

    # MLflow alone would retry for about 100 s before failing.
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert "\n" not in message
    assert "secret" not in message


CARD = "# Model card: salary-band\n\n## Gate decision\n\nRejected: not champion.\n"
REASON = "Demonstration: the fairness gate fails on the labels of UCI Adult themselves"
UNFAIR = ("sex disparate impact 0.500 < 0.800", "race disparate impact 0.600 < 0.800")
OVERRIDE_TAGS = {
    OVERRIDE_TAG,
    OVERRIDE_REASON_TAG,
    OVERRIDE_BY_TAG,
    OVERRIDE_AT_TAG,
    OVERRIDE_PREVIOUS_TAG,
}


def champion_and_unfair(store):
    """Version 1 champion; version 2 with a better AUC, failing both fairness gates, a card."""
    store.register(candidate_metrics(0.90))
    unfair = store.register(candidate_metrics(0.95, sex_di=0.5, race_di=0.6))
    assert not unfair.registration.promoted
    store.log_card(unfair.run_id, CARD)
    return unfair


def test_a_failed_version_becomes_champion_only_through_a_recorded_override(store) -> None:
    unfair = champion_and_unfair(store)
    with pytest.raises(GatesFailed, match="version 2 of 'salary-band' failed its gates") as raised:
        promote("2", store.settings, client=store.client)
    assert raised.value.failed_reasons == UNFAIR
    assert store.alias_version() == "1"

    before = datetime.now(UTC).replace(microsecond=0)
    override = promote_with_override(
        "2", f"  {REASON}\n", " payband\tdemo ", store.settings, client=store.client
    )

    assert override == Override(
        name="salary-band",
        version="2",
        previous_champion="1",
        reason=REASON,
        actor="payband demo",
        at=override.at,
        failed_reasons=UNFAIR,
    )
    assert before <= override.at <= datetime.now(UTC)
    assert store.alias_version() == "2"
    tags = store.version_tags("2")
    assert {key: tags[key] for key in OVERRIDE_TAGS} == {
        OVERRIDE_TAG: "true",
        OVERRIDE_REASON_TAG: REASON,
        OVERRIDE_BY_TAG: "payband demo",
        OVERRIDE_AT_TAG: override.at.isoformat(),
        OVERRIDE_PREVIOUS_TAG: "1",
    }
    assert datetime.fromisoformat(tags[OVERRIDE_AT_TAG]).utcoffset() == timedelta(0)
    # The gate decision itself stays as it was: the override is recorded beside it.
    assert tags[DECISION_TAG] == "rejected"
    assert OVERRIDE_TAGS.isdisjoint(store.version_tags("1"))

    card = store.card(unfair.run_id)
    assert card.startswith(CARD.rstrip("\n") + "\n\n## Override\n")
    override_section = card.split("## Override\n", 1)[1]
    assert "- By: payband demo" in override_section
    assert f"- When: {override.at.isoformat()}" in override_section
    assert f"- Why: {REASON}" in override_section
    assert "- Champion before: version 1" in override_section
    for reason in UNFAIR:
        assert f"  - {reason}\n" in override_section


def test_a_second_override_replaces_the_override_section(store) -> None:
    unfair = champion_and_unfair(store)
    promote_with_override("2", REASON, "payband demo", store.settings, client=store.client)
    # Version 1 back (an override too: it regresses against version 2), then 2 again.
    first_run = store.client.get_model_version(store.settings.model_name, "1").run_id
    store.log_card(first_run, CARD)
    promote_with_override("1", REASON, "payband demo", store.settings, client=store.client)

    again = promote_with_override(
        "2", "Confirmed by the oversight board after review", "Jane Doe", store.settings
    )

    card = store.card(unfair.run_id)
    assert card.count("## Override") == 1
    assert card.count("## Gate decision") == 1
    assert "- By: Jane Doe" in card
    assert "payband demo" not in card
    assert card.count("sex disparate impact 0.500 < 0.800") == 1
    assert "- Champion before: version 1" in card
    assert again.previous_champion == "1"
    tags = store.version_tags("2")
    assert (tags[OVERRIDE_BY_TAG], tags[OVERRIDE_PREVIOUS_TAG]) == ("Jane Doe", "1")


def test_a_version_that_passes_is_promoted_without_an_override_record(store) -> None:
    first = store.register(candidate_metrics(0.90))
    store.register(candidate_metrics(0.95))
    assert store.alias_version() == "2"
    store.register(candidate_metrics(0.80, sex_di=0.7))  # rejected: not champion
    store.client.set_registered_model_alias(store.settings.model_name, "champion", "3")

    # Version 1 passes against today's champion (3): no card is logged, nothing overridden.
    back = promote_with_override("1", REASON, "payband demo", store.settings)

    assert (back.version, back.previous_champion, back.failed_reasons) == ("1", "3", ())
    assert store.alias_version() == "1"
    assert OVERRIDE_TAGS.isdisjoint(store.version_tags("1"))
    assert store.client.list_artifacts(first.run_id, "model_card.md") == []

    plain = promote("2", store.settings)
    assert (plain.version, plain.previous_champion) == ("2", "1")
    assert store.alias_version() == "2"


def test_an_older_version_that_passed_then_is_refused_if_it_regresses_now(store) -> None:
    store.register(candidate_metrics(0.90))
    store.register(candidate_metrics(0.95))
    assert store.alias_version() == "2"

    with pytest.raises(GatesFailed, match="roc_auc") as refused:
        promote("1", store.settings)

    assert store.alias_version() == "2"
    assert len(refused.value.failed_reasons) == 1


@pytest.mark.parametrize(
    ("version", "reason", "actor", "error", "message"),
    [
        ("9", REASON, "payband demo", RegistryError, "^unknown version '9' of registered model"),
        ("two", REASON, "payband demo", RegistryError, "^unknown version 'two' of registered"),
        ("2", "too short, sorry", "payband demo", ValueError, "^reason: at least 20 characters"),
        ("2", " \n ", "payband demo", ValueError, "^reason: must not be empty"),
        ("2", REASON, "  ", ValueError, "^actor: must not be empty"),
    ],
)
def test_a_refused_override_changes_nothing(
    store, version: str, reason: str, actor: str, error: type[Exception], message: str
) -> None:
    unfair = champion_and_unfair(store)

    with pytest.raises(error, match=message) as raised:
        promote_with_override(version, reason, actor, store.settings)

    assert "\n" not in str(raised.value)
    assert store.alias_version() == "1"
    assert OVERRIDE_TAGS.isdisjoint(store.version_tags("2"))
    assert store.card(unfair.run_id) == CARD


def test_an_override_without_a_model_card_records_nothing(store) -> None:
    store.register(candidate_metrics(0.90))
    unfair = store.register(candidate_metrics(0.95, sex_di=0.5))

    with pytest.raises(RegistryError, match=f"no model_card.md in its run {unfair.run_id}"):
        promote_with_override("2", REASON, "payband demo", store.settings)

    assert store.alias_version() == "1"
    assert OVERRIDE_TAGS.isdisjoint(store.version_tags("2"))


def test_promoting_before_any_registration_is_refused(store) -> None:
    with pytest.raises(RegistryError, match="no registered model 'salary-band' yet"):
        promote("1", store.settings)


def test_overriding_for_the_champion_itself_records_nothing(store) -> None:
    rejected = store.register(candidate_metrics(0.90, sex_di=0.5))
    store.log_card(rejected.run_id, CARD)
    first = promote_with_override("1", REASON, "payband demo", store.settings)
    assert first.failed_reasons
    recorded = store.version_tags("1")

    again = promote_with_override("1", REASON, "someone else", store.settings)

    assert (again.previous_champion, again.failed_reasons) == ("1", ())
    assert store.version_tags("1") == recorded  # the first override stays the record
