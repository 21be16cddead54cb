"""A local test double of the census ACS PUMS download site: standard library only.

This is NOT census.gov. The census site cannot be reached from these machines, so the PUMS
source is tested against this server, which serves synthetic person zips (written with
``payband_testing.pums.write_persons_zip``) under the census layout
``/pums/<year>/1-Year/csv_p<state>.zip`` on 127.0.0.1. Tests can make it misbehave: a queued
fault replaces the next response for one path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from payband_testing._http import BackgroundHTTPServer, LoopbackHTTPServer
from payband_testing.pums import STATE_FIPS, write_persons_zip

__all__ = ["CensusTestServer", "Fault"]

# A fault is served instead of the file: an HTTP status, "truncate" (the full Content-Length
# header, half the body, then the connection closes), or replacement bytes served with 200.
# For a path with no file only a status applies; the other faults are used up, answered 404.
Fault = int | str | bytes


@dataclass
class _State:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server_version = "census-test-server"
    # Headers and body go out in separate writes; never let a delayed ACK hold the body back.
    disable_nagle_algorithm = True
    # A client that connects and never sends a request is dropped after this many seconds.
    timeout = 30
    server: LoopbackHTTPServer[_State]

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is ``CensusTestServer.requests``."""

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append(self.path)
            pending = state.faults.get(self.path)
            fault = pending.pop(0) if pending else None
            body = state.files.get(self.path)
        if isinstance(fault, int):
            self.send_error(fault)
            return
        if body is None:
            self.send_error(404)
            return
        if isinstance(fault, bytes):
            body = fault
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)


class CensusTestServer(BackgroundHTTPServer[_State]):
    """A test double of the census PUMS download site on 127.0.0.1 (see the module docstring).

    ``url`` (``http://127.0.0.1:PORT/pums``) is the PUMS ``base_url``. ``publish`` writes and
    serves a synthetic state file, ``fail`` queues faults for one, ``requests`` lists the paths
    asked for. Unknown paths are 404. ``start()`` / ``stop()`` are idempotent; also a context
    manager.
    """

    _handler = _Handler
    _name = "census test server"

    def __init__(self) -> None:
        super().__init__(_State())

    @staticmethod
    def path(state: str, year: int) -> str:
        """The URL path of a state's person zip, as the census lays it out."""
        return f"/pums/{year}/1-Year/csv_p{state.lower()}.zip"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/pums``: the base URL to give the PUMS source."""
        return f"http://127.0.0.1:{self.port}/pums"

    @property
    def requests(self) -> list[str]:
        """The path of every GET received, in order (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    def count(self, state: str, year: int) -> int:
        """How many times a state's file was asked for."""
        with self._state.lock:
            return self._state.requests.count(self.path(state, year))

    def publish(
        self, folder: Path, state: str, *, year: int, rows: int = 400, seed: int = 1
    ) -> Path:
        """Write a synthetic ``csv_p<state>.zip`` into ``folder``, serve it; returns the file."""
        zip_path = write_persons_zip(
            Path(folder) / f"served_{state.upper()}.zip",
            rows,
            year=year,
            state_fips=STATE_FIPS[state.upper()],
            seed=seed,
        )
        self.serve(state, zip_path.read_bytes(), year=year)
        return zip_path

    def serve(self, state: str, body: bytes, *, year: int) -> None:
        """Serve ``body`` as a state's file (for hand-made archives); replaces any earlier one."""
        with self._state.lock:
            self._state.files[self.path(state, year)] = body

    def unpublish(self, state: str, *, year: int) -> None:
        """Stop serving a state's file: it is 404 from now on."""
        with self._state.lock:
            self._state.files.pop(self.path(state, year), None)

    def fail(self, state: str, *faults: Fault, year: int) -> None:
        """Queue faults: each of the next requests for the state's file gets one, in order."""
        with self._state.lock:
            self._state.faults.setdefault(self.path(state, year), []).extend(faults)
