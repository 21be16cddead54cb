"""ACS PUMS 1-year person files: download per state, cache with checksums, filter to persons.csv.

The census publishes one zip per state (``<base>/<year>/1-Year/csv_p<state>.zip``, the layout
folktables uses) holding ``psam_p<fips>.csv`` with ~290 columns. ``PumsSource.fetch`` keeps the
columns in ``PUMS_COLUMNS`` and the persons that pass the folktables income filter.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from payband_data.sources import RawDataset, SourceError

if TYPE_CHECKING:
    from rich.console import Console

    from payband_data.settings import DataSettings

__all__ = [
    "FIRST_YEAR",
    "PUMS_COLUMNS",
    "US_STATES",
    "ProgressCallback",
    "PumsSource",
    "check_year",
    "normalise_states",
    "rich_progress",
]

log = logging.getLogger(__name__)

PUMS_COLUMNS: tuple[str, ...] = (
    "YEAR", "SERIALNO", "SPORDER", "ST", "AGEP", "COW", "SCHL", "MAR", "OCCP", "RAC1P", "SEX",
    "POBP", "WKHP", "WAGP", "PINCP", "PWGTP",
)  # fmt: skip
US_STATES: frozenset[str] = frozenset((
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN",
    "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH",
    "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "PR", "RI", "SC", "SD", "TN", "TX",
    "UT", "VT", "VA", "WA", "WV", "WI", "WY",
))  # fmt: skip
# OCCP codes changed in 2018 and payband's occupation mapping follows the 2018 codes.
FIRST_YEAR = 2018

# progress(state, bytes_done, bytes_total or None when the server sends no Content-Length)
ProgressCallback = Callable[[str, int, int | None], None]

_MAX_BACKOFF_S = 10.0
_RETRY_STATUSES = frozenset({408, 429})
_FILE_COLUMNS = PUMS_COLUMNS[1:]  # the census files have no YEAR: it is the year requested
_SCHEMA = pa.schema(
    [(name, pa.string() if name == "SERIALNO" else pa.int64()) for name in PUMS_COLUMNS]
)
_READ = pcsv.ReadOptions(block_size=8 << 20)
_CONVERT = pcsv.ConvertOptions(
    include_columns=list(_FILE_COLUMNS),
    column_types={name: _SCHEMA.field(name).type for name in _FILE_COLUMNS},
    null_values=[""],
    strings_can_be_null=False,
)
_WRITE = pcsv.WriteOptions(include_header=False, quoting_style="none")


class _Retry(Exception):
    """A failed attempt worth repeating (network error, 5xx, truncated or corrupt body)."""


def check_year(year: int, *, today: date | None = None) -> int:
    """``year`` if the census publishes standard 1-year PUMS files for it, else SourceError."""
    latest = (today or date.today()).year - 1
    if isinstance(year, bool) or not isinstance(year, int):
        raise SourceError(f"PUMS year must be an integer such as 2019, got {year!r}")
    if year < FIRST_YEAR:
        raise SourceError(
            f"PUMS year {year} is not supported: occupation codes (OCCP) changed in 2018 and "
            f"payband's occupation mapping follows them, so the year must be {FIRST_YEAR} or later"
        )
    if year == 2020:
        raise SourceError(
            "PUMS year 2020 is not supported: the 2020 1-year release was experimental and is "
            "not published as standard files; choose 2019 or 2021 or later"
        )
    if year > latest:
        raise SourceError(
            f"PUMS year {year} is not released: 1-year files for a survey year appear the "
            f"following autumn, so the latest possible year is {latest}"
        )
    return year


def normalise_states(states: Sequence[str] | str) -> tuple[str, ...]:
    """Upper-case, deduplicated, sorted postal codes; a string may list them comma-separated."""
    items = states.split(",") if isinstance(states, str) else states
    codes = {str(item).strip().upper() for item in items} - {""}
    if not codes:
        raise SourceError("no state given: name at least one US postal code, e.g. CA")
    unknown = sorted(codes - US_STATES)
    if unknown:
        raise SourceError(
            f"unknown state {', '.join(unknown)}: use US postal codes (the 50 states, DC or PR)"
        )
    return tuple(sorted(codes))


class PumsSource:
    """The PUMS person records of one survey year and some states.

    ``retries`` is the number of further attempts after a failed download (waiting
    ``backoff_s * 2**n``, capped); ``progress`` is called as bytes arrive, see
    ``ProgressCallback``. Pass ``client`` to use your own httpx client (then ``timeout_s`` is
    its business).
    """

    def __init__(
        self,
        year: int,
        states: Sequence[str] | str,
        *,
        base_url: str,
        cache_dir: Path,
        retries: int = 3,
        timeout_s: float = 60.0,
        backoff_s: float = 0.2,
        progress: ProgressCallback | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.year = check_year(year)
        self.states = normalise_states(states)
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(cache_dir) / str(self.year)
        self.retries = max(0, retries)
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._progress = progress
        self._client = client

    @classmethod
    def from_settings(
        cls,
        settings: DataSettings,
        year: int,
        states: Sequence[str] | str,
        *,
        progress: ProgressCallback | None = None,
        client: httpx.Client | None = None,
    ) -> PumsSource:
        """A source configured by the PAYBAND_DATA_PUMS_* settings."""
        return cls(
            year,
            states,
            base_url=settings.pums_base_url,
            cache_dir=settings.pums_cache_dir,
            retries=settings.pums_retries,
            timeout_s=settings.pums_timeout_s,
            progress=progress,
            client=client,
        )

    def url(self, state: str) -> str:
        return f"{self.base_url}/{self.year}/1-Year/csv_p{state.lower()}.zip"

    def archives(self) -> dict[str, Path]:
        """The verified zip of every state, from the cache or freshly downloaded."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        paths = {state: self._cached(state) for state in self.states}
        missing = [state for state, path in paths.items() if path is None]
        if missing:
            with self._http() as client:
                for state in missing:
                    paths[state] = self._download(client, state)
        return {state: path for state, path in paths.items() if path is not None}

    def fetch(self, work_dir: Path) -> RawDataset:
        """Download (or reuse) every state and write the filtered ``persons.csv`` to work_dir."""
        archives = self.archives()
        work_dir.mkdir(parents=True, exist_ok=True)
        persons = work_dir / "persons.csv"
        rows_read = rows_kept = 0
        with persons.open("wb") as sink:
            # Written by hand: Arrow would quote the header names.
            sink.write((",".join(PUMS_COLUMNS) + "\n").encode())
            with pcsv.CSVWriter(sink, _SCHEMA, write_options=_WRITE) as writer:
                for path in archives.values():
                    read, kept = _filter_persons(path, self.year, writer)
                    rows_read, rows_kept = rows_read + read, rows_kept + kept
        return RawDataset(
            source="pums",
            files={"persons.csv": persons},
            metadata={
                "source": "pums",
                "year": str(self.year),
                "states": ",".join(self.states),
                "row_count": str(rows_kept),
                "rows_read": str(rows_read),
            },
        )

    def _http(self) -> contextlib.AbstractContextManager[httpx.Client]:
        if self._client is not None:
            return contextlib.nullcontext(self._client)
        return httpx.Client(timeout=self.timeout_s, follow_redirects=True)

    def _report(self, state: str, done: int, total: int | None) -> None:
        if self._progress is not None:
            self._progress(state, done, total)

    def _cached(self, state: str) -> Path | None:
        """The cached zip if its checksum matches the manifest; a mismatching one is deleted."""
        path = self.cache_dir / PurePosixPath(self.url(state)).name
        if not path.is_file():
            return None
        # Under the lock: another process may be between publishing a zip and its manifest entry.
        with _cache_lock(self.cache_dir):
            if not path.is_file():
                return None
            entry = _read_manifest(self.cache_dir).get(path.name, {})
            size = path.stat().st_size
            if entry.get("size") == size and entry.get("sha256") == _sha256(path):
                self._report(state, size, size)
                return path
            log.warning("discarding cached %s: it does not match the checksum manifest", path)
            path.unlink(missing_ok=True)
            return None

    def _download(self, client: httpx.Client, state: str) -> Path:
        url = self.url(state)
        target = self.cache_dir / PurePosixPath(url).name
        attempts = self.retries + 1
        failure = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S))
            handle, name = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{target.name}.")
            os.close(handle)
            part = Path(name)
            try:
                digest = self._download_once(client, state, url, part)
                _check_archive(part)
                size = part.stat().st_size
                with _cache_lock(self.cache_dir):
                    part.replace(target)
                    entry = {"sha256": digest, "size": size, "url": url}
                    _record(self.cache_dir, target.name, entry)
                return target
            except _Retry as exc:
                failure = str(exc)
                log.warning("PUMS %s attempt %d/%d failed: %s", url, attempt + 1, attempts, exc)
            finally:
                part.unlink(missing_ok=True)
        raise SourceError(f"downloading {url} failed after {attempts} attempt(s): {failure}")

    def _download_once(self, client: httpx.Client, state: str, url: str, part: Path) -> str:
        """Stream url into part; returns the body's sha256."""
        digest = hashlib.sha256()
        try:
            with client.stream("GET", url) as response:
                status = response.status_code
                if status == 404:
                    raise SourceError(
                        f"the census has no PUMS person file for {state} in {self.year}: "
                        f"{url} answered 404 Not Found"
                    )
                if status >= 500 or status in _RETRY_STATUSES:
                    raise _Retry(f"HTTP {status}")
                if status != 200:
                    raise SourceError(f"downloading {url} failed: HTTP {status}")
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                self._report(state, 0, total)
                with part.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        digest.update(chunk)
                        self._report(state, response.num_bytes_downloaded, total)
                if total is not None and response.num_bytes_downloaded != total:
                    raise _Retry(
                        f"truncated body: {response.num_bytes_downloaded} of {total} bytes"
                    )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.TooManyRedirects) as exc:
            raise SourceError(f"cannot download {url}: {exc}") from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            # DecodingError: a Content-Encoding body that does not decode, like a cut-off body.
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        return digest.hexdigest()


