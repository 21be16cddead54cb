import os
import subprocess
from pathlib import Path

import pytest

from payband_audit.errors import AuditConfigError
from payband_audit.migrate import current_revision, downgrade, upgrade
from payband_local.postgres import PostgresConnectionInfo

PACKAGE = Path(__file__).resolve().parents[1]
TABLES = {
    "chain_head",
    "prediction_requests",
    "prediction_responses",
    "prediction_errors",
    "outcomes",
    "reviews",
    "purges",
    "purged_ranges",
}


def audit_tables(info: PostgresConnectionInfo) -> set[str]:
    with info.connect() as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'audit' "
            "AND table_type = 'BASE TABLE'"
        ).fetchall()
    return {row[0] for row in rows}


def test_upgrade_downgrade_upgrade(postgres_database: PostgresConnectionInfo):
    assert current_revision(postgres_database.url) is None
    upgrade(postgres_database.url)
    assert current_revision(postgres_database.url) == "0001"
    assert audit_tables(postgres_database) == TABLES
    downgrade(postgres_database.url, "base")
    assert current_revision(postgres_database.url) is None
    assert audit_tables(postgres_database) == set()
    upgrade(postgres_database.url)
    assert audit_tables(postgres_database) == TABLES


def test_downgrade_refuses_to_drop_records(
    audit_db: PostgresConnectionInfo, make_record, monkeypatch
):
    import asyncio

    from payband_audit.writer import AuditWriter

    async def write() -> None:
        async with AuditWriter(audit_db.url) as writer:
            await writer.record_prediction(*make_record())

    asyncio.run(write())
    with pytest.raises(AuditConfigError, match="refusing to drop an audit log that holds records"):
        downgrade(audit_db.url, "base")
    assert current_revision(audit_db.url) == "0001"
    monkeypatch.setenv("PAYBAND_AUDIT_DOWNGRADE_DROPS_RECORDS", "yes")
    downgrade(audit_db.url, "base")
    assert current_revision(audit_db.url) is None


def test_indexes_for_id_time_and_model_version(audit_db: PostgresConnectionInfo):
    with audit_db.connect() as conn:
        indexes = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'audit' "
                "AND tablename = 'prediction_requests'"
            )
        }
    assert any("(prediction_id)" in d and "UNIQUE" in d for d in indexes.values())
    assert "(received_at)" in indexes["prediction_requests_received_at"]
    assert "(model_name, model_version, received_at)" in indexes["prediction_requests_model"]


def test_alembic_command_line_upgrades_head(postgres_database: PostgresConnectionInfo):
    env = {**os.environ, "PAYBAND_AUDIT_DATABASE_URL": postgres_database.url}
    result = subprocess.run(
        ["alembic", "upgrade", "head"], cwd=PACKAGE, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert current_revision(postgres_database.url) == "0001"
    result = subprocess.run(
        ["alembic", "downgrade", "base"], cwd=PACKAGE, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert current_revision(postgres_database.url) is None


def test_roles_are_created_once_per_cluster(audit_db: PostgresConnectionInfo):
    # A second database in the same cluster migrates too: the roles already exist.
    with audit_db.connect() as conn:
        roles = {
            row[0]
            for row in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE 'payband_audit_%'"
            )
        }
    assert roles == {"payband_audit_writer", "payband_audit_reader", "payband_audit_purger"}


def test_unreachable_database_is_a_clear_error():
    from payband_audit.errors import AuditUnavailable

    with pytest.raises(
        AuditUnavailable, match=r"cannot migrate the audit database at 127\.0\.0\.1:1/"
    ):
        upgrade("postgresql://postgres@127.0.0.1:1/nothing")
