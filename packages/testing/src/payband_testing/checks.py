"""Small checks for tests that start and stop servers: is a port closed, is a process gone.

The process checks read ``/proc`` and so work on Linux only (where CI runs).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "port_is_closed",
    "process_is_alive",
    "process_uid",
    "processes_mentioning",
    "wait_until",
]


def port_is_closed(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connection to ``host:port`` is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect((host, port))
        except ConnectionRefusedError:
            return True
        return False


def process_is_alive(pid: int | None) -> bool:
    """Whether a process exists and is not a zombie (exited, waiting to be reaped)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name, which may itself contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def process_uid(pid: int) -> int:
    """The real uid a process runs as."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise ValueError(f"/proc/{pid}/status has no Uid line")


def processes_mentioning(text: str) -> list[int]:
    """Live processes other than this one whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if text.encode() in cmdline and process_is_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.1) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
