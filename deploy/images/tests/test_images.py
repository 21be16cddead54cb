"""Smoke tests of the built images: each one runs what it is for.

Run after ``deploy/images/build.py`` (``.ci/run`` does both); they read its report
(``build/images.json``, or ``PAYBAND_IMAGES_REPORT``) and fail when an image is missing.
They are not under the default ``testpaths``, because they need podman and the images:

    uv run python deploy/images/build.py && uv run pytest deploy/images/tests

Containers run with ``--network host`` and talk to 127.0.0.1 only (a real PostgreSQL from
payband_testing's fixtures); every container a test starts is removed by the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import psycopg
import pytest

from payband_contracts import EXAMPLE_CANDIDATE
from payband_local.ports import free_port
from payband_local.postgres import PostgresConnectionInfo
from payband_testing.gateway import TestKey

ROOT = Path(__file__).resolve().parents[3]
REPORT = Path(os.environ.get("PAYBAND_IMAGES_REPORT", ROOT / "build" / "images.json"))
PACKAGES = ["contracts", "audit", "data", "training", "serving", "gateway", "monitoring"]
PACKAGES += ["orchestration"]
SERVICES = {"serving", "gateway", "monitoring", "orchestration"}  # the ones with a health check
CODE_LOCATIONS = ["data", "training", "serving", "monitoring"]
# NVIDIA's CUDA stack: its distributions (nvidia-nccl-cu12, ...) and shared libraries.
CUDA = re.compile(r"^nvidia-|cuda|cudnn|cublas|nccl|-cu1\d$|^cupy", re.IGNORECASE)
CUDA_LIBRARY = re.compile(r"^lib(cuda|cublas|cudnn|cufft|curand|cusolver|cusparse|nccl|nvrtc)")
CLIENT = httpx.Client(timeout=10, trust_env=False)  # loopback: never through a proxy
os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy" / "images" / "containers.conf"))


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:2])} exited {result.returncode}:\n{result.stderr}")
    return result


@pytest.fixture(scope="module", autouse=True)
def _close_client() -> Iterator[None]:
    yield
    CLIENT.close()


@pytest.fixture(scope="session")
def images() -> dict[str, dict]:
    assert shutil.which("podman"), "podman is needed (apt-get install podman runc)"
    assert REPORT.is_file(), f"{REPORT} is missing: run deploy/images/build.py first"
    report = json.loads(REPORT.read_text())
    built = {image["package"]: image for image in report["images"]}
    assert sorted(built) == sorted(PACKAGES), "every package's image is built"
    return built


def inspect(tag: str) -> dict:
    return json.loads(podman("image", "inspect", tag).stdout)[0]


def run_in(
    tag: str,
    *command: str,
    env: dict[str, str] | None = None,
    options: Sequence[str] = (),
    stderr: bool = True,
) -> str:
    """Run ``command`` in a fresh container of ``tag``; its output, stdout then (unless
    ``stderr`` is false) stderr; a failure fails the test. The container is removed, also
    when the command times out."""
    name = f"payband-smoke-{uuid.uuid4().hex[:10]}"
    variables = [f"--env={key}={value}" for key, value in (env or {}).items()]
    try:
        result = podman(
            "run", "--rm", "--name", name, "--network", "host", "--health-interval=disable",
            *options, *variables, tag, *command, check=False,
        )  # fmt: skip
    finally:
        podman("rm", "--force", "--ignore", name, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"{command} in {tag}: exit {result.returncode}\n" + (output[-3000:])
    )
    return output if stderr else result.stdout


@contextlib.contextmanager
def container(
    tag: str,
    command: Sequence[str] = (),
    *,
    env: dict[str, str] | None = None,
    read_only: bool = False,
) -> Iterator[str]:
    """A detached container of ``tag`` on the host network, removed afterwards (also when it
    was created but failed to start). ``read_only``: the root filesystem is read-only, with
    podman's tmpfs on /tmp, as Kubernetes runs the serving tier."""
    name = f"payband-smoke-{uuid.uuid4().hex[:10]}"
    variables = [f"--env={key}={value}" for key, value in (env or {}).items()]
    options = ["--read-only"] if read_only else []
    try:
        # The health check is run by hand below (podman's timers need systemd).
        podman("run", "-d", "--name", name, "--network", "host", "--health-interval=disable",
               *options, *variables, tag, *command)  # fmt: skip
        yield name
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


