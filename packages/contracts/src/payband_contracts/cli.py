"""payband-contracts: export and check the JSON Schemas, show the feature catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from payband_contracts import __version__
from payband_contracts.catalogue import FEATURE_CATALOGUE
from payband_contracts.cli_support import add_version_option
from payband_contracts.schemas import (
    SCHEMA_VERSION,
    SchemaCheck,
    check_schemas,
    default_schema_dir,
    write_schemas,
)

app = typer.Typer(
    help="The contracts every payband process shares: JSON Schemas and the feature catalogue.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Directory of the exported schemas \\[default: packages/contracts/schemas].",
        file_okay=False,
    ),
]


def _directory(directory: Path | None) -> Path:
    if directory is not None:
        return directory
    found = default_schema_dir()
    if not found.parent.joinpath("pyproject.toml").is_file():
        typer.echo("error: not in a source checkout; pass --dir", err=True)
        raise typer.Exit(2)
    return found


def _refuse_if_blocking(check: SchemaCheck) -> None:
    if check.version_went_back:
        typer.echo(
            f"error: schema version {check.new_version} is older than the exported "
            f"{check.old_version}",
            err=True,
        )
        raise typer.Exit(1)
    if check.blocking:
        typer.echo(
            f"error: {len(check.blocking)} change(s) would break existing clients of schema "
            f"version {check.old_version}; bump the major version of SCHEMA_VERSION in "
            "payband_contracts/schemas.py to make them:",
            err=True,
        )
        for incompatibility in check.blocking:
            typer.echo(f"  {incompatibility}", err=True)
        raise typer.Exit(1)


@app.command("export-schemas")
def export_schemas(directory: DirOption = None) -> None:
    """Write the JSON Schemas and the feature catalogue, refusing breaking changes."""
    target = _directory(directory)
    _refuse_if_blocking(check_schemas(target))
    written = write_schemas(target)
    typer.echo(
        f"exported schema version {SCHEMA_VERSION} to {target}: {len(written)} file(s) changed"
    )


@app.command("check-schemas")
def check(directory: DirOption = None) -> None:
    """Exit 1 if the exported files differ from the code or a change would break clients."""
    target = _directory(directory)
    result = check_schemas(target)
    _refuse_if_blocking(result)
    if result.stale_files:
        typer.echo(
            f"error: exported schemas are out of date ({', '.join(result.stale_files)}); "
            "run `uv run payband-contracts export-schemas`",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"ok: schemas in {target} match the code (version {SCHEMA_VERSION})")


@app.command()
def catalogue() -> None:
    """Print the feature catalogue: every feature, its label and its rule."""
    for spec in FEATURE_CATALOGUE.features:
        flag = "  [protected]" if spec.protected else ""
        typer.echo(f"{spec.name}: {spec.label} ({spec.kind}){flag}")
        typer.echo(f"    {spec.rule}")


add_version_option(
    app,
    f"payband-contracts {__version__} (schema version {SCHEMA_VERSION})",
    "The contracts every payband process shares.",
)


def main() -> None:
    app()
