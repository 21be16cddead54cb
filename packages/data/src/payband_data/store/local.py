"""The local versioned store: a content-addressed directory, payband's default backend.

Layout under ``root`` (``PAYBAND_DATA_STORE_DIR``, default ``$PAYBAND_HOME/store``)::

    objects/<sha[:2]>/<sha>     file contents named by their sha256, read-only (0o444)
    commits/<version>.json      one manifest per version, read-only (0o444)
    log                         append-only, "<UTC ISO time> <dataset> <version>" per commit
    tmp/                        files being written; published by rename or link

A version id is the sha256 of the canonical JSON of ``{"dataset", "files", "metadata"}``, so
the same files and metadata always give the same version and the creation time is not part of
it. A manifest holds ``format``, ``dataset``, ``version``, ``created_at`` (UTC, ISO 8601, of
the first commit), ``message``, ``metadata`` and ``files`` (name -> sha256).

``versions()`` orders versions by their last line in ``log``: committing the content of an
older version again returns that version (same id and ``created_at``) and makes it the
dataset's latest again, as a new head commit would in lakeFS. Recommitting the latest version
writes nothing. A manifest without a log line (a crash between the two writes) is ordered by
its ``created_at`` until it is committed again.

Nothing is visible half-written: blobs and manifests are written to ``tmp/``, flushed to disk
and then renamed into place; a manifest is published with ``os.link``, which fails if it
exists, so when two processes commit the same version at once the first one's ``created_at``
wins and nobody overwrites it; log lines are single ``O_APPEND`` writes. Reads verify what
they read: ``get`` recomputes the version id from the manifest and ``fetch`` the sha256 of
every file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payband_data.store.base import (
    DatasetVersion,
    StoreError,
    VersionedStore,
    check_files,
    check_metadata,
    default_message,
    parse_uri,
    publish_verified,
    sha256_file,
    validate_dataset,
    version_metadata,
)

__all__ = ["LocalStore", "version_digest"]

_FORMAT = 1
_CHUNK = 1 << 20


def version_digest(dataset: str, files: Mapping[str, str], metadata: Mapping[str, str]) -> str:
    """The local version id: sha256 of the canonical JSON of dataset, files and metadata."""
    canonical = json.dumps(
        {"dataset": dataset, "files": dict(files), "metadata": dict(metadata)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class LocalStore(VersionedStore):
    """Versions kept in a local directory; see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        self._objects = self.root / "objects"
        self._commits = self.root / "commits"
        self._tmp = self.root / "tmp"
        self._log = self.root / "log"

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def commit(
        self,
        dataset: str,
        files: Mapping[str, Path],
        metadata: Mapping[str, str],
        message: str | None = None,
    ) -> DatasetVersion:
        validate_dataset(dataset)
        sources = check_files(files)
        check_metadata(metadata)
        for directory in (self._objects, self._commits, self._tmp):
            directory.mkdir(parents=True, exist_ok=True)

        digests = {name: self._store_object(path) for name, path in sources.items()}
        full_metadata = version_metadata(dataset, metadata, digests)
        version = version_digest(dataset, digests, full_metadata)
        manifest = {
            "format": _FORMAT,
            "dataset": dataset,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
            "message": message or default_message(dataset, full_metadata, len(digests)),
            "metadata": full_metadata,
            "files": digests,
        }
        self._publish_manifest(version, manifest)
        # Whoever published first decides created_at; read back what is on disk.
        found = self._load(version)
        logged = [entry for entry in self._read_log() if entry[1] == dataset]
        if not logged or logged[-1][2] != version:
            self._append_log(dataset, version)
        return found

    def get(self, uri: str) -> DatasetVersion:
        parsed = parse_uri(uri)
        if parsed.scheme != "local":
            raise StoreError(
                f"{uri} is a lakeFS URI, but this is the local store at {self.root}; "
                "set PAYBAND_DATA_STORE=lakefs to read it"
            )
        found = self._load(parsed.version, uri=uri)
        if found.dataset != parsed.dataset:
            raise StoreError(
                f"{uri} names dataset {parsed.dataset!r}, but version {parsed.version} "
                f"is of {found.dataset!r}"
            )
        return found

    def fetch(self, uri: str, dest: Path) -> dict[str, Path]:
        found = self.get(uri)

        def read(name: str) -> Iterator[bytes]:
            path = self._object_path(found.files[name])
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                raise StoreError(
                    f"file {name!r} of {uri} is missing from the local store at {self.root}"
                ) from None
            with handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk

        return publish_verified(uri, Path(dest), found.files, read)

    def versions(self, dataset: str | None = None) -> list[DatasetVersion]:
        if dataset is not None:
            validate_dataset(dataset)
        if not self._commits.is_dir():
            return []
        found = [
            self._load(path.name.removesuffix(".json")) for path in self._commits.glob("*.json")
        ]
        if dataset is not None:
            found = [item for item in found if item.dataset == dataset]
        # Each version sorts by its last log line; one never logged, by its creation time.
        order = {item.version: (item.created_at, -1) for item in found}
        for position, (stamp, _, version) in enumerate(self._read_log()):
            if version in order:
                order[version] = (stamp, position)
        return sorted(found, key=lambda item: (*order[item.version], item.version), reverse=True)

    def _read_log(self) -> list[tuple[datetime, str, str]]:
        """The log's (time, dataset, version) entries, oldest first."""
        try:
            text = self._log.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        entries: list[tuple[datetime, str, str]] = []
        for line in text.splitlines():
            parts = line.split(" ")
            try:
                stamp, dataset, version = parts
                entries.append((datetime.fromisoformat(stamp), dataset, version))
            except ValueError:
                continue  # a line cut short by a crash; its version is still ordered by created_at
        return entries

    def _append_log(self, dataset: str, version: str) -> None:
        line = f"{datetime.now(UTC).isoformat()} {dataset} {version}\n".encode()
        fd = os.open(self._log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one short write: atomic among concurrent appenders
            os.fsync(fd)
        finally:
            os.close(fd)

    def _object_path(self, sha: str) -> Path:
        return self._objects / sha[:2] / sha

    def _store_object(self, source: Path) -> str:
        """Copy a file into objects/ (hashing while copying) and return its sha256."""
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="object-")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, source.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            target = self._object_path(sha)
            # An intact object stays as it is; a damaged one is replaced by the good bytes.
            if not (target.is_file() and sha256_file(target) == sha):
                target.parent.mkdir(exist_ok=True)
                tmp.chmod(0o444)
                tmp.replace(target)
            return sha
        finally:
            tmp.unlink(missing_ok=True)

    def _publish_manifest(self, version: str, manifest: dict[str, Any]) -> None:
        target = self._commits / f"{version}.json"
        if target.exists():
            return
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="commit-", suffix=".json")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(manifest, out, indent=2, sort_keys=True)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            tmp.chmod(0o444)
            try:
                os.link(tmp, target)
            except FileExistsError:
                pass  # another process committed the same version first
            except OSError:
                # Filesystems without hard links: a rename is still atomic, last writer wins.
                tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)

    def _load(self, version: str, uri: str | None = None) -> DatasetVersion:
        path = self._commits / f"{version}.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(
                f"unknown version {uri or version}: not in the local store at {self.root}"
            ) from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read manifest {path}: {exc}") from None
        try:
            dataset = manifest["dataset"]
            files = dict(manifest["files"])
            metadata = dict(manifest["metadata"])
            created_at = datetime.fromisoformat(manifest["created_at"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"manifest {path} is malformed: {exc!r}") from None
        if version_digest(dataset, files, metadata) != version:
            raise StoreError(
                f"manifest {path} was modified: its content does not hash to version {version}"
            )
        return DatasetVersion(
            dataset=dataset,
            version=version,
            uri=f"local://{dataset}@{version}",
            metadata=metadata,
            files=files,
            created_at=created_at,
        )
