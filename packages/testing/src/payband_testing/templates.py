"""Databases built once per test session and copied for each test (PostgreSQL templates).

Migrating a schema per test repeats the same work hundreds of times (MLflow's store alone
takes 1 to 3 s to create). A template is built once, on first use, then closed to connections;
each test gets ``CREATE DATABASE ... TEMPLATE``, a copy made by the server in milliseconds,
dropped after the test.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from payband_local.postgres import EmbeddedPostgres, PostgresConnectionInfo

__all__ = ["DatabaseTemplates", "create_mlflow_schema"]

Build = Callable[[PostgresConnectionInfo], None]


class DatabaseTemplates:
    """Named templates of one server: ``copy(kind, build, name)`` yields a fresh database made
    from template ``kind``, built with ``build(info)`` the first time it is asked for."""

    def __init__(self, server: EmbeddedPostgres) -> None:
        self._server = server
        self._built: dict[str, str] = {}
        self._lock = threading.Lock()

    def template(self, kind: str, build: Build) -> str:
        """The template database of ``kind``, built now if it is not yet."""
        with self._lock:
            if kind not in self._built:
                name = f"template_{kind}"
                self._server.drop_database(name)
                build(self._server.create_database(name))
                self._server.make_template(name)
                self._built[kind] = name
            return self._built[kind]

    @contextlib.contextmanager
    def copy(self, kind: str, build: Build, name: str) -> Iterator[PostgresConnectionInfo]:
        """A new database ``name``, a copy of template ``kind``; dropped afterwards."""
        info = self._server.create_database(name, template=self.template(kind, build))
        try:
            yield info
        finally:
            self._server.drop_database(name)


def create_mlflow_schema(info: PostgresConnectionInfo) -> None:
    """MLflow's tracking and registry tables (its own migrations, run by its store)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=info.url, registry_uri=info.url)
    client.search_experiments()
    client.search_registered_models()
