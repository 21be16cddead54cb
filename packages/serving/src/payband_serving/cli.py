"""payband-serving: run the inference server and build deployable bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from payband_contracts.cli_support import (
    add_version_option,
    fail,
    run_guarded,
    settings_problems,
)
from payband_serving import __version__

HELP = "The serving tier of payband: MLServer with exact explanations, bundles per version."
app = typer.Typer(
    help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
add_version_option(app, f"payband-serving {__version__}", HELP)


def _settings(**overrides: Any) -> Any:
    from payband_serving.settings import ServingSettings

    try:
        given = {key: value for key, value in overrides.items() if value is not None}
        return ServingSettings(**given)
    except ValidationError as error:
        fail(f"invalid setting: {settings_problems(error)}")


def _errors() -> tuple[type[BaseException], ...]:
    from payband_serving.bundle import BundleError
    from payband_serving.server import ServeError
    from payband_serving.source import ModelSourceError

    return (BundleError, ModelSourceError, ServeError)


@app.command()
def serve(
    bundle: Annotated[
        Path | None,
        typer.Option(help="Serve this bundle (settings.json + model-settings.json + model/)."),
    ] = None,
    model_uri: Annotated[
        str | None,
        typer.Option(
            help="Serve this model: models:/name@alias, models:/name/version, runs:/... or a "
            "model directory \\[default: PAYBAND_SERVING_MODEL_URI]"
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    http_port: Annotated[int | None, typer.Option(help="V2 REST port.")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="V2 gRPC port.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus /metrics port.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Parallel inference worker processes (0: in-process).")
    ] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Adaptive batching: requests merged at most (1: off).")
    ] = None,
    max_batch_time: Annotated[
        float | None, typer.Option(help="Adaptive batching: seconds to wait for a batch.")
    ] = None,
) -> None:
    """Start MLServer with the payband runtime; stops cleanly on Ctrl-C or SIGTERM."""
    if bundle is not None and model_uri is not None:
        fail("give either --bundle or --model-uri, not both")
    given = {
        "host": host,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": workers,
        "max_batch_size": max_batch_size,
        "max_batch_time_s": max_batch_time,
    }
    # The options are validated like the environment's values (ports in range, ...), before
    # the server's heavy imports.
    settings = _settings(**given)
    from payband_serving.server import ServerOptions
    from payband_serving.server import serve as run_server

    # What the command line or the environment sets overrides a bundle's settings.json.
    options = ServerOptions(
        **{name: getattr(settings, name) for name in given if name in settings.model_fields_set}
    )
    run_guarded(
        lambda: run_server(settings, bundle=bundle, model_uri=model_uri, options=options),
        _errors(),
    )


@app.command()
def bundle(
    model_uri: Annotated[
        str | None,
        typer.Option(
            help="The model to bundle \\[default: PAYBAND_SERVING_MODEL_URI, the champion]"
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Directory for the bundle \\[default: PAYBAND_SERVING_BUNDLE_DIR]"),
    ] = None,
    image: Annotated[
        bool, typer.Option(help="Build the image when a container engine is available.")
    ] = True,
) -> None:
    """Build a deployable bundle for one model version (and its image, if possible)."""
    import tempfile

    from payband_serving.bundle import build_bundle, build_image, model_revision
    from payband_serving.source import resolve

    settings = _settings()

    def build() -> None:
        with tempfile.TemporaryDirectory(prefix="payband-bundle-") as work:
            source = resolve(
                model_uri or settings.model_uri,
                tracking_uri=settings.mlflow_tracking_uri,
                download_dir=Path(work),
            )
            revision = model_revision(source, tracking_uri=settings.mlflow_tracking_uri)
            built = build_bundle(source, settings, output_dir=output, revision=revision)
        typer.echo(f"bundle: {built.directory}")
        typer.echo(f"model: {source.version_uri} (version {built.manifest.model.version})")
        typer.echo(f"image tag: {built.image_tag}")
        if image:
            result = build_image(built, settings)
            typer.echo(("image built: " if result.built else "image not built: ") + result.message)

    run_guarded(build, _errors())


@app.command()
def verify(bundle: Annotated[Path, typer.Argument(help="The bundle directory.")]) -> None:
    """Check a bundle's files against the checksums in its manifest."""
    from payband_serving.bundle import verify_bundle

    manifest = run_guarded(lambda: verify_bundle(bundle), _errors())
    typer.echo(f"{bundle}: {len(manifest.files)} files match the manifest")


def main() -> None:
    app()
