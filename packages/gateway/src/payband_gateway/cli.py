"""payband-gateway: serve the public API and make API keys."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from payband_contracts.cli_support import add_version_option, fail, run_guarded, settings_problems
from payband_gateway import __version__

HELP = "The public API of payband: validated, explained, audited predictions."
app = typer.Typer(
    help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
add_version_option(app, f"payband-gateway {__version__}", HELP)
keys_app = typer.Typer(help="Make API keys and their hashes.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _settings(**overrides: Any) -> Any:
    from payband_gateway.settings import GatewaySettings

    try:
        return GatewaySettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        fail(f"invalid setting: {settings_problems(error)}")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on \\[default: 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on \\[default: 8000].")] = None,
    inference_url: Annotated[
        str | None,
        typer.Option(help="MLServer's V2 REST base URL \\[default: http://127.0.0.1:8080]."),
    ] = None,
) -> None:
    """Serve the API until Ctrl-C or SIGTERM (configuration: PAYBAND_GATEWAY_*, PAYBAND_AUDIT_*)."""
    from payband_gateway.server import ServeError
    from payband_gateway.server import serve as run

    settings = _settings(host=host, port=port, inference_url=inference_url)
    run_guarded(lambda: run(settings), (ServeError,))


@keys_app.command("new")
def new_key(
    name: Annotated[str, typer.Option(help="Who the key is for, e.g. hr-tool.")],
    role: Annotated[
        list[str], typer.Option(help="A role: predict, review, audit or admin (repeatable).")
    ],
) -> None:
    """Make a key: print it once (give it to its user) and the entry to configure."""
    from payband_gateway.keys import ApiKey, hash_key, new_key

    key = new_key()
    try:
        entry = ApiKey(name=name, roles=frozenset(role), sha256=hash_key(key))  # type: ignore[arg-type]
    except ValidationError as error:
        fail(f"invalid key: {settings_problems(error)}")
    typer.echo(f"key (shown once; store only the hash): {key}")
    typer.echo("add to PAYBAND_GATEWAY_API_KEYS (a JSON list) or the key file:")
    typer.echo(json.dumps(entry.model_dump(mode="json") | {"roles": sorted(entry.roles)}))


@keys_app.command("hash")
def hash_command() -> None:
    """Print the SHA-256 of a key read from standard input."""
    from payband_gateway.keys import hash_key

    key = sys.stdin.readline().strip()
    if not key:
        fail("no key on standard input")
    typer.echo(hash_key(key))


def main() -> None:
    app()
