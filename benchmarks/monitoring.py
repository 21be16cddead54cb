"""How long a monitoring run takes, and how it grows with the records analysed.

    uv run python benchmarks/monitoring.py [--rows 10000 50000 100000] [--read 20000]

(1) The analysis alone (NannyML univariate and multivariate drift, CBPE, realized performance
on half of the records, fairness) of N records of the tiny model against 3,000 reference rows,
in chunks of 500, for each N. (2) Reading N records from a real PostgreSQL through the audit
reader's DataFrame, after writing them with the real writer. Prints a table; no targets (the
issue sets none), figures to size PAYBAND_MONITORING_INTERVAL_S and the analysed window.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from _common import durable_audit_database  # benchmarks/ is the script's directory
from _report import Row, print_table, timed

from payband_audit.reader import AuditReader
from payband_audit.writer import AuditWriter, PredictionRequestRecord
from payband_contracts import Candidate, ModelRef, Prediction, SalaryBands
from payband_contracts.messages import EXAMPLE_PREDICTION
from payband_monitoring.analysis import analyse
from payband_monitoring.reference import WatchedModel
from payband_monitoring.settings import MonitoringSettings
from payband_testing.model import TinyModel, synthetic_candidates, train_tiny_model

MODEL = ModelRef(name="salary-band", version="1")
BANDS = SalaryBands(edges_usd=(50_000,))  # the tiny model's


def records(model: TinyModel, rows: int, seed: int) -> pd.DataFrame:
    """N records in the audit reader's DataFrame shape; outcomes for the first half."""
    candidates = synthetic_candidates(rows, seed)
    probabilities = model.probabilities(candidates)
    truth = np.minimum(
        (np.random.default_rng(seed).random(rows)[:, None] > probabilities.cumsum(1)).sum(1), 1
    )
    frame = candidates.assign(
        prediction_id=[str(uuid.uuid4()) for _ in range(rows)],
        received_at=pd.date_range("2026-11-01", periods=rows, freq="s", tz="UTC"),
        model_name=MODEL.name,
        model_version=MODEL.version,
        band_index=probabilities.argmax(axis=1),
        probability_0=probabilities[:, 0],
        probability_1=probabilities[:, 1],
        outcome_band_index=pd.array(
            [int(t) if i < rows // 2 else None for i, t in enumerate(truth)], dtype="Int64"
        ),
    )
    return frame


def write(model: TinyModel, database_url: str, rows: int) -> None:
    candidates = synthetic_candidates(rows, 7)
    probabilities = model.probabilities(candidates)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    pairs = []
    for row, candidate in enumerate(candidates.to_dict("records")):
        prediction_id, at = uuid.uuid4(), start + timedelta(seconds=row)
        band = int(probabilities[row].argmax())
        p1 = round(float(probabilities[row, 1]), 6)
        prediction = Prediction.model_validate(
            {
                **EXAMPLE_PREDICTION,
                "id": prediction_id,
                "created_at": at,
                "model": MODEL,
                "band": BANDS.band(band).model_dump(),
                "probabilities": [
                    {"index": 0, "label": "<=50K", "probability": round(1 - p1, 6)},
                    {"index": 1, "label": ">50K", "probability": p1},
                ],
                "explanation": {**EXAMPLE_PREDICTION["explanation"], "band_index": band},
            }
        )
        request = PredictionRequestRecord(
            prediction_id=prediction_id,
            received_at=at,
            caller="benchmark",
            candidate=Candidate.model_validate(candidate),
            model=MODEL,
        )
        pairs.append((request, prediction))

    async def run() -> None:
        async with AuditWriter(database_url) as writer:
            for first in range(0, len(pairs), 1_000):
                await writer.record_predictions(pairs[first : first + 1_000])

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--read", type=int, default=20_000)
    options = parser.parse_args()
    table: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = train_tiny_model(Path(tmp) / "model")
        watched = WatchedModel(
            name=MODEL.name,
            version=MODEL.version,
            run_id="benchmark",
            schema=model.schema,
            reference=model.reference(),
        )
        settings = MonitoringSettings(state_dir=Path(tmp) / "state", chunk_size=500)
        for rows in options.rows:
            frame = records(model, rows, seed=rows)
            analysis, seconds = timed(lambda f=frame: analyse(watched, f, settings, "bench"))
            table.append(
                Row(
                    f"analysis of {rows:,} records ({analysis.chunks} chunks)",
                    f"{seconds:.1f} s ({rows / seconds:,.0f} records/s)",
                )
            )
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        table.append(Row("peak memory of the process (largest analysis)", f"{peak_mb:,.0f} MB"))

        with durable_audit_database("monitoring_benchmark") as (_, info):
            _, seconds = timed(lambda: write(model, info.url, options.read))
            table.append(Row(f"writing {options.read:,} records (real writer)", f"{seconds:.1f} s"))

            def read() -> pd.DataFrame:
                with AuditReader(info.url) as reader:
                    return reader.dataframe(model_name=MODEL.name, model_version=MODEL.version)

            frame, seconds = timed(read)
            assert len(frame) == options.read
            table.append(
                Row(
                    f"reading {options.read:,} records (AuditReader.dataframe)",
                    f"{seconds:.2f} s ({options.read / seconds:,.0f} records/s)",
                )
            )
    print_table(table)


if __name__ == "__main__":
    main()
