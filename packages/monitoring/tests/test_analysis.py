"""Drift, estimated and realized performance and fairness on audit records written by the
real writer, for the tiny model registered as champion with its reference data."""

from __future__ import annotations

import numpy as np
import pytest

from payband_audit import AuditSettings
from payband_monitoring.analysis import (
    DISPARATE_IMPACT,
    ESTIMATED,
    FAIRNESS,
    MULTIVARIATE,
    REALIZED,
    SELECTION_RATE,
    UNIVARIATE,
    Analysis,
)
from payband_monitoring.runner import Monitor
from payband_monitoring.settings import MonitoringSettings


def analyse(settings: MonitoringSettings, audit_settings: AuditSettings) -> Analysis:
    return Monitor(settings, audit_settings).analyse()


def drift_alerts(analysis: Analysis) -> set[tuple[str, str]]:
    return {
        (row.subject, row.method)
        for row in analysis.results
        if row.calculator in (UNIVARIATE, MULTIVARIATE) and row.alert
    }


def test_records_like_the_reference_raise_no_drift_alert(
    settings, audit_settings, feed, like_reference
):
    feed.predictions(like_reference(2_000, 21))

    analysis = analyse(settings, audit_settings)

    assert (analysis.model_name, analysis.model_version) == ("salary-band", "1")
    assert (analysis.rows_analysed, analysis.chunks, analysis.rows_pending) == (2_000, 4, 0)
    assert drift_alerts(analysis) == set()
    univariate = [row for row in analysis.results if row.calculator == UNIVARIATE]
    # Every feature by both methods of its kind, in each of the four chunks.
    assert len(univariate) == 9 * 2 * 4
    assert all(row.upper_threshold == settings.drift_threshold for row in univariate)
    assert len([r for r in analysis.results if r.calculator == MULTIVARIATE]) == 4
    # No outcome yet: CBPE estimates performance, nothing is realized.
    estimates = [row for row in analysis.results if row.calculator == ESTIMATED]
    assert {row.subject for row in estimates} == {"roc_auc", "accuracy", "f1"}
    assert len(estimates) == 3 * 4
    assert not any(row.alert for row in estimates)
    assert not [row for row in analysis.results if row.calculator == REALIZED]


def test_shifted_hours_and_education_raise_drift_on_those_features_and_get_an_estimate(
    settings, audit_settings, feed, like_reference, shifted
):
    feed.predictions(like_reference(1_000, 22))
    feed.predictions(shifted(1_000, 23))

    analysis = analyse(settings, audit_settings)

    # Race groups of ~100 records give noisy selection rates; fairness is tested below.
    alerted = {
        (row.chunk_index, row.subject)
        for row in analysis.results
        if row.alert and row.calculator != FAIRNESS
    }
    drifted = {
        (row.chunk_index, row.subject)
        for row in analysis.results
        if row.calculator == UNIVARIATE and row.alert
    }
    # The first two chunks are like the reference, the last two shifted.
    assert drifted == {(c, f) for c in (2, 3) for f in ("hours_per_week", "education")}
    latest = {(r.subject, r.method) for r in analysis.latest(UNIVARIATE) if r.alert}
    assert latest == {
        ("hours_per_week", "kolmogorov_smirnov"),
        ("hours_per_week", "jensen_shannon"),
        ("education", "jensen_shannon"),
        ("education", "l_infinity"),
    }
    assert not any(c in (0, 1) for c, _ in alerted)
    # CBPE still estimates the shifted chunks: more confident predictions, higher accuracy.
    estimates = {
        (row.chunk_index, row.subject): row.value
        for row in analysis.results
        if row.calculator == ESTIMATED
    }
    assert {chunk for chunk, _ in estimates} == {0, 1, 2, 3}
    assert estimates[(3, "accuracy")] > estimates[(0, "accuracy")]
    assert all(0 < value <= 1 for value in estimates.values())


def test_outcomes_fed_back_give_realized_performance(
    settings, audit_settings, feed, like_reference
):
    candidates = like_reference(1_500, 24)
    ids = feed.predictions(candidates)
    truth = feed.truth(candidates, seed=25)
    # Outcomes arrive for the first two chunks only.
    feed.outcomes(ids[:1_000], truth[:1_000])

    analysis = analyse(settings, audit_settings)

    assert analysis.rows_with_outcome == 1_000
    realized = {
        (row.chunk_index, row.subject): row.value
        for row in analysis.results
        if row.calculator == REALIZED
    }
    assert {chunk for chunk, _ in realized} == {0, 1}
    estimated = {
        (row.chunk_index, row.subject): row.value
        for row in analysis.results
        if row.calculator == ESTIMATED
    }
    predicted = feed.model.schema.bands(feed.model.probabilities(candidates[:500]))
    assert realized[(0, "accuracy")] == pytest.approx(float(np.mean(predicted == truth[:500])))
    # The truth is drawn from the model's probabilities, so CBPE's estimate is close.
    for chunk in (0, 1):
        for metric in ("accuracy", "roc_auc"):
            assert abs(realized[(chunk, metric)] - estimated[(chunk, metric)]) < 0.06
    assert [r.chunk_index for r in analysis.latest(REALIZED)] == [1, 1, 1]


