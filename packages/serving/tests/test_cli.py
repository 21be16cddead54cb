"""``payband-serving`` as users run it: serving an MLflow model or a bundle, and its errors.

Arguments, messages and exit codes are checked in this process (``run``); the servers, their
stop on SIGTERM and one smoke test of the installed script run as real processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from payband_local.ports import free_port
from payband_serving.bundle import build_bundle
from payband_serving.settings import ServingSettings
from payband_serving.source import resolve
from payband_testing.checks import wait_until
from payband_testing.cli import run_in_process
from payband_testing.model import TinyModel
from payband_testing.registry import restored_mlflow_globals
from payband_testing.serving import inference_server

SINGLE = json.loads((Path(__file__).parent / "testdata" / "single.json").read_text())


CLI = str(Path(sys.executable).with_name("payband-serving"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command in this process (arguments, messages, exit codes).

    Resolving a models:/ URI sets MLflow's global tracking and registry URIs (and their
    variables), which a process drops as it exits; here they are restored after the call.
    """
    with restored_mlflow_globals():
        return run_in_process("payband-serving", *args, env=env)


def run_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed script as its own process, as a user runs it."""
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def no_server_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` run in this process must refuse before MLServer starts: a server started here
    would block the test (and take over its signals) instead of failing it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("MLServer started in the test process")

    monkeypatch.setattr("payband_serving.server._run", refuse)


def metadata(url: str) -> dict:
    response = httpx.get(f"{url}/v2/models/salary-band", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("uri", "version", "bands"),
    [("models:/salary-band@champion", "1", 2), ("models:/salary-band/2", "2", 3)],
)
def test_serves_a_registered_model_by_mlflow_uri(
    mlflow_registry, uri: str, version: str, bands: int
) -> None:
    model: TinyModel = mlflow_registry.versions[version]
    with inference_server(
        model_uri=uri, env={"PAYBAND_MLFLOW_TRACKING_URI": mlflow_registry.tracking_uri}
    ) as server:
        described = metadata(server.url)
        assert described["versions"] == [version]
        parameters = described["parameters"]
        assert parameters["model_version"] == version
        assert parameters["model_name"] == "salary-band"
        assert parameters["model_uri"] == uri
        assert parameters["training_data_uri"] == model.schema.train_uri
        assert parameters["run_id"]
        response = httpx.post(server.infer_url, json=SINGLE, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == version
        probabilities = next(o for o in body["outputs"] if o["name"] == "probabilities")
        assert probabilities["shape"] == [1, bands]


def test_serves_a_bundle(tiny_model: TinyModel, mlflow_registry, tmp_path: Path) -> None:
    settings = ServingSettings(mlflow_tracking_uri=mlflow_registry.tracking_uri)
    source = resolve(
        mlflow_registry.champion_uri,
        tracking_uri=mlflow_registry.tracking_uri,
        download_dir=tmp_path / "download",
    )
    bundle = build_bundle(source, settings, output_dir=tmp_path / "bundles")
    with inference_server(bundle=bundle.directory) as server:
        described = metadata(server.url)
        assert described["versions"] == ["1"]
        assert described["parameters"]["model_uri"] == "models:/salary-band@champion"
        assert described["parameters"]["training_data_uri"] == tiny_model.schema.train_uri
        assert httpx.post(server.infer_url, json=SINGLE, timeout=30).status_code == 200


@pytest.mark.usefixtures("no_server_start")
def test_an_unknown_alias_is_one_line(mlflow_registry) -> None:
    result = run(
        "serve",
        "--model-uri",
        "models:/salary-band@production",
        env={"PAYBAND_MLFLOW_TRACKING_URI": mlflow_registry.tracking_uri},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot resolve models:/salary-band@production: ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["serve", "--model-uri", "/nonexistent/model"],
            {},
            "error: model directory /nonexistent/model does not exist",
        ),
        (
            ["serve", "--model-uri", "models:/salary-band@champion"],
            {"PAYBAND_MLFLOW_TRACKING_URI": "postgresql+psycopg://u@127.0.0.1:9/mlflow"},
            "error: cannot reach the MLflow database postgresql+psycopg://u@127.0.0.1:9/mlflow",
        ),
        (
            ["serve", "--model-uri", "x", "--http-port", "0"],
            {},
            "error: invalid setting: http_port",
        ),
        (
            ["serve", "--model-uri", "x", "--bundle", "y"],
            {},
            "error: give either --bundle or --model-uri, not both",
        ),
        (["serve", "--bundle", "/tmp"], {}, "error: /tmp is not a bundle"),
        (
            ["serve", "--model-uri", "models:/salary-band"],
            {"PAYBAND_MLFLOW_TRACKING_URI": "sqlite:///:memory:"},
            "error: models:/salary-band names no version",
        ),
    ],
)
@pytest.mark.usefixtures("no_server_start")
def test_errors_are_one_readable_line(args: list[str], env: dict, message: str) -> None:
    result = run(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("no_server_start")
def test_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "payband_model.json").write_text('{"format": "payband-model/1"}')
    result = run("serve", "--model-uri", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path}/payband_model.json: ")


@pytest.mark.usefixtures("no_server_start")
def test_a_booster_that_does_not_match_its_schema(tiny_model: TinyModel, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    schema = tiny_model.schema.model_copy(
        update={"features": tuple(reversed(tiny_model.schema.features))}
    )
    schema.write(folder / "payband_model.json")
    (folder / "booster.json").write_bytes((tiny_model.directory / "booster.json").read_bytes())
    result = run("serve", "--model-uri", str(folder))
    assert result.returncode == 2
    assert "the booster's features" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("payband-serving ")
    help_text = run("serve", "--help").stdout
    for option in ("--bundle", "--model-uri", "--workers", "--max-batch-size", "--max-batch-time"):
        assert option in help_text


def test_smoke_bundle_as_a_process_then_verify(tiny_model: TinyModel, tmp_path: Path) -> None:
    # The real script, as a process: the smoke test of the entry point (bundle does real work).
    built = run_process(
        "bundle",
        "--model-uri",
        str(tiny_model.directory),
        "--output",
        str(tmp_path),
        env={"PAYBAND_SERVING_CONTAINER_ENGINE": "none"},
    )
    assert built.returncode == 0, built.stderr
    lines = dict(line.split(": ", 1) for line in built.stdout.splitlines())
    directory = Path(lines["bundle"])
    assert directory.parent == tmp_path
    assert directory.name.startswith("salary-band-local-")
    assert lines["image tag"] == f"payband-model:{directory.name}"
    assert lines["image not built"].startswith(f"image payband-model:{directory.name} not built")
    assert "build the image later with: podman build" in lines["image not built"]

    verified = run("verify", str(directory))
    assert verified.returncode == 0, verified.stderr
    assert "files match the manifest" in verified.stdout

    (directory / "model" / "booster.json").write_text("{}")
    tampered = run("verify", str(directory))
    assert tampered.returncode == 2
    assert tampered.stderr.strip() == (
        f"error: bundle {directory} does not match its manifest: "
        "model/booster.json has 2 bytes, not "
        f"{(tiny_model.directory / 'booster.json').stat().st_size}"
    )


def test_sigterm_stops_server_and_workers_cleanly(tiny_model: TinyModel, tmp_path: Path) -> None:
    """Exit 0, no process left, no temporary file left, and only JSON lines in the log."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with inference_server(
        model_uri=tiny_model.directory, args=["--workers", "2"], env={"TMPDIR": str(scratch)}
    ) as server:
        assert httpx.post(server.infer_url, json=SINGLE, timeout=30).status_code == 200
        pid = server.process.pid
        # What a container runtime or a service manager sends; not the fixture's SIGKILL.
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0
        # Its workers and multiprocessing's resource tracker end on their own.
        assert wait_until(lambda: _session_members(pid) == [], timeout=20), _session_members(pid)
        log = server.log()
    assert list(scratch.iterdir()) == []
    for line in log.splitlines():
        assert line.startswith("{"), line
        assert json.loads(line)["message"] is not None, line


