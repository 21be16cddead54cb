"""A real inference server for tests: ``payband-serving serve`` (MLServer) in a subprocess.

Started through the command line a user runs, on free loopback ports, and stopped (SIGTERM,
then SIGKILL) when the test is done, whether it passed or failed. On Linux the server also
gets SIGTERM if the test process itself dies, so no server outlives its test session.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from payband_local.ports import free_port
from payband_local.process import ServerProcess, start_server_process, wait_until_ready

__all__ = ["InferenceServer", "InferenceServerError", "inference_server"]


class InferenceServerError(RuntimeError):
    """The server did not become ready; the message ends with the tail of its log."""


@dataclass
class InferenceServer(ServerProcess):
    """A running ``payband-serving serve``: its URLs and its log."""

    model_name: str = "salary-band"
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0

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


def _ready(server: InferenceServer) -> bool:
    url = f"{server.url}/v2/models/{server.model_name}/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


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
        started = start_server_process(
            command,
            Path(tmp) / "server.log",
            {"PAYBAND_SERVING_MODEL_NAME": model_name, **(env or {})},
        )
        server = InferenceServer(
            started.process,
            started.log_path,
            model_name=model_name,
            http_port=ports["--http-port"],
            grpc_port=ports["--grpc-port"],
            metrics_port=ports["--metrics-port"],
        )
        try:
            try:
                wait_until_ready(
                    server, lambda: _ready(server), what="payband-serving", timeout=startup_timeout
                )
            except RuntimeError as error:
                raise InferenceServerError(str(error)) from None
            yield server
        finally:
            server.stop()
