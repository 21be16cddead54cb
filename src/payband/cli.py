"""The `payband` command: the umbrella over every payband package."""

from __future__ import annotations

import typer

from payband import __version__
from payband_contracts.cli_support import add_version_option

app = typer.Typer(
    help="payband: salary-band prediction built as a high-risk AI system under the EU AI Act.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


add_version_option(
    app,
    f"payband {__version__}",
    "payband: salary-band prediction built as a high-risk AI system under the EU AI Act.",
)


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
