"""AuditReader: records by id, pages by time range and model version, DataFrames for monitoring."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from payband_audit.db import connect, require_migrated
from payband_audit.errors import AuditConfigError, AuditUnavailable
from payband_audit.settings import AuditSettings
from payband_contracts import (
    AuditRecord,
    Candidate,
    ErrorBody,
    ModelRef,
    Prediction,
    RecordedError,
    RecordedOutcome,
    RecordedReview,
)
from payband_contracts.errors import first_line

if TYPE_CHECKING:
    import pandas as pd

RECORD_SQL = """
SELECT r.prediction_id, r.received_at, r.caller, r.request_id, r.model_name, r.model_version,
       r.candidate, r.record_hash,
       p.recorded_at AS created_at, p.band, p.probabilities, p.explanation,
       e.status_code, e.error, e.upstream_body,
       o.band_index AS outcome_band, o.observed_at, o.source, o.recorded_at AS outcome_at,
       o.recorded_by
FROM audit.prediction_requests AS r
LEFT JOIN audit.prediction_responses AS p USING (prediction_id)
LEFT JOIN audit.prediction_errors AS e USING (prediction_id)
LEFT JOIN audit.outcomes AS o USING (prediction_id)
"""

REVIEWS_SQL = """
SELECT prediction_id, recorded_at, reviewer, decision, band_index, reason
FROM audit.reviews WHERE prediction_id = ANY(%s) ORDER BY seq
"""

FRAME_SQL = """
SELECT r.prediction_id, r.received_at, r.model_name, r.model_version, r.candidate,
       p.recorded_at AS responded_at, p.band_index, p.band->>'label' AS band_label,
       p.probabilities, o.band_index AS outcome_band_index, o.recorded_at AS outcome_recorded_at,
       o.observed_at AS outcome_observed_at
