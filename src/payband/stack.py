"""What `demo` and `up` share around their steps: one launcher per PAYBAND_HOME at a time,
and the local PostgreSQL cluster with payband's databases."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import psycopg
from rich.console import Console

from payband.home import Databases, Home
from payband.lifecycle import LifecycleError
from payband.services import signals_held
from payband_contracts.errors import first_line
from payband_local.cluster import LocalPostgres, LocalPostgresError

__all__ = ["DATABASES", "LOCK_FILE", "launcher", "local_postgres", "lock_home"]

LOCK_FILE = ".lock"
# The warehouse (raw records, dbt models, Optuna studies, audit log, monitoring results) and
# MLflow's tracking and registry store.
DATABASES = ("payband", "mlflow")
POSTGRES_PORT = 5432
_STATUS_WAIT_S = 2.0


@contextmanager
def lock_home(home: Home, command: str) -> Iterator[None]:
    """Hold PAYBAND_HOME for one launcher; a second one is refused, naming the first."""
    home.prepare()
    path = home.root / LOCK_FILE
    with path.open("a+") as lock:
        holder = _take(lock)
        if holder is not None:
            raise LifecycleError(
                f"{holder} is using {home.root}; stop it first (`payband status` shows it) "
                "or set PAYBAND_HOME to another directory"
            )
        lock.seek(0)
        lock.truncate()
        lock.write(f"payband {command} (pid {os.getpid()})")
        lock.flush()
        home.remove_state()  # left by a launcher that was killed
        try:
            yield
        finally:
            lock.truncate(0)


def _take(lock: IO[str]) -> str | None:
    """Lock exclusively; else who holds it. `payband status` holds it shared for an instant,
    so the lock is asked for again during a short while before giving up."""
    deadline = time.monotonic() + _STATUS_WAIT_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.seek(0)
                return lock.read().strip() or "another payband command"
            time.sleep(0.1)


def launcher(home: Home) -> str | None:
    """What holds PAYBAND_HOME now ("payband up (pid N)"), or None when no launcher runs."""
    path = home.root / LOCK_FILE
    try:
        lock = path.open("r")
    except FileNotFoundError:
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock.read().strip() or "a payband launcher"
        fcntl.flock(lock, fcntl.LOCK_UN)
        return None


class RunningPostgres:
    """The cluster while a launcher uses it; stopped when the launcher is done.

    Also a cluster that was already running: only one launcher uses a home at a time
    (`lock_home`), so a running cluster was left by one that died, and is adopted.
    """

    def __init__(self, cluster: LocalPostgres) -> None:
        self.cluster = cluster

    @property
    def port(self) -> int:
        return self.cluster.port

    @property
    def databases(self) -> Databases:
        return Databases(
            warehouse=self.cluster.url("payband", driver=False),
            mlflow=self.cluster.url("mlflow"),
        )

    @property
    def shown_url(self) -> str:
        """The warehouse's URL with the password masked, for printing."""
        return self.cluster.masked_url("payband", driver=False)

    def __enter__(self) -> RunningPostgres:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with signals_held():  # a second Ctrl-C must not leave the cluster half stopped
            self.cluster.stop()


def local_postgres(home: Home, console: Console, *, fresh: bool = False) -> RunningPostgres:
    """Start (or adopt) the local cluster and make sure payband's databases exist.

    ``fresh`` removes the cluster and what payband created under PAYBAND_HOME first.
    """
    try:
        cluster = LocalPostgres(home.root, port=POSTGRES_PORT)
        if fresh:
            console.print(f"starting over: removing payband's state in {home.root}")
            cluster.remove()
            home.clear()
            home.prepare()
        already = cluster.running
        running = RunningPostgres(cluster)
        try:
            with console.status("starting PostgreSQL"):
                cluster.start()
            for name in DATABASES:
                cluster.ensure_database(name)
        except BaseException:
            cluster.stop()  # also when Ctrl-C came while pg_ctl waited for the server
            raise
    except LocalPostgresError as error:
        raise LifecycleError(f"PostgreSQL: {error}") from None
    except psycopg.OperationalError as error:
        raise LifecycleError(
            f"PostgreSQL refused payband's connection ({first_line(error)}); the password is "
            f"in {cluster.password_path}: if it was lost or changed, `payband demo --fresh` "
            "starts over"
        ) from None
    note = f" ({cluster.port_note})" if cluster.port_note else ""
    state = "adopted the running" if already else "started the"
    console.print(f"postgres: {state} cluster in {cluster.data_dir} on port {cluster.port}{note}")
    return running
