import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from payband_audit.writer import AuditWriter
from payband_testing.cli import run_in_process

CLI = str(Path(sys.executable).with_name("payband-audit"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command in this process (arguments, messages, exit codes)."""
    return run_in_process("payband-audit", *args, env=env)


def run_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed script as its own process, as a user runs it."""
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert text in lines[0]
    assert "Traceback" not in result.stderr


def test_migrate_then_verify_empty_log(postgres_database):
    # The real script, as a process: the smoke test of the entry point.
    result = run_process("migrate", "--url", postgres_database.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("audit schema at revision 0001")
    result = run_process("verify", "--url", postgres_database.url)
    assert (result.returncode, result.stdout.strip()) == (0, "ok 0 records")


def test_url_from_the_environment(postgres_database):
    env = {"PAYBAND_AUDIT_DATABASE_URL": postgres_database.url}
    assert run("migrate", env=env).returncode == 0
    result = run("verify", env=env)
    assert result.stdout.strip() == "ok 0 records"


@pytest.mark.parametrize("command", ["migrate", "verify", "purge"])
def test_unreachable_database_is_one_line(command: str):
    result = run(command, "--url", "postgresql://postgres@127.0.0.1:1/payband")
    assert_one_line_error(result, "127.0.0.1:1/payband")


@pytest.mark.parametrize("command", ["verify", "migrate"])
def test_malformed_url_is_one_line_without_the_password(command: str):
    result = run(command, "--url", "postgresql://u:s3cret@[broken/db")
    assert_one_line_error(result, "invalid database URL")
    assert "s3cret" not in result.stderr


def test_unknown_revision_is_one_line(postgres_database):
    result = run("migrate", "--url", postgres_database.url, "--revision", "nope")
    assert_one_line_error(result, "nope")


def test_export_to_an_unwritable_place_is_one_line(audit_db):
    result = run("export", "/proc/payband/x.csv", "--url", audit_db.url)
    assert_one_line_error(result, "/proc/payband")


def test_database_with_other_date_style_and_isolation(audit_db, make_record, tmp_path: Path):
    with audit_db.connect(autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{audit_db.database}\" SET datestyle = 'SQL, DMY'")
        conn.execute(
            f'ALTER DATABASE "{audit_db.database}" '
            "SET default_transaction_isolation = 'repeatable read'"
        )

    async def write() -> None:
        async with AuditWriter(audit_db.url) as first, AuditWriter(audit_db.url) as second:
            await asyncio.gather(
                *((first, second)[i % 2].record_prediction(*make_record()) for i in range(40))
            )

    asyncio.run(write())
    result = run("verify", "--url", audit_db.url)
    assert result.stdout.strip() == "ok 80 records", result.stderr
    assert run("export", str(tmp_path / "log.csv"), "--url", audit_db.url).returncode == 0


@pytest.mark.parametrize("command", ["verify", "purge"])
def test_unmigrated_database_is_one_line(postgres_database, command: str):
    result = run(command, "--url", postgres_database.url)
    assert_one_line_error(result, "not migrated")
    assert "payband-audit migrate" in result.stderr


def test_verify_names_the_broken_record(audit_db, make_record):
    request, prediction = make_record()

    async def write() -> None:
        async with AuditWriter(audit_db.url) as writer:
            await writer.record_prediction(request, prediction)

    asyncio.run(write())
    assert run("verify", "--url", audit_db.url).stdout.strip() == "ok 2 records"
    with audit_db.connect() as conn:
        conn.execute("ALTER TABLE audit.prediction_responses DISABLE TRIGGER append_only")
        conn.execute("UPDATE audit.prediction_responses SET band_index = 0")
        conn.commit()
    result = run("verify", "--url", audit_db.url)
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"broken: prediction_responses seq 2 (prediction_id {request.prediction_id}): "
        "contents do not match its hash"
    )


def test_purge_refuses_short_retention(audit_db):
    result = run("purge", "--url", audit_db.url, "--retention-days", "30")
    assert_one_line_error(result, "retention of 30 days is shorter than the minimum of 180 days")
    result = run(
        "purge",
        env={"PAYBAND_AUDIT_DATABASE_URL": audit_db.url, "PAYBAND_AUDIT_RETENTION_DAYS": "90"},
    )
    assert result.returncode == 2
    assert "minimum of 180 days" in result.stderr


def test_purge_refuses_absurd_retention(audit_db):
    result = run("purge", "--url", audit_db.url, "--retention-days", "3000000000")
    assert_one_line_error(result, "longer than 36500 days")


def test_export_needs_a_known_format(audit_db, tmp_path: Path):
    result = run("export", str(tmp_path / "log.xlsx"), "--url", audit_db.url)
    assert_one_line_error(result, "name it .parquet or .csv")
    result = run("export", str(tmp_path / "log.xlsx"), "--url", audit_db.url, "--format", "csv")
    assert result.returncode == 0, result.stderr


def test_purge_as_the_purger_role(audit_db):
    result = run("purge", "--url", audit_db.url, "--role", "payband_audit_purger")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("purge 1: deleted 0 records of predictions last active")


@pytest.mark.parametrize(
    ("name", "read"), [("log.parquet", pd.read_parquet), ("log.csv", pd.read_csv)]
)
def test_export(audit_db, make_record, tmp_path: Path, name: str, read):
    async def write() -> None:
        async with AuditWriter(audit_db.url) as writer:
            for age in (30, 40, 50):
                await writer.record_prediction(*make_record(age=age))

    asyncio.run(write())
    target = tmp_path / "out" / name
    result = run("export", str(target), "--url", audit_db.url, "--model-version", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("exported 3 predictions")
    frame = read(target)
    assert sorted(frame["age"].tolist()) == [30, 40, 50]
    assert set(frame["band_label"]) == {">50K"}
    result = run("export", str(target), "--url", audit_db.url, "--model-version", "999")
    assert result.stdout.strip().startswith("exported 0 predictions")


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("payband-audit 0.1.0")
