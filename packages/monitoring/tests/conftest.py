"""Fixtures of the monitoring tests: a real MLflow registry whose champion is the tiny model
(trained in the session) with its reference data, and audit logs fed through the real writer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from payband_audit import AuditSettings, AuditWriter
from payband_audit.migrate import upgrade
from payband_audit.writer import PredictionRequestRecord
from payband_contracts import (
    FEATURE_CATALOGUE,
    Candidate,
    ModelRef,
    Outcome,
    Prediction,
    SalaryBands,
)
from payband_contracts.messages import EXAMPLE_PREDICTION
from payband_local.postgres import PostgresConnectionInfo
from payband_monitoring.settings import MonitoringSettings
from payband_monitoring.store import migrate
from payband_testing.model import TinyModel, synthetic_candidates
from payband_testing.plugin import unique_database_name
from payband_testing.registry import MlflowChampion
from payband_testing.templates import DatabaseTemplates

MODEL_NAME = "salary-band"


@pytest.fixture
def registry(mlflow_champion: MlflowChampion) -> MlflowChampion:
    """The tiny model as version 1 and champion of "salary-band", with its reference data."""
    return mlflow_champion


def migrate_audit_and_monitoring(info: PostgresConnectionInfo) -> None:
    upgrade(info.url)
    migrate(info.url)


@pytest.fixture
def database(
    request: pytest.FixtureRequest, database_templates: DatabaseTemplates
) -> Iterator[str]:
    """A fresh database with the audit and the monitoring schema migrated (a copy of a
    template migrated once per session), dropped after the test."""
    with database_templates.copy(
        "audit_monitoring", migrate_audit_and_monitoring, unique_database_name(request)
    ) as info:
        yield info.url


@pytest.fixture
def settings(registry: MlflowChampion, database: str, tmp_path: Path) -> MonitoringSettings:
    return MonitoringSettings(
        database_url=database,
        mlflow_tracking_uri=registry.uri,
        state_dir=tmp_path / "state",
        chunk_size=500,
    )


@pytest.fixture
def audit_settings(database: str) -> AuditSettings:
    return AuditSettings(database_url=database)


class Feed:
    """Writes predictions of the tiny model (or of ``model``, registered as ``version``), with
    the band its decision rule gives as serving does, and outcomes, through the real
    AuditWriter."""

    def __init__(
        self,
        registry: MlflowChampion,
        audit_settings: AuditSettings,
        *,
        model: TinyModel | None = None,
        version: str | None = None,
    ) -> None:
        self.model = model or registry.model
        self.version = version or registry.version
        self.audit_settings = audit_settings
        self.bands = SalaryBands(edges_usd=self.model.schema.band_edges_usd)
        self.clock = datetime(2026, 11, 1, tzinfo=UTC)

    def _pair(
        self, candidate: dict[str, object], probabilities: np.ndarray, band: int, at: datetime
    ) -> tuple[PredictionRequestRecord, Prediction]:
        prediction_id = uuid.uuid4()
        model = ModelRef(name=MODEL_NAME, version=self.version)
        shares = [round(float(p), 6) for p in probabilities[:-1]]
        shares.append(round(1.0 - sum(shares), 6))
        prediction = Prediction.model_validate(
            {
                **EXAMPLE_PREDICTION,
                "id": prediction_id,
                "created_at": at,
                "model": model,
                "band": self.bands.band(band).model_dump(),
                "probabilities": [
                    {"index": i, "label": self.bands.labels[i], "probability": p}
                    for i, p in enumerate(shares)
                ],
                "explanation": {**EXAMPLE_PREDICTION["explanation"], "band_index": band},
            }
        )
        request = PredictionRequestRecord(
            prediction_id=prediction_id,
            received_at=at,
            caller="monitoring-test",
            candidate=Candidate.model_validate(candidate),
            model=model,
        )
        return request, prediction

    def predictions(
        self, candidates: pd.DataFrame, *, step: timedelta = timedelta(seconds=10)
    ) -> list[uuid.UUID]:
        """Record the model's prediction of each candidate, ``step`` apart; their ids."""
        probabilities = self.model.probabilities(candidates)
        bands = self.model.schema.bands(probabilities)
        pairs = []
        for row, candidate in enumerate(candidates.to_dict("records")):
            self.clock += step
            pairs.append(self._pair(candidate, probabilities[row], int(bands[row]), self.clock))

        async def write() -> None:
            async with AuditWriter(settings=self.audit_settings) as writer:
                for start in range(0, len(pairs), 500):
                    await writer.record_predictions(pairs[start : start + 500])

        asyncio.run(write())
        return [request.prediction_id for request, _ in pairs]

    def outcomes(self, ids: Sequence[uuid.UUID], bands: Sequence[int]) -> None:
        async def write() -> None:
            async with AuditWriter(settings=self.audit_settings) as writer:
                for prediction_id, band in zip(ids, bands, strict=True):
                    await writer.record_outcome(
                        prediction_id,
                        Outcome(band=int(band), observed_at=self.clock, source="payroll"),
                        recorded_by="monitoring-test",
                    )

        asyncio.run(write())

    def truth(self, candidates: pd.DataFrame, seed: int) -> np.ndarray:
        """True bands drawn from the model's own probabilities (a calibrated model)."""
        probabilities = self.model.probabilities(candidates)
        draws = np.random.default_rng(seed).random(len(candidates))[:, np.newaxis]
        # min(): a cumulative sum that rounds below 1 must not make a band past the last.
        bands = (draws > probabilities.cumsum(axis=1)).sum(axis=1)
        return np.minimum(bands, probabilities.shape[1] - 1)


@pytest.fixture
def feed(registry: MlflowChampion, audit_settings: AuditSettings) -> Feed:
    return Feed(registry, audit_settings)


@pytest.fixture
def feed_of(
    registry: MlflowChampion, audit_settings: AuditSettings
) -> Callable[[TinyModel, str], Feed]:
    """``feed_of(model, version)``: a Feed of ``model`` registered as ``version``."""
    return lambda model, version: Feed(registry, audit_settings, model=model, version=version)


def _like_reference(rows: int, seed: int) -> pd.DataFrame:
    return synthetic_candidates(rows, seed)


def _shifted(rows: int, seed: int) -> pd.DataFrame:
    frame = synthetic_candidates(rows, seed)
    frame["hours_per_week"] = np.minimum(frame["hours_per_week"] + 25, 99)
    top = list(FEATURE_CATALOGUE["education"].values)[-3:]
    frame["education"] = np.random.default_rng(seed).choice(np.asarray(top, dtype=object), rows)
    return frame


@pytest.fixture
def like_reference() -> Callable[[int, int], pd.DataFrame]:
    """``like_reference(rows, seed)``: candidates drawn as the reference data's were."""
    return _like_reference


@pytest.fixture
def shifted() -> Callable[[int, int], pd.DataFrame]:
    """``shifted(rows, seed)``: candidates who work 25 hours more a week and hold one of the
    three highest degrees; every other feature drawn as in the reference data."""
    return _shifted
