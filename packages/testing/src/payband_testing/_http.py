"""The lifecycle shared by the HTTP test doubles: a loopback server run from a daemon thread."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

__all__ = ["BackgroundHTTPServer", "LoopbackHTTPServer"]

StateT = TypeVar("StateT")


class LoopbackHTTPServer(ThreadingHTTPServer, Generic[StateT]):
    """A threading HTTP server on a free 127.0.0.1 port that tracks its open connections.

    Handlers reach the shared ``state`` as ``self.server.state``.
    """

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], state: StateT) -> None:
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        # Forget the socket before it is closed, so close_connections() never sees it closed.
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut off every client still connected."""
        with self._connections_lock:
            open_connections = list(self._connections)
        for connection in open_connections:
            with contextlib.suppress(OSError):  # the client closed it already
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response (or a stop() that cuts it off) is routine.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class BackgroundHTTPServer(Generic[StateT]):
    """``start()`` / ``stop()`` / context manager for a ``LoopbackHTTPServer``.

    Subclasses set ``_handler`` and ``_name`` (e.g. "census test server": the not-running error
    says it, the serving thread is named after it and the port) and pass their state in.
    """

    _handler: ClassVar[type[BaseHTTPRequestHandler]]
    _name: ClassVar[str]

    def __init__(self, state: StateT) -> None:
        self._state = state
        self._server: LoopbackHTTPServer[StateT] | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"the {self._name} is not running")
        return self._server.port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = LoopbackHTTPServer(self._handler, self._state)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self._name.lower().replace(' ', '-')}-{server.port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving and close all connections; idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
