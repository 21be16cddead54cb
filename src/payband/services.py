"""The local stack's long-running services: started as the packages' own commands, checked
over HTTP before they count as up, stopped for sure.

Each service runs in its own session with its output in ``PAYBAND_HOME/logs/<name>.log``; on
Linux it also gets SIGTERM should the launcher die (SIGKILL included), so none outlives it.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from types import FrameType

from payband.home import LOOPBACK, Home, Ports
from payband_contracts.errors import first_line
from payband_local.ports import free_port
from payband_local.process import (
    ServerProcess,
    answers_ok,
    start_server_process,
    wait_until_ready,
)

__all__ = [
    "Service",
    "ServiceError",
    "Stack",
    "choose_ports",
    "dagster_service",
    "gateway_service",
    "mlflow_service",
    "mlserver_service",
    "monitoring_service",
    "signals_held",
    "terminate_on_sigterm",
]


class ServiceError(RuntimeError):
    """A service did not come up; the message names it and ends with its log's tail."""


@dataclass(frozen=True)
class Service:
    """How to run one service and how to tell that it is ready."""

    name: str
    command: tuple[str, ...]
    port: int
    health_path: str
    timeout_s: float = 120.0
    links: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # More than an answering health URL, where a service needs it; may raise ServiceError.
    ready: Callable[[str], bool] | None = None
    # What `payband status` asks (default: the health path).
    status_path: str | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def health_url(self) -> str:
        return self.url + self.health_path


# The services run as `python -m <module>` (Dagster's UI needs dagster-webserver beside it);
# located without importing them, so a missing one is a clear error, not a dead process.
_INSTALLED = {
    "payband_serving": find_spec("payband_serving") is not None,
    "payband_gateway": find_spec("payband_gateway") is not None,
    "payband_monitoring": find_spec("payband_monitoring") is not None,
    "mlflow": find_spec("mlflow") is not None,
    "dagster": find_spec("dagster") is not None and find_spec("dagster_webserver") is not None,
}


def _python(module: str, *args: str) -> tuple[str, ...]:
    if not _INSTALLED[module]:
        raise ServiceError(f"{module} is not installed in {sys.prefix}: run `uv sync`")
    return (sys.executable, "-m", module, *args)


def mlserver_service(ports: Ports, model_uri: str) -> Service:
    return Service(
        "mlserver",
        _python("payband_serving", "serve", "--model-uri", model_uri),
        ports.mlserver_http,
        "/v2/health/ready",
        links={"metrics": f"http://{LOOPBACK}:{ports.mlserver_metrics}/metrics"},
    )


def gateway_service(ports: Ports) -> Service:
    service = Service("gateway", _python("payband_gateway", "serve"), ports.gateway, "/readyz")
    service.links.update({"API docs": f"{service.url}/docs", "metrics": f"{service.url}/metrics"})
    return service


def monitoring_service(ports: Ports, interval_s: float, chunk_size: int) -> Service:
    service = Service(
        "monitoring",
        _python("payband_monitoring", "serve"),
        ports.monitoring,
        "/healthz",
        env={
            "PAYBAND_MONITORING_INTERVAL_S": str(interval_s),
            "PAYBAND_MONITORING_CHUNK_SIZE": str(chunk_size),
        },
        # Ready only once a run has succeeded; a failing run shows here, not as "down".
        status_path="/readyz",
    )
    service.links.update({"report": f"{service.url}/report", "metrics": f"{service.url}/metrics"})
    return service


def mlflow_service(ports: Ports, home: Home, tracking_uri: str) -> Service:
    command = _python(
        "mlflow",
        "server",
        "--default-artifact-root",
        home.mlflow_artifacts.as_uri(),
        "--host",
        LOOPBACK,
        "--port",
        str(ports.mlflow),
        "--workers",
        "1",
    )
    # The store's URL holds the cluster's password: in the environment, not the command line
    # that every local user can read in `ps`.
    service = Service(
        "mlflow",
        command,
        ports.mlflow,
        "/health",
        env={"MLFLOW_BACKEND_STORE_URI": tracking_uri},
    )
    service.links["UI"] = service.url
    return service


def dagster_service(ports: Ports, workspace: Path) -> Service:
    command = _python(
        "dagster", "dev", "-w", str(workspace), "-h", LOOPBACK, "-p", str(ports.dagster)
    )
    service = Service(
        "dagster", command, ports.dagster, "/server_info", timeout_s=300.0, ready=_locations_loaded
    )
    service.links["UI"] = service.url
    return service


