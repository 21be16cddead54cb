"""A real inference server for tests: ``payband-serving serve`` (MLServer) in a subprocess.

Started through the command line a user runs, on free loopback ports, and stopped (SIGTERM,
then SIGKILL) when the test is done, whether it passed or failed. On Linux the server also
gets SIGTERM if the test process itself dies, so no server outlives its test session.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from payband_testing.checks import free_port

__all__ = ["InferenceServer", "InferenceServerError", "inference_server"]

_PR_SET_PDEATHSIG = 1
_STOP_SECONDS = 30.0


class InferenceServerError(RuntimeError):
    """The server did not become ready; the message ends with the tail of its log."""


@dataclass
class InferenceServer:
    """A running ``payband-serving serve``: its URLs and its log."""

    process: subprocess.Popen[bytes]
    model_name: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        """The V2 REST base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{self.model_name}/infer"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (MLServer stops its workers), SIGKILL if it hangs; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(_STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            # Anything left of its process group (inference workers).
            os.killpg(self.process.pid, signal.SIGKILL)
        self.stopped = True
        return self.process.returncode


# Looked up in the parent: between fork and exec the child only calls it (no dlopen, no lock).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _ready(server: InferenceServer) -> bool:
    url = f"{server.url}/v2/models/{server.model_name}/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def inference_server(
    *,
    model_uri: str | Path | None = None,
    bundle: Path | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    model_name: str = "salary-band",
    startup_timeout: float = 120.0,
) -> Iterator[InferenceServer]:
    """Run ``python -m payband_serving serve`` with ``--model-uri`` or ``--bundle`` plus
    ``args`` (e.g. ``["--workers", "2"]``), on 127.0.0.1 and free ports, until ready."""
    ports = {"--http-port": free_port(), "--grpc-port": free_port(), "--metrics-port": free_port()}
    source = ["--bundle", str(bundle)] if bundle is not None else ["--model-uri", str(model_uri)]
    command = [sys.executable, "-m", "payband_serving", "serve", *source, "--host", "127.0.0.1"]
    for option, port in ports.items():
        command += [option, str(port)]
    command += list(args)
    with tempfile.TemporaryDirectory(prefix="payband-inference-server-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PAYBAND_SERVING_MODEL_NAME": model_name, **(env or {})},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        server = InferenceServer(
            process=process,
            model_name=model_name,
            http_port=ports["--http-port"],
            grpc_port=ports["--grpc-port"],
            metrics_port=ports["--metrics-port"],
            log_path=log_path,
        )
        try:
            deadline = time.monotonic() + startup_timeout
            while not _ready(server):
                if process.poll() is not None:
                    raise InferenceServerError(
                        f"payband-serving exited with {process.returncode} before it was "
                        f"ready:\n{_tail(server.log())}"
                    )
                if time.monotonic() > deadline:
                    raise InferenceServerError(
                        f"payband-serving was not ready after {startup_timeout:.0f} s:\n"
                        f"{_tail(server.log())}"
                    )
                time.sleep(0.2)
            yield server
        finally:
            server.stop()
