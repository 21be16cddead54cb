"""The versioned store's interface and what its backends share: versions, URIs, checks.

`VersionedStore` is the interface ``local`` and ``lakefs`` implement; the checks of names,
files and metadata, the digests and the verified publication of fetched files are the same for
both. Callers import all of it from ``payband_data.store``; the backends import it from here,
so the package that picks a backend (``open_store``) is not imported by the backends.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from payband_data import __version__
from payband_data.errors import DataError

__all__ = [
    "RESERVED_METADATA_KEYS",
    "DatasetVersion",
    "ParsedUri",
    "StoreError",
    "VersionedStore",
    "check_files",
    "check_metadata",
    "default_message",
    "files_digest",
    "parse_uri",
    "publish_verified",
    "sha256_file",
    "validate_dataset",
    "validate_file_name",
    "version_metadata",
]

# Keys the store writes itself; "files" carries the per-file digests in lakeFS commit metadata.
RESERVED_METADATA_KEYS = frozenset({"dataset", "files", "payband_version", "sha256"})

_DATASET = re.compile(r"[a-z0-9_-]+(?:/[a-z0-9_-]+)*")
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# lakeFS's own rule for repository ids.
_REPOSITORY = re.compile(r"[a-z0-9][a-z0-9-]{2,62}")
_LOCAL_URI = re.compile(r"local://(?P<dataset>[^@]*)@(?P<version>.*)")
_LAKEFS_URI = re.compile(r"lakefs://(?P<repository>[^/]*)/(?P<version>[^/]*)/(?P<dataset>.*?)/?")
_URI_SHAPES = (
    "expected local://<dataset>@<64-hex version> or "
    "lakefs://<repository>/<commit-id>/<dataset>/ (dataset like raw/adult)"
)
_CHUNK = 1 << 20


class StoreError(DataError):
    """A versioned-store operation failed; the message is one line meant for the user."""


@dataclass(frozen=True)
class DatasetVersion:
    """One immutable version of a dataset."""

    dataset: str
    version: str
    uri: str
    metadata: dict[str, str]
    files: dict[str, str]
    created_at: datetime


@dataclass(frozen=True)
class ParsedUri:
    """The parts of a dataset URI; ``repository`` is None for local URIs."""

    scheme: Literal["local", "lakefs"]
    dataset: str
    version: str
    repository: str | None = None


def parse_uri(uri: str) -> ParsedUri:
    """Split a dataset URI into its parts; StoreError naming the expected shapes otherwise."""
    if not isinstance(uri, str):
        raise StoreError(f"not a dataset URI: {uri!r}; {_URI_SHAPES}")
    if match := _LOCAL_URI.fullmatch(uri):
        dataset, version = match["dataset"], match["version"]
        if _DATASET.fullmatch(dataset) and _HEX64.fullmatch(version):
            return ParsedUri("local", dataset, version)
    elif match := _LAKEFS_URI.fullmatch(uri):
        repository, version, dataset = match["repository"], match["version"], match["dataset"]
        if (
            _REPOSITORY.fullmatch(repository)
            and _HEX64.fullmatch(version)
            and _DATASET.fullmatch(dataset)
        ):
            return ParsedUri("lakefs", dataset, version, repository)
    raise StoreError(f"not a dataset URI: {uri!r}; {_URI_SHAPES}")


def validate_dataset(dataset: str) -> str:
    """Return ``dataset`` if it is a valid dataset name, else raise StoreError."""
    if not isinstance(dataset, str) or not _DATASET.fullmatch(dataset):
        raise StoreError(
            f"invalid dataset name {dataset!r}: use lower-case segments [a-z0-9_-] "
            "separated by '/', like raw/adult"
        )
    return dataset


def validate_file_name(name: str) -> str:
    """Return ``name`` if it is a plain file name (no directories, no '..'), else StoreError."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or ".." in name:
        raise StoreError(
            f"invalid file name {name!r}: use a plain name of letters, digits, '.', '_' and '-' "
            "(no '/', no '..', not starting with '.')"
        )
    return name


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_digest(files: Mapping[str, str]) -> str:
    """The "sha256" of a version: sha256 of ``"<file sha256>  <name>\\n"`` lines sorted by name.

    The lines are what ``sha256sum`` prints, so ``sha256sum $(ls) | sha256sum`` in a fetched
    directory reproduces it.
    """
    lines = "".join(f"{files[name]}  {name}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def check_files(files: Mapping[str, Path]) -> dict[str, Path]:
    """The files of a commit with their names checked, sorted by name; StoreError otherwise."""
    if not files:
        raise StoreError("a version needs at least one file")
    checked: dict[str, Path] = {}
    for name in sorted(files):
        path = Path(files[name])
        if not path.is_file():
            raise StoreError(f"cannot commit {validate_file_name(name)!r}: {path} is not a file")
        checked[validate_file_name(name)] = path
    return checked


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The caller's metadata as a plain dict; StoreError for reserved keys or non-strings."""
    checked: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise StoreError(f"metadata keys must be non-empty strings, got {key!r}")
        if key in RESERVED_METADATA_KEYS:
            raise StoreError(
                f"metadata key {key!r} is reserved: the store sets "
                f"{', '.join(sorted(RESERVED_METADATA_KEYS))} itself"
            )
        if not isinstance(value, str):
            raise StoreError(
                f"metadata value of {key!r} must be a string, not {type(value).__name__}"
            )
        checked[key] = value
    return checked


def version_metadata(
    dataset: str, metadata: Mapping[str, str], file_digests: Mapping[str, str]
) -> dict[str, str]:
    """The caller's metadata checked and completed with the keys the store owns, sorted."""
    completed = check_metadata(metadata)
    completed["dataset"] = dataset
    completed["sha256"] = files_digest(file_digests)
    completed["payband_version"] = __version__
    return dict(sorted(completed.items()))


def publish_verified(
    uri: str,
    dest: Path,
    files: Mapping[str, str],
    read: Callable[[str], Iterable[bytes]],
) -> dict[str, Path]:
    """Write each file of a version into ``dest`` (name -> path), all or none.

    ``read(name)`` yields the stored bytes; every file goes to a temp file in ``dest`` first and
    is renamed into place only once all of them match their sha256, so a corrupt object never
    shows up under its real name.
    """
    dest.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    try:
        for name in sorted(files):
            fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".partial")
            staged[name] = Path(tmp_name)
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for chunk in read(name):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != files[name]:
                raise StoreError(
                    f"file {name!r} of {uri} is corrupt: its sha256 is {digest.hexdigest()}, "
                    f"the version records {files[name]}"
                )
            staged[name].chmod(0o644)
        result: dict[str, Path] = {}
        for name, tmp in staged.items():
            target = dest / name
            tmp.replace(target)
            result[name] = target
        return result
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def default_message(dataset: str, metadata: Mapping[str, str], file_count: int) -> str:
    """The commit message used when the caller gives none."""
    if "row_count" in metadata:
        return f"{dataset}: {metadata['row_count']} rows"
    return f"{dataset}: {file_count} file{'s' if file_count != 1 else ''}"