_LOCATIONS = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _locations_loaded(url: str) -> bool:
    """Whether every Dagster code location has loaded; ServiceError naming one that failed."""
    import httpx

    try:
        answer = httpx.post(
            f"{url}/graphql", json={"query": _LOCATIONS}, timeout=10, trust_env=False
        ).json()
        workspace = answer["data"]["workspaceOrError"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False
    if workspace.get("__typename") == "PythonError":
        raise ServiceError("dagster: the workspace failed to load (see its log)")
    entries = workspace.get("locationEntries") or []
    for entry in entries:
        loaded = entry.get("locationOrLoadError") or {}
        if loaded.get("__typename") == "PythonError":
            message = str(loaded.get("message", "")).strip().splitlines()
            raise ServiceError(
                f"dagster: code location {entry['name']!r} failed to load: "
                f"{message[0] if message else 'no message'}"
            )
    return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


def choose_ports(*, preferred: bool, avoid: frozenset[int] = frozenset()) -> Ports:
    """The well-known ports when ``preferred`` and free, else free ones; never ``avoid``.

    Chosen right before the services start: a port is free now, not when the service binds,
    so `Stack.start` also checks that the service it started is the one answering."""
    wanted = {
        "mlserver_http": 8080,
        "mlserver_grpc": 8081,
        "mlserver_metrics": 8082,
        "gateway": 8000,
        "monitoring": 8090,
        "mlflow": 5000,
        "dagster": 3000,
    }
    taken: set[int] = set(avoid)
    chosen: dict[str, int] = {}
    for name, port in wanted.items():
        if not preferred or port in taken or not _free(port):
            port = free_port()
            while port in taken:
                port = free_port()
        taken.add(port)
        chosen[name] = port
    return Ports(**chosen)


def _free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


class Stack:
    """Services started in order and stopped in reverse, also when something fails."""

    def __init__(self, home: Home, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.running: list[tuple[Service, ServerProcess]] = []

    def start(self, service: Service) -> None:
        """Start a service and wait until it is ready; ServiceError if it is not."""
        log_path = self.home.logs / f"{service.name}.log"
        process = start_server_process(service.command, log_path, {**self.env, **service.env})
        self.running.append((service, process))
        try:
            wait_until_ready(
                process,
                lambda: (
                    answers_ok(service.health_url)
                    and (service.ready is None or service.ready(service.url))
                ),
                what=service.name,
                timeout=service.timeout_s,
            )
        except ServiceError:
            raise
        except RuntimeError as error:  # wait_until_ready's: exited, or not ready in time
            what = first_line(error).rstrip(":")
            last = next(
                (line for line in reversed(process.tail().splitlines()) if line.strip()), ""
            )
            raise ServiceError(f"{what}; last log line: {last.strip()} (log: {log_path})") from None
        if process.process.poll() is not None:
            raise ServiceError(
                f"{service.name} exited with {process.process.returncode} although "
                f"{service.health_url} answers: another program holds port {service.port}? "
                f"(log: {log_path})"
            )

    def died(self) -> list[tuple[Service, int]]:
        """The services that exited on their own, with their exit codes."""
        return [
            (service, process.process.returncode)
            for service, process in self.running
            if process.process.poll() is not None
        ]

    def stop(self) -> list[str]:
        """Stop every service, last started first; the names of those stopped.

        A second Ctrl-C (or SIGTERM) while services shut down is ignored: stopping them is
        what it would ask for anyway, and it must not cut the shutdown short."""
        stopped = []
        with signals_held():
            while self.running:
                service, process = self.running.pop()
                process.stop()
                stopped.append(service.name)
        return stopped

    def describe(self) -> list[dict[str, object]]:
        return [
            {
                "name": service.name,
                "pid": process.process.pid,
                "url": service.url,
                "health": service.url + (service.status_path or service.health_path),
                "links": service.links,
                "log": str(process.log_path),
            }
            for service, process in self.running
        ]

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def signals_held() -> Iterator[None]:
    """Ignore SIGINT, SIGTERM and SIGHUP meanwhile (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in _STOPPING}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


_STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def terminate_on_sigterm() -> None:
    """Make SIGTERM and SIGHUP unwind like Ctrl-C, so every ``finally`` stops what it
    started."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)  # the terminal went away
    # Also when started with SIGINT ignored (a background job of a non-interactive shell):
    # Ctrl-C or `kill -INT` must still stop what the launcher started.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def wait_forever(stack: Stack, poll_s: float = 1.0) -> tuple[Service, int] | None:
    """Sleep until a service exits on its own (returned) or KeyboardInterrupt."""
    while True:
        died = stack.died()
        if died:
            return died[0]
        time.sleep(poll_s)
