"""The embedded PostgreSQL: real server, isolation, lifecycle, watchdog, root and non-root."""

from __future__ import annotations

import json
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from payband_local import postgres as postgres_module
from payband_local.postgres import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    PostgresConnectionInfo,
    drop_privileges_prefix,
    find_pginstall,
)
from payband_testing.checks import (
    port_is_closed,
    process_is_alive,
    process_uid,
    processes_mentioning,
    wait_until,
)

ROOT = os.geteuid() == 0
NOBODY = pwd.getpwnam("nobody")
root_only = pytest.mark.skipif(not ROOT, reason="the root-to-nobody path only runs as root")


def _link_or_copy(source: str, target: str) -> None:
    # Hard links are instant; copying ~35 MB takes seconds on slow disks.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _copy_install(root: Path, *, real_copy_of_bin: bool = False) -> Path:
    """Mirror the wheel's ``pginstall`` with the layout its RPATH expects; return the mirror.

    Files are hard-linked: modes must then be left alone, except in a real copy of ``bin``.
    """
    source = find_pginstall()
    package = source.parent
    libs = f"{package.name}.libs"
    shutil.copytree(package.parent / libs, root / libs, copy_function=_link_or_copy)
    target = root / package.name / source.name
    for part in ("bin", "lib", "share"):
        copy = shutil.copy2 if part == "bin" and real_copy_of_bin else _link_or_copy
        shutil.copytree(source / part, target / part, symlinks=True, copy_function=copy)
    return target


def _round_trip(info: PostgresConnectionInfo) -> int:
    with info.connect() as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (42)")
        conn.commit()
    with info.connect() as conn:
        row = conn.execute("SELECT x FROM t").fetchone()
    assert row is not None
    value: int = row[0]
    return value


def test_table_written_and_read_back(postgres_database: PostgresConnectionInfo) -> None:
    with postgres_database.connect() as conn:
        conn.execute("CREATE TABLE band (id serial PRIMARY KEY, label text NOT NULL)")
        conn.execute("INSERT INTO band (label) VALUES ('<=50K'), ('>50K')")
        conn.commit()
    with postgres_database.connect() as conn:
        rows = conn.execute("SELECT id, label FROM band ORDER BY id").fetchall()
    assert rows == [(1, "<=50K"), (2, ">50K")]


def test_databases_are_isolated(
    postgres_database: PostgresConnectionInfo, postgres_server: EmbeddedPostgres
) -> None:
    with postgres_database.connect() as conn:
        conn.execute("CREATE TABLE only_here (x int)")
        conn.commit()
    other = postgres_server.create_database(f"other_{uuid.uuid4().hex[:8]}")
    try:
        with other.connect() as conn:
            row = conn.execute("SELECT to_regclass('only_here') IS NULL").fetchone()
        assert row == (True,)
    finally:
        postgres_server.drop_database(other.database)


def test_connection_info_fields(postgres_database: PostgresConnectionInfo) -> None:
    info = postgres_database
    assert (info.host, info.user) == ("127.0.0.1", "postgres")
    assert info.url == f"postgresql+psycopg://postgres@127.0.0.1:{info.port}/{info.database}"
    assert conninfo_to_dict(info.dsn) == {
        "host": "127.0.0.1",
        "port": str(info.port),
        "user": "postgres",
        "dbname": info.database,
    }
    with psycopg.connect(info.dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (info.database,)


def test_module_database_is_separate_and_reachable(
    postgres_module_database: PostgresConnectionInfo, postgres_database: PostgresConnectionInfo
) -> None:
    assert postgres_module_database.database != postgres_database.database
    with postgres_module_database.connect() as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row == (postgres_module_database.database,)


def test_test_settings_are_applied(postgres_server: EmbeddedPostgres) -> None:
    with postgres_server.info.connect() as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()
            for name in ("fsync", "synchronous_commit", "full_page_writes", "server_encoding")
        }
    assert settings == {
        "fsync": ("off",),
        "synchronous_commit": ("off",),
        "full_page_writes": ("off",),
        "server_encoding": ("UTF8",),
    }


def test_drop_database_disconnects_sessions(postgres_server: EmbeddedPostgres) -> None:
    info = postgres_server.create_database(f"doomed_{uuid.uuid4().hex[:8]}")
    with info.connect(autocommit=True) as conn:
        postgres_server.drop_database(info.database)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with postgres_server.info.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (info.database,)
        ).fetchone()
    assert row == (0,)


