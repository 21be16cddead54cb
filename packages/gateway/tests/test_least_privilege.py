"""The gateway works as a login user that holds only the audit log's writer and reader roles."""

import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest
from psycopg import sql

from payband_contracts import EXAMPLE_CANDIDATE
from payband_local.ports import free_port
from payband_local.postgres import PostgresConnectionInfo
from payband_testing.gateway import gateway_server
from payband_testing.serving import InferenceServer


@pytest.fixture
def gateway_user(audit_database: PostgresConnectionInfo) -> Iterator[PostgresConnectionInfo]:
    """A login user granted payband_audit_writer and payband_audit_reader, nothing else;
    NOINHERIT, so it has their rights only after SET ROLE."""
    name = f"gateway_{uuid.uuid4().hex[:8]}"
    with audit_database.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOINHERIT IN ROLE payband_audit_writer, payband_audit_reader"
            ).format(sql.Identifier(name))
        )
    try:
        yield dataclasses.replace(audit_database, user=name)
    finally:
        with audit_database.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_predict_read_and_review_with_only_the_audit_roles(
    serving_server: InferenceServer, gateway_user: PostgresConnectionInfo, keys
):
    with (
        gateway_server(
            inference_url=serving_server.url,
            database_url=gateway_user.dsn,
            keys=keys.values(),
            env={
                "PAYBAND_GATEWAY_AUDIT_WRITER_ROLE": "payband_audit_writer",
                "PAYBAND_GATEWAY_AUDIT_READER_ROLE": "payband_audit_reader",
            },
        ) as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False, timeout=30) as client,
    ):
        made = client.post(
            "/v1/predictions", json={"candidate": EXAMPLE_CANDIDATE}, headers=keys["admin"].headers
        )
        assert made.status_code == 200, made.text
        url = f"/v1/predictions/{made.json()['id']}"
        assert client.get(url, headers=keys["audit"].headers).status_code == 200
        outcome = client.post(f"{url}/outcome", json={"band": 0}, headers=keys["review"].headers)
        assert outcome.status_code == 201, outcome.text
        assert client.get("/readyz").status_code == 200


def test_without_its_roles_set_the_user_cannot_even_start_the_gateway(
    gateway_user: PostgresConnectionInfo,
):
    result = subprocess.run(
        [sys.executable, "-m", "payband_gateway", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env={**os.environ, "PAYBAND_AUDIT_DATABASE_URL": gateway_user.dsn},
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: cannot use the audit database: permission denied for schema audit"
    )
