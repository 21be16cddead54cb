"""The versioned-store contract: the same behaviour from the local store and from lakeFS.

Every test runs twice through ``open_store``: once on a local directory, once on the lakeFS
test server (``lakefs_server``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import payband_data
from payband_data.settings import DataSettings
from payband_data.store import (
    RESERVED_METADATA_KEYS,
    DatasetVersion,
    StoreError,
    VersionedStore,
    files_digest,
    open_store,
    parse_uri,
)
from payband_data.store.local import LocalStore

META = {"source": "adult", "year": "1994", "states": "", "row_count": "3"}
CONTENT = {
    "adult.data": b"39, State-gov, 77516\n50, Self-emp-not-inc, 83311\n",
    # Bytes that resemble multipart framing, line endings and NULs must survive unchanged.
    "adult.test": b"|1x3 Cross validator\r\n--boundary\r\n\x00\xff\n",
    "empty.txt": b"",
}


@pytest.fixture(params=["local", "lakefs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VersionedStore]:
    if request.param == "local":
        settings = DataSettings(store="local", store_dir=tmp_path / "store")
    else:
        server = request.getfixturevalue("lakefs_server")
        settings = DataSettings(
            store="lakefs",
            lakefs_endpoint=server.endpoint,
            lakefs_access_key_id=server.access_key_id,
            lakefs_secret_access_key=server.secret_access_key,
            lakefs_repository="payband-test",
            lakefs_storage_namespace="s3://bucket/payband-test",
        )
    with open_store(settings) as opened:
        yield opened


def write(directory: Path, content: dict[str, bytes]) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in content.items():
        (directory / name).write_bytes(data)
        paths[name] = directory / name
    return paths


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return write(tmp_path / "src", CONTENT)


def read_all(paths: dict[str, Path]) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in paths.items()}


def test_commit_get_fetch_round_trip(store, files, tmp_path):
    before = datetime.now(UTC) - timedelta(seconds=2)
    version = store.commit("raw/adult", files, META)

    assert isinstance(version, DatasetVersion)
    assert version.dataset == "raw/adult"
    assert re.fullmatch(r"[0-9a-f]{64}", version.version)
    assert version.version in version.uri
    parsed = parse_uri(version.uri)
    assert (parsed.dataset, parsed.version) == ("raw/adult", version.version)
    assert version.files == {
        name: hashlib.sha256(data).hexdigest() for name, data in sorted(CONTENT.items())
    }
    assert version.created_at.tzinfo is not None
    assert before <= version.created_at <= datetime.now(UTC) + timedelta(seconds=1)

    assert store.get(version.uri) == version

    fetched = store.fetch(version.uri, tmp_path / "out")
    assert fetched == {name: tmp_path / "out" / name for name in sorted(CONTENT)}
    assert read_all(fetched) == CONTENT
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(CONTENT)


def test_metadata_holds_the_callers_keys_and_the_stores(store, files):
    version = store.commit("raw/adult", files, {**META, "extra": '{"json": [1, 2]}'})
    lines = "".join(f"{version.files[name]}  {name}\n" for name in sorted(version.files))
    assert version.metadata == {
        **META,
        "extra": '{"json": [1, 2]}',
        "dataset": "raw/adult",
        "sha256": hashlib.sha256(lines.encode()).hexdigest(),
        "payband_version": payband_data.__version__,
    }
    assert version.metadata["sha256"] == files_digest(version.files)


def test_versions_are_newest_first_and_filtered_by_dataset(store, tmp_path):
    adult_1 = store.commit("raw/adult", write(tmp_path / "a1", {"f": b"1"}), META)
    pums = store.commit("raw/pums", write(tmp_path / "p", {"f": b"p"}), {**META, "source": "pums"})
    adult_2 = store.commit("raw/adult", write(tmp_path / "a2", {"f": b"2"}), META)

    assert store.versions() == [adult_2, pums, adult_1]
    assert store.versions("raw/adult") == [adult_2, adult_1]
    assert store.versions("raw/pums") == [pums]
    assert store.versions("features/adult") == []


def test_latest(store, tmp_path):
    assert store.latest("raw/adult") is None
    first = store.commit("raw/adult", write(tmp_path / "1", {"f": b"1"}), META)
    assert store.latest("raw/adult") == first
    second = store.commit("raw/adult", write(tmp_path / "2", {"f": b"2"}), META)
    store.commit("raw/pums", write(tmp_path / "p", {"f": b"p"}), META)
    assert store.latest("raw/adult") == second
    assert store.latest("features/adult") is None


def test_empty_store(store):
    assert store.versions() == []
    assert store.latest("raw/adult") is None


def test_recommitting_the_latest_content_returns_the_same_version(store, files, tmp_path):
    first = store.commit("raw/adult", files, META)
    # Same bytes from other paths, with another message: still the same version.
    again = store.commit("raw/adult", write(tmp_path / "copy", CONTENT), META, message="again")
    assert again == first  # includes created_at of the first commit
    assert store.versions() == [first]


def test_same_files_with_new_metadata_are_a_new_version(store, files, tmp_path):
    first = store.commit("raw/adult", files, META)
    second = store.commit("raw/adult", files, {**META, "row_count": "4"})
    assert second.version != first.version
    assert second.files == first.files
    assert store.versions("raw/adult") == [second, first]
    assert store.get(first.uri).metadata["row_count"] == "3"
    assert read_all(store.fetch(first.uri, tmp_path / "first")) == CONTENT


def test_recommitting_older_content_makes_it_latest_again(store, tmp_path):
    california = write(tmp_path / "ca", {"persons.csv": b"CA"})
    texas = write(tmp_path / "tx", {"persons.csv": b"TX"})
    first = store.commit("raw/pums", california, {**META, "states": "CA"})
    store.commit("raw/pums", texas, {**META, "states": "TX"})

    again = store.commit("raw/pums", california, {**META, "states": "CA"})
    latest = store.latest("raw/pums")
    assert latest == again
    assert (latest.files, latest.metadata) == (first.files, first.metadata)
    assert read_all(store.fetch(latest.uri, tmp_path / "out")) == {"persons.csv": b"CA"}


def test_a_later_commit_does_not_change_an_earlier_version(store, tmp_path):
    old = store.commit("raw/adult", write(tmp_path / "v1", {"a": b"a1", "b": b"b1"}), META)
    new = store.commit("raw/adult", write(tmp_path / "v2", {"a": b"a2", "c": b"c2"}), META)

    assert read_all(store.fetch(old.uri, tmp_path / "old")) == {"a": b"a1", "b": b"b1"}
    assert read_all(store.fetch(new.uri, tmp_path / "new")) == {"a": b"a2", "c": b"c2"}
    assert store.get(old.uri).files == old.files


def test_datasets_nested_under_each_other_stay_apart(store, tmp_path):
    outer = store.commit("raw/adult", write(tmp_path / "o1", {"a": b"outer"}), META)
    inner = store.commit("raw/adult/extra", write(tmp_path / "i", {"a": b"inner"}), META)
    # Replacing raw/adult's files must not touch raw/adult/extra's.
    outer_2 = store.commit("raw/adult", write(tmp_path / "o2", {"b": b"outer2"}), META)

    assert read_all(store.fetch(inner.uri, tmp_path / "inner")) == {"a": b"inner"}
    assert read_all(store.fetch(outer.uri, tmp_path / "outer")) == {"a": b"outer"}
    assert read_all(store.fetch(outer_2.uri, tmp_path / "outer2")) == {"b": b"outer2"}
    assert store.versions("raw/adult") == [outer_2, outer]


def test_fetch_overwrites_files_in_dest(store, files, tmp_path):
    version = store.commit("raw/adult", files, META)
    dest = write(tmp_path / "dest", {"adult.data": b"stale"})["adult.data"].parent
    store.fetch(version.uri, dest)
    assert (dest / "adult.data").read_bytes() == CONTENT["adult.data"]


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "raw/adult",
        "s3://bucket/raw/adult",
        "local://raw/adult",
        "local://raw/adult@latest",
        "local://raw/adult@" + "A" * 64,
        "local://Raw/adult@" + "a" * 64,
        "local://raw//adult@" + "a" * 64,
        "lakefs://payband/main/raw/adult/",
        "lakefs://payband/" + "a" * 64,
        "lakefs://payband/" + "a" * 64 + "/",
        "lakefs://PayBand/" + "a" * 64 + "/raw/adult/",
        "lakefs://payband/" + "a" * 64 + "/raw/../adult/",
    ],
)
def test_malformed_uris_are_refused_with_the_expected_shapes(store, uri):
    with pytest.raises(StoreError) as caught:
        store.get(uri)
    message = str(caught.value)
    assert "expected local://<dataset>@<64-hex version>" in message
    assert "lakefs://<repository>/<commit-id>/<dataset>/" in message
    assert "\n" not in message


def test_unknown_version_is_a_store_error(store, files, tmp_path):
    version = store.commit("raw/adult", files, META)
    unknown = version.uri.replace(version.version, "0" * 64)
    with pytest.raises(StoreError, match="unknown version"):
        store.get(unknown)
    with pytest.raises(StoreError, match="unknown version"):
        store.fetch(unknown, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_uri_naming_another_dataset_is_refused(store, files):
    version = store.commit("raw/adult", files, META)
    wrong = version.uri.replace("raw/adult", "raw/pums")
    with pytest.raises(StoreError, match=r"names dataset 'raw/pums'.*'raw/adult'"):
        store.get(wrong)


def test_uri_of_the_other_backend_is_refused(store):
    local_uri = "local://raw/adult@" + "a" * 64
    lakefs_uri = "lakefs://payband-test/" + "a" * 64 + "/raw/adult/"
    other = lakefs_uri if isinstance(store, LocalStore) else local_uri
    with pytest.raises(StoreError, match="URI, but this"):
        store.get(other)


@pytest.mark.parametrize("key", sorted(RESERVED_METADATA_KEYS))
def test_reserved_metadata_keys_are_refused(store, files, key):
    with pytest.raises(StoreError, match=f"metadata key '{key}' is reserved"):
        store.commit("raw/adult", files, {**META, key: "mine"})
    assert store.versions() == []


def test_metadata_values_must_be_strings(store, files):
    with pytest.raises(StoreError, match="must be a string"):
        store.commit("raw/adult", files, {"row_count": 3})  # type: ignore[dict-item]


@pytest.mark.parametrize("dataset", ["", "Raw/adult", "raw/", "/raw", "raw//adult", "raw/../x"])
def test_invalid_dataset_names_are_refused(store, files, dataset):
    with pytest.raises(StoreError, match="invalid dataset name"):
        store.commit(dataset, files, META)
    with pytest.raises(StoreError, match="invalid dataset name"):
        store.versions(dataset)


@pytest.mark.parametrize("name", ["", "a/b", "..", "../x", ".hidden", "a..b", "dir\\x"])
def test_file_names_must_be_plain(store, tmp_path, name):
    source = write(tmp_path / "src", {"ok": b"x"})["ok"]
    with pytest.raises(StoreError, match="invalid file name"):
        store.commit("raw/adult", {name: source}, META)


def test_missing_source_files_and_empty_commits_are_refused(store, tmp_path):
    with pytest.raises(StoreError, match="is not a file"):
        store.commit("raw/adult", {"a": tmp_path / "missing"}, META)
    with pytest.raises(StoreError, match="at least one file"):
        store.commit("raw/adult", {}, META)
    assert store.versions() == []


def test_default_message_does_not_change_the_version(store, files, tmp_path):
    with_message = store.commit("raw/adult", files, META, message="ingest of 1994")
    assert store.commit("raw/adult", files, META) == with_message
