"""What every payband command line shares: the --version option and one-line errors.

Only this module and the CLI import typer; the schema modules never do (a test checks).
"""

import socket
from collections.abc import Callable
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from payband_contracts.errors import first_line

T = TypeVar("T")


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


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with one `error: ...` line on stderr and exit `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run_guarded(action: Callable[[], T], errors: tuple[type[BaseException], ...]) -> T:
    """Run `action`; `errors` (a user can cause them) and OSErrors end in one `error:` line."""
    try:
        return action()
    except errors as error:
        fail(first_line(error))
    except OSError as error:
        fail(f"{error.strerror or error}: {error.filename}" if error.filename else str(error))


def settings_problems(error: ValidationError) -> str:
    """A settings validation error in one line: `field: message; field: message`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()
    )


def bind_error(host: str, port: int) -> OSError | None:
    """What binding `host:port` fails with now, or None if a server could listen there.

    Binds as servers do (SO_REUSEADDR), so connections of a server that just stopped (in
    TIME_WAIT) do not count as holding the port.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error
    return None
