"""The versioned store: immutable, addressable versions of payband's datasets.

One interface, two backends: ``LocalStore`` (a content-addressed directory, the default) and
``LakeFSStore`` (a lakeFS repository through ``lakefs-sdk``). ``open_store(settings)`` picks one
from ``DataSettings.store``.

A version is addressed by a URI that carries it:

- local: ``local://<dataset>@<version>`` (version = 64 hex characters, the content digest)
- lakeFS: ``lakefs://<repository>/<commit-id>/<dataset>/``

Every version's metadata holds the caller's keys plus ``dataset``, ``sha256`` (``files_digest``
of its files) and ``payband_version``; those names (and ``files``) are reserved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from payband_data.store.base import (
    RESERVED_METADATA_KEYS,
    DatasetVersion,
    ParsedUri,
    StoreError,
    VersionedStore,
    files_digest,
    parse_uri,
    sha256_file,
    validate_dataset,
    validate_file_name,
)

if TYPE_CHECKING:
    from payband_data.settings import DataSettings

__all__ = [
    "RESERVED_METADATA_KEYS",
    "DatasetVersion",
    "ParsedUri",
    "StoreError",
    "VersionedStore",
    "files_digest",
    "open_store",
    "parse_uri",
    "sha256_file",
    "validate_dataset",
    "validate_file_name",
]


def open_store(settings: DataSettings) -> VersionedStore:
    """The store ``settings.store`` names; opening does no I/O."""
    if settings.store == "lakefs":
        from payband_data.store.lakefs import LakeFSStore

        return LakeFSStore(
            endpoint=settings.lakefs_endpoint,
            access_key_id=settings.lakefs_access_key_id,
            secret_access_key=settings.lakefs_secret_access_key.get_secret_value(),
            repository=settings.lakefs_repository,
            branch=settings.lakefs_branch,
            storage_namespace=settings.lakefs_storage_namespace,
        )
    from payband_data.store.local import LocalStore

    return LocalStore(settings.store_dir)