def _person_member(archive: zipfile.ZipFile) -> str:
    """The one psam_p*.csv member of a census person zip."""
    members = [
        name
        for name in archive.namelist()
        if fnmatch(PurePosixPath(name).name.lower(), "psam_p*.csv")
    ]
    if len(members) != 1:
        raise _Retry(f"expected one psam_p*.csv member in the archive, found {len(members)}")
    return members[0]


def _check_archive(path: Path) -> None:
    """Raise _Retry unless path is an intact zip with exactly one person CSV."""
    try:
        with zipfile.ZipFile(path) as archive:
            _person_member(archive)
            broken = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _Retry(f"corrupt archive: {exc}") from exc
    if broken is not None:
        raise _Retry(f"corrupt archive: member {broken} fails its CRC check")


def _filter_persons(path: Path, year: int, writer: pcsv.CSVWriter) -> tuple[int, int]:
    """Write the persons of one state zip that pass the folktables filter; (read, kept)."""
    with zipfile.ZipFile(path) as archive:
        member = _person_member(archive)
        with archive.open(member) as stream:
            header = next(csv.reader([stream.readline().decode("utf-8-sig", "replace")]), [])
        missing = [name for name in _FILE_COLUMNS if name not in header]
        if missing:
            raise SourceError(f"{path.name}: {member} lacks the column(s) {', '.join(missing)}")
        read = kept = 0
        try:
            with archive.open(member) as stream:
                # Arrow parses only the columns asked for, so ~290-column files stay cheap.
                for batch in pcsv.open_csv(stream, read_options=_READ, convert_options=_CONVERT):
                    persons = batch.filter(_passes(batch))
                    columns = [pa.repeat(year, persons.num_rows), *persons.columns]
                    writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=_SCHEMA))
                    read, kept = read + batch.num_rows, kept + persons.num_rows
        except pa.ArrowInvalid as exc:
            raise SourceError(
                f"{path.name}: {member} is not a valid PUMS person file: {exc}"
            ) from exc
    return read, kept


