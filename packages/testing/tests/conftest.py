"""A scratch-directory fixture for this package's own tests (the shared ones are in the plugin)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from payband_testing.checks import processes_mentioning
from payband_testing.postgres import (
    default_tmp_root,
    drop_privileges_prefix,
    find_pginstall,
    stop_cluster,
)


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """An empty temp dir others may traverse (for ``nobody`` when root), removed afterwards.

    Tests assert themselves that nothing is left in it; the clean-up here only keeps a failing
    test from leaving servers or watchdogs running.
    """
    path = Path(tempfile.mkdtemp(prefix="payband-testing-", dir=default_tmp_root()))
    path.chmod(0o755)
    try:
        yield path
    finally:
        prefix: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            prefix = drop_privileges_prefix(nobody.pw_uid, nobody.pw_gid)
        for pid_file in path.rglob("postmaster.pid"):
            stop_cluster(find_pginstall() / "bin" / "pg_ctl", pid_file.parent, prefix=prefix)
        for pid in processes_mentioning(str(path)):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path)
