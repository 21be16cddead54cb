"""A console script run inside the test process, with the result ``subprocess.run`` gives.

Starting a payband command as a process costs seconds of imports (MLflow, Dagster, pandas);
most CLI tests check arguments, messages and exit codes, which do not need a process of their
own. ``run_in_process("payband-audit", "verify", "--url", url)`` finds the script's Typer app
through its entry point and runs it with Typer's test runner: stdout and stderr apart, the
exit code, the environment changed for the call only. An exception the command does not
handle is raised into the test (it would have been a traceback for the user). Each command
keeps one test that runs the real script as a process.
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from collections.abc import Mapping
from importlib.metadata import entry_points

import typer
from typer.testing import CliRunner

__all__ = ["run_in_process", "script_app"]


def script_app(script: str) -> typer.Typer:
    """The Typer app behind console script ``script`` (its entry point ``module:main`` runs
    ``app()`` of that module)."""
    found = entry_points(group="console_scripts", name=script)
    if not found:
        raise LookupError(f"no console script named {script!r} is installed")
    (entry,) = found
    module = importlib.import_module(entry.module)
    app = getattr(module, "app", None)
    if not isinstance(app, typer.Typer):
        raise LookupError(f"{entry.value} has no Typer app named `app` beside it")
    return app


def run_in_process(
    script: str, *args: str, env: Mapping[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``script args...`` in this process; ``env`` is added to (a None value removes a
    variable from) the environment for the call only.

    What the command logs at WARNING or above lands in its stderr, as Python's last-resort
    handler would put it there in a process of its own (pytest's capture handler on the root
    logger would otherwise keep it from the result)."""
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        result = CliRunner().invoke(
            script_app(script), list(args), env=dict(env or {}), catch_exceptions=False
        )
    finally:
        root.removeHandler(handler)
    return subprocess.CompletedProcess(
        [script, *args], result.exit_code, result.stdout, result.stderr
    )


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time: the runner swaps it per call."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
