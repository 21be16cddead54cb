"""payband-data: ingest census sources, build features with dbt, snapshot and list versions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from payband_contracts.cli_support import add_version_option, fail
from payband_contracts.errors import first_line
from payband_data import __version__
from payband_data.errors import DataError
from payband_data.settings import DataSettings
from payband_data.steps import SOURCES, parse_states
from payband_data.store import DatasetVersion

app = typer.Typer(
    help="The data layer of payband: census sources, versioned store, dbt features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
add_version_option(
    app,
    f"payband-data {__version__}",
    "The data layer of payband: census sources, versioned store, dbt features.",
)

T = TypeVar("T")
console = Console(stderr=True)

SourceOption = Annotated[
    str, typer.Option("--source", help=f"Census source: {' or '.join(SOURCES)}.")
]
YearOption = Annotated[
    int | None,
    typer.Option("--year", help="PUMS survey year (2018 or later, not 2020) \\[default: 2023]."),
]
StatesOption = Annotated[
    str, typer.Option("--states", help="PUMS states, comma-separated postal codes, e.g. CA,NY.")
]
EdgesOption = Annotated[
    str,
    typer.Option(
        "--band-edges",
        help="Ascending salary band edges in USD, comma-separated (Adult: 50000 only).",
    ),
]


def _settings() -> DataSettings:
    try:
        return DataSettings()
    except ValidationError as error:
        problems = "; ".join(
            f"PAYBAND_DATA_{str(e['loc'][0]).upper()}: {e['msg']}" for e in error.errors()
        )
        fail(f"invalid setting: {problems}")


def _run(action: Callable[[], T]) -> T:
    """Run `action`; an error a user can cause ends in one `error:` line, not a traceback."""
    from payband_data.transform import TransformError

    try:
        return action()
    except TransformError as error:
        fail(str(error))  # one line per failed dbt node
    except (DataError, ValueError) as error:
        fail(first_line(error))
    except OSError as error:
        fail(f"{error.strerror or error}: {error.filename}" if error.filename else str(error))


@contextmanager
def _exclusive(settings: DataSettings) -> Iterator[None]:
    """One build or snapshot per database at a time; say so when waiting for another."""
    from payband_data.steps import exclusive_build

    def waiting() -> None:
        console.print("another payband-data build holds the database; waiting for it")

    try:
        with exclusive_build(settings, waiting):
            yield
    except DataError as error:  # the database cannot be reached; what ran inside used _run
        fail(first_line(error))


def _edges(band_edges: str) -> tuple[int, ...]:
    try:
        return tuple(int(edge) for edge in band_edges.split(",") if edge.strip())
    except ValueError:
        fail(f"--band-edges: {band_edges!r} is not a comma-separated list of whole USD amounts")


_HIDDEN_METADATA = {"row_count", "payband_version", "sha256", "dataset"}


def _describe(version: DatasetVersion) -> str:
    """One line per version: URI, time, rows, then the metadata worth reading."""
    extra = " ".join(
        f"{key}={value}"
        for key, value in sorted(version.metadata.items())
        if key not in _HIDDEN_METADATA and value
    )
    created = version.created_at.isoformat(timespec="seconds")
    return f"{version.uri}  {created}  {version.metadata.get('row_count', '?')} rows  {extra}"


@app.command()
def ingest(
    source: SourceOption = "adult",
    year: YearOption = None,
    states: StatesOption = "",
) -> None:
    """Fetch a source and commit its raw records to the versioned store; prints the URI."""
    from payband_data.sources.pums import rich_progress
    from payband_data.steps import ingest as run_ingest

    settings = _settings()
    with rich_progress(console) as progress:
        version = _run(
            lambda: run_ingest(
                source, settings, year=year, states=parse_states(states), progress=progress
            )
        )
    typer.echo(version.uri)


@app.command()
def build(
    source: SourceOption = "adult",
    band_edges: EdgesOption = "50000",
    raw_uri: Annotated[
        str | None,
        typer.Option(
            "--raw-uri", help="Raw version to load \\[default: the newest of the source]."
        ),
    ] = None,
) -> None:
    """Load a raw version into PostgreSQL (COPY), then dbt: seeds, models and every test."""
    from payband_data.steps import build as run_build
    from payband_data.steps import latest_raw_uri, load
    from payband_data.transform import validate_band_edges

    edges = _run(lambda: validate_band_edges(source, _edges(band_edges)))
    settings = _settings()
    uri = raw_uri or _run(lambda: latest_raw_uri(source, settings))
    with _exclusive(settings):
        with console.status(f"loading {uri}"):
            rows = _run(lambda: load(uri, settings, source=source))
        typer.echo(f"loaded {rows} rows of {uri}")
        with console.status("dbt seed and build"):
            result = _run(lambda: run_build(source, edges, settings))
    typer.echo(str(result))


@app.command()
def snapshot(
    source: SourceOption = "adult",
    band_edges: EdgesOption = "50000",
) -> None:
    """Export the built features to parquet and commit them; prints the URI."""
    from payband_data.steps import snapshot as run_snapshot
    from payband_data.transform import validate_band_edges

    edges = _run(lambda: validate_band_edges(source, _edges(band_edges)))
    settings = _settings()
    with _exclusive(settings), console.status("exporting features"):
        version = _run(lambda: run_snapshot(source, edges, settings))
    typer.echo(version.uri)


@app.command()
def versions(
    dataset: Annotated[
        str | None,
        typer.Argument(help="Dataset, e.g. raw/adult or features/pums \\[default: all]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the versions in the store, newest first, with their metadata."""
    from payband_data.store import open_store

    settings = _settings()

    def listed() -> list[DatasetVersion]:
        with open_store(settings) as store:
            return store.versions(dataset)

    for version in _run(listed):
        if as_json:
            typer.echo(
                json.dumps({**asdict(version), "created_at": version.created_at.isoformat()})
            )
        else:
            typer.echo(_describe(version))


def main() -> None:
    app()