def _session_members(session: int) -> list[str]:
    return [
        stat.parent.name
        for stat in Path("/proc").glob("[0-9]*/stat")
        if _session_of(stat) == session
    ]


def _session_of(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[3])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


@pytest.mark.usefixtures("no_server_start")
def test_a_port_in_use_is_one_line(tiny_model: TinyModel) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "serve",
            "--model-uri",
            str(tiny_model.directory),
            "--http-port",
            str(port),
            "--grpc-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--workers",
            "1",
        )
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_model_settings_may_name_an_mlflow_uri(mlflow_registry, tmp_path: Path) -> None:
    """The runtime itself resolves and downloads models:/ URIs (a hand-written
    model-settings.json); its copy is removed when the server stops."""
    folder = tmp_path / "settings"
    folder.mkdir()
    (folder / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "salary-band",
                "implementation": "payband_serving.runtime.SalaryBandRuntime",
                "parameters": {"uri": "models:/salary-band/2"},
            }
        )
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        "PAYBAND_MLFLOW_TRACKING_URI": mlflow_registry.tracking_uri,
        "TMPDIR": str(scratch),
    }
    with inference_server(bundle=folder, env=env) as server:
        described = metadata(server.url)
        assert described["versions"] == ["2"]
        assert described["parameters"]["model_uri"] == "models:/salary-band/2"
        probabilities = next(
            output
            for output in httpx.post(server.infer_url, json=SINGLE, timeout=30).json()["outputs"]
            if output["name"] == "probabilities"
        )
        assert probabilities["shape"] == [1, 3]
        assert any(scratch.iterdir()), "the runtime downloaded nothing"
        assert server.stop() == 0
    assert list(scratch.iterdir()) == []


@pytest.mark.usefixtures("no_server_start")
def test_a_password_in_the_tracking_uri_is_never_shown() -> None:
    result = run(
        "serve",
        "--model-uri",
        "models:/salary-band@champion",
        env={"PAYBAND_MLFLOW_TRACKING_URI": "http://alice:s3cret@127.0.0.1:9"},
    )
    assert result.returncode == 2
    assert "s3cret" not in result.stderr + result.stdout
    assert result.stderr.strip() == (
        "error: cannot reach the MLflow tracking server http://alice:***@127.0.0.1:9: "
        "Connection refused"
    )
