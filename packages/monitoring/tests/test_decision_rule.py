"""Monitoring judges the bands of the model's own decision rule (the bands served), not the most
probable band: a model with the cut-off "band 1 when p(band 1) > 0.05", registered with its
reference data, fed records whose band is the rule's."""

from __future__ import annotations

import dataclasses
import html
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from payband_contracts.model import METADATA_FILE, REFERENCE_PREDICTION, DecisionRule, ModelSchema
from payband_monitoring.analysis import (
    DISPARATE_IMPACT,
    ESTIMATED,
    FAIRNESS,
    PROTECTED,
    REALIZED,
    SELECTION_RATE,
)
from payband_monitoring.errors import MonitoringConfigError
from payband_monitoring.reference import check_reference
from payband_monitoring.report import render
from payband_monitoring.runner import Monitor
from payband_monitoring.settings import MonitoringSettings
from payband_testing.model import TinyModel
from payband_testing.registry import MlflowChampion, register_tiny_model, restored_mlflow_globals

CUT_OFF = 0.05
CHUNK = 500


def with_rule(model: TinyModel, rule: DecisionRule, directory: Path) -> TinyModel:
    """``model`` with ``rule`` in its ``payband_model.json`` (the same booster)."""
    shutil.copytree(model.directory, directory)
    schema = ModelSchema.model_validate({**model.schema.model_dump(), "decision": rule})
    schema.write(directory / METADATA_FILE)
    return dataclasses.replace(model, directory=directory, schema=schema)


def reference_by_rule(model: TinyModel) -> pd.DataFrame:
    """The model's reference data with ``predicted_band`` set by its rule, as training writes
    it (whatever the shared fixture puts there)."""
    reference = model.reference()
    probabilities = reference[list(model.schema.band_labels)].to_numpy(dtype="float64")
    return reference.assign(**{REFERENCE_PREDICTION: model.schema.bands(probabilities)})


@pytest.fixture
def cut_off_model(registry: MlflowChampion, tmp_path: Path) -> tuple[TinyModel, str]:
    """The tiny model with the cut-off, registered as a new version of "salary-band" with its
    reference data (the champion alias stays on version 1); the model and its version."""
    from mlflow.tracking import MlflowClient

    model = with_rule(registry.model, DecisionRule.with_cut_off(CUT_OFF), tmp_path / "model")
    with restored_mlflow_globals():
        client = MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)
        experiment = client.create_experiment(
            f"cut-off-{uuid.uuid4().hex[:8]}", artifact_location=(tmp_path / "mlflow").as_uri()
        )
        version = register_tiny_model(
            client, experiment, model, registry.name, reference=reference_by_rule(model)
        )
    return model, version


