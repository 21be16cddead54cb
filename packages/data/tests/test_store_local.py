"""The local store's own promises: layout, read-only objects, tamper detection, safe concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from payband_data.settings import DataSettings
from payband_data.store import StoreError, open_store
from payband_data.store.local import LocalStore, version_digest

META = {"source": "adult", "year": "1994", "states": "", "row_count": "2"}


def write(directory: Path, content: dict[str, bytes]) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in content.items():
        (directory / name).write_bytes(data)
    return {name: directory / name for name in content}


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_open_store_gives_a_local_store_without_touching_the_disk(tmp_path):
    opened = open_store(DataSettings(store="local", store_dir=tmp_path / "s"))
    assert isinstance(opened, LocalStore)
    assert opened.root == tmp_path / "s"
    assert not (tmp_path / "s").exists()
    assert opened.versions() == []
    assert not (tmp_path / "s").exists()


def test_layout_objects_manifests_and_log(store, tmp_path):
    content = {"a.csv": b"x,y\n1,2\n", "b.bin": b"\x00\x01"}
    version = store.commit("raw/adult", write(tmp_path / "src", content), META, message="hello")

    for data in content.values():
        sha = hashlib.sha256(data).hexdigest()
        blob = store.root / "objects" / sha[:2] / sha
        assert blob.read_bytes() == data
        assert mode(blob) == 0o444

    manifest_path = store.root / "commits" / f"{version.version}.json"
    assert mode(manifest_path) == 0o444
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format"] == 1
    assert manifest["message"] == "hello"
    assert manifest["dataset"] == "raw/adult"
    assert manifest["files"] == version.files
    assert manifest["metadata"] == version.metadata
    assert version.version == version_digest("raw/adult", version.files, version.metadata)
    assert version.uri == f"local://raw/adult@{version.version}"

    log = (store.root / "log").read_text().splitlines()
    assert [line.split(" ")[1:] for line in log] == [["raw/adult", version.version]]
    assert list((store.root / "tmp").iterdir()) == []


def test_default_message_names_the_row_count(store, tmp_path):
    version = store.commit("raw/adult", write(tmp_path / "src", {"a": b"a"}), META)
    manifest = json.loads((store.root / "commits" / f"{version.version}.json").read_text())
    assert manifest["message"] == "raw/adult: 2 rows"


def test_identical_files_share_one_object(store, tmp_path):
    store.commit("raw/adult", write(tmp_path / "1", {"a": b"same", "b": b"same"}), META)
    store.commit("raw/pums", write(tmp_path / "2", {"c": b"same"}), META)
    objects = [p for p in (store.root / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 1


def test_recommit_keeps_the_first_created_at_and_writes_nothing(store, tmp_path):
    files = write(tmp_path / "src", {"a": b"a"})
    first = store.commit("raw/adult", files, META)
    log_before = (store.root / "log").read_bytes()
    again = store.commit("raw/adult", files, META)
    assert again.created_at == first.created_at
    assert (store.root / "log").read_bytes() == log_before


def test_a_new_store_object_sees_committed_versions(store, tmp_path):
    version = store.commit("raw/adult", write(tmp_path / "src", {"a": b"a"}), META)
    reopened = LocalStore(store.root)
    assert reopened.versions() == [version]
    assert reopened.get(version.uri) == version


def test_a_tampered_object_fails_fetch_naming_the_file(store, tmp_path):
    version = store.commit("raw/adult", write(tmp_path / "src", {"a": b"a", "b": b"b"}), META)
    blob = store.root / "objects" / version.files["b"][:2] / version.files["b"]
    blob.chmod(0o644)
    blob.write_bytes(b"evil")

    dest = tmp_path / "out"
    with pytest.raises(StoreError, match=r"file 'b' of local://raw/adult@[0-9a-f]{64} is corrupt"):
        store.fetch(version.uri, dest)
    # All or nothing: no file of the version and no partial file is left behind.
    assert list(dest.iterdir()) == []


def test_committing_the_content_again_repairs_a_damaged_object(store, tmp_path):
    files = write(tmp_path / "src", {"a": b"good"})
    version = store.commit("raw/adult", files, META)
    blob = store.root / "objects" / version.files["a"][:2] / version.files["a"]
    blob.chmod(0o644)
    blob.write_bytes(b"bad")

    assert store.commit("raw/adult", files, META) == version
    assert store.fetch(version.uri, tmp_path / "out")["a"].read_bytes() == b"good"
    assert mode(blob) == 0o444


def test_a_missing_object_fails_fetch(store, tmp_path):
    version = store.commit("raw/adult", write(tmp_path / "src", {"a": b"a"}), META)
    (store.root / "objects" / version.files["a"][:2] / version.files["a"]).unlink()
    with pytest.raises(StoreError, match=r"file 'a' of .* is missing"):
        store.fetch(version.uri, tmp_path / "out")


def test_a_modified_manifest_is_detected(store, tmp_path):
    version = store.commit("raw/adult", write(tmp_path / "src", {"a": b"a"}), META)
    path = store.root / "commits" / f"{version.version}.json"
    manifest = json.loads(path.read_text())
    manifest["metadata"]["row_count"] = "999"
    path.chmod(0o644)
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="was modified"):
        store.get(version.uri)

    path.write_text("{not json")
    with pytest.raises(StoreError, match="cannot read manifest"):
        store.versions()


def test_a_manifest_missing_from_the_log_is_still_listed(store, tmp_path):
    # A crash between publishing the manifest and appending the log line.
    old = store.commit("raw/adult", write(tmp_path / "1", {"a": b"1"}), META)
    new = store.commit("raw/adult", write(tmp_path / "2", {"a": b"2"}), META)
    (store.root / "log").unlink()
    assert store.versions() == [new, old]  # by created_at
    # Committing it again logs it, and it becomes the latest.
    assert store.commit("raw/adult", write(tmp_path / "1", {"a": b"1"}), META) == old
    assert store.versions() == [old, new]


def test_get_refuses_a_lakefs_uri(store):
    with pytest.raises(StoreError, match="is a lakeFS URI, but this is the local store"):
        store.get("lakefs://payband/" + "a" * 64 + "/raw/adult/")


def test_concurrent_commits_from_processes(store, tmp_path):
    # Two processes commit overlapping versions at once: one shared, ten of their own.
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from payband_data.store.local import LocalStore

        root, work, worker = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
        store = LocalStore(root)
        work.mkdir()
        shared = work / "shared"
        shared.write_bytes(b"shared" * 10000)
        for number in range(10):
            store.commit("raw/pums", {"persons.csv": shared}, {"row_count": "1"})
            own = work / f"own-{number}"
            own.write_bytes(f"{worker}-{number}".encode() * 10000)
            store.commit("raw/pums", {"persons.csv": own}, {"row_count": "1"})
        """
    )
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(store.root), str(tmp_path / f"w{n}"), f"w{n}"],
            env=env,
            stderr=subprocess.PIPE,
        )
        for n in range(2)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr.decode()

    versions = store.versions("raw/pums")
    assert len(versions) == 21  # 20 of their own plus the shared one, once
    assert len({v.version for v in versions}) == 21
    assert list((store.root / "tmp").iterdir()) == []
    for number, version in enumerate(versions):
        fetched = store.fetch(version.uri, tmp_path / f"out{number}")
        assert (
            hashlib.sha256(fetched["persons.csv"].read_bytes()).hexdigest()
            == (version.files["persons.csv"])
        )
