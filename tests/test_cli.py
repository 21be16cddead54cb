import subprocess
import sys
from pathlib import Path

from payband import __version__

PAYBAND = str(Path(sys.executable).with_name("payband"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAYBAND, *args], capture_output=True, text=True, check=False)


def test_version():
    result = run("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"payband {__version__}")


def test_help_lists_the_main_job():
    result = run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_demo_says_it_is_not_available_yet():
    result = run("demo")
    assert result.returncode == 1
    assert "not available yet" in result.stderr
    assert "Traceback" not in result.stderr
