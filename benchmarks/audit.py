"""Audit log throughput and latency on a real, durable PostgreSQL.

    uv run python benchmarks/audit.py [--seconds 10] [--writers 64] [--single 500]

Starts an embedded PostgreSQL with fsync on (commits are durable), migrates the audit schema,
then measures (1) sustained committed records per second with N concurrent writers, each
awaiting its record before sending the next, and (2) the latency of single writes with nothing
else going on. A record is one prediction: the request (a candidate) and the response
(2 band probabilities, 9 contributions). Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

from _common import durable_audit_database  # benchmarks/ is the script's directory

from payband_audit.verify import verify_chain
from payband_audit.writer import AuditWriter, PredictionRequestRecord
from payband_contracts import EXAMPLE_CANDIDATE, Candidate, ModelRef, Prediction
from payband_contracts.catalogue import FEATURE_CATALOGUE

CANDIDATE = Candidate.model_validate(EXAMPLE_CANDIDATE)
MODEL = ModelRef(name="salary-band", version="1")
RAW_REQUEST = '{"candidate": ' + CANDIDATE.model_dump_json() + "}"
CONTRIBUTIONS = [
    {
        "feature": spec.name.value,
        "label": spec.label,
        "value": CANDIDATE.value_of(spec.name),
        "contribution": round(0.9 / (rank + 1), 6),
    }
    for rank, spec in enumerate(FEATURE_CATALOGUE.features)
]


TEMPLATE = Prediction.model_validate(
    {
        "id": uuid.uuid4(),
        "created_at": datetime.now(UTC),
        "model": MODEL,
        "band": {"index": 1, "label": ">50K", "lower_usd": 50000.0},
        "probabilities": [
            {"index": 0, "label": "<=50K", "probability": 0.3125},
            {"index": 1, "label": ">50K", "probability": 0.6875},
        ],
        "explanation": {"band_index": 1, "base_value": -1.25, "contributions": CONTRIBUTIONS},
    }
)


def realistic_prediction(prediction_id: uuid.UUID) -> tuple[PredictionRequestRecord, Prediction]:
    """A request and its prediction as the gateway holds them once it has the answer.

    The prediction is copied from a validated template (the gateway's validation is not what
    is measured here), with its own id and time.
    """
    now = datetime.now(UTC)
    request = PredictionRequestRecord(
        prediction_id=prediction_id,
        received_at=now,
        caller="benchmark",
        request_id=str(prediction_id),
        candidate=CANDIDATE,
        model=MODEL,
        raw_request=RAW_REQUEST,
    )
    return request, TEMPLATE.model_copy(update={"id": prediction_id, "created_at": now})


async def sustained(url: str, writers: int, seconds: float) -> tuple[int, float]:
    async with AuditWriter(url) as writer:
        deadline = time.perf_counter() + seconds
        counts = [0] * writers

        async def write_until_deadline(index: int) -> None:
            while time.perf_counter() < deadline:
                await writer.record_prediction(*realistic_prediction(uuid.uuid4()))
                counts[index] += 1

        started = time.perf_counter()
        await asyncio.gather(*(write_until_deadline(i) for i in range(writers)))
        return sum(counts), time.perf_counter() - started


async def single_latencies(url: str, count: int) -> list[float]:
    async with AuditWriter(url) as writer:
        latencies = []
        for _ in range(count):
            request, prediction = realistic_prediction(uuid.uuid4())
            started = time.perf_counter()
            await writer.record_prediction(request, prediction)
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--single", type=int, default=500)
    args = parser.parse_args()

    with durable_audit_database("audit_benchmark") as (_, info):
        records, elapsed = asyncio.run(sustained(info.url, args.writers, args.seconds))
        latencies = asyncio.run(single_latencies(info.url, args.single))
        with info.connect(autocommit=True) as conn:
            verification = verify_chain(conn)

    rate = records / elapsed
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98]
    rows = [
        (f"sustained, {args.writers} writers", f"{rate:,.0f} records/s", ">= 5,000"),
        ("single write p50", f"{p50:.2f} ms", "< 3 ms"),
        ("single write p99", f"{p99:.2f} ms", ""),
        ("chain after run (rows)", str(verification), "ok"),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"{'measure':<{width}}  {'result':>22}  target")
    for name, result, target in rows:
        print(f"{name:<{width}}  {result:>22}  {target}")
    print(
        f"{records} records/{elapsed:.1f} s = {rate:,.0f} records/s "
        "(a record: a request with its response, two rows of the chain)"
    )


if __name__ == "__main__":
    main()
