"""The `payband` command: the umbrella over every payband package."""

from __future__ import annotations

from typing import Annotated

import typer

from payband import __version__

app = typer.Typer(
    help="payband: salary-band prediction built as a high-risk AI system under the EU AI Act.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"payband {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """payband: salary-band prediction built as a high-risk AI system under the EU AI Act."""


@app.command()
def demo() -> None:
    """Run the whole lifecycle on embedded defaults (ingest, train, serve, audit, monitor)."""
    typer.echo(
        "payband demo: not available yet; the packages are in place, the lifecycle that "
        "joins them has not landed (see the README's status).",
        err=True,
    )
    raise typer.Exit(1)


def main() -> None:
    app()