class VersionedStore(ABC):
    """Immutable dataset versions: commit files, resolve and fetch them later by URI."""

    @abstractmethod
    def commit(
        self,
        dataset: str,
        files: Mapping[str, Path],
        metadata: Mapping[str, str],
        message: str | None = None,
    ) -> DatasetVersion:
        """Store ``files`` (name -> path) as a new version of ``dataset``.

        Committing the same files and metadata as the dataset's latest version returns that
        version unchanged. Committing the content of an older version makes it the latest
        again: the local store returns that same version, lakeFS makes a new commit.
        """

    @abstractmethod
    def get(self, uri: str) -> DatasetVersion:
        """Resolve a URI to its version; StoreError if it is unknown to this store."""

    @abstractmethod
    def fetch(self, uri: str, dest: Path) -> dict[str, Path]:
        """Copy the version's files into ``dest`` after checking their sha256; name -> path."""

    @abstractmethod
    def versions(self, dataset: str | None = None) -> list[DatasetVersion]:
        """All versions (of one dataset if given), newest first."""

    def latest(self, dataset: str) -> DatasetVersion | None:
        """The newest version of ``dataset``, or None if it has none."""
        found = self.versions(validate_dataset(dataset))
        return found[0] if found else None

    def close(self) -> None:  # noqa: B027 - optional hook; only network backends hold resources
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