def _passes(batch: pa.RecordBatch) -> pa.Array:
    """The folktables filter; a missing value fails it."""
    tests = (
        pc.greater(batch["AGEP"], 16),
        pc.greater(batch["PINCP"], 100),
        pc.greater(batch["WKHP"], 0),
        pc.greater_equal(batch["PWGTP"], 1),
    )
    return pc.fill_null(functools.reduce(pc.and_kleene, tests), False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """name -> {sha256, size, url} of the verified downloads in a year's cache folder."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        log.warning("ignoring unreadable %s: its files will be downloaded again", folder)
        return {}
    return manifest if isinstance(manifest, dict) else {}


@contextlib.contextmanager
def _cache_lock(folder: Path) -> Iterator[None]:
    """Exclusive use of a year's cache folder across processes: a zip and its manifest entry
    change together, and a reader never judges a new zip by the old entry."""
    with (folder / "manifest.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _record(folder: Path, name: str, entry: dict[str, Any]) -> None:
    """Add one entry to the manifest atomically; the caller holds ``_cache_lock``."""
    manifest = _read_manifest(folder) | {name: entry}
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".manifest.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(manifest, out, indent=2, sort_keys=True)
    Path(tmp).replace(folder / "manifest.json")


@contextlib.contextmanager
def rich_progress(console: Console | None = None) -> Iterator[ProgressCallback]:
    """A ProgressCallback that draws one rich download bar per state, for CLIs."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def update(state: str, done: int, total: int | None) -> None:
            if state not in tasks:
                tasks[state] = bar.add_task(f"PUMS {state}", total=total)
            bar.update(tasks[state], completed=done, total=total)

        yield update
