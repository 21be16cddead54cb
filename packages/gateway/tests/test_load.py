"""A load run: every 200 answered is exactly one committed prediction record, in one chain."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from payband_audit.verify import verify_chain
from payband_testing.model import TinyModel

# sustained traffic through real processes
pytestmark = pytest.mark.e2e

REQUESTS = 400
CONCURRENCY = 32


def test_after_a_load_run_200s_equal_audit_records(
    client: httpx.Client, keys, rows, tiny_model: TinyModel, audit_database
):
    candidates = tiny_model.holdout.iloc[:REQUESTS].to_dict("records")
    before = {table: rows(table) for table in ("prediction_requests", "prediction_responses")}
    headers = keys["predict"].headers
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        responses = list(
            pool.map(
                lambda candidate: client.post(
                    "/v1/predictions", json={"candidate": candidate}, headers=headers
                ),
                candidates,
            )
        )
    ok = [response for response in responses if response.status_code == 200]
    assert len(ok) == REQUESTS, {r.status_code for r in responses}
    assert rows("prediction_responses") - before["prediction_responses"] == len(ok)
    assert rows("prediction_requests") - before["prediction_requests"] == len(ok)
    # Each answer went to the caller who asked: the records hold the same candidates.
    with audit_database.connect() as conn:
        stored = dict(
            conn.execute(
                "SELECT prediction_id::text, candidate::text FROM audit.prediction_requests"
            ).fetchall()
        )
    for candidate, response in zip(candidates, responses, strict=True):
        assert json.loads(stored[response.json()["id"]]) == candidate
    with audit_database.connect() as conn:
        verification = verify_chain(conn)
    assert verification.ok, str(verification)
