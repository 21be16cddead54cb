"""A service under test in a subprocess: started in its own session, stopped for sure.

On Linux the child also gets SIGTERM if the test process itself dies, so no server outlives
its test session.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

__all__ = ["ServerProcess", "start_server_process", "wait_until_ready"]

_PR_SET_PDEATHSIG = 1
_STOP_SECONDS = 30.0

# Looked up in the parent: between fork and exec the child only calls it (no dlopen, no lock).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ServerProcess:
    """A running server process and the file its output goes to."""

    process: subprocess.Popen[bytes]
    log_path: Path
    stopped: bool = field(default=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self) -> int:
        """SIGTERM, SIGKILL if it hangs, then anything left of its process group; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(_STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.stopped = True
        return self.process.returncode


def start_server_process(
    command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> ServerProcess:
    """Start `command` with stdout and stderr to `log_path`, in a new session."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return ServerProcess(process, log_path)


def wait_until_ready(
    server: ServerProcess, ready: Callable[[], bool], *, what: str, timeout: float
) -> None:
    """Poll `ready` until it is true; RuntimeError with the log's tail if the server exits or
    the time runs out (the caller stops the server)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {server.process.returncode} before it was ready:\n"
                f"{server.tail()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready after {timeout:.0f} s:\n{server.tail()}")
        time.sleep(0.2)


# Loopback servers are asked directly, never through a proxy named in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers_ok(url: str) -> bool:
    """Whether GET ``url`` answers 200 now."""
    try:
        with _DIRECT.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@dataclass
class HttpServer(ServerProcess):
    """A server process that answers HTTP on 127.0.0.1:``port``."""

    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


ServerT = TypeVar("ServerT", bound=HttpServer)


@contextlib.contextmanager
def healthy_server(
    kind: type[ServerT],
    command: Sequence[str],
    *,
    port: int,
    log_path: Path,
    env: Mapping[str, str],
    what: str,
    timeout: float,
) -> Iterator[ServerT]:
    """Run ``command`` (listening on ``port``) until it answers ``/healthz``; stopped on exit,
    also when the test fails."""
    started = start_server_process(command, log_path, env)
    server = kind(started.process, started.log_path, port=port)
    try:
        wait_until_ready(
            server, lambda: answers_ok(f"{server.url}/healthz"), what=what, timeout=timeout
        )
        yield server
    finally:
        server.stop()
