"""The gated registry against a real MLflow on the embedded PostgreSQL (``store`` fixture).

The models are tiny stand-ins: what matters here is the registry, not what the model predicts.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from datetime import UTC, datetime, timedelta

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from payband_contracts.model import DecisionRule
from payband_training import registry
from payband_training.card import (
    BIAS_HEADING,
    CARD_DIGEST_TAG,
    CARD_PATH_TAG,
    BiasExamination,
    Override,
    card_digest,
)
from payband_training.evaluate import (
    FAIRNESS_SUMMARIES,
    QUALITY_METRICS,
    evaluate,
    fairness_metric_name,
)
from payband_training.gates import DECISION_TAG, EXPLANATION_MS, FAILED_TAG, REASONS_TAG
from payband_training.mitigation import Mitigation
from payband_training.model import ModelSchema
from payband_training.pipeline import TrainedModel, register_model
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
    RegistryError,
    champion,
    promote,
    promote_with_override,
    record_card,
    register,
)
from payband_training.search import DEFAULT_TREES, SearchResult, TrialConfig, TrialRecord
from payband_training.settings import TrainingSettings

ROC_AUC = "roc_auc"
SEX_DI = fairness_metric_name("sex", "disparate_impact")
RACE_DI = fairness_metric_name("race", "disparate_impact")


def candidate_metrics(
    roc_auc: float,
    sex_di: float = 0.9,
    race_di: float = 0.9,
    explanation_ms: float | None = 50.0,
) -> dict[str, float]:
    """A full set of evaluate's flat metric names with the gated ones set as asked, and the
    predicted explanation time (left out when None)."""
    metrics = dict.fromkeys(QUALITY_METRICS, 0.5)
    for attribute in ("sex", "race"):
        for summary in FAIRNESS_SUMMARIES:
            metrics[fairness_metric_name(attribute, summary)] = 0.05
    metrics |= {ROC_AUC: roc_auc, SEX_DI: sex_di, RACE_DI: race_di}
    if explanation_ms is not None:
        metrics[EXPLANATION_MS] = explanation_ms
    return metrics


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


CARD = "# Model card: salary-band version 2\n\n## Gate decision\n\nRejected: not champion.\n"
REASON = "Demonstration: the fairness gate fails on the labels of UCI Adult themselves"
UNFAIR = ("sex disparate impact 0.500 < 0.800", "race disparate impact 0.600 < 0.800")
OVERRIDE_TAGS = {
    OVERRIDE_TAG,
    OVERRIDE_REASON_TAG,
    OVERRIDE_BY_TAG,
    OVERRIDE_AT_TAG,
    OVERRIDE_PREVIOUS_TAG,
}
REGISTERED_CARD = "model_cards/version-2-registered.md"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def champion_and_unfair(store):
    """Version 1 champion; version 2 with a better AUC, failing both fairness gates, with the
    card recorded at its registration."""
    store.register(candidate_metrics(0.90))
    unfair = store.register(candidate_metrics(0.95, sex_di=0.5, race_di=0.6))
    assert not unfair.registration.promoted
    assert store.record_card(unfair, CARD) == REGISTERED_CARD
    return unfair


def test_record_card_names_the_card_and_its_digest(store) -> None:
    unfair = champion_and_unfair(store)

    tags = store.version_tags("2")
    assert tags[CARD_PATH_TAG] == REGISTERED_CARD
    recorded = store.artifact(unfair.run_id, REGISTERED_CARD)
    assert recorded == CARD.encode("utf-8")
    assert tags[CARD_DIGEST_TAG] == sha256(recorded) == card_digest(CARD)
    assert store.card("2") == CARD
    assert CARD_PATH_TAG not in store.version_tags("1")

    other = store.register(candidate_metrics(0.85))
    with pytest.raises(RegistryError, match=f"belongs to run {other.run_id}, not {unfair.run_id}"):
        record_card(other.registration, unfair.run_id, CARD, store.settings, client=store.client)
    assert CARD_PATH_TAG not in store.version_tags("3")
    assert store.card_files(unfair.run_id) == [REGISTERED_CARD]


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

    card = store.card("2")
    assert card.startswith(CARD.rstrip("\n") + "\n\n## Override\n")
    override_section = card.split("## Override\n", 1)[1]
    assert "- By: payband demo" in override_section
    assert f"- When: {override.at.isoformat()}" in override_section
    assert f"- Why: {REASON}" in override_section
    assert "- Champion before: version 1" in override_section
    for reason in UNFAIR:
        assert f"  - {reason}\n" in override_section
    assert unfair.run_id == store.client.get_model_version("salary-band", "2").run_id


def test_an_override_writes_a_new_card_and_moves_the_tags(store) -> None:
    unfair = champion_and_unfair(store)
    registered = store.version_tags("2")

    override = promote_with_override("2", REASON, "payband demo", store.settings)

    stamp = override.at.strftime("%Y%m%dT%H%M%SZ")
    path = f"model_cards/version-2-override-{stamp}.md"
    tags = store.version_tags("2")
    assert tags[CARD_PATH_TAG] == path
    written = store.artifact(unfair.run_id, path)
    assert tags[CARD_DIGEST_TAG] == sha256(written)
    assert written.decode("utf-8") == store.card("2")
    assert "## Override" in written.decode("utf-8")
    # The card of the registration is still there, unchanged: its digest is the old tag's.
    assert store.card_files(unfair.run_id) == sorted([REGISTERED_CARD, path])
    before = store.artifact(unfair.run_id, REGISTERED_CARD)
    assert before == CARD.encode("utf-8")
    assert sha256(before) == registered[CARD_DIGEST_TAG] != tags[CARD_DIGEST_TAG]


class FrozenClock(datetime):
    """Every override at one instant: as two overrides within one second."""

    @classmethod
    def now(cls, tz=None) -> datetime:
        return datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=tz)


def test_a_second_override_replaces_the_override_section(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "datetime", FrozenClock)
    unfair = champion_and_unfair(store)
    promote_with_override("2", REASON, "payband demo", store.settings, client=store.client)
    first_path = store.version_tags("2")[CARD_PATH_TAG]
    assert first_path == "model_cards/version-2-override-20261207T120000Z.md"
    first_card = store.card("2")
    # Version 1 back (an override too: it regresses against version 2), then 2 again.
    store.log_card("1", CARD)
    promote_with_override("1", REASON, "payband demo", store.settings, client=store.client)

    again = promote_with_override(
        "2", "Confirmed by the oversight board after review", "Jane Doe", store.settings
    )

    card = store.card("2")
    assert card.count("## Override") == 1
    assert card.count("## Gate decision") == 1
    assert "- By: Jane Doe" in card
    assert "payband demo" not in card
    assert card.count("sex disparate impact 0.500 < 0.800") == 1
    assert "- Champion before: version 1" in card
    assert again.previous_champion == "1"
    tags = store.version_tags("2")
    assert (tags[OVERRIDE_BY_TAG], tags[OVERRIDE_PREVIOUS_TAG]) == ("Jane Doe", "1")
    # Each override is a card of its own, even within one second; the first one is kept.
    assert tags[CARD_PATH_TAG] == "model_cards/version-2-override-20261207T120000Z-2.md"
    assert store.card_files(unfair.run_id) == sorted(
        [REGISTERED_CARD, first_path, tags[CARD_PATH_TAG]]
    )
    assert store.artifact(unfair.run_id, first_path).decode("utf-8") == first_card
    assert "- By: payband demo" in first_card
    assert tags[CARD_DIGEST_TAG] == card_digest(card)


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
    assert CARD_PATH_TAG not in store.version_tags("1")
    assert store.card_files(first.run_id) == []

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
    recorded = store.version_tags("2")

    with pytest.raises(error, match=message) as raised:
        promote_with_override(version, reason, actor, store.settings)

    assert "\n" not in str(raised.value)
    assert store.alias_version() == "1"
    assert store.version_tags("2") == recorded
    assert OVERRIDE_TAGS.isdisjoint(recorded)
    assert store.card("2") == CARD
    assert store.card_files(unfair.run_id) == [REGISTERED_CARD]


def test_an_override_without_a_model_card_records_nothing(store) -> None:
    store.register(candidate_metrics(0.90))
    unfair = store.register(candidate_metrics(0.95, sex_di=0.5))

    with pytest.raises(
        RegistryError,
        match=f"^version 2 has no model card in its run {unfair.run_id} to record the override",
    ):
        promote_with_override("2", REASON, "payband demo", store.settings)

    assert store.alias_version() == "1"
    assert OVERRIDE_TAGS.isdisjoint(store.version_tags("2"))

    # A card tag naming a file the run lacks is refused the same way.
    store.client.set_model_version_tag("salary-band", "2", CARD_PATH_TAG, "model_cards/gone.md")
    with pytest.raises(RegistryError, match=f"no model_cards/gone.md in its run {unfair.run_id}"):
        promote_with_override("2", REASON, "payband demo", store.settings)

    assert store.alias_version() == "1"
    assert OVERRIDE_TAGS.isdisjoint(store.version_tags("2"))
    assert store.card_files(unfair.run_id) == []


@pytest.mark.parametrize(
    ("explanation_ms", "budget", "promoted", "reason"),
    [
        (
            None,
            100.0,
            False,
            "explanation of 1,000 candidates is missing (metric 'explanation_ms_per_1000'); "
            "at most 100 ms is allowed",
        ),
        (150.0, 100.0, False, "explanation of 1,000 candidates predicted 150.0 ms > 100 ms"),
        (60.0, 100.0, True, "explanation of 1,000 candidates predicted 60.0 ms <= 100 ms"),
        (150.0, 200.0, True, "explanation of 1,000 candidates predicted 150.0 ms <= 200 ms"),
    ],
)
def test_the_explanation_gate_holds_back_a_model_too_slow_to_explain(
    store, explanation_ms: float | None, budget: float, promoted: bool, reason: str
) -> None:
    settings = store.settings.model_copy(update={"max_explanation_ms": budget})
    metrics = candidate_metrics(0.9, explanation_ms=explanation_ms)
    model_uri, run_id = store.log_model(metrics)

    registration = register(model_uri, run_id, metrics, settings, client=store.client)

    assert registration.promoted is promoted
    assert reason in registration.decision.reasons
    tags = store.version_tags(registration.version)
    assert reason in tags[REASONS_TAG]
    if promoted:
        assert store.alias_version() == registration.version
        assert FAILED_TAG not in tags
    else:
        # Quality and fairness pass: the explanation gate alone holds the model back.
        assert tags[FAILED_TAG] == reason
        assert "champion" not in store.client.get_registered_model("salary-band").aliases


def search_result(cut_off: float) -> SearchResult:
    """One feasible penalty trial, as the search reports it."""
    trial = TrialRecord(
        number=0,
        config=TrialConfig(
            params=dict(DEFAULT_TREES),
            mitigation=Mitigation("penalty", 5.0),
            decision=DecisionRule.with_cut_off(cut_off),
        ),
        roc_auc=0.88,
        accuracy=0.8,
        balanced_accuracy=0.78,
        disparate_impact={"sex": 0.9, "race": 0.85},
        worst_disparate_impact=0.85,
        worst_fold_disparate_impact=0.83,
        equal_opportunity_difference={"sex": 0.05, "race": 0.04},
        explanation_cost=1000.0,
        feasible=True,
        pareto=True,
    )
    return SearchResult(
        chosen=trial, baseline=None, trials=[trial], n_trials=1, n_failed=0, study_name="r"
    )


def trained_model(store, found: SearchResult, metrics: dict[str, float]) -> TrainedModel:
    """A stand-in model logged in a run, with an evaluation of made-up probabilities."""
    model_uri, run_id = store.log_model(metrics)
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 400)
    high = np.clip(0.5 * truth + 0.5 * rng.random(400), 0.01, 0.99)
    groups = {
        "sex": rng.choice(["female", "male"], 400).tolist(),
        "race": rng.choice(["black", "white"], 400).tolist(),
    }
    decision = found.chosen.config.decision
    evaluation = evaluate(
        truth, np.column_stack([1 - high, high]), groups, ("<=50K", ">50K"), decision=decision
    )
    hex64 = "0" * 64
    schema = ModelSchema.create(
        use_protected=False,
        band_edges_usd=(50_000,),
        features_uri=f"local://features/adult@{hex64}",
        train_uri=f"local://splits/adult/train@{hex64}",
        test_uri=f"local://splits/adult/test@{hex64}",
        source="adult",
        year="1994",
        decision=decision,
    )
    bias = BiasExamination(
        mitigation=found.chosen.config.mitigation,
        decision=decision,
        after=evaluation,
        before=None,
        trials=1,
        front=1,
        feasible=1,
        chosen_trial=0,
        baseline_trial=None,
        chosen_feasible=True,
    )
    return TrainedModel(
        run_id=run_id,
        model_uri=model_uri,
        schema=schema,
        evaluation=evaluation,
        train_rows=1600,
        metrics=metrics,
        bias=bias,
    )


def test_the_registered_card_carries_the_version_and_the_decision(store) -> None:
    found = search_result(0.4)
    # The second one fails the fairness gate: its card says so.
    for number, sex_di in (("1", 0.9), ("2", 0.5)):
        trained = trained_model(store, found, candidate_metrics(0.9, sex_di=sex_di))

        registration = register_model(trained, found, store.settings)

        assert (registration.version, registration.promoted) == (number, number == "1")
        tags = store.version_tags(number)
        assert tags[CARD_PATH_TAG] == f"model_cards/version-{number}-registered.md"
        card = store.card(number)
        assert tags[CARD_DIGEST_TAG] == card_digest(card)
        assert card.startswith(f"# Model card: salary-band version {number}\n")
        assert BIAS_HEADING in card
        assert f"Mitigation: {found.chosen.config.mitigation.describe()}." in card
        assert "band >50K when its probability is above 0.400" in card
        verdict = "Passed" if registration.promoted else "Rejected"
        assert f"## Gate decision\n\n{verdict}" in card
        for reason in registration.decision.reasons:
            assert f"- {reason}" in card


def test_promoting_before_any_registration_is_refused(store) -> None:
    with pytest.raises(RegistryError, match="no registered model 'salary-band' yet"):
        promote("1", store.settings)


def test_overriding_for_the_champion_itself_records_nothing(store) -> None:
    rejected = store.register(candidate_metrics(0.90, sex_di=0.5))
    store.log_card("1", CARD)
    first = promote_with_override("1", REASON, "payband demo", store.settings)
    assert first.failed_reasons
    recorded = store.version_tags("1")

    cards = store.card_files(rejected.run_id)
    assert len(cards) == 2  # the registration's and the override's

    again = promote_with_override("1", REASON, "someone else", store.settings)

    assert (again.previous_champion, again.failed_reasons) == ("1", ())
    assert store.version_tags("1") == recorded  # the first override stays the record
    assert store.card_files(rejected.run_id) == cards
