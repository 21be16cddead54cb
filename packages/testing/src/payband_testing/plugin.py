"""pytest plugin (entry point ``pytest11: payband``): shared fixtures for every payband package.

Loaded automatically wherever ``payband-testing`` is installed; tests just name the fixtures.
Servers start only when a test asks for them.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from payband_contracts.model import DecisionRule
from payband_local.postgres import (
    EmbeddedPostgres,
    PostgresConnectionInfo,
    default_tmp_root,
    drop_privileges_prefix,
    find_pginstall,
    stop_cluster,
)
from payband_testing.census import CensusTestServer
from payband_testing.checks import processes_mentioning
from payband_testing.lakefs import LakeFSTestServer
from payband_testing.model import TinyModel, train_tiny_model
from payband_testing.registry import MlflowChampion, champion_registry
from payband_testing.s3 import MotoS3Server, S3Bucket, S3Endpoint, delete_bucket
from payband_testing.serving import InferenceServer, inference_server
from payband_testing.templates import DatabaseTemplates, create_mlflow_schema

__all__ = [
    "census_server",
    "database_templates",
    "lakefs_server",
    "mlflow_champion",
    "mlflow_database",
    "postgres_database",
    "postgres_module_database",
    "postgres_server",
    "s3_bucket",
    "s3_endpoint",
    "scratch_dir",
    "serving_server",
    "serving_server_cut_off",
    "tiny_model",
    "tiny_model_cut_off",
    "tiny_model_three_bands",
]

# The cut-off of ``tiny_model_cut_off``: about one holdout row in ten gets band 1 from it
# although band 0 is the more probable one.
TINY_CUT_OFF = 0.2


def _unique_name(node_name: str, *, max_length: int, separator: str) -> str:
    """A readable unique identifier: the test's name, shortened, plus random hex."""
    stem = re.sub(r"[^a-z0-9]+", separator, node_name.lower()).strip(separator)
    suffix = uuid.uuid4().hex[:10]
    return f"{stem[: max_length - len(suffix) - 1]}{separator}{suffix}".lstrip(separator)


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """An empty temp dir others may traverse (for ``nobody`` when root), removed afterwards.

    For tests of servers that live in it: they assert themselves that nothing is left in it;
    the clean-up here only keeps a failing test from leaving servers or watchdogs running.
    """
    path = Path(tempfile.mkdtemp(prefix="payband-testing-", dir=default_tmp_root()))
    path.chmod(0o755)
    try:
        yield path
    finally:
        prefix: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            prefix = drop_privileges_prefix(nobody.pw_uid, nobody.pw_gid)
        for pid_file in path.rglob("postmaster.pid"):
            stop_cluster(find_pginstall() / "bin" / "pg_ctl", pid_file.parent, prefix=prefix)
        for pid in processes_mentioning(str(path)):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """A real PostgreSQL 18 server on 127.0.0.1, one per test session (``EmbeddedPostgres``).

    Fields: ``info`` (connection info of the ``postgres`` database), ``port``, ``data_dir``,
    ``create_database(name)``, ``drop_database(name)``, ``stop_server()``/``start_server()``.
    Runs without fsync; as ``nobody`` when the tests run as root. Stopped and removed at the
    end of the session, whether tests pass or fail.
    """
    server = EmbeddedPostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _database(server: EmbeddedPostgres, node_name: str) -> Iterator[PostgresConnectionInfo]:
    # PostgreSQL truncates identifiers at 63 bytes; stay below so the name is used as given.
    name = _unique_name(node_name, max_length=63, separator="_")
    info = server.create_database(name)
    try:
        yield info
    finally:
        server.drop_database(name)


@pytest.fixture
def postgres_database(
    request: pytest.FixtureRequest, postgres_server: EmbeddedPostgres
) -> Iterator[PostgresConnectionInfo]:
    """A fresh, empty database for this test only, dropped afterwards.

    A ``PostgresConnectionInfo``: ``host``, ``port``, ``user``, ``database``, ``url``
    (SQLAlchemy, ``postgresql+psycopg://...``), ``dsn`` (libpq), ``connect()`` (psycopg).
    """
    yield from _database(postgres_server, request.node.name)


@pytest.fixture(scope="module")
def postgres_module_database(
    request: pytest.FixtureRequest, postgres_server: EmbeddedPostgres
) -> Iterator[PostgresConnectionInfo]:
    """Like ``postgres_database``, but shared by all tests of one module, dropped after it."""
    yield from _database(postgres_server, request.node.name)


@pytest.fixture(scope="session")
def database_templates(postgres_server: EmbeddedPostgres) -> DatabaseTemplates:
    """Schemas built once per session and copied for each test that asks.

    ``with database_templates.copy(kind, build, name) as info:`` gives a new database ``name``
    copied from template ``kind`` (built with ``build(info)`` on first use), dropped after.
    A package's conftest uses it for its migrated schema (audit, monitoring).
    """
    return DatabaseTemplates(postgres_server)


def unique_database_name(request: pytest.FixtureRequest, prefix: str = "") -> str:
    """A database name from the test's name plus random hex, under PostgreSQL's 63 bytes."""
    return _unique_name(f"{prefix}{request.node.name}", max_length=63, separator="_")