def test_listens_on_loopback_only(postgres_server: EmbeddedPostgres) -> None:
    with postgres_server.info.connect() as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW unix_socket_directories").fetchone() == ("",)
    # /proc/net/tcp*: local address as hex "ADDR:PORT"; state 0A is LISTEN.
    listening = [
        fields[1].split(":")[0]
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        for fields in (line.split() for line in Path(table).read_text().splitlines()[1:])
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == postgres_server.port
    ]
    assert listening == ["0100007F"]


def test_server_runs_as_unprivileged_user(postgres_server: EmbeddedPostgres) -> None:
    pid = postgres_server.pid
    assert pid is not None
    expected = NOBODY.pw_uid if ROOT else os.geteuid()
    assert process_uid(pid) == expected
    assert process_uid(pid) != 0


def test_stop_closes_the_port_and_removes_everything(scratch_dir: Path) -> None:
    pg = EmbeddedPostgres(tmp_root=scratch_dir)
    pg.start()
    try:
        port, pid, watchdog, base = pg.port, pg.pid, pg.watchdog_pid, pg.base_dir
        assert pg.running
        assert process_is_alive(pid)
        assert process_is_alive(watchdog)
        assert base.parent == scratch_dir
    finally:
        pg.stop()
    assert port_is_closed(port)
    assert not base.exists()
    assert wait_until(lambda: not process_is_alive(pid), timeout=5)
    assert not process_is_alive(watchdog)
    assert list(scratch_dir.iterdir()) == []
    assert not pg.running
    pg.stop()  # idempotent


def test_stop_server_and_start_server_keep_data_and_port(scratch_dir: Path) -> None:
    with EmbeddedPostgres(tmp_root=scratch_dir) as pg:
        info = pg.create_database("kept")
        assert _round_trip(info) == 42
        port, watchdog = pg.port, pg.watchdog_pid

        pg.stop_server()
        assert not pg.running
        assert port_is_closed(port)
        with pytest.raises(psycopg.OperationalError):
            info.connect()
        assert process_is_alive(watchdog)

        pg.start_server()
        assert pg.port == port
        with info.connect() as conn:
            assert conn.execute("SELECT x FROM t").fetchone() == (42,)

        pg.restart()
        with info.connect() as conn:
            assert conn.execute("SELECT x FROM t").fetchone() == (42,)
    assert list(scratch_dir.iterdir()) == []


def test_failed_start_reports_the_log_and_leaves_nothing(scratch_dir: Path) -> None:
    pg = EmbeddedPostgres(tmp_root=scratch_dir, settings={"shared_buffers": "plenty"})
    with pytest.raises(EmbeddedPostgresError, match="shared_buffers") as caught:
        pg.start()
    assert "last lines of" in str(caught.value)
    assert list(scratch_dir.iterdir()) == []
    assert wait_until(lambda: processes_mentioning(str(scratch_dir)) == [], timeout=5)
    pg.stop()


