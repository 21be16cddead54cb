"""Export the features mart to parquet and commit it to the versioned store.

The export streams from PostgreSQL in batches (server-side cursor) so that a multi-state
PUMS build does not have to fit in memory twice. The commit metadata carries the row
counts per band, sex and race: what a data-governance review looks at first.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from psycopg.errors import UndefinedTable

from payband_contracts import FeatureName, SalaryBands
from payband_data.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import psycopg

    from payband_data.store import DatasetVersion, VersionedStore

FEATURES_FILE = "features.parquet"
FEATURES_TABLE = "marts.features"

_INTEGER_FEATURES = {FeatureName.AGE, FeatureName.HOURS_PER_WEEK}

# The parquet schema of a features snapshot: what training reads. Integers are small on purpose.
FEATURES_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        *(
            pa.field(str(name), pa.int16() if name in _INTEGER_FEATURES else pa.string(), False)
            for name in FeatureName
        ),
        pa.field("band", pa.int16(), nullable=False),
        pa.field("band_label", pa.string(), nullable=False),
        pa.field("dataset_uri", pa.string(), nullable=False),
    ]
)

BATCH_ROWS = 100_000


class SnapshotError(DataError):
    """The features mart cannot be exported (missing, empty, or mixing raw versions)."""


@dataclass
class FeatureStatistics:
    """Row counts of a snapshot, by band, sex and race, and the raw versions it came from."""

    rows: int = 0
    per_band: Counter[str] = field(default_factory=Counter)
    per_sex: Counter[str] = field(default_factory=Counter)
    per_race: Counter[str] = field(default_factory=Counter)
    raw_uris: set[str] = field(default_factory=set)
    bands: set[tuple[int, str]] = field(default_factory=set)

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        bands, labels = batch.column("band").to_pylist(), batch.column("band_label").to_pylist()
        self.bands.update(zip(bands, labels, strict=True))
        for counter, column in (
            (self.per_band, "band_label"),
            (self.per_sex, "sex"),
            (self.per_race, "race"),
        ):
            counter.update(batch.column(column).to_pylist())
        self.raw_uris.update(batch.column("dataset_uri").unique().to_pylist())

    def metadata(self) -> dict[str, str]:
        """Commit metadata: counts as compact JSON objects with sorted keys."""

        def encode(counter: Counter[str]) -> str:
            return json.dumps(dict(sorted(counter.items())), separators=(",", ":"))

        return {
            "row_count": str(self.rows),
            "rows_per_band": encode(self.per_band),
            "rows_per_sex": encode(self.per_sex),
            "rows_per_race": encode(self.per_race),
            "raw_uri": ",".join(sorted(self.raw_uris)),
        }


def _batches(conn: psycopg.Connection, source: str) -> Iterator[pa.RecordBatch]:
    columns = ", ".join(FEATURES_SCHEMA.names)
    # A named cursor is server-side: rows arrive BATCH_ROWS at a time.
    with conn.cursor(name="payband_features_export") as cursor:
        cursor.itersize = BATCH_ROWS
        cursor.execute(
            f"SELECT {columns} FROM {FEATURES_TABLE} WHERE source = %s ORDER BY record_id",  # noqa: S608 - fixed identifiers
            (source,),
        )
        while rows := cursor.fetchmany(BATCH_ROWS):
            yield pa.RecordBatch.from_pylist(
                [dict(zip(FEATURES_SCHEMA.names, row, strict=True)) for row in rows],
                schema=FEATURES_SCHEMA,
            )


def export_features(conn: psycopg.Connection, source: str, path: Path) -> FeatureStatistics:
    """Write the features of one source to a parquet file; returns its statistics."""
    statistics = FeatureStatistics()
    with conn.transaction():
        try:
            batches = _batches(conn, source)
            with pq.ParquetWriter(path, FEATURES_SCHEMA, compression="zstd") as writer:
                for batch in batches:
                    statistics.add(batch)
                    writer.write_batch(batch)
        except UndefinedTable as exc:
            raise SnapshotError(
                f"{FEATURES_TABLE} does not exist: build the features first (payband-data build)"
            ) from exc
    if statistics.rows == 0:
        raise SnapshotError(
            f"{FEATURES_TABLE} has no rows for source {source!r}: "
            f"build the features for {source} first (payband-data build --source {source})"
        )
    if len(statistics.raw_uris) != 1:
        raise SnapshotError(
            f"{FEATURES_TABLE} mixes raw versions {sorted(statistics.raw_uris)}: rebuild it"
        )
    return statistics


def commit_snapshot(
    conn: psycopg.Connection,
    store: VersionedStore,
    *,
    source: str,
    band_edges: Sequence[int],
    work_dir: Path,
) -> DatasetVersion:
    """Export the features of `source` and commit them as `features/<source>`.

    Year and states come from the raw version the features were built from, so the
    snapshot's metadata states its lineage rather than what a caller claims.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / FEATURES_FILE
    statistics = export_features(conn, source, path)
    expected = SalaryBands(edges_usd=tuple(float(edge) for edge in band_edges)).labels
    if unexpected := sorted(
        f"{index} {label}"
        for index, label in statistics.bands
        if index >= len(expected) or expected[index] != label
    ):
        raise SnapshotError(
            f"{FEATURES_TABLE} has bands {unexpected} that the edges {list(band_edges)} do not "
            "make: build the features again with these edges"
        )
    (raw_uri,) = statistics.raw_uris
    raw = store.get(raw_uri)
    return store.commit(
        f"features/{source}",
        {FEATURES_FILE: path},
        {
            "source": source,
            "year": raw.metadata.get("year", ""),
            "states": raw.metadata.get("states", ""),
            "band_edges_usd": json.dumps(list(band_edges)),
            **statistics.metadata(),
        },
        message=f"features/{source}: {statistics.rows} rows",
    )
