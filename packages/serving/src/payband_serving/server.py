"""Run MLServer with the payband runtime, from a bundle or from a model URI."""

from __future__ import annotations

import asyncio
import gc
import logging.config
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlserver import MLServer
from mlserver.cli.serve import load_settings
from mlserver.settings import ModelParameters, ModelSettings, Settings
from mlserver.utils import get_model_uri

from payband_contracts.cli_support import bind_error
from payband_serving.explain import Explainer
from payband_serving.logs import logging_config
from payband_serving.runtime import IMPLEMENTATION
from payband_serving.settings import ServingSettings
from payband_serving.source import ModelSource, load_booster, resolve

__all__ = ["ServeError", "ServerOptions", "serve", "server_settings"]


# How long stopping (workers, metrics files) may take after the servers have stopped.
_STOP_TIMEOUT_S = 60.0


class ServeError(RuntimeError):
    """The server cannot start or stopped on its own; one readable line."""


@dataclass(frozen=True)
class ServerOptions:
    """Command-line overrides of a bundle's or the environment's server settings."""

    host: str | None = None
    http_port: int | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    parallel_workers: int | None = None
    max_batch_size: int | None = None
    max_batch_time_s: float | None = None


def server_settings(settings: ServingSettings, metrics_dir: Path) -> Settings:
    """MLServer's server settings from ours: loopback by default, JSON logs, metrics on."""
    return Settings(
        debug=False,
        host=settings.host,
        http_port=settings.http_port,
        grpc_port=settings.grpc_port,
        metrics_port=settings.metrics_port,
        metrics_dir=str(metrics_dir),
        parallel_workers=settings.parallel_workers,
        load_models_at_startup=False,
        logging_settings=logging_config(),
    )


def _model_settings(settings: ServingSettings, source: ModelSource) -> ModelSettings:
    return ModelSettings(
        name=settings.model_name,
        implementation=IMPLEMENTATION,
        max_batch_size=settings.max_batch_size,
        max_batch_time=settings.max_batch_time_s,
        parameters=ModelParameters(
            uri=str(source.folder),
            version=source.version,
            extra={
                "registered_name": source.registered_name,
                "source_uri": source.uri,
                "run_id": source.run_id,
            },
        ),
    )


def _apply(server: Settings, model: ModelSettings, options: ServerOptions) -> None:
    for field in ("host", "http_port", "grpc_port", "metrics_port", "parallel_workers"):
        value = getattr(options, field)
        if value is not None:
            setattr(server, field, value)
    if options.max_batch_size is not None:
        model.max_batch_size = options.max_batch_size
    if options.max_batch_time_s is not None:
        model.max_batch_time = options.max_batch_time_s


class _Server(MLServer):
    """MLServer that remembers whether a signal stopped it (else a model failed to load) and
    lets the caller wait until stopping is complete (workers, metrics files)."""

    signalled: int | None = None
    _stopping = False

    async def stop(self, sig: int | None = None) -> None:
        # Each signal schedules a stop (a supervisor may send SIGTERM twice); one is enough,
        # two would both remove the workers' metrics files.
        if self._stopping:
            await self.stopped.wait()
            return
        self._stopping = True
        self.signalled = sig
        try:
            await super().stop(sig)
        finally:
            self.stopped.set()

    @property
    def stopped(self) -> asyncio.Event:
        if not hasattr(self, "_stopped"):
            self._stopped = asyncio.Event()
        return self._stopped


async def _run(server_config: Settings, models: list[ModelSettings]) -> None:
    server = _Server(server_config)
    try:
        await server.start(models)
    except (OSError, RuntimeError, SystemExit):
        # uvicorn exits and gRPC raises when they cannot listen: stop the rest (workers)
        # before saying so, or they keep the process alive.
        await server.stop()
        raise ServeError("the server stopped while starting (see the log above)") from None
    # The servers return as soon as they stop listening; stop() may still be closing the
    # workers and removing their metrics files.
    await asyncio.wait_for(server.stopped.wait(), _STOP_TIMEOUT_S)
    if server.signalled is None:
        raise ServeError("the model failed to load; the server stopped (see the log above)")


def _check_ports(server_config: Settings) -> None:
    """ServeError naming the first port another process already listens on."""
    ports = (server_config.http_port, server_config.grpc_port, server_config.metrics_port)
    if len(set(ports)) != len(ports):
        raise ServeError(f"the HTTP, gRPC and metrics ports must differ, not {list(ports)}")
    for port in ports:
        if (error := bind_error(server_config.host, port)) is not None:
            raise ServeError(
                f"cannot listen on {server_config.host}:{port}: {error.strerror or error}"
            )


def _check(source: ModelSource) -> None:
    """Load the model and explain one row before the server starts, so a broken model
    fails in one line rather than at its first request."""
    explainer = Explainer(load_booster(source.folder, source.schema), source.schema)
    schema = source.schema
    row = {
        name: [schema.category_levels[name][0]]
        if name in schema.category_levels
        else [schema.integer_ranges.get(name, (0, 0))[0]]
        for name in schema.features
    }
    explainer.explain(explainer.encode(row))


async def _from_bundle(
    bundle: Path, settings: ServingSettings, work: Path
) -> tuple[Settings, list[ModelSettings]]:
    if not (bundle / "model-settings.json").is_file():
        raise ServeError(f"{bundle} is not a bundle: it has no model-settings.json")
    server_config, models = await load_settings(str(bundle))
    # load_settings puts "." and the bundle first on sys.path (to import a model class from
    # there); ours is installed, and spawned workers must not import from the working dir.
    sys.path[:] = [entry for entry in sys.path if entry not in (".", str(bundle))]
    for model in models:
        # Relative model URIs are relative to their model-settings.json, as MLServer reads them.
        uri = await get_model_uri(model)
        _check(resolve(uri, tracking_uri=settings.mlflow_tracking_uri, download_dir=work))
    return server_config, list(models)


def serve(
    settings: ServingSettings,
    *,
    bundle: Path | None = None,
    model_uri: str | None = None,
    options: ServerOptions | None = None,
) -> None:
    """Start MLServer and block until it is stopped (SIGINT or SIGTERM).

    From a bundle: its settings.json and model-settings.json. Otherwise from ``model_uri``
    (default: the settings' model URI), resolved to one exact version before the start.
    The model is loaded once before the server starts, so a broken one fails in one line.
    """
    options = options or ServerOptions()
    with tempfile.TemporaryDirectory(prefix="payband-serving-") as tmp:
        work = Path(tmp)
        metrics_dir = work / "metrics"
        metrics_dir.mkdir()
        if bundle is not None:
            server_config, models = asyncio.run(_from_bundle(bundle, settings, work / "check"))
        else:
            source = resolve(
                model_uri or settings.model_uri,
                tracking_uri=settings.mlflow_tracking_uri,
                download_dir=work / "models",
            )
            _check(source)
            server_config, models = (
                server_settings(settings, metrics_dir),
                [_model_settings(settings, source)],
            )
        server_config.load_models_at_startup = False
        server_config.debug = False
        server_config.metrics_dir = str(metrics_dir)
        server_config.logging_settings = logging_config()
        for model in models:
            _apply(server_config, model, options)
        _check_ports(server_config)
        logging.config.dictConfig(logging_config())
        logging.captureWarnings(True)
        # What is loaded by now lives as long as the process: kept out of the collector's
        # sight, full collections stay short instead of stalling random requests.
        gc.collect()
        gc.freeze()
        asyncio.run(_run(server_config, models))