@pytest.fixture
def mlflow_database(
    request: pytest.FixtureRequest, database_templates: DatabaseTemplates
) -> Iterator[PostgresConnectionInfo]:
    """A fresh database holding MLflow's tracking and registry tables (no experiment but the
    default one, no model), for this test only; copied from a template built once."""
    with database_templates.copy(
        "mlflow", create_mlflow_schema, unique_database_name(request, "mlflow_")
    ) as info:
        yield info


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """An S3 endpoint on 127.0.0.1 (moto), one per test session.

    An ``S3Endpoint``: ``url``, ``region``, ``access_key_id``, ``secret_access_key``,
    ``client()`` (boto3, ignores ~/.aws and AWS_* variables) and ``env()`` (AWS_* and
    MLFLOW_S3_ENDPOINT_URL variables for other tools).
    """
    server = MotoS3Server()
    endpoint = server.start()
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(request: pytest.FixtureRequest, s3_endpoint: S3Endpoint) -> Iterator[S3Bucket]:
    """A fresh, uniquely named bucket for this test, emptied and deleted afterwards.

    An ``S3Bucket``: ``name``, ``endpoint`` (the ``S3Endpoint``) and ``uri`` (``s3://name``).
    """
    # Bucket names: 3-63 characters, lower-case letters, digits and hyphens.
    name = _unique_name(request.node.name, max_length=63, separator="-")
    client = s3_endpoint.client()
    client.create_bucket(Bucket=name)
    try:
        yield S3Bucket(name=name, endpoint=s3_endpoint)
    finally:
        delete_bucket(client, name)
        client.close()


@pytest.fixture
def lakefs_server() -> Iterator[LakeFSTestServer]:
    """An empty, in-memory lakeFS REST test double on 127.0.0.1, for this test only.

    A ``LakeFSTestServer`` (a test server, not lakeFS): ``endpoint`` (``http://127.0.0.1:PORT``,
    API under ``/api/v1``), ``access_key_id`` / ``secret_access_key`` (random, checked by HTTP
    Basic auth) and ``requests`` (``(method, path, status)`` served). Starts in milliseconds;
    stopped with all its connections after the test.
    """
    with LakeFSTestServer() as server:
        yield server


@pytest.fixture
def census_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[CensusTestServer]:
    """An empty test double of the census PUMS download site on 127.0.0.1, for this test only.

    A ``CensusTestServer`` (a test server, not census.gov): ``url`` (``http://127.0.0.1:PORT/pums``,
    the PUMS ``base_url``), ``publish(folder, state, year=...)``, ``fail(state, *faults,
    year=...)``, ``requests``, ``count(state, year)``. ``NO_PROXY`` is set to 127.0.0.1 for the
    test; the server is stopped with all its connections afterwards.
    """
    # A proxy configured in the environment must not capture loopback traffic.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with CensusTestServer() as server:
        yield server


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A small real XGBoost model with two bands (edge 50,000 USD), trained once per session.

    A ``TinyModel``: ``directory`` (``booster.json`` + ``payband_model.json``, as training
    writes them), ``schema``, ``booster`` and ``holdout`` (500 unseen raw candidates).
    """
    return train_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model_three_bands(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """Like ``tiny_model``, with three bands (edges 40,000 and 80,000 USD): multiclass."""
    return train_tiny_model(
        tmp_path_factory.mktemp("tiny-model-3"), band_edges_usd=(40_000, 80_000), seed=1
    )


@pytest.fixture(scope="session")
def tiny_model_cut_off(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """``tiny_model``'s booster (same data and seed) with the decision rule "band 1 when its
    probability is above 0.2" in its ``payband_model.json``: the served band is not the most
    probable one for about 10 % of the holdout rows."""
    return train_tiny_model(
        tmp_path_factory.mktemp("tiny-model-cut-off"),
        decision=DecisionRule.with_cut_off(TINY_CUT_OFF),
    )


@pytest.fixture(scope="module")
def mlflow_champion(
    request: pytest.FixtureRequest,
    database_templates: DatabaseTemplates,
    tiny_model: TinyModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MlflowChampion]:
    """A real MLflow registry (tracking in its own PostgreSQL database, artifacts in a
    directory) whose "salary-band" version 1, alias "champion", is ``tiny_model`` with 3,000
    rows of reference data; per module. An ``MlflowChampion``: ``uri``, ``name``,
    ``version``, ``model``. MLflow's global URIs are restored afterwards."""
    name = unique_database_name(request, "mlflow_")
    with (
        database_templates.copy("mlflow", create_mlflow_schema, name) as info,
        champion_registry(info.url, tmp_path_factory.mktemp("mlflow"), tiny_model) as found,
    ):
        yield found


@pytest.fixture(scope="session")
def serving_server(tiny_model: TinyModel) -> Iterator[InferenceServer]:
    """A real MLServer (``payband-serving serve``) serving ``tiny_model`` on 127.0.0.1.

    An ``InferenceServer``: ``url`` (V2 REST), ``infer_url``, ``grpc_target``, ``metrics_url``,
    ``model_name`` ("salary-band"), ``log()``. Default settings: inference in the server
    process, no adaptive batching. Stopped at the end of the session.
    """
    with inference_server(model_uri=tiny_model.directory) as server:
        yield server


@pytest.fixture(scope="session")
def serving_server_cut_off(tiny_model_cut_off: TinyModel) -> Iterator[InferenceServer]:
    """Like ``serving_server``, serving ``tiny_model_cut_off`` (a two-band cut-off of 0.2)."""
    with inference_server(model_uri=tiny_model_cut_off.directory) as server:
        yield server
