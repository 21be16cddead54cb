"""The lakeFS store against the lakeFS test server: bootstrap, commits, errors, verification."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from lakefs_sdk import (
    ApiClient,
    BranchesApi,
    CommitCreation,
    CommitsApi,
    Configuration,
    ObjectsApi,
    RepositoriesApi,
    RepositoryCreation,
)

from payband_data.settings import DataSettings
from payband_data.store import StoreError, open_store
from payband_data.store.lakefs import LakeFSStore

META = {"source": "adult", "year": "1994", "states": "", "row_count": "2"}


def write(directory: Path, content: dict[str, bytes]) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in content.items():
        (directory / name).write_bytes(data)
    return {name: directory / name for name in content}


def make_store(server, **overrides) -> LakeFSStore:
    options = {
        "endpoint": server.endpoint,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "repository": "payband",
        "storage_namespace": "s3://bucket/payband",
    }
    return LakeFSStore(**{**options, **overrides})


@pytest.fixture
def store(lakefs_server) -> Iterator[LakeFSStore]:
    with make_store(lakefs_server) as opened:
        yield opened


class Sdk:
    """Direct lakefs-sdk access, for what another lakeFS user could do to the repository."""

    def __init__(self, server) -> None:
        self.client = ApiClient(
            Configuration(
                host=f"{server.endpoint}/api/v1",
                username=server.access_key_id,
                password=server.secret_access_key,
            )
        )
        self.repositories = RepositoriesApi(self.client)
        self.branches = BranchesApi(self.client)
        self.objects = ObjectsApi(self.client)
        self.commits = CommitsApi(self.client)


@pytest.fixture
def sdk(lakefs_server) -> Iterator[Sdk]:
    client = Sdk(lakefs_server)
    try:
        yield client
    finally:
        client.client.close()
        client.client.rest_client.pool_manager.clear()


def posts(server, suffix: str) -> int:
    return sum(
        1 for method, path, _ in server.requests if method == "POST" and path.endswith(suffix)
    )


def test_open_store_configures_lakefs_without_any_request(lakefs_server):
    settings = DataSettings(
        store="lakefs",
        lakefs_endpoint=lakefs_server.endpoint + "/",
        lakefs_access_key_id=lakefs_server.access_key_id,
        lakefs_secret_access_key=lakefs_server.secret_access_key,
        lakefs_repository="datasets",
        lakefs_branch="data",
        lakefs_storage_namespace="s3://b/datasets",
    )
    with open_store(settings) as opened:
        assert isinstance(opened, LakeFSStore)
        assert (opened.endpoint, opened.repository, opened.branch) == (
            lakefs_server.endpoint,
            "datasets",
            "data",
        )
        assert opened.storage_namespace == "s3://b/datasets"
        assert lakefs_server.secret_access_key not in repr(opened)
    assert lakefs_server.requests == []


def test_first_commit_bootstraps_the_repository(lakefs_server, sdk, tmp_path):
    with make_store(lakefs_server, branch="data") as store:
        assert store.versions() == []  # an empty server is an empty store
        version = store.commit("raw/adult", write(tmp_path / "s", {"a": b"a"}), META)

    repository = sdk.repositories.get_repository("payband")
    assert repository.storage_namespace == "s3://bucket/payband"
    assert repository.default_branch == "data"
    assert sdk.branches.get_branch("payband", "data").commit_id == version.version


def test_bootstrap_adds_the_branch_to_an_existing_repository(lakefs_server, sdk, tmp_path):
    sdk.repositories.create_repository(
        RepositoryCreation(name="payband", storage_namespace="s3://other/ns")
    )
    main_head = sdk.branches.get_branch("payband", "main").commit_id

    with make_store(lakefs_server, branch="datasets") as store:
        version = store.commit("raw/adult", write(tmp_path / "s", {"a": b"a"}), META)

    assert sdk.branches.get_branch("payband", "datasets").commit_id == version.version
    assert sdk.commits.get_commit("payband", version.version).parents == [main_head]
    # The default branch is left alone.
    assert sdk.branches.get_branch("payband", "main").commit_id == main_head


def test_commit_metadata_in_lakefs(store, sdk, tmp_path):
    version = store.commit("raw/adult", write(tmp_path / "s", {"a": b"a", "b": b"b"}), META)
    stored = sdk.commits.get_commit("payband", version.version)
    assert stored.message == "raw/adult: 2 rows"
    assert json.loads(stored.metadata.pop("files")) == version.files
    assert stored.metadata == version.metadata
    assert "files" not in version.metadata

    custom = store.commit("raw/pums", write(tmp_path / "p", {"a": b"p"}), META, message="CA 2019")
    assert sdk.commits.get_commit("payband", custom.version).message == "CA 2019"


def test_recommitting_the_latest_content_sends_no_upload(lakefs_server, store, tmp_path):
    files = write(tmp_path / "s", {"a": b"a"})
    first = store.commit("raw/adult", files, META)
    store.commit("raw/pums", write(tmp_path / "p", {"p": b"p"}), META)  # another dataset between
    uploads, commits = posts(lakefs_server, "/objects"), posts(lakefs_server, "/commits")

    assert store.commit("raw/adult", files, META) == first
    assert posts(lakefs_server, "/objects") == uploads
    assert posts(lakefs_server, "/commits") == commits


def test_a_new_version_replaces_the_datasets_files_on_the_branch(store, sdk, tmp_path):
    store.commit("raw/adult", write(tmp_path / "1", {"a": b"1", "b": b"1"}), META)
    second = store.commit("raw/adult", write(tmp_path / "2", {"a": b"2"}), META)
    listed = sdk.objects.list_objects("payband", "main", prefix="raw/adult/")
    assert [entry.path for entry in listed.results] == ["raw/adult/a"]
    assert sdk.branches.get_branch("payband", "main").commit_id == second.version


def test_a_commit_leaves_nested_datasets_on_the_branch(store, sdk, tmp_path):
    inner = store.commit("raw/adult/extra", write(tmp_path / "i", {"a": b"inner"}), META)
    outer = store.commit("raw/adult", write(tmp_path / "o", {"b": b"outer"}), META)
    listed = sdk.objects.list_objects("payband", outer.version, prefix="raw/adult/")
    assert [entry.path for entry in listed.results] == ["raw/adult/b", "raw/adult/extra/a"]
    assert store.fetch(outer.uri, tmp_path / "out") == {"b": tmp_path / "out" / "b"}
    assert store.latest("raw/adult/extra") == inner


def test_versions_page_through_the_log(lakefs_server, tmp_path):
    with make_store(lakefs_server, page_size=2) as store:
        made = [
            store.commit("raw/adult", write(tmp_path / str(n), {"a": str(n).encode()}), META)
            for n in range(5)
        ]
        log_requests_before = sum(1 for _, path, _ in lakefs_server.requests if "/commits" in path)
        assert store.versions() == made[::-1]
        log_requests = sum(1 for _, path, _ in lakefs_server.requests if "/commits" in path)
    # Five versions plus "Repository created", two per page.
    assert log_requests - log_requests_before == 3


def test_commits_payband_did_not_make_are_ignored(store, sdk, tmp_path):
    version = store.commit("raw/adult", write(tmp_path / "s", {"a": b"a"}), META)
    foreign = sdk.commits.commit(
        "payband", "main", CommitCreation(message="someone else", allow_empty=True)
    )
    assert store.versions() == [version]
    with pytest.raises(StoreError, match="is not a payband dataset version"):
        store.get(f"lakefs://payband/{foreign.id}/raw/adult/")


def test_fetch_verifies_sha256_against_the_metadata(store, sdk, tmp_path):
    # Someone commits other bytes under the dataset with metadata copied from a real version.
    version = store.commit("raw/adult", write(tmp_path / "s", {"a": b"good"}), META)
    forged_source = write(tmp_path / "f", {"a": b"forged"})["a"]
    sdk.objects.upload_object("payband", "main", "raw/adult/a", content=str(forged_source))
    stored = sdk.commits.get_commit("payband", version.version)
    forged = sdk.commits.commit(
        "payband", "main", CommitCreation(message="forged", metadata=stored.metadata)
    )

    dest = tmp_path / "out"
    with pytest.raises(
        StoreError, match=r"file 'a' of lakefs://payband/[0-9a-f]{64}/raw/adult/ is corrupt"
    ):
        store.fetch(f"lakefs://payband/{forged.id}/raw/adult/", dest)
    assert list(dest.iterdir()) == []
    assert store.fetch(version.uri, tmp_path / "ok")["a"].read_bytes() == b"good"


def test_fetch_refuses_a_version_whose_files_do_not_match_its_metadata(store, sdk, tmp_path):
    version = store.commit("raw/adult", write(tmp_path / "s", {"a": b"a"}), META)
    extra = write(tmp_path / "x", {"extra": b"x"})["extra"]
    sdk.objects.upload_object("payband", "main", "raw/adult/extra", content=str(extra))
    stored = sdk.commits.get_commit("payband", version.version)
    tampered = sdk.commits.commit(
        "payband", "main", CommitCreation(message="extra", metadata=stored.metadata)
    )
    with pytest.raises(StoreError, match=r"holds files \['a', 'extra'\] in lakeFS"):
        store.fetch(f"lakefs://payband/{tampered.id}/raw/adult/", tmp_path / "out")


def test_uri_of_another_repository_is_refused(store):
    with pytest.raises(
        StoreError, match="in lakeFS repository 'elsewhere', but this store uses 'payband'"
    ):
        store.get("lakefs://elsewhere/" + "a" * 64 + "/raw/adult/")
    with pytest.raises(StoreError, match="is a local-store URI"):
        store.get("local://raw/adult@" + "a" * 64)


def test_wrong_credentials_give_one_line_without_the_secret(lakefs_server, tmp_path):
    secret = "wrong-secret-value-123"
    with make_store(lakefs_server, secret_access_key=secret) as store:
        with pytest.raises(StoreError) as caught:
            store.commit("raw/adult", write(tmp_path / "s", {"a": b"a"}), META)
        message = str(caught.value)
        assert "HTTP 401" in message
        assert lakefs_server.endpoint in message
        assert "'payband'" in message
        assert "PAYBAND_DATA_LAKEFS_SECRET_ACCESS_KEY" in message
        assert secret not in message
        assert lakefs_server.secret_access_key not in message
        assert "\n" not in message
        assert "Traceback" not in message
        assert caught.value.__cause__ is None

        with pytest.raises(StoreError, match="HTTP 401") as caught:
            store.versions()
        assert secret not in str(caught.value)


def test_unreachable_endpoint_is_one_readable_line(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more.
    store = LakeFSStore(f"http://127.0.0.1:{port}", "key", "secret-xyz", "payband")
    with store, pytest.raises(StoreError) as caught:
        store.latest("raw/adult")
    message = str(caught.value)
    assert message.startswith("cannot reach lakeFS while reading the log of branch 'main'")
    assert f"http://127.0.0.1:{port}" in message
    assert "Connection refused" in message
    assert "secret-xyz" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"endpoint": "127.0.0.1:8000"}, "invalid lakeFS endpoint"),
        ({"repository": "Pay_Band"}, "invalid lakeFS repository name"),
        ({"branch": "no/slash"}, "invalid lakeFS branch name"),
        ({"page_size": 0}, "page_size"),
    ],
)
def test_bad_configuration_is_refused_up_front(lakefs_server, options, fragment):
    with pytest.raises(StoreError, match=fragment):
        make_store(lakefs_server, **options)
