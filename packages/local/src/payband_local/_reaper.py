"""Watchdog that stops an embedded PostgreSQL whose owning process died without stopping it.

Usage: ``python -I _reaper.py OWNER_PID --fd N --data-dir DATA --remove INSTANCE_DIR``.

The owner starts this file as a detached process (its own session, so Ctrl-C and process-group
kills do not reach it) and keeps the write end of a pipe whose read end ``--fd`` is:

- the owner writes ``DISARM`` on a normal stop: the watchdog exits and does nothing;
- the pipe reaches end-of-file (the kernel closes the owner's descriptors however it dies,
  SIGKILL included), or the watchdog is re-parented away from the owner: the watchdog lets an
  ``initdb``/``pg_ctl`` run the owner had begun finish, shuts the server down with PostgreSQL's
  own signals (SIGINT = fast, then SIGQUIT = immediate, then SIGKILL) and removes the
  instance directory.

Signals rather than ``pg_ctl``: they need neither the binaries (possibly a copy inside the
instance directory) nor a change of user (root may signal the server user's processes).
It imports only the standard library and runs by file path, so it works whatever ``sys.path``
the owner had, with any Python 3.7+. ``payband_local.postgres`` reuses ``signal_stop``.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

DISARM = b"D"
# How often the watchdog also checks that its parent is still the owner (a fork of the owner
# can keep the pipe open after the owner itself died).
_PARENT_POLL_SECONDS = 1.0
# How long initdb or pg_ctl, started before the owner died, may take to finish.
_HELPER_WAIT_SECONDS = 120.0
_PROC = Path("/proc")


def postmaster_pid(data_dir: Path) -> int | None:
    """The postmaster's pid from ``postmaster.pid``, or None when there is no (valid) pid file."""
    try:
        first_line = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return None
    return int(first_line) if first_line.strip().isdigit() else None


def _cmdline(pid: int) -> bytes | None:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return not _PROC.is_dir()
    # An exited process waiting to be reaped ("Z") is gone for our purposes.
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def signal_stop(data_dir: Path, timeout: float = 30.0) -> bool:
    """Shut the server of ``data_dir`` down by signals; True when none is left running.

    SIGINT is PostgreSQL's fast shutdown, SIGQUIT its immediate one; SIGKILL is the last
    resort (backends exit by themselves once the postmaster is gone).
    """
    pid = postmaster_pid(data_dir)
    if pid is None:
        return True
    cmdline = _cmdline(pid)
    # A stale pid file may name a recycled pid: only signal a process started on this data dir.
    if _PROC.is_dir() and (cmdline is None or str(data_dir).encode() not in cmdline):
        return True
    for signum, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if _wait(lambda: _gone(pid), wait):
            return True
    return False


def _processes_mentioning(text: str) -> list[tuple[int, bytes]]:
    """Other live processes whose command line contains ``text`` (empty without /proc)."""
    if not _PROC.is_dir():
        return []
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        cmdline = _cmdline(int(entry.name))
        if cmdline is not None and text.encode() in cmdline and not _gone(int(entry.name)):
            found.append((int(entry.name), cmdline))
    return found


def _helpers(instance_dir: Path) -> list[int]:
    """Running ``initdb``/``pg_ctl`` processes working on ``instance_dir``."""
    return [
        pid
        for pid, cmdline in _processes_mentioning(str(instance_dir))
        if Path(os.fsdecode(cmdline.split(b"\0", 1)[0])).name in ("initdb", "pg_ctl")
    ]


def reap(data_dir: Path, instance_dir: Path) -> None:
    """Let running initdb/pg_ctl finish, stop the server, then remove ``instance_dir``."""
    # Killing initdb half-way leaves its bootstrap backend writing into the directory being
    # removed, and a pg_ctl start half-way leaves a server without a pid file yet; both finish
    # on their own (their output goes to files, so the owner's death does not stop them).
    _wait(lambda: not _helpers(instance_dir), _HELPER_WAIT_SECONDS)
    for pid in _helpers(instance_dir):
        os.kill(pid, signal.SIGKILL)
    signal_stop(data_dir)
    # Nobody is left to report to: remove what can be removed.
    shutil.rmtree(instance_dir, ignore_errors=True)


def _owner_gone(read_fd: int, owner_pid: int) -> bool:
    """Block until the owner disarms (False) or is gone (True)."""
    while True:
        ready, _, _ = select.select([read_fd], [], [], _PARENT_POLL_SECONDS)
        if ready:
            return os.read(read_fd, 1) != DISARM
        if os.getppid() != owner_pid:
            return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("owner_pid", type=int)
    parser.add_argument("--fd", type=int, required=True, help="read end of the owner's pipe")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--remove", type=Path, required=True, help="the instance directory")
    args = parser.parse_args(argv)
    if _owner_gone(args.fd, args.owner_pid):
        reap(args.data_dir, args.remove)
    return 0


if __name__ == "__main__":
    sys.exit(main())
