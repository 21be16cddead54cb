"""The umbrella `payband` command: version, help, status and a bad option.

They run in this process (``run``); the status check is also the smoke test of the installed
script, as a process.
"""

import os
import subprocess
import sys
from pathlib import Path

from payband import __version__
from payband_testing.cli import run_in_process

PAYBAND = str(Path(sys.executable).with_name("payband"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (arguments, messages, exit codes)."""
    return run_in_process("payband", *args)


def test_version():
    result = run("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"payband {__version__}")


def test_help_lists_the_main_job():
    result = run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_help_lists_every_launcher():
    result = run("--help")
    assert {"demo", "up", "status"} <= set(result.stdout.split())


def test_smoke_status_with_nothing_running(tmp_path):
    # The real script, as a process: the smoke test of the entry point.
    result = subprocess.run(
        [PAYBAND, "status"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PAYBAND_HOME": str(tmp_path)},
    )
    assert result.returncode == 1
    assert f"nothing runs from {tmp_path}" in " ".join(result.stdout.split())


def test_demo_refuses_a_bad_option_in_one_line():
    result = run("demo", "--trials", "0")
    assert result.returncode == 2
    assert "--trials" in result.stderr
    assert "Traceback" not in result.stderr
