"""Fail closed: no prediction is answered unless its record is committed.

PostgreSQL is really stopped under a running gateway, and really started again; MLServer
that cannot be reached or refuses gives a recorded 503 or 502.
"""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from payband_audit.migrate import upgrade
from payband_contracts import EXAMPLE_CANDIDATE
from payband_local.ports import free_port
from payband_local.postgres import EmbeddedPostgres, PostgresConnectionInfo
from payband_testing.gateway import GatewayServer, TestKey, gateway_server
from payband_testing.serving import InferenceServer

# real gateway, MLServer and PostgreSQL processes taken down mid-traffic
pytestmark = pytest.mark.e2e

PREDICT = {"candidate": EXAMPLE_CANDIDATE}


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this module's own: these tests take it down."""
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture(scope="module")
def outage_database(own_postgres: EmbeddedPostgres) -> PostgresConnectionInfo:
    info = own_postgres.create_database("audit")
    upgrade(info.url)
    return info


@pytest.fixture(scope="module")
def outage_gateway(
    serving_server: InferenceServer,
    outage_database: PostgresConnectionInfo,
    keys: dict[str, TestKey],
) -> Iterator[GatewayServer]:
    with gateway_server(
        inference_url=serving_server.url,
        database_url=outage_database.dsn,
        keys=keys.values(),
        # A short write timeout: an outage is noticed within a second.
        env={"PAYBAND_AUDIT_WRITE_TIMEOUT_S": "1", "PAYBAND_AUDIT_CONNECT_TIMEOUT_S": "1"},
    ) as server:
        yield server


def recorded_ids(database: PostgresConnectionInfo) -> set[str]:
    with database.connect() as conn:
        found = conn.execute("SELECT prediction_id::text FROM audit.prediction_responses")
        return {row[0] for row in found.fetchall()}


def wait_for_200(client: httpx.Client, headers: dict, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = client.post("/v1/predictions", json=PREDICT, headers=headers)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_no_prediction_while_postgres_is_down_and_recovery_after(
    outage_gateway: GatewayServer,
    own_postgres: EmbeddedPostgres,
    outage_database: PostgresConnectionInfo,
    keys: dict[str, TestKey],
):
    headers = keys["predict"].headers
    with httpx.Client(base_url=outage_gateway.url, trust_env=False, timeout=30) as client:
        first = client.post("/v1/predictions", json=PREDICT, headers=headers)
        assert first.status_code == 200
        own_postgres.stop_server()
        try:
            # The first request may be the one that finds out; none may answer a prediction.
            for _ in range(5):
                down = client.post("/v1/predictions", json=PREDICT, headers=headers)
                assert down.status_code == 503, down.text
                body = down.json()
                assert body["code"] == "audit_unavailable"
                assert "band" not in body
                assert down.headers["retry-after"] == "1"
            batch = client.post(
                "/v1/predictions/batch", json={"candidates": [EXAMPLE_CANDIDATE]}, headers=headers
            )
            assert batch.status_code == 503
            assert "predictions" not in batch.json()
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert "audit log" in ready.json()["message"]
            assert "127.0.0.1" not in ready.text  # details go to the log, not to anyone
            stored = client.get(
                f"/v1/predictions/{first.json()['id']}", headers=keys["audit"].headers
            )
            assert (stored.status_code, stored.json()["code"]) == (503, "audit_unavailable")
            metrics = client.get("/metrics").text
            assert "payband_gateway_audit_available 0.0" in metrics
        finally:
            own_postgres.start_server()
        back = wait_for_200(client, headers)
        assert back.status_code == 200, back.text
        assert client.get("/readyz").status_code == 200
    assert back.json()["id"] in recorded_ids(outage_database)


def test_under_load_every_200_has_its_record_through_an_outage(
    outage_gateway: GatewayServer,
    own_postgres: EmbeddedPostgres,
    outage_database: PostgresConnectionInfo,
    keys: dict[str, TestKey],
):
    headers = keys["predict"].headers
    answered: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def hammer(client: httpx.Client) -> None:
        while not stop.is_set():
            response = client.post("/v1/predictions", json=PREDICT, headers=headers)
            with lock:
                statuses.append(response.status_code)
                if response.status_code == 200:
                    answered.append(response.json()["id"])

    with (
        httpx.Client(base_url=outage_gateway.url, trust_env=False, timeout=30) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        workers = [pool.submit(hammer, client) for _ in range(8)]
        time.sleep(1.0)
        own_postgres.stop_server()
        time.sleep(1.5)
        own_postgres.start_server()
        assert wait_for_200(client, headers).status_code == 200
        time.sleep(1.0)
        stop.set()
        for worker in workers:
            worker.result()

    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses.count(503) > 0, "the outage was not noticed"
    missing = set(answered) - recorded_ids(outage_database)
    assert not missing, f"{len(missing)} answered predictions have no record"
    assert len(answered) > 20


def test_an_unreachable_inference_server_is_a_recorded_503(
    outage_database: PostgresConnectionInfo, keys: dict[str, TestKey]
):
    with (
        gateway_server(
            inference_url=f"http://127.0.0.1:{free_port()}",
            database_url=outage_database.dsn,
            keys=keys.values(),
        ) as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=30) as client,
    ):
        before = _errors(outage_database, 503)
        response = client.post("/v1/predictions", json=PREDICT, headers=keys["predict"].headers)
        assert response.status_code == 503
        assert response.json()["code"] == "inference_unavailable"
        assert "cannot reach the inference server" in response.json()["message"]
        assert _errors(outage_database, 503) == before + 1
        batch = client.post(
            "/v1/predictions/batch",
            json={"candidates": [EXAMPLE_CANDIDATE] * 3},
            headers=keys["predict"].headers,
        )
        assert batch.status_code == 503
        assert _errors(outage_database, 503) == before + 4  # one record per candidate
        assert client.get("/readyz").status_code == 503


def test_an_inference_server_that_refuses_is_a_recorded_502(
    serving_server: InferenceServer,
    outage_database: PostgresConnectionInfo,
    keys: dict[str, TestKey],
):
    with (
        gateway_server(
            inference_url=serving_server.url,
            database_url=outage_database.dsn,
            keys=keys.values(),
            env={"PAYBAND_GATEWAY_MODEL_NAME": "no-such-model"},
        ) as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=30) as client,
    ):
        before = _errors(outage_database, 502)
        response = client.post("/v1/predictions", json=PREDICT, headers=keys["predict"].headers)
        assert response.status_code == 502
        assert response.json()["code"] == "inference_failed"
        assert "HTTP 404" in response.json()["message"]
        assert _errors(outage_database, 502) == before + 1


def _errors(database: PostgresConnectionInfo, status: int) -> int:
    with database.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM audit.prediction_errors WHERE status_code = %s", (status,)
        ).fetchone()
    assert row is not None
    return int(row[0])
