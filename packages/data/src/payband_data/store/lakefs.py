"""The lakeFS versioned store: each version is a lakeFS commit on one branch.

A dataset ``raw/adult`` lives under the object prefix ``raw/adult/`` of the branch
(``PAYBAND_DATA_LAKEFS_BRANCH``); a commit replaces exactly the files directly under that
prefix (deeper prefixes belong to other datasets) and is committed with the version's metadata
plus ``files``, a JSON object of file name -> sha256 that ``fetch`` verifies against. The
version id is the lakeFS commit id; the URI is ``lakefs://<repository>/<commit-id>/<dataset>/``.

The first commit creates what is missing (``ensure_repository``): the repository, with
``PAYBAND_DATA_LAKEFS_STORAGE_NAMESPACE`` and the branch as its default branch, or just the
branch, from the repository's default branch; until then reads see an empty store. Writes
assume one writer per branch at a time (the pipeline's commit step); reads by commit id are
immutable whatever happens on the branch later. Every SDK failure becomes a one-line
``StoreError`` naming the endpoint, repository and HTTP status, never the secret key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from lakefs_sdk import (
    ApiClient,
    BranchCreation,
    BranchesApi,
    Commit,
    CommitCreation,
    CommitsApi,
    Configuration,
    ObjectsApi,
    ObjectStats,
    RefsApi,
    RepositoriesApi,
    RepositoryCreation,
)
from lakefs_sdk.exceptions import ApiException, NotFoundException

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

__all__ = ["LakeFSStore"]

# lakeFS's own naming rules, checked up front for a clear message instead of a 400.
_REPOSITORY = re.compile(r"[a-z0-9][a-z0-9-]{2,62}")
_BRANCH = re.compile(r"\w[-\w]*")
_OWN_KEYS = ("dataset", "files", "payband_version", "sha256")
_MAX_MESSAGE = 300


class LakeFSStore(VersionedStore):
    """Versions as commits of a lakeFS repository, through ``lakefs-sdk``."""

    def __init__(
        self,
        endpoint: str,
        access_key_id: str,
        secret_access_key: str,
        repository: str,
        branch: str = "main",
        storage_namespace: str = "s3://payband-lakefs/payband",
        *,
        page_size: int = 1000,
        timeout: tuple[float, float] = (10.0, 300.0),
    ) -> None:
        endpoint = endpoint.rstrip("/").removesuffix("/api/v1")
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", endpoint):
            raise StoreError(f"invalid lakeFS endpoint {endpoint!r}: expected http(s)://host:port")
        if not _REPOSITORY.fullmatch(repository):
            raise StoreError(
                f"invalid lakeFS repository name {repository!r}: 3-63 characters of "
                "a-z, 0-9 and '-', starting with a letter or digit"
            )
        if not _BRANCH.fullmatch(branch):
            raise StoreError(f"invalid lakeFS branch name {branch!r}")
        if not 1 <= page_size <= 1000:
            raise StoreError(f"page_size must be between 1 and 1000, got {page_size}")
        self.endpoint = endpoint
        self.repository = repository
        self.branch = branch
        self.storage_namespace = storage_namespace
        self._secret = secret_access_key
        self._page_size = page_size
        self._timeout = timeout
        self._ensured = False
        configuration = Configuration(
            host=f"{endpoint}/api/v1", username=access_key_id, password=secret_access_key
        )
        self._client = ApiClient(configuration)
        self._repositories = RepositoriesApi(self._client)
        self._branches = BranchesApi(self._client)
        self._objects = ObjectsApi(self._client)
        self._commits = CommitsApi(self._client)
        self._refs = RefsApi(self._client)

    def __repr__(self) -> str:
        return (
            f"LakeFSStore({self.endpoint!r}, repository={self.repository!r}, "
            f"branch={self.branch!r})"
        )

    def close(self) -> None:
        self._client.close()
        self._client.rest_client.pool_manager.clear()

    def ensure_repository(self) -> None:
        """Create the repository (with its storage namespace) and the branch if missing."""
        with self._errors("setting up the repository"):
            try:
                found = self._repositories.get_repository(
                    self.repository, _request_timeout=self._timeout
                )
            except NotFoundException:
                try:
                    found = self._repositories.create_repository(
                        RepositoryCreation(
                            name=self.repository,
                            storage_namespace=self.storage_namespace,
                            default_branch=self.branch,
                        ),
                        _request_timeout=self._timeout,
                    )
                except ApiException as exc:
                    if exc.status != 409:  # 409: someone else created it meanwhile
                        raise
                    found = self._repositories.get_repository(
                        self.repository, _request_timeout=self._timeout
                    )
            try:
                self._branches.get_branch(
                    self.repository, self.branch, _request_timeout=self._timeout
                )
            except NotFoundException:
                try:
                    self._branches.create_branch(
                        self.repository,
                        BranchCreation(name=self.branch, source=found.default_branch),
                        _request_timeout=self._timeout,
                    )
                except ApiException as exc:
                    if exc.status != 409:
                        raise
        self._ensured = True

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
        digests = {name: sha256_file(path) for name, path in sources.items()}
        full_metadata = version_metadata(dataset, metadata, digests)
        if not self._ensured:
            self.ensure_repository()

        latest = self.latest(dataset)
        if latest is not None and latest.files == digests and latest.metadata == full_metadata:
            return latest

        prefix = f"{dataset}/"
        with self._errors(f"replacing {prefix} on branch {self.branch!r}"):
            for stats in self._list_objects(self.branch, prefix):
                if stats.path.removeprefix(prefix) not in digests:
                    self._objects.delete_object(
                        self.repository, self.branch, stats.path, _request_timeout=self._timeout
                    )
            for name, path in sources.items():
                self._objects.upload_object(
                    self.repository,
                    self.branch,
                    f"{prefix}{name}",
                    content=str(path),
                    _request_timeout=self._timeout,
                )
        creation = CommitCreation(
            message=message or default_message(dataset, full_metadata, len(digests)),
            metadata={**full_metadata, "files": json.dumps(digests, sort_keys=True)},
            # Same files with new metadata is still a new version, though lakeFS sees no change.
            allow_empty=latest is not None and latest.files == digests,
        )
        with self._errors(f"committing {dataset} on branch {self.branch!r}"):
            created = self._commits.commit(
                self.repository, self.branch, creation, _request_timeout=self._timeout
            )
        found = self._version(created)
        if found is None:
            raise StoreError(
                f"lakeFS at {self.endpoint} returned commit {created.id} without its metadata"
            )
        return found

    def get(self, uri: str) -> DatasetVersion:
        parsed = parse_uri(uri)
        if parsed.scheme != "lakefs":
            raise StoreError(
                f"{uri} is a local-store URI, but this store is lakeFS repository "
                f"{self.repository!r} at {self.endpoint}; set PAYBAND_DATA_STORE=local to read it"
            )
        if parsed.repository != self.repository:
            raise StoreError(
                f"{uri} is in lakeFS repository {parsed.repository!r}, but this store uses "
                f"{self.repository!r} (PAYBAND_DATA_LAKEFS_REPOSITORY)"
            )
        with self._errors(f"reading commit {parsed.version}"):
            try:
                created = self._commits.get_commit(
                    self.repository, parsed.version, _request_timeout=self._timeout
                )
            except NotFoundException as exc:
                raise StoreError(
                    f"unknown version {uri}: lakeFS answered HTTP 404 {_error_message(exc)} "
                    f"{self._where}"
                ) from None
        found = self._version(created)
        if found is None:
            raise StoreError(f"{uri}: commit {parsed.version} is not a payband dataset version")
        if found.dataset != parsed.dataset:
            raise StoreError(
                f"{uri} names dataset {parsed.dataset!r}, but commit {parsed.version} "
                f"is a version of {found.dataset!r}"
            )
        return found

    def fetch(self, uri: str, dest: Path) -> dict[str, Path]:
        found = self.get(uri)
        prefix = f"{found.dataset}/"
        with self._errors(f"listing {uri}"):
            stored = {
                stats.path.removeprefix(prefix)
                for stats in self._list_objects(found.version, prefix)
            }
        if stored != set(found.files):
            raise StoreError(
                f"{uri} holds files {sorted(stored)} in lakeFS, but its metadata lists "
                f"{sorted(found.files)}"
            )

        def read(name: str) -> Iterator[bytes]:
            with self._errors(f"downloading {name!r} of {uri}"):
                data = self._objects.get_object(
                    self.repository,
                    found.version,
                    f"{prefix}{name}",
                    _request_timeout=self._timeout,
                )
            yield bytes(data)

        return publish_verified(uri, Path(dest), found.files, read)

    def versions(self, dataset: str | None = None) -> list[DatasetVersion]:
        if dataset is not None:
            validate_dataset(dataset)
        return list(self._iter_versions(dataset))

    def latest(self, dataset: str) -> DatasetVersion | None:
        # The log is newest first: stop at the first match instead of reading all of it.
        return next(self._iter_versions(validate_dataset(dataset)), None)

    def _iter_versions(self, dataset: str | None) -> Iterator[DatasetVersion]:
        after: str | None = None
        while True:
            with self._errors(f"reading the log of branch {self.branch!r}"):
                try:
                    page = self._refs.log_commits(
                        self.repository,
                        self.branch,
                        after=after,
                        amount=self._page_size,
                        _request_timeout=self._timeout,
                    )
                except NotFoundException:
                    if after is not None:
                        raise
                    return  # no repository or branch yet: the first commit creates them
            for created in page.results:
                found = self._version(created)
                if found is not None and (dataset is None or found.dataset == dataset):
                    yield found
            if not page.pagination.has_more:
                return
            after = page.pagination.next_offset

    def _list_objects(self, ref: str, prefix: str) -> Iterator[ObjectStats]:
        """Objects directly under ``prefix`` at ``ref`` (deeper ones are other datasets)."""
        after: str | None = None
        while True:
            page = self._objects.list_objects(
                self.repository,
                ref,
                prefix=prefix,
                delimiter="/",
                after=after,
                amount=self._page_size,
                _request_timeout=self._timeout,
            )
            yield from (stats for stats in page.results if stats.path_type == "object")
            if not page.pagination.has_more:
                return
            after = page.pagination.next_offset

    def _version(self, created: Commit) -> DatasetVersion | None:
        """The dataset version a commit holds, or None for commits payband did not make."""
        metadata = dict(created.metadata or {})
        if not all(key in metadata for key in _OWN_KEYS):
            return None
        try:
            files = json.loads(metadata.pop("files"))
        except ValueError:
            return None
        if not isinstance(files, dict) or not all(
            isinstance(name, str) and isinstance(sha, str) for name, sha in files.items()
        ):
            return None
        dataset = metadata["dataset"]
        return DatasetVersion(
            dataset=dataset,
            version=created.id,
            uri=f"lakefs://{self.repository}/{created.id}/{dataset}/",
            metadata=dict(sorted(metadata.items())),
            files=dict(sorted(files.items())),
            created_at=datetime.fromtimestamp(created.creation_date, tz=UTC),
        )

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn SDK and transport failures into one-line StoreErrors."""
        where = self._where
        try:
            yield
        except ApiException as exc:
            detail = _error_message(exc)
            hint = ""
            if exc.status in (401, 403):
                hint = (
                    "; check PAYBAND_DATA_LAKEFS_ACCESS_KEY_ID and "
                    "PAYBAND_DATA_LAKEFS_SECRET_ACCESS_KEY"
                )
            text = f"lakeFS error while {action}: HTTP {exc.status} {detail} {where}{hint}"
            raise StoreError(self._scrub(text)) from None
        except StoreError:
            raise
        except Exception as exc:
            # urllib3 transport errors (refused, timed out) and responses the SDK cannot parse.
            reason = str(getattr(exc, "reason", None) or exc)
            reason = reason.rsplit(">: ", 1)[-1]
            text = f"cannot reach lakeFS while {action}: {type(exc).__name__}: {reason} {where}"
            raise StoreError(self._scrub(text)) from exc

    @property
    def _where(self) -> str:
        return f"(endpoint {self.endpoint}, repository {self.repository!r})"

    def _scrub(self, text: str) -> str:
        text = " ".join(text.split())
        if self._secret:
            text = text.replace(self._secret, "***")
        return text


def _error_message(exc: ApiException) -> str:
    """lakeFS's ``{"message": ...}`` from an error response, else the HTTP reason."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    message = ""
    if body:
        try:
            message = str(json.loads(body).get("message", ""))
        except (ValueError, AttributeError):
            message = body
    message = message or str(exc.reason or "")
    return message[:_MAX_MESSAGE]