def test_a_port_taken_meanwhile_is_retried(
    scratch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        offers = iter([taken])
        free_port = postgres_module.free_port
        monkeypatch.setattr(postgres_module, "free_port", lambda: next(offers, 0) or free_port())
        with EmbeddedPostgres(tmp_root=scratch_dir) as pg:
            assert pg.port != taken
            assert "could not bind" in pg.log_path.read_text()
            assert _round_trip(pg.info) == 42


def test_missing_binaries_are_a_clear_error(scratch_dir: Path) -> None:
    pg = EmbeddedPostgres(pginstall=scratch_dir / "nowhere", tmp_root=scratch_dir)
    with pytest.raises(EmbeddedPostgresError, match="no PostgreSQL binaries"):
        pg.start()
    assert list(scratch_dir.iterdir()) == []


def test_binaries_that_cannot_be_executed_are_copied(scratch_dir: Path) -> None:
    install = _copy_install(scratch_dir / "install", real_copy_of_bin=True)
    for program in (install / "bin").iterdir():
        program.chmod(0o644)
    with EmbeddedPostgres(pginstall=install, tmp_root=scratch_dir) as pg:
        assert pg.pginstall.is_relative_to(pg.base_dir)
        assert _round_trip(pg.info) == 42
    assert [path.name for path in scratch_dir.iterdir()] == ["install"]


@root_only
def test_private_checkout_is_copied_for_nobody(scratch_dir: Path) -> None:
    private = scratch_dir / "private"
    private.mkdir(mode=0o700)
    install = _copy_install(private / "install")
    with EmbeddedPostgres(pginstall=install, tmp_root=scratch_dir) as pg:
        assert pg.pginstall.is_relative_to(pg.base_dir)
        assert _round_trip(pg.info) == 42
    assert [path.name for path in scratch_dir.iterdir()] == ["private"]


_OWNER = """
import json, sys, time
from pathlib import Path
from payband_local.postgres import EmbeddedPostgres

pg = EmbeddedPostgres(tmp_root=Path(sys.argv[1]))
pg.start()
state = {"port": pg.port, "pid": pg.pid, "watchdog": pg.watchdog_pid, "base": str(pg.base_dir)}
print(json.dumps(state), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_watchdog_stops_the_server_when_its_owner_dies(scratch_dir: Path, signum: int) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(scratch_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert owner.stdout is not None
        ready, _, _ = select.select([owner.stdout], [], [], 60)
        line = owner.stdout.readline() if ready else ""
        if not line.startswith("{"):
            owner.kill()
            pytest.fail(f"the owner did not start a server:\n{line}{owner.communicate()[0]}")
        state = json.loads(line)
        assert process_is_alive(state["pid"])
        assert process_is_alive(state["watchdog"])

        owner.send_signal(signum)
        owner.wait(timeout=10)

        assert wait_until(lambda: not process_is_alive(state["pid"]))
        assert wait_until(lambda: not Path(state["base"]).exists())
        assert wait_until(lambda: not process_is_alive(state["watchdog"]))
        assert port_is_closed(state["port"])
        assert list(scratch_dir.iterdir()) == []
    finally:
        owner.kill()
        owner.communicate(timeout=10)


_DYING_OWNER = """
import sys
import time
from pathlib import Path
from payband_local.postgres import EmbeddedPostgres

print("starting", flush=True)
EmbeddedPostgres(tmp_root=Path(sys.argv[1])).start()
"""


@pytest.mark.parametrize("delay", [0.2, 0.5])
def test_nothing_is_left_when_the_owner_dies_during_start(scratch_dir: Path, delay: float) -> None:
    """Killed in initdb or in pg_ctl start, whichever the delay hits on this machine."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _DYING_OWNER, str(scratch_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline() == "starting\n"
        time.sleep(delay)
        owner.kill()
        owner.wait(timeout=10)
        assert wait_until(lambda: list(scratch_dir.iterdir()) == [], timeout=60)
        assert wait_until(lambda: processes_mentioning(str(scratch_dir)) == [], timeout=10)
    finally:
        owner.kill()
        owner.communicate(timeout=10)


_UNPRIVILEGED_CALLER = """
import json, os, sys
from pathlib import Path
from payband_testing.checks import process_uid
from payband_local.postgres import EmbeddedPostgres

with EmbeddedPostgres(tmp_root=Path(sys.argv[1])) as pg:
    uid = process_uid(pg.pid)
    info = pg.create_database("snippet")
    with info.connect() as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (7)")
        value = conn.execute("SELECT x FROM t").fetchone()[0]
    base = str(pg.base_dir)
print(json.dumps({"server_uid": uid, "caller_uid": os.geteuid(), "value": value, "base": base}))
"""


@root_only
def test_works_when_the_caller_is_unprivileged(scratch_dir: Path) -> None:
    os.chown(scratch_dir, NOBODY.pw_uid, NOBODY.pw_gid)
    result = subprocess.run(
        [
            *drop_privileges_prefix(NOBODY.pw_uid, NOBODY.pw_gid),
            sys.executable,
            "-c",
            _UNPRIVILEGED_CALLER,
            str(scratch_dir),
        ],
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state == {
        "server_uid": NOBODY.pw_uid,
        "caller_uid": NOBODY.pw_uid,
        "value": 7,
        "base": state["base"],
    }
    assert not Path(state["base"]).exists()
    assert list(scratch_dir.iterdir()) == []
