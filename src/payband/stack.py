"""What `demo` and `up` share around their steps: one launcher per PAYBAND_HOME at a time,
and the local PostgreSQL cluster with payband's databases."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from payband.home import Home
from payband.lifecycle import LifecycleError
from payband.localdb import LocalPostgres, LocalPostgresError

__all__ = ["DATABASES", "LOCK_FILE", "local_postgres", "lock_home"]

LOCK_FILE = ".lock"
# The warehouse (raw records, dbt models, Optuna studies, audit log, monitoring results) and
# MLflow's tracking and registry store.
DATABASES = ("payband", "mlflow")
POSTGRES_PORT = 5432


@contextmanager
def lock_home(home: Home, command: str) -> Iterator[None]:
    """Hold PAYBAND_HOME for one launcher; a second one is refused, naming the first."""
    home.prepare()
    path = home.root / LOCK_FILE
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another payband command"
            raise LifecycleError(
                f"{holder} is using {home.root}; stop it first (`payband status` shows it) "
                "or set PAYBAND_HOME to another directory"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"payband {command} (pid {os.getpid()})")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)


class RunningPostgres:
    """The cluster while a launcher uses it; stopped on exit only if this launcher started it."""

    def __init__(self, cluster: LocalPostgres, *, started_here: bool) -> None:
        self.cluster = cluster
        self.started_here = started_here

    @property
    def port(self) -> int:
        return self.cluster.port

    def __enter__(self) -> RunningPostgres:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.started_here:
            self.cluster.stop()


def local_postgres(home: Home, console: Console, *, fresh: bool = False) -> RunningPostgres:
    """Start (or reuse) the local cluster and make sure payband's databases exist.

    ``fresh`` removes the cluster and everything else under PAYBAND_HOME first.
    """
    try:
        cluster = LocalPostgres(home.root, port=POSTGRES_PORT)
        if fresh:
            console.print(f"starting over: removing the state in {home.root}")
            cluster.remove()
            home.clear()
            home.prepare()
        already = cluster.running
        with console.status("starting PostgreSQL"):
            cluster.start()
        running = RunningPostgres(cluster, started_here=not already)
        try:
            for name in DATABASES:
                cluster.ensure_database(name)
        except BaseException:
            running.__exit__(None, None, None)
            raise
    except LocalPostgresError as error:
        raise LifecycleError(f"PostgreSQL: {error}") from None
    note = f" ({cluster.port_note})" if cluster.port_note else ""
    state = "reused the running" if already else "started the"
    console.print(f"postgres: {state} cluster in {cluster.data_dir} on port {cluster.port}{note}")
    return running
