"""What every payband command line shares: the --version option."""

from typing import Annotated

import typer


def add_version_option(app: typer.Typer, version_text: str, help_text: str) -> None:
    """Give `app` a `--version` option that prints `version_text`; `help_text` heads --help."""

    def show_version(value: bool) -> None:
        if value:
            typer.echo(version_text)
            raise typer.Exit()

    def main_options(
        version: Annotated[
            bool,
            typer.Option(
                "--version", callback=show_version, is_eager=True, help="Show the version."
            ),
        ] = False,
    ) -> None:
        pass

    main_options.__doc__ = help_text
    app.callback()(main_options)
