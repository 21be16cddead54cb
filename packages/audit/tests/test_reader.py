import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from payband_audit.errors import AuditConfigError, AuditUnavailable
from payband_audit.reader import AuditReader
from payband_audit.writer import AuditWriter
from payband_contracts import ErrorBody, Outcome, Review

START = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def log(audit_db, make_record):
    """Ten predictions an hour apart (versions 3 then 4), one error, outcomes and reviews."""
    requests = []

    async def fill() -> None:
        async with AuditWriter(audit_db.url) as writer:
            for hour in range(10):
                request, prediction = make_record(
                    at=START + timedelta(hours=hour),
                    version="3" if hour < 6 else "4",
                    age=20 + hour,
                )
                await writer.record_prediction(request, prediction)
                requests.append(request)
            failed, _ = make_record(at=START + timedelta(hours=11), version="4")
            error = ErrorBody(code="inference_unavailable", message="MLServer did not answer")
            await writer.record_error(failed, 503, error, upstream_body="refused")
            requests.append(failed)
            await writer.record_outcome(
                requests[0].prediction_id, Outcome(band=0, source="payroll"), recorded_by="hr"
            )
            await writer.record_review(
                requests[0].prediction_id,
                Review(reviewer="hr-17", decision="override", band=0, reason="payslip"),
            )
            await writer.record_review(
                requests[0].prediction_id, Review(reviewer="hr-18", decision="confirm")
            )

    asyncio.run(fill())
    return audit_db, requests


def test_get_one_record_with_outcome_and_reviews(log):
    info, requests = log
    with AuditReader(info.url) as reader:
        record = reader.get(requests[0].prediction_id)
        assert reader.get(uuid.uuid4()) is None
        failed = reader.get(requests[-1].prediction_id)
    assert record is not None
    assert record.candidate == requests[0].candidate
    assert record.model is not None
    assert record.model.version == "3"
    assert record.prediction is not None
    assert record.prediction.band.label == ">50K"
    assert [p.probability for p in record.prediction.probabilities] == [0.31, 0.69]
    assert len(record.prediction.explanation.contributions) == 3
    assert record.outcome is not None
    assert record.outcome.band == 0
    assert record.outcome.source == "payroll"
    assert [(r.reviewer, r.decision.value) for r in record.reviews] == [
        ("hr-17", "override"),
        ("hr-18", "confirm"),
    ]
    assert len(record.record_hash) == 64
    assert failed is not None
    assert failed.prediction is None
    assert failed.error is not None
    assert failed.error.status_code == 503
    assert failed.error.error.code == "inference_unavailable"


def test_pages_by_time_range_and_model_version(log):
    info, requests = log
    with AuditReader(info.url, role="payband_audit_reader") as reader:
        first = reader.records(start=START, end=START + timedelta(hours=8), limit=3)
        assert [r.prediction_id for r in first.records] == [r.prediction_id for r in requests[:3]]
        seen = list(first.records)
        cursor = first.next_cursor
        while cursor is not None:
            page = reader.records(
                start=START, end=START + timedelta(hours=8), limit=3, cursor=cursor
            )
            seen.extend(page.records)
            cursor = page.next_cursor
        assert [r.prediction_id for r in seen] == [r.prediction_id for r in requests[:8]]
        version_4 = list(reader.iter_records(model_version="4", limit=2))
        assert [r.prediction_id for r in version_4] == [r.prediction_id for r in requests[6:]]
        with pytest.raises(ValueError, match="invalid page cursor"):
            reader.records(cursor="nonsense")


def test_dataframe_for_monitoring(log):
    info, _requests = log
    with AuditReader(info.url) as reader:
        frame = reader.dataframe(model_name="salary-band")
        version_3 = reader.dataframe(model_version="3")
    assert len(frame) == 10  # the failed request has no prediction
    assert list(frame["age"]) == list(range(20, 30))
    assert str(frame["age"].dtype) == "Int64"
    assert list(frame.columns[-5:]) == [
        "probability_0",
        "probability_1",
        "outcome_band_index",
        "outcome_recorded_at",
        "outcome_observed_at",
    ]
    assert frame["probability_1"].tolist() == [0.69] * 10
    assert frame["outcome_band_index"].isna().tolist() == [False] + [True] * 9
    assert frame["outcome_band_index"][0] == 0
    assert isinstance(frame["received_at"].dtype, pd.DatetimeTZDtype)
    assert str(frame["received_at"].dtype.tz) == "UTC"
    assert frame["received_at"][0] == pd.Timestamp(START)
    assert frame["sex"].unique().tolist() == ["female"]
    assert len(version_3) == 6


def test_unmigrated_database(postgres_database):
    with pytest.raises(AuditConfigError, match="not migrated"):
        AuditReader(postgres_database.url)


def test_options_in_the_url_are_kept(audit_db):
    url = f"{audit_db.url}?options=-c%20application_name%3Dauditor"
    with AuditReader(url) as reader:
        row = reader._conn.execute("SELECT current_setting('application_name') AS name").fetchone()
    assert row == {"name": "auditor"}


def test_unknown_role(audit_db):
    with pytest.raises(AuditConfigError, match="cannot act as role 'nobody_here'"):
        AuditReader(audit_db.url, role="nobody_here")


def test_unreachable_database():
    with pytest.raises(AuditUnavailable, match="cannot connect to the audit database"):
        AuditReader("postgresql://postgres@127.0.0.1:1/payband")