def test_a_group_skewed_stream_moves_disparate_impact(
    settings, audit_settings, feed, like_reference
):
    feed.predictions(like_reference(500, 26))
    skewed = like_reference(500, 27)
    # Women in this stream hold the lowest degrees and work part time: few are selected.
    women = skewed["sex"] == "female"
    skewed.loc[women, "education"] = "below_grade_5"
    skewed.loc[women, "hours_per_week"] = 10
    feed.predictions(skewed)

    analysis = analyse(settings, audit_settings)

    impact = {
        row.chunk_index: row
        for row in analysis.results
        if row.calculator == FAIRNESS and row.method == DISPARATE_IMPACT and row.subject == "sex"
    }
    assert impact[0].value > 0.8
    assert not impact[0].alert
    assert impact[1].value < 0.3
    assert impact[1].alert
    assert impact[1].lower_threshold == settings.min_disparate_impact
    rates = {
        row.subject: row.value
        for row in analysis.results
        if row.chunk_index == 1 and row.method == SELECTION_RATE
    }
    assert impact[1].value == pytest.approx(rates["sex=female"] / rates["sex=male"])
    assert analysis.reference_fairness["sex"] > 0.8


def test_period_chunks_follow_the_calendar(registry, database, tmp_path, audit_settings, feed):
    from datetime import timedelta

    settings = MonitoringSettings(
        database_url=database,
        mlflow_tracking_uri=registry.uri,
        state_dir=tmp_path,
        chunk_size=500,
        chunk_period="D",
        min_chunk_rows=20,
    )
    # 600 records an hour apart from 1 November 00:00:10: 24 a day for 25 days (the first
    # day has 23), and 1 on the 26th, too few to analyse.
    candidates = registry.model.holdout.sample(600, replace=True, random_state=3)
    feed.predictions(candidates, step=timedelta(hours=1))

    analysis = analyse(settings, audit_settings)

    chunks = {row.chunk_key: row.rows for row in analysis.results}
    assert sorted(chunks)[0] == "2026-11-01"
    assert sorted(chunks)[-1] == "2026-11-25"
    assert len(chunks) == 25
    assert chunks["2026-11-01"] == 23
    assert chunks["2026-11-02"] == 24
    assert (analysis.rows_analysed, analysis.rows_pending) == (599, 1)
    assert analysis.chunking == "period:D"


def test_a_model_with_no_records_yet_gives_an_empty_analysis(settings, audit_settings, feed):
    feed.predictions(feed.model.holdout.head(120))

    analysis = analyse(settings, audit_settings)

    assert analysis.results == []
    assert (analysis.rows_analysed, analysis.rows_pending) == (0, 120)


def test_a_three_band_model_is_analysed_as_multiclass(tiny_model_three_bands, tmp_path):
    from datetime import UTC, datetime, timedelta

    import pandas as pd

    from payband_monitoring.analysis import analyse as analyse_records
    from payband_monitoring.reference import WatchedModel
    from payband_testing.model import synthetic_candidates

    model = tiny_model_three_bands
    watched = WatchedModel(
        name="salary-band",
        version="2",
        run_id="run",
        schema=model.schema,
        reference=model.reference(),
    )
    candidates = synthetic_candidates(1_000, 51)
    probabilities = model.probabilities(candidates)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    records = candidates.assign(
        prediction_id=[f"id-{i}" for i in range(1_000)],
        received_at=[start + timedelta(minutes=i) for i in range(1_000)],
        band_index=model.schema.bands(probabilities),
        outcome_band_index=pd.array(model.schema.bands(probabilities), dtype="Int64"),
        **{f"probability_{i}": probabilities[:, i] for i in range(3)},
    )
    settings = MonitoringSettings(state_dir=tmp_path, chunk_size=500)

    analysis = analyse_records(watched, records, settings, "run")

    assert analysis.favourable_band == 2
    assert drift_alerts(analysis) == set()
    realized = {
        (row.chunk_index, row.subject): row.value
        for row in analysis.results
        if row.calculator == REALIZED
    }
    # The recorded outcome is the predicted band: realized accuracy is exactly 1.
    assert realized[(0, "accuracy")] == pytest.approx(1.0)
    assert {subject for _, subject in realized} == {"roc_auc", "accuracy", "f1"}
    assert len([r for r in analysis.results if r.calculator == ESTIMATED]) == 3 * 2
    selected = {
        row.subject: row.value
        for row in analysis.results
        if row.chunk_index == 0 and row.method == SELECTION_RATE and row.subject.startswith("sex")
    }
    first = model.schema.bands(probabilities[:500]) == 2
    women = (candidates["sex"] == "female").to_numpy()[:500]
    assert selected["sex=female"] == pytest.approx(first[women].mean())
