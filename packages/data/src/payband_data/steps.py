"""The steps of the data pipeline, shared by the CLI and the Dagster code location.

ingest: source files -> raw commit in the versioned store
load: raw commit (by URI) -> PostgreSQL table raw.<source>, through COPY
build: dbt seed + build (staging -> candidates -> features, with every dbt test)
snapshot: features mart -> parquet -> features commit in the versioned store
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from payband_data.errors import DataError
from payband_data.settings import DataSettings
from payband_data.store import DatasetVersion, open_store

if TYPE_CHECKING:
    from payband_data.sources import RawDataset
    from payband_data.transform import DbtResult

SOURCES = ("adult", "pums")
DEFAULT_PUMS_YEAR = 2023

ProgressCallback = Callable[..., None]


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise DataError(f"source {source!r} is not one of: {', '.join(SOURCES)}")
    return source


def parse_states(text: str | Sequence[str]) -> tuple[str, ...]:
    """'ca, ny' or ['CA', 'NY'] -> ('CA', 'NY'); the PUMS source validates the codes."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(item.strip().upper() for item in items if item.strip())


def fetch_source(
    source: str,
    settings: DataSettings,
    work_dir: Path,
    *,
    year: int | None = None,
    states: Sequence[str] = (),
    progress: ProgressCallback | None = None,
) -> RawDataset:
    """The raw files of a source (PUMS: downloaded, cached, filtered)."""
    if check_source(source) == "adult":
        if year is not None or states:
            raise DataError(
                "year and states apply to the pums source only: Adult is one 1994 census extract"
            )
        from payband_data.sources.adult import adult_dataset

        return adult_dataset()
    if not states:
        raise DataError("the pums source needs at least one state, e.g. --states CA")
    from payband_data.sources.pums import PumsSource

    pums = PumsSource.from_settings(
        settings, year=year or DEFAULT_PUMS_YEAR, states=states, progress=progress
    )
    return pums.fetch(work_dir)


def ingest(
    source: str,
    settings: DataSettings,
    *,
    year: int | None = None,
    states: Sequence[str] = (),
    progress: ProgressCallback | None = None,
) -> DatasetVersion:
    """Fetch a source and commit its raw files; the same files give the same version."""
    with (
        open_store(settings) as store,
        tempfile.TemporaryDirectory(prefix="payband-ingest-") as tmp,
    ):
        raw = fetch_source(source, settings, Path(tmp), year=year, states=states, progress=progress)
        return store.commit(
            raw.dataset,
            raw.files,
            raw.metadata,
            message=f"{raw.dataset}: {raw.metadata['row_count']} rows",
        )


def latest_raw_uri(source: str, settings: DataSettings) -> str:
    """The URI of the newest raw version of a source; a clear error if there is none."""
    with open_store(settings) as store:
        version = store.latest(f"raw/{check_source(source)}")
    if version is None:
        raise DataError(
            f"the store has no raw/{source} version: run `payband-data ingest --source {source}`"
        )
    return version.uri


def load(raw_uri: str, settings: DataSettings, *, source: str | None = None) -> int:
    """Load a raw commit into raw.<source> (replacing what was there); returns the row count.

    With `source`, the version must be a raw version of that source.
    """
    from payband_data.db import connect
    from payband_data.load import load_raw

    with open_store(settings) as store, tempfile.TemporaryDirectory(prefix="payband-load-") as tmp:
        version = store.get(raw_uri)
        if source is not None and version.dataset != f"raw/{check_source(source)}":
            raise DataError(f"{raw_uri} is a {version.dataset} version, not raw/{source}")
        source = check_source(version.metadata.get("source", ""))
        files = store.fetch(raw_uri, Path(tmp))
        with connect(settings.database_url) as conn:
            return load_raw(conn, source, files, raw_uri)


# One build at a time per database: the raw tables, the dbt models and dbt's target are shared.
# Not the key of load.py's schema lock, which is taken while this one is held.
_BUILD_LOCK_KEY = 0x70626275696C64  # "pbbuild"


@contextmanager
def exclusive_build(
    settings: DataSettings, waiting: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock for payband builds; `waiting` is called if it is busy."""
    from payband_data.db import connect

    with connect(settings.database_url, autocommit=True) as conn:
        acquired = conn.execute("SELECT pg_try_advisory_lock(%s)", (_BUILD_LOCK_KEY,)).fetchone()
        if not (acquired and acquired[0]):
            if waiting is not None:
                waiting()
            conn.execute("SELECT pg_advisory_lock(%s)", (_BUILD_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_BUILD_LOCK_KEY,))


def build(source: str, band_edges: Sequence[int], settings: DataSettings) -> DbtResult:
    """dbt seed and build for a source and band edges; every dbt test runs."""
    from payband_data.transform import build_features

    return build_features(
        database_url=settings.database_url,
        source=check_source(source),
        band_edges=list(band_edges),
        work_dir=settings.dbt_work_dir,
    )


def snapshot(source: str, band_edges: Sequence[int], settings: DataSettings) -> DatasetVersion:
    """Export the features mart of a source and commit it as features/<source>."""
    from payband_data.db import connect
    from payband_data.snapshot import commit_snapshot

    with (
        open_store(settings) as store,
        tempfile.TemporaryDirectory(prefix="payband-snapshot-") as tmp,
        connect(settings.database_url) as conn,
    ):
        return commit_snapshot(
            conn, store, source=check_source(source), band_edges=band_edges, work_dir=Path(tmp)
        )
