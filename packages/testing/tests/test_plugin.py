"""The fixtures as other packages see them: a separate pytest run that auto-loads the plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from payband_testing.checks import port_is_closed, process_is_alive, wait_until

# a separate pytest session per case
pytestmark = pytest.mark.e2e

_INNER_TESTS = """
import json
from pathlib import Path

RECORD = Path(__file__).with_name("record.json")
seen = {}


def test_first(postgres_server, postgres_database, postgres_module_database, s3_bucket):
    seen["database"] = postgres_database.database
    seen["module_database"] = postgres_module_database.database
    seen["bucket"] = s3_bucket.name
    with postgres_module_database.connect() as conn:
        conn.execute("CREATE TABLE shared (x int)")
        conn.execute("INSERT INTO shared VALUES (1)")
        conn.commit()
    client = s3_bucket.endpoint.client()
    client.put_bucket_versioning(
        Bucket=s3_bucket.name, VersioningConfiguration={"Status": "Enabled"}
    )
    for body in (b"v1", b"v2"):
        client.put_object(Bucket=s3_bucket.name, Key="k", Body=body)
    client.create_multipart_upload(Bucket=s3_bucket.name, Key="unfinished")
    RECORD.write_text(json.dumps({
        "port": postgres_server.port,
        "pid": postgres_server.pid,
        "watchdog": postgres_server.watchdog_pid,
        "base": str(postgres_server.base_dir),
        "s3": s3_bucket.endpoint.url,
    }))


def test_second(postgres_server, postgres_module_database, s3_endpoint):
    with postgres_server.info.connect() as conn:
        names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    assert seen["database"] not in names
    assert postgres_module_database.database == seen["module_database"]
    with postgres_module_database.connect() as conn:
        assert conn.execute("SELECT x FROM shared").fetchall() == [(1,)]
    buckets = {b["Name"] for b in s3_endpoint.client().list_buckets()["Buckets"]}
    assert seen["bucket"] not in buckets


def test_failing_on_purpose(postgres_database):
    raise AssertionError("a failing test must not leave the server running")
"""

_INNER_CONFIG = """
[pytest]
addopts = --import-mode=importlib --strict-markers -p no:cacheprovider
filterwarnings = error
"""


def test_fixtures_in_a_separate_session_clean_up_after_themselves(scratch_dir: Path) -> None:
    (scratch_dir / "pytest.ini").write_text(_INNER_CONFIG)
    (scratch_dir / "test_inner.py").write_text(_INNER_TESTS)
    # Auto-loading is how other packages get the plugin; no bytecode, so the listing is exact.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "test_inner.py"],
        cwd=scratch_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "2 passed" in output, output
    assert "1 failed" in output, output
    assert "test_failing_on_purpose" in output, output

    record = json.loads((scratch_dir / "record.json").read_text())
    assert port_is_closed(record["port"])
    assert not Path(record["base"]).exists()
    assert wait_until(lambda: not process_is_alive(record["pid"]), timeout=5)
    assert not process_is_alive(record["watchdog"])
    assert port_is_closed(int(record["s3"].rsplit(":", 1)[1]))
    assert sorted(path.name for path in scratch_dir.iterdir()) == [
        "pytest.ini",
        "record.json",
        "test_inner.py",
    ]
