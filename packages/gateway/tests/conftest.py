"""Gateway fixtures: a real gateway process in front of a real MLServer (``serving_server``)
and a real, migrated PostgreSQL audit log, with one API key per role."""

from collections.abc import Callable, Iterator

import httpx
import pytest

from payband_audit.migrate import upgrade
from payband_local.postgres import PostgresConnectionInfo
from payband_testing.gateway import GatewayServer, TestKey, gateway_server
from payband_testing.serving import InferenceServer

KEYS = {
    "predict": TestKey("hr-tool", "pb_test-predict-key-0123456789abcdef", ("predict",)),
    "review": TestKey("oversight", "pb_test-review-key-0123456789abcdef", ("review",)),
    "audit": TestKey("auditor", "pb_test-audit-key-0123456789abcdef", ("audit",)),
    "admin": TestKey("operator", "pb_test-admin-key-0123456789abcdef", ("admin",)),
    "other": TestKey("other-tool", "pb_test-other-predict-key-0123456789", ("predict",)),
}


@pytest.fixture(scope="module")
def audit_database(postgres_module_database: PostgresConnectionInfo) -> PostgresConnectionInfo:
    """A database of this module's own with the audit schema migrated to head."""
    upgrade(postgres_module_database.url)
    return postgres_module_database


@pytest.fixture(scope="module")
def gateway(
    serving_server: InferenceServer, audit_database: PostgresConnectionInfo
) -> Iterator[GatewayServer]:
    """``payband-gateway serve`` on a free port, stopped after the module."""
    with gateway_server(
        inference_url=serving_server.url, database_url=audit_database.dsn, keys=KEYS.values()
    ) as server:
        yield server


@pytest.fixture
def client(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, trust_env=False, timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def keys() -> dict[str, TestKey]:
    """One key per role ("predict", "review", "audit", "admin") and a second predict key."""
    return KEYS


@pytest.fixture
def rows(audit_database: PostgresConnectionInfo) -> Callable[[str], int]:
    """rows("prediction_responses"): the rows of one audit table now."""

    def count(table: str) -> int:
        with audit_database.connect() as conn:
            row = conn.execute(f"SELECT count(*) FROM audit.{table}").fetchone()  # noqa: S608
        assert row is not None
        return int(row[0])

    return count
