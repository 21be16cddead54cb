import os

import pytest

from payband_local.postgres import PostgresConnectionInfo


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PAYBAND_ORCHESTRATION_* or DAGSTER_* variable of the caller leaks into a test (or
    the processes it starts); Dagster's telemetry stays off."""
    for name in list(os.environ):
        if name.startswith(("PAYBAND_ORCHESTRATION_", "DAGSTER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "true")


@pytest.fixture
def postgres_env(postgres_database: PostgresConnectionInfo) -> dict[str, str]:
    """The PAYBAND_ORCHESTRATION_POSTGRES_* variables of a fresh test database."""
    return {
        "PAYBAND_ORCHESTRATION_POSTGRES_HOST": postgres_database.host,
        "PAYBAND_ORCHESTRATION_POSTGRES_PORT": str(postgres_database.port),
        "PAYBAND_ORCHESTRATION_POSTGRES_USER": postgres_database.user,
        "PAYBAND_ORCHESTRATION_POSTGRES_DB": postgres_database.database,
    }
