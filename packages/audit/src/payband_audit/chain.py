"""The hash chain: canonical serialisation of a record and the chained SHA-256.

Each record's hash is SHA-256 over the previous record's hash followed by the record's
contents: the canonical JSON of its kind and scalar columns, then the text of each JSON column
exactly as stored. JSON columns have PostgreSQL's `json` type, which keeps the text as given,
so the verifier hashes the very bytes the writer hashed (`jsonb` would reformat them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from uuid import UUID

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class RecordKind:
    """One record table: its name and its content columns with their SQL types."""

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]

    @cached_property
    def json_columns(self) -> frozenset[str]:
        return frozenset(c for c, t in zip(self.columns, self.types, strict=True) if t == "json")

    @property
    def copy_sql(self) -> str:
        columns = ", ".join(("seq", *self.columns, "prev_hash", "record_hash"))
        return f"COPY audit.{self.table} ({columns}) FROM STDIN"

    @property
    def select_sql(self) -> str:
        # JSON columns as their stored text, which is what was hashed.
        selected = [f"{c}::text" if c in self.json_columns else c for c in self.columns]
        columns = ", ".join(("seq", *selected, "prev_hash", "record_hash"))
        # Table and column names are this module's constants, never input.
        return f"SELECT {columns} FROM audit.{self.table} ORDER BY seq"  # noqa: S608


REQUEST = RecordKind(
    "prediction_requests",
    (
        "prediction_id",
        "received_at",
        "caller",
        "request_id",
        "model_name",
        "model_version",
        "candidate",
        "raw_request",
    ),
    ("uuid", "timestamptz", "text", "text", "text", "text", "json", "text"),
)
RESPONSE = RecordKind(
    "prediction_responses",
    (
        "prediction_id",
        "recorded_at",
        "band_index",
        "band",
        "probabilities",
        "explanation",
    ),
    ("uuid", "timestamptz", "integer", "json", "json", "json"),
)
ERROR = RecordKind(
    "prediction_errors",
    ("prediction_id", "recorded_at", "status_code", "error", "upstream_body"),
    ("uuid", "timestamptz", "integer", "json", "text"),
)
OUTCOME = RecordKind(
    "outcomes",
    ("prediction_id", "recorded_at", "recorded_by", "band_index", "observed_at", "source"),
    ("uuid", "timestamptz", "text", "integer", "timestamptz", "text"),
)
REVIEW = RecordKind(
    "reviews",
    (
        "review_id",
        "prediction_id",
        "recorded_at",
        "reviewer",
        "decision",
        "band_index",
        "reason",
    ),
    ("uuid", "uuid", "timestamptz", "text", "text", "integer", "text"),
)
KINDS: tuple[RecordKind, ...] = (REQUEST, RESPONSE, ERROR, OUTCOME, REVIEW)


def _default(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"timestamp without time zone in an audit record: {value}")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} in an audit record")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTC timestamps with microseconds, UUIDs as strings."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_default,
    )


def content_of(kind: RecordKind, values: Sequence[Any]) -> str:
    """The hashed contents of one record, from its column values in `kind.columns` order.

    JSON columns are given as the JSON text that is stored, None for SQL NULL.
    """
    scalars: dict[str, Any] = {"kind": kind.table}
    texts = []
    json_columns = kind.json_columns
    for column, value in zip(kind.columns, values, strict=True):
        if column in json_columns:
            texts.append("null" if value is None else value)
        elif isinstance(value, UUID | datetime):
            scalars[column] = _default(value)
        else:
            scalars[column] = value
    return "\n".join((canonical_json(scalars), *texts))


def chain_hash(prev_hash: str, content: str) -> str:
    return hashlib.sha256(f"{prev_hash}{content}".encode()).hexdigest()