def selection_rates(
    groups: pd.DataFrame, bands: np.ndarray, favourable: int
) -> dict[tuple[int, str], float]:
    """{(chunk, "attribute=group"): share of the group's rows with band >= favourable}."""
    frame = groups.assign(selected=bands >= favourable, chunk=np.arange(len(groups)) // CHUNK)
    rates = {}
    for attribute in PROTECTED:
        for (chunk, group), rate in frame.groupby(["chunk", attribute])["selected"].mean().items():
            rates[(int(chunk), f"{attribute}={group}")] = float(rate)
    return rates


def disparate_impacts(
    groups: pd.DataFrame, bands: np.ndarray, favourable: int, min_rows: int
) -> dict[tuple[int, str], float]:
    """{(chunk, attribute): lowest over highest selection rate of the groups of min_rows}."""
    frame = groups.assign(selected=bands >= favourable, chunk=np.arange(len(groups)) // CHUNK)
    impacts = {}
    for attribute in PROTECTED:
        for chunk, rows in frame.groupby("chunk"):
            per_group = rows.groupby(attribute)["selected"].agg(["size", "mean"])
            rates = per_group[per_group["size"] >= min_rows]["mean"]
            impacts[(int(chunk), attribute)] = float(rates.min() / rates.max())
    return impacts


def test_fairness_and_performance_are_judged_on_the_bands_of_the_models_decision_rule(
    registry, database, audit_settings, cut_off_model, feed_of, like_reference, tmp_path
):
    model, version = cut_off_model
    candidates = like_reference(4 * CHUNK, 61)
    feed = feed_of(model, version)
    ids = feed.predictions(candidates)
    truth = feed.truth(candidates, seed=62)
    feed.outcomes(ids, truth)
    settings = MonitoringSettings(
        database_url=database,
        mlflow_tracking_uri=registry.uri,
        state_dir=tmp_path / "state",
        chunk_size=CHUNK,
        model_version=version,
    )

    analysis = Monitor(settings, audit_settings).analyse()

    assert (analysis.model_version, analysis.rows_analysed, analysis.chunks) == (version, 2_000, 4)
    probabilities = model.probabilities(candidates)
    served = model.schema.bands(probabilities)
    most_probable = probabilities.argmax(axis=1)
    # The rule moves a good share of the candidates into the favourable band.
    assert (served != most_probable).mean() > 0.15
    favourable = analysis.favourable_band
    groups = candidates[PROTECTED]

    measured = {
        (row.chunk_index, row.subject): row.value
        for row in analysis.results
        if row.calculator == FAIRNESS and row.method == SELECTION_RATE
    }
    expected = selection_rates(groups, served, favourable)
    by_argmax = selection_rates(groups, most_probable, favourable)
    assert measured == pytest.approx(expected)
    for chunk in range(4):
        gaps = [abs(expected[key] - by_argmax[key]) for key in expected if key[0] == chunk]
        assert max(gaps) > 0.1

    impacts = {
        (row.chunk_index, row.subject): row
        for row in analysis.results
        if row.calculator == FAIRNESS and row.method == DISPARATE_IMPACT
    }
    expected_impact = disparate_impacts(groups, served, favourable, settings.min_group_rows)
    argmax_impact = disparate_impacts(groups, most_probable, favourable, settings.min_group_rows)
    assert {key: row.value for key, row in impacts.items()} == pytest.approx(expected_impact)
    assert {key: row.alert for key, row in impacts.items()} == {
        key: value < settings.min_disparate_impact for key, value in expected_impact.items()
    }
    for attribute in PROTECTED:
        assert any(
            abs(expected_impact[(c, attribute)] - argmax_impact[(c, attribute)]) > 0.02
            for c in range(4)
        )
    # The reference's disparate impact too is the rule's.
    reference = model.reference()
    reference_served = model.schema.bands(reference[list(model.schema.band_labels)].to_numpy())
    assert set(analysis.reference_fairness) == set(PROTECTED)
    reference_rates = reference[PROTECTED].assign(selected=reference_served >= favourable)
    for attribute in PROTECTED:
        rates = reference_rates.groupby(attribute)["selected"].mean()
        assert analysis.reference_fairness[attribute] == pytest.approx(rates.min() / rates.max())

    # NannyML judges the served bands as well: realized accuracy is the served bands', well
    # below the most probable band's, and CBPE's estimate (calibrated probabilities with the
    # served band) follows it; thresholds come from the reference's bands, so nothing alerts.
    realized = {
        r.chunk_index: r.value
        for r in analysis.results
        if r.calculator == REALIZED and r.subject == "accuracy"
    }
    estimated = {
        r.chunk_index: r.value
        for r in analysis.results
        if r.calculator == ESTIMATED and r.subject == "accuracy"
    }
    chunk_of = np.arange(len(candidates)) // CHUNK
    for chunk in range(4):
        rows = chunk_of == chunk
        served_accuracy = float(np.mean(served[rows] == truth[rows]))
        argmax_accuracy = float(np.mean(most_probable[rows] == truth[rows]))
        assert realized[chunk] == pytest.approx(served_accuracy)
        assert served_accuracy < argmax_accuracy - 0.05
        assert abs(estimated[chunk] - served_accuracy) < 0.04
    assert not [r for r in analysis.results if r.calculator in (ESTIMATED, REALIZED) and r.alert]

    # The report says which rule was judged.
    rule = "band >50K when its probability is above 0.050, otherwise <=50K"
    assert analysis.decision_rule == rule
    page = render(analysis, settings)
    assert f"<td>decision rule (the bands judged)</td><td>{html.escape(rule)}</td>" in page


def test_a_reference_whose_predicted_band_is_not_the_rules_is_refused(tiny_model, tmp_path):
    model = with_rule(tiny_model, DecisionRule.with_cut_off(CUT_OFF), tmp_path / "model")
    reference = reference_by_rule(model)
    probabilities = reference[list(model.schema.band_labels)].to_numpy()
    differ = int((model.schema.bands(probabilities) != probabilities.argmax(axis=1)).sum())
    assert differ > 0

    assert check_reference(reference, model.schema) is reference
    by_argmax = reference.assign(**{REFERENCE_PREDICTION: probabilities.argmax(axis=1)})
    with pytest.raises(MonitoringConfigError) as refused:
        check_reference(by_argmax, model.schema)
    assert str(refused.value) == (
        f"the reference data's predicted_band differs from the model's decision rule (band "
        f">50K when its probability is above 0.050, otherwise <=50K) in {differ} of "
        f"{len(reference)} rows; was it written by payband-training?"
    )
    # The most probable band is the rule of a model without one.
    assert check_reference(by_argmax, tiny_model.schema) is by_argmax
