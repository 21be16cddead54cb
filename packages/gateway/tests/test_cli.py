"""payband-gateway on the command line: keys, serve errors, clean stop, JSON logs.

Arguments, messages and exit codes are checked in this process (``gateway_cli``); the running
gateway, its stop on SIGTERM and one smoke test of the installed script are real processes.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from payband_contracts import EXAMPLE_CANDIDATE
from payband_gateway.keys import ApiKey, hash_key
from payband_local.ports import free_port
from payband_local.postgres import PostgresConnectionInfo
from payband_testing.cli import run_in_process
from payband_testing.gateway import TestKey, gateway_server
from payband_testing.serving import InferenceServer

CLI = str(Path(sys.executable).with_name("payband-gateway"))


def gateway_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    """The command in this process (arguments, messages, exit codes)."""
    return run_in_process("payband-gateway", *args, env=env)


def gateway_process(
    *args: str, env: dict | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed script as its own process, as a user runs it."""
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.fixture
def no_server_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` run in this process must refuse before uvicorn starts: a server started here
    would block the test (and take over its signals) instead of failing it."""

    def refuse(self: object, *args: object, **kwargs: object) -> None:
        raise AssertionError("the gateway started serving in the test process")

    monkeypatch.setattr("payband_gateway.server._Server.run", refuse)


def test_smoke_keys_new_prints_a_key_once_and_the_entry_that_holds_only_its_hash():
    result = gateway_cli(
        "keys", "new", "--name", "hr-tool", "--role", "predict", "--role", "review"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    key = lines[0].rsplit(" ", 1)[-1]
    entry = ApiKey.model_validate_json(lines[-1])
    assert entry.name == "hr-tool"
    assert {role.value for role in entry.roles} == {"predict", "review"}
    assert entry.sha256 == hash_key(key)
    assert key not in lines[-1]
    # `keys hash` is the real script, as a process (the smoke test of the entry point): the
    # key comes through a real pipe on its standard input.
    hashed = gateway_process("keys", "hash", stdin=key + "\n")
    assert hashed.returncode == 0, hashed.stderr
    assert hashed.stdout.strip() == entry.sha256


def test_keys_new_with_an_unknown_role_is_one_error_line():
    result = gateway_cli("keys", "new", "--name", "x", "--role", "boss")
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid key: roles")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.usefixtures("no_server_start")
def test_serve_refuses_a_port_in_use(postgres_database: PostgresConnectionInfo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gateway_cli(
            "serve",
            "--port",
            str(port),
            env={"PAYBAND_AUDIT_DATABASE_URL": postgres_database.dsn},
        )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: port {port} on 127.0.0.1 is already in use"


@pytest.mark.usefixtures("no_server_start")
def test_serve_refuses_an_audit_log_that_is_not_migrated(postgres_database: PostgresConnectionInfo):
    result = gateway_cli(
        "serve",
        "--port",
        str(free_port()),
        env={"PAYBAND_AUDIT_DATABASE_URL": postgres_database.dsn},
    )
    assert result.returncode == 2
    assert "not migrated" in result.stderr
    assert "payband-audit migrate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PAYBAND_GATEWAY_API_KEYS": '[{"name": "x"}]'}, "error: invalid setting: api_keys"),
        ({"PAYBAND_GATEWAY_PORT": "0"}, "error: invalid setting: port"),
        ({"PAYBAND_GATEWAY_LOG_LEVEL": "verbose"}, "error: invalid setting: log_level"),
        ({"PAYBAND_GATEWAY_API_KEYS_FILE": "/nonexistent/keys.json"}, "cannot read the API key"),
    ],
)
@pytest.mark.usefixtures("no_server_start")
def test_serve_with_bad_settings_is_one_error_line(env: dict, message: str):
    result = gateway_cli("serve", env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_logs_json_without_personal_data_and_stops_cleanly_on_sigterm(
    serving_server: InferenceServer, audit_database: PostgresConnectionInfo, keys
):
    key: TestKey = keys["predict"]
    with gateway_server(
        inference_url=serving_server.url, database_url=audit_database.dsn, keys=[key]
    ) as gateway:
        with httpx.Client(base_url=gateway.url, trust_env=False) as client:
            ok = client.post(
                "/v1/predictions",
                json={"candidate": EXAMPLE_CANDIDATE},
                headers={**key.headers, "X-Request-ID": "cli-1"},
            )
            assert ok.status_code == 200
            bad = client.post(
                "/v1/predictions",
                json={"candidate": {**EXAMPLE_CANDIDATE, "age": 7}},
                headers=key.headers,
            )
            assert bad.status_code == 422
        assert gateway.stop() == 0
        log = gateway.log()
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    access = [e for e in entries if e["logger"] == "payband_gateway.access"]
    assert {(e["route"], e["status"]) for e in access} >= {
        ("/v1/predictions", "200"),
        ("/v1/predictions", "422"),
    }
    assert any(e.get("request_id") == "cli-1" and e["caller"] == key.name for e in access)
    # Neither the candidate's values nor the key appear anywhere in the log.
    for secret in ("bachelors_degree", "professional_technical", "married", key.key):
        assert secret not in log