FROM audit.prediction_requests AS r
JOIN audit.prediction_responses AS p USING (prediction_id)
LEFT JOIN audit.outcomes AS o USING (prediction_id)
"""


@dataclass(frozen=True)
class RecordPage:
    """One page of records and the cursor of the next page (None on the last page)."""

    records: list[AuditRecord]
    next_cursor: str | None


def _encode_cursor(received_at: datetime, prediction_id: UUID) -> str:
    return base64.urlsafe_b64encode(f"{received_at.isoformat()}|{prediction_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        at, prediction_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(at), UUID(prediction_id)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"invalid page cursor {cursor!r}") from None


def _filters(
    start: datetime | None,
    end: datetime | None,
    model_name: str | None,
    model_version: str | None,
) -> tuple[list[str], list[Any]]:
    clauses, params = [], []
    for clause, value in (
        ("r.received_at >= %s", start),
        ("r.received_at < %s", end),
        ("r.model_name = %s", model_name),
        ("r.model_version = %s", model_version),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return clauses, params


def _record(row: dict[str, Any], reviews: list[dict[str, Any]]) -> AuditRecord:
    model = (
        ModelRef(name=row["model_name"], version=row["model_version"])
        if row["model_name"] is not None
        else None
    )
    prediction = None
    if row["band"] is not None:
        prediction = Prediction(
            id=row["prediction_id"],
            created_at=row["created_at"],
            model=model,
            band=row["band"],
            probabilities=row["probabilities"],
            explanation=row["explanation"],
        )
    error = None
    if row["status_code"] is not None:
        error = RecordedError(
            status_code=row["status_code"],
            error=ErrorBody.model_validate(row["error"]),
            upstream_body=row["upstream_body"],
        )
    outcome = None
    if row["outcome_band"] is not None:
        outcome = RecordedOutcome(
            band=row["outcome_band"],
            observed_at=row["observed_at"],
            source=row["source"],
            recorded_at=row["outcome_at"],
            recorded_by=row["recorded_by"],
        )
    return AuditRecord(
        prediction_id=row["prediction_id"],
        received_at=row["received_at"],
        caller=row["caller"],
        request_id=row["request_id"],
        candidate=Candidate.model_validate(row["candidate"]) if row["candidate"] else None,
        model=model,
        prediction=prediction,
        error=error,
        outcome=outcome,
        reviews=[
            RecordedReview(
                reviewer=review["reviewer"],
                decision=review["decision"],
                band=review["band_index"],
                reason=review["reason"],
                recorded_at=review["recorded_at"],
            )
            for review in reviews
        ],
        record_hash=row["record_hash"],
    )


@contextmanager
def _read_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.OperationalError as error:
        # The server went away mid-read: a reason to retry, not a bug.
        raise AuditUnavailable(f"the audit database went away: {first_line(error)}") from None
    except psycopg.errors.InsufficientPrivilege as error:
        raise AuditConfigError(
            f"this user or role may not read the audit log: {first_line(error)}"
        ) from None


class AuditReader:
    """Reads the audit log (as the reader role in production); a context manager."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: AuditSettings | None = None,
        role: str | None = None,
    ) -> None:
        settings = settings or AuditSettings()
        self._conn = connect(
            database_url or settings.database_url,
            role=role if role is not None else settings.role,
            connect_timeout=settings.connect_timeout_s,
            autocommit=True,
        )
        try:
            require_migrated(self._conn)
        except BaseException:
            self._conn.close()
            raise
        self._conn.row_factory = dict_row  # type: ignore[assignment]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _records(self, where: str, params: list[Any], suffix: str = "") -> list[AuditRecord]:
        with _read_errors():
            rows = self._conn.execute(f"{RECORD_SQL} {where} {suffix}", params).fetchall()
            ids = [row["prediction_id"] for row in rows]
            reviews: dict[UUID, list[dict[str, Any]]] = {i: [] for i in ids}
            if ids:
                for review in self._conn.execute(REVIEWS_SQL, (ids,)).fetchall():
                    reviews[review["prediction_id"]].append(review)
        return [_record(row, reviews[row["prediction_id"]]) for row in rows]

    def get(self, prediction_id: UUID) -> AuditRecord | None:
        """One record with its response or error, outcome and reviews; None if unknown."""
        found = self._records("WHERE r.prediction_id = %s", [prediction_id])
        return found[0] if found else None

    def records(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RecordPage:
        """Records received in [start, end), oldest first, `limit` per page."""
        if not 1 <= limit <= 10_000:
            raise ValueError(f"limit must be from 1 to 10000, not {limit}")
        clauses, params = _filters(start, end, model_name, model_version)
        if cursor is not None:
            clauses.append("(r.received_at, r.prediction_id) > (%s, %s)")
            params.extend(_decode_cursor(cursor))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        found = self._records(
            where, [*params, limit + 1], "ORDER BY r.received_at, r.prediction_id LIMIT %s"
        )
        next_cursor = None
        if len(found) > limit:
            found = found[:limit]
            next_cursor = _encode_cursor(found[-1].received_at, found[-1].prediction_id)
        return RecordPage(found, next_cursor)

    def iter_records(self, **filters: Any) -> Iterator[AuditRecord]:
        """Every record matching the filters of `records`, page by page."""
        cursor = None
        while True:
            page = self.records(**filters, cursor=cursor)
            yield from page.records
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def dataframe(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> pd.DataFrame:
        """Answered predictions for monitoring: inputs, band, probabilities, outcome, times.

        One row per prediction, oldest first; `probability_<i>` per band index; outcome columns
        are empty until the truth arrives.
        """
        import pandas as pd  # imported here: the CLI's other commands start faster without it

        clauses, params = _filters(start, end, model_name, model_version)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with _read_errors():
            rows = self._conn.execute(
                f"{FRAME_SQL} {where} ORDER BY r.received_at, r.prediction_id", params
            ).fetchall()
        features = list(Candidate.model_fields)
        records = []
        for row in rows:
            candidate = row["candidate"] or {}
            record = {
                "prediction_id": str(row["prediction_id"]),
                "received_at": row["received_at"],
                "responded_at": row["responded_at"],
                "model_name": row["model_name"],
                "model_version": row["model_version"],
                **{feature: candidate.get(feature) for feature in features},
                "band_index": row["band_index"],
                "band_label": row["band_label"],
                **{f"probability_{p['index']}": p["probability"] for p in row["probabilities"]},
                "outcome_band_index": row["outcome_band_index"],
                "outcome_recorded_at": row["outcome_recorded_at"],
                "outcome_observed_at": row["outcome_observed_at"],
            }
            records.append(record)
        frame = pd.DataFrame.from_records(records, columns=_frame_columns(records, features))
        for column in ("band_index", "outcome_band_index", "age", "hours_per_week"):
            frame[column] = frame[column].astype("Int64")
        for column in ("received_at", "responded_at", "outcome_recorded_at", "outcome_observed_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame


def _frame_columns(records: list[dict[str, Any]], features: list[str]) -> list[str]:
    probability_columns = sorted(
        {key for record in records for key in record if key.startswith("probability_")},
        key=lambda name: int(name.removeprefix("probability_")),
    )
    return [
        "prediction_id",
        "received_at",
        "responded_at",
        "model_name",
        "model_version",
        *features,
        "band_index",
        "band_label",
        *probability_columns,
        "outcome_band_index",
        "outcome_recorded_at",
        "outcome_observed_at",
    ]
