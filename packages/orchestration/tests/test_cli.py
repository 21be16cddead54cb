"""payband-orchestration as its users run it: one-line errors, and the real deployment shape
(a gRPC code server, the webserver and the daemon over PostgreSQL) running a job."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from payband_local.ports import free_port
from payband_local.postgres import PostgresConnectionInfo
from payband_local.process import ServerProcess, answers_ok, start_server_process
from payband_testing.checks import port_is_closed, wait_until

BIN = Path(sys.executable).parent
CLI = str(BIN / "payband-orchestration")
PASSWORD = "s3cret-pw-4711"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *texts: str) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for text in texts:
        assert text in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


def test_version_and_python_dash_m():
    assert run("--version").stdout.strip() == "payband-orchestration 0.1.0"
    result = subprocess.run(
        [sys.executable, "-m", "payband_orchestration", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command in ("config", "migrate", "webserver", "daemon"):
        assert command in result.stdout


def test_config_writes_into_dagster_home_and_prints_the_paths(tmp_path: Path):
    home = tmp_path / "dagster"
    result = run(
        "config",
        env={
            "DAGSTER_HOME": str(home),
            "PAYBAND_ORCHESTRATION_CODE_LOCATIONS": "data=dagster-data:4000",
            "PAYBAND_ORCHESTRATION_POSTGRES_PASSWORD": PASSWORD,
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(home / "dagster.yaml"), str(home / "workspace.yaml")]
    assert PASSWORD not in (home / "dagster.yaml").read_text()
    workspace = yaml.safe_load((home / "workspace.yaml").read_text())
    assert workspace["load_from"] == [
        {"grpc_server": {"host": "dagster-data", "port": 4000, "location_name": "data"}}
    ]


def test_config_home_option_is_made_absolute(tmp_path: Path):
    result = subprocess.run(
        [CLI, "config", "--home", "relative/home"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(tmp_path / "relative" / "home" / "dagster.yaml")


@pytest.mark.parametrize("command", ["config", "migrate", "webserver", "daemon"])
def test_without_dagster_home_is_one_line(command: str):
    assert_one_line_error(run(command), "DAGSTER_HOME is not set", "--home")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "PAYBAND_ORCHESTRATION_CODE_LOCATIONS",
            "data=dagster-data:4000,training=dagster-training",
            "invalid setting: PAYBAND_ORCHESTRATION_CODE_LOCATIONS: code location "
            "'training=dagster-training': the address must be host:port",
        ),
        (
            "PAYBAND_ORCHESTRATION_POSTGRES_PORT",
            "99999",
            "invalid setting: PAYBAND_ORCHESTRATION_POSTGRES_PORT: ",
        ),
    ],
)
@pytest.mark.parametrize("command", ["config", "webserver"])
def test_an_invalid_setting_is_one_line(
    tmp_path: Path, command: str, variable: str, value: str, message: str
):
    result = run(command, "--home", str(tmp_path), env={variable: value})
    assert_one_line_error(result, message)
    assert not (tmp_path / "dagster.yaml").exists()


def test_a_home_that_is_a_file_is_one_line(tmp_path: Path):
    (tmp_path / "file").write_text("")
    assert_one_line_error(run("config", "--home", str(tmp_path / "file")), str(tmp_path / "file"))


@pytest.mark.parametrize("command", ["migrate", "webserver", "daemon"])
def test_unreachable_postgresql_is_one_line_without_the_password(tmp_path: Path, command: str):
    port = free_port()
    env = {
        "PAYBAND_ORCHESTRATION_POSTGRES_PORT": str(port),
        "PAYBAND_ORCHESTRATION_POSTGRES_PASSWORD": PASSWORD,
    }
    result = run(command, "--home", str(tmp_path), env=env)
    assert_one_line_error(result, f"error: cannot reach PostgreSQL at 127.0.0.1:{port}")
    assert PASSWORD not in result.stderr


def test_migrate_creates_dagsters_tables(
    tmp_path: Path, postgres_env: dict[str, str], postgres_database: PostgresConnectionInfo
):
    result = run("migrate", "--home", str(tmp_path), env=postgres_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"dagster storage up to date in 127.0.0.1:{postgres_database.port}/"
        f"{postgres_database.database}"
    )
    with postgres_database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)


# --- the deployment: code server, webserver and daemon ------------------------------------

DEFINITIONS = """
import dagster as dg


@dg.asset
def greeting() -> str:
    return "hello from a code server"


greet = dg.define_asset_job("greet", selection=[greeting])
defs = dg.Definitions(assets=[greeting], jobs=[greet])
"""

LOCATIONS = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId status } } ... on PythonError { message } } }"""
RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"