def logs(name: str) -> str:
    result = podman("logs", name, check=False)
    return (result.stdout + result.stderr)[-4000:]


def wait_for(name: str, url: str, *, timeout: float = 120) -> httpx.Response:
    """GET ``url`` until it answers 200; fails with the container's logs if it stops or the
    time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            response = CLIENT.get(url)
            if response.status_code == 200:
                return response
        state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout
        if state.strip() not in ("running", "created"):
            pytest.fail(f"{name} is {state.strip()} before {url} answered:\n{logs(name)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer 200 within {timeout:.0f} s:\n{logs(name)}")
        time.sleep(0.5)


def assert_healthy(name: str) -> None:
    """The image's own HEALTHCHECK command passes inside the running container."""
    result = podman("healthcheck", "run", name, check=False)
    assert result.returncode == 0, f"health check failed: {result.stdout}{result.stderr}"


def package_version(package: str) -> str:
    pyproject = ROOT / "packages" / package / "pyproject.toml"
    return tomllib.loads(pyproject.read_text())["project"]["version"]


def git_head() -> str | None:
    if not (ROOT / ".git").exists():
        return None
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


# --- every image ---------------------------------------------------------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_image_is_labelled_and_runs_unprivileged_without_dev_dependencies(images, package):
    image = images[package]
    inspected = inspect(image["tag"])
    config = inspected["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == f"payband-{package}"
    assert labels["org.opencontainers.image.version"] == package_version(package)
    assert labels["org.opencontainers.image.revision"] == image["revision"]
    head = git_head()
    if head is not None:
        assert image["revision"].removesuffix("-dirty") == head, "built from this checkout"
    assert config["User"] == "10001:10001"
    # Kept because the images are built in Docker's format (OCI has no HEALTHCHECK).
    assert bool((inspected.get("Healthcheck") or {}).get("Test")) == (package in SERVICES)

    probe = f"""
import importlib.metadata, importlib.util, json, os, pathlib, sys
import payband_{package} as m
print(json.dumps({{
    "uid": os.getuid(), "version": m.__version__, "location": m.__file__,
    "pytest": importlib.util.find_spec("pytest") is not None,
    "dagster_postgres": importlib.util.find_spec("dagster_postgres") is not None,
    "distributions": sorted({{d.metadata["Name"] for d in importlib.metadata.distributions()}}),
    "libraries": sorted(p.name for p in pathlib.Path(sys.prefix).rglob("lib*.so*")),
}}))
"""
    found = json.loads(run_in(image["tag"], "python3", "-c", probe, stderr=False))
    assert found["uid"] == 10001
    assert found["version"] == package_version(package)
    # Installed as a wheel into the image's environment, not an editable link to /src.
    assert found["location"].startswith("/opt/payband/venv/lib/")
    assert not found["pytest"], "dev dependencies are not installed"
    if package in CODE_LOCATIONS:  # the dagster-instance extra: the instance's PostgreSQL
        assert found["dagster_postgres"]
    assert f"payband-{package}" in found["distributions"]
    # CPU only: no CUDA distribution (XGBoost's NCCL is overridden away) nor CUDA library.
    assert [name for name in found["distributions"] if CUDA.search(name)] == []
    assert [name for name in found["libraries"] if CUDA_LIBRARY.match(name)] == []


# --- pipeline images: their CLIs -----------------------------------------------------------


def test_contracts_image_prints_the_feature_catalogue(images):
    output = run_in(images["contracts"]["tag"], "payband-contracts", "catalogue")
    assert "age" in output
    assert "education" in output


@pytest.mark.parametrize("package", CODE_LOCATIONS)
def test_code_location_loads_in_its_image(images, package):
    # What the compose file's code servers run: the definitions load inside the image.
    output = run_in(
        images[package]["tag"],
        "dagster", "definitions", "validate", "-m", f"payband_{package}.definitions",
    )  # fmt: skip
    assert f"Validation successful for code location payband_{package}.definitions" in output


def test_data_image_ingests_the_adult_data_into_its_store(images):
    output = run_in(images["data"]["tag"], "payband-data", "ingest", "--source", "adult")
    assert "raw/adult@" in output


def test_training_image_runs_its_cli(images):
    output = run_in(images["training"]["tag"], "payband-training", "--help")
    assert "train" in output
    assert "promote" in output


def test_training_image_trains_xgboost_on_the_cpu_without_nccl(images):
    # XGBoost's Linux wheel asks for NCCL (CUDA); the lock overrides it away. Training and
    # SHAP contributions (the gateway's explanations) still work on the CPU.
    script = """
import importlib.util, numpy as np, xgboost as xgb
assert importlib.util.find_spec("nvidia") is None
rng = np.random.default_rng(0)
x = rng.normal(size=(500, 4)); y = (x[:, 0] + x[:, 1] > 0).astype(int)
model = xgb.XGBClassifier(n_estimators=20, max_depth=3, tree_method="hist", device="cpu")
model.fit(x, y)
contributions = model.get_booster().predict(xgb.DMatrix(x[:3]), pred_contribs=True)
print("accuracy", (model.predict(x) == y).mean(), "contributions", contributions.shape)
"""
    output = run_in(images["training"]["tag"], "python3", "-c", script)
    accuracy = float(re.search(r"accuracy (\S+)", output)[1])
    assert accuracy > 0.9, output
    assert "contributions (3, 5)" in output


def migrated_tables(database: PostgresConnectionInfo) -> set[tuple[str, str]]:
    with psycopg.connect(database.dsn) as connection:
        rows = connection.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    return {(schema, table) for schema, table in rows}


def test_audit_and_monitoring_images_migrate_a_real_database(images, postgres_database):
    # The one-shot migration services (compose `migrate`, the Kubernetes Job `migrate`).
    env = {"PAYBAND_AUDIT_DATABASE_URL": postgres_database.url}
    run_in(images["audit"]["tag"], "payband-audit", "migrate", env=env)
    monitoring_env = {**env, "PAYBAND_MONITORING_DATABASE_URL": postgres_database.url}
    run_in(images["monitoring"]["tag"], "payband-monitoring", "migrate", env=monitoring_env)
    schemas = {schema for schema, _ in migrated_tables(postgres_database)}
    assert {"audit", "monitoring"} <= schemas, schemas
    verified = run_in(images["audit"]["tag"], "payband-audit", "verify", env=env)
    assert verified.startswith("ok 0 records"), verified


# --- services ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_image(images, tiny_model, tmp_path_factory) -> Iterator[tuple[str, int]]:
    """The tiny model bundled by ``payband-serving bundle`` and built FROM the serving image
    with podman: the image a deployment runs for one model version; and its REST port."""
    ports = {name: free_port() for name in ("HTTP", "GRPC", "METRICS")}
    env = {
        **os.environ,
        "PAYBAND_SERVING_BASE_IMAGE": images["serving"]["tag"],
        "PAYBAND_SERVING_CONTAINER_ENGINE": "podman",
        **{f"PAYBAND_SERVING_{name}_PORT": str(port) for name, port in ports.items()},
    }
    output = tmp_path_factory.mktemp("bundles")
    result = subprocess.run(
        ["payband-serving", "bundle", "--model-uri", str(tiny_model.directory),
         "--output", str(output)],
        capture_output=True, text=True, env=env, check=False, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (bundle,) = output.iterdir()
    tag = json.loads((bundle / "manifest.json").read_text())["image"]["tag"]
    try:
        yield tag, ports["HTTP"]
    finally:
        podman("rmi", "--force", tag, check=False)


@pytest.fixture(scope="module")
def model_server(model_image) -> Iterator[str]:
    tag, port = model_image
    # Loopback only, although the serving image listens on every interface by default.
    with container(tag, env={"PAYBAND_SERVING_HOST": "127.0.0.1"}, read_only=True) as name:
        wait_for(name, f"http://127.0.0.1:{port}/v2/health/ready", timeout=180)
        yield name


def test_model_image_serves_the_bundled_model(model_image, model_server, tiny_model):
    _, port = model_image
    base = f"http://127.0.0.1:{port}/v2/models/salary-band"
    assert CLIENT.get(f"{base}/ready").status_code == 200
    metadata = CLIENT.get(base).json()
    assert metadata["name"] == "salary-band"
    assert_healthy(model_server)
    labels = inspect(model_image[0])["Config"]["Labels"]
    assert labels["io.payband.model.name"] == "salary-band"


def test_serving_image_bundles_a_registered_version(images, mlflow_champion, tmp_path_factory):
    # The serving pipeline's step inside the serving image: resolve models:/name/version in
    # the MLflow registry (PostgreSQL, through psycopg) and write its bundle.
    artifacts = str(tmp_path_factory.getbasetemp())
    output = run_in(
        images["serving"]["tag"],
        "payband-serving", "bundle", "--no-image", "--output", "/tmp/bundles",
        "--model-uri", f"models:/{mlflow_champion.name}/{mlflow_champion.version}",
        env={"PAYBAND_MLFLOW_TRACKING_URI": mlflow_champion.uri},
        # The registry's artifacts are in this session's temporary directories (mode 700,
        # root's): mounted read-only, and read as root for that reason only.
        options=["--user", "0:0", "--volume", f"{artifacts}:{artifacts}:ro"],
    )  # fmt: skip
    assert f"{mlflow_champion.name}-{mlflow_champion.version}" in output


@pytest.fixture
def audit_database(images, postgres_database) -> PostgresConnectionInfo:
    env = {"PAYBAND_AUDIT_DATABASE_URL": postgres_database.url}
    run_in(images["audit"]["tag"], "payband-audit", "migrate", env=env)
    return postgres_database


def test_gateway_image_answers_through_the_model_image(
    images, model_image, model_server, audit_database
):
    key = TestKey("smoke", "smoke-test-key-0123456789abcdef", ("predict",))
    port = free_port()
    env = {
        "PAYBAND_GATEWAY_HOST": "127.0.0.1",
        "PAYBAND_GATEWAY_PORT": str(port),
        "PAYBAND_GATEWAY_INFERENCE_URL": f"http://127.0.0.1:{model_image[1]}",
        "PAYBAND_GATEWAY_API_KEYS": json.dumps([key.entry()]),
        "PAYBAND_AUDIT_DATABASE_URL": audit_database.url,
        # The home is read-only here: matplotlib (the explanation charts) caches in /tmp.
        "MPLCONFIGDIR": "/tmp/matplotlib",
    }
    with container(images["gateway"]["tag"], env=env, read_only=True) as name:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(name, f"{url}/healthz").json()["status"] == "ok"
        assert_healthy(name)
        wait_for(name, f"{url}/readyz")
        response = CLIENT.post(
            f"{url}/v1/predictions", json={"candidate": EXAMPLE_CANDIDATE}, headers=key.headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["explanation"]["contributions"]
        assert "payband_gateway_requests" in CLIENT.get(f"{url}/metrics").text
    with psycopg.connect(audit_database.dsn) as connection:
        recorded = [
            connection.execute(f"SELECT count(*) FROM audit.{table}").fetchone()[0]  # noqa: S608
            for table in ("prediction_requests", "prediction_responses")
        ]
    assert recorded == [1, 1], "the request and its response are in the audit log"


def test_monitoring_image_serves_health_and_metrics(images, postgres_database):
    port = free_port()
    env = {
        "PAYBAND_MONITORING_HOST": "127.0.0.1",
        "PAYBAND_MONITORING_PORT": str(port),
        "PAYBAND_MONITORING_DATABASE_URL": postgres_database.url,
        "PAYBAND_AUDIT_DATABASE_URL": postgres_database.url,
        "PAYBAND_MONITORING_INTERVAL_S": "3600",
    }
    run_in(images["audit"]["tag"], "payband-audit", "migrate", env=env)
    run_in(images["monitoring"]["tag"], "payband-monitoring", "migrate", env=env)
    with container(images["monitoring"]["tag"], env=env) as name:
        url = f"http://127.0.0.1:{port}"
        wait_for(name, f"{url}/healthz")
        assert_healthy(name)
        assert "payband_monitoring_" in CLIENT.get(f"{url}/metrics").text


LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def test_orchestration_image_loads_a_code_server_container(images, postgres_database):
    # The compose wiring: the webserver (orchestration image, PostgreSQL storage) loads a
    # code location served over gRPC from another package's image.
    grpc_port, web_port = free_port(), free_port()
    code_server = [
        "dagster", "code-server", "start", "-h", "127.0.0.1", "-p", str(grpc_port),
        "-m", "payband_serving.definitions",
    ]  # fmt: skip
    env = {
        "PAYBAND_ORCHESTRATION_POSTGRES_HOST": postgres_database.host,
        "PAYBAND_ORCHESTRATION_POSTGRES_PORT": str(postgres_database.port),
        "PAYBAND_ORCHESTRATION_POSTGRES_USER": postgres_database.user,
        "PAYBAND_ORCHESTRATION_POSTGRES_PASSWORD": "",
        "PAYBAND_ORCHESTRATION_POSTGRES_DB": postgres_database.database,
        "PAYBAND_ORCHESTRATION_CODE_LOCATIONS": f"serving=127.0.0.1:{grpc_port}",
        "PAYBAND_ORCHESTRATION_WEBSERVER_HOST": "127.0.0.1",
        "PAYBAND_ORCHESTRATION_WEBSERVER_PORT": str(web_port),
    }
    with container(images["serving"]["tag"], code_server, env=env) as server:
        deadline = time.monotonic() + 180
        health = ["exec", server, "dagster", "api", "grpc-health-check", "-p", str(grpc_port)]
        while podman(*health, check=False).returncode != 0:
            assert time.monotonic() < deadline, f"code server not serving:\n{logs(server)}"
            time.sleep(1)
        with container(images["orchestration"]["tag"], env=env) as webserver:
            assert_loads(webserver, f"http://127.0.0.1:{web_port}")
    # The instance's storage is the PostgreSQL database, migrated by the webserver.
    assert ("public", "runs") in migrated_tables(postgres_database)


def assert_loads(webserver: str, url: str) -> None:
    """The webserver answers and its one code location, ``serving``, has loaded."""
    wait_for(webserver, f"{url}/server_info", timeout=180)
    deadline = time.monotonic() + 180
    while True:
        answer = CLIENT.post(f"{url}/graphql", json={"query": LOCATIONS}).json()
        entries = answer["data"]["workspaceOrError"]["locationEntries"]
        if [(e["name"], e["loadStatus"]) for e in entries] == [("serving", "LOADED")]:
            break
        assert time.monotonic() < deadline, f"not loaded: {entries}\n{logs(webserver)}"
        time.sleep(1)
    loaded = entries[0]["locationOrLoadError"]
    assert loaded["__typename"] == "RepositoryLocation", loaded.get("message")
    assert_healthy(webserver)