# Loopback servers are asked directly, never through a proxy named in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(  # noqa: S310 - a loopback http:// URL
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with _DIRECT.open(request, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
    assert "errors" not in answer, answer
    return answer["data"]


def location_loaded(url: str, name: str) -> bool:
    try:
        workspace = graphql(url, LOCATIONS)["workspaceOrError"]
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
    entries = {entry["name"]: entry for entry in workspace.get("locationEntries", [])}
    entry = entries.get(name)
    return (
        entry is not None
        and entry["loadStatus"] == "LOADED"
        and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
    )


def run_status(url: str, run_id: str) -> str:
    return str(graphql(url, RUN_STATUS, {"id": run_id})["runOrError"]["status"])


def ready(server: ServerProcess, condition: Any, what: str, timeout: float) -> None:
    """Wait for `condition`; fail with the server's log if it exits or the time runs out."""
    if not wait_until(lambda: server.process.poll() is not None or condition(), timeout, 0.25):
        pytest.fail(f"{what} not ready after {timeout:.0f} s:\n{server.tail()}")
    if server.process.poll() is not None:
        pytest.fail(f"{what} exited with {server.process.returncode}:\n{server.tail()}")


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_webserver_and_daemon_run_a_job_of_a_code_server(
    tmp_path: Path,
    postgres_env: dict[str, str],
    postgres_database: PostgresConnectionInfo,
    monkeypatch: pytest.MonkeyPatch,
):
    code = tmp_path / "code"
    code.mkdir()
    (code / "tiny_definitions.py").write_text(textwrap.dedent(DEFINITIONS))
    code_port, web_port = free_port(), free_port()
    url = f"http://127.0.0.1:{web_port}"
    # What payband-orchestration sets for what it starts must not come from this environment.
    monkeypatch.delenv("DAGSTER_DISABLE_TELEMETRY")
    env = {
        **postgres_env,
        "PAYBAND_ORCHESTRATION_CODE_LOCATIONS": f"tiny=127.0.0.1:{code_port}",
        "PAYBAND_ORCHESTRATION_WEBSERVER_PORT": str(web_port),
        "PAYBAND_ORCHESTRATION_MAX_CONCURRENT_RUNS": "1",
    }
    with contextlib.ExitStack() as stack:
        # As the compose file runs it, plus the password variable, which the runs it launches
        # need: they open the instance that dagster.yaml describes.
        code_server = start_server_process(
            [
                str(BIN / "dagster"),
                "code-server",
                "start",
                "-h",
                "127.0.0.1",
                "-p",
                str(code_port),
                "-m",
                "tiny_definitions",
                "-d",
                str(code),
            ],
            tmp_path / "code-server.log",
            {"DAGSTER_DISABLE_TELEMETRY": "true", "PAYBAND_ORCHESTRATION_POSTGRES_PASSWORD": ""},
        )
        stack.callback(code_server.stop)
        webserver = start_server_process(
            [CLI, "webserver"],
            tmp_path / "webserver.log",
            {**env, "DAGSTER_HOME": str(tmp_path / "webserver-home")},
        )
        stack.callback(webserver.stop)
        daemon = start_server_process(
            [CLI, "daemon", "--home", str(tmp_path / "daemon-home")], tmp_path / "daemon.log", env
        )
        stack.callback(daemon.stop)

        ready(webserver, lambda: answers_ok(f"{url}/server_info"), "the webserver", 120)
        ready(code_server, lambda: not port_is_closed(code_port), "the code server", 120)
        ready(webserver, lambda: location_loaded(url, "tiny"), "the code location", 60)
        assert daemon.process.poll() is None, daemon.tail()

        # The daemon was exec'd: same pid, Dagster's own program, our variables.
        daemon_environment = environ_of(daemon.process.pid)
        assert daemon_environment["DAGSTER_DISABLE_TELEMETRY"] == "true"
        assert daemon_environment["PAYBAND_ORCHESTRATION_POSTGRES_PASSWORD"] == ""
        assert daemon_environment["DAGSTER_HOME"] == str(tmp_path / "daemon-home")
        assert b"dagster-daemon" in Path(f"/proc/{daemon.process.pid}/cmdline").read_bytes()

        info = graphql(url, "{ instance { info } }")["instance"]["info"]
        assert "run_storage: PostgresRunStorage" in info

        params = {
            "selector": {
                "repositoryLocationName": "tiny",
                "repositoryName": "__repository__",
                "jobName": "greet",
            },
            "runConfigData": {},
        }
        launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        # Queued by the webserver, dequeued by the daemon, run by the code server.
        finished = wait_until(
            lambda: run_status(url, run_id) in {"SUCCESS", "FAILURE", "CANCELED"}, 120, 0.5
        )
        status = run_status(url, run_id)
        logs = f"--- daemon:\n{daemon.tail()}\n--- code server:\n{code_server.tail()}"
        assert finished, f"run still {status} after 120 s\n{logs}"
        assert status == "SUCCESS", f"run {status}\n{logs}"

        with postgres_database.connect() as conn:
            stored = conn.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
            assert stored.fetchone() == ("SUCCESS",)
            heartbeats = conn.execute("SELECT count(*) FROM daemon_heartbeats").fetchone()
            assert heartbeats is not None
            assert heartbeats[0] > 0

        # SIGTERM, as a container runtime stops them: both end cleanly.
        for server in (webserver, daemon):
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(30) == 0, server.tail()
        assert wait_until(lambda: port_is_closed(web_port), 10)
