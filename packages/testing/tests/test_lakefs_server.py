"""The lakeFS test double answers in lakeFS's shapes: lakefs-sdk's own models parse every response.

Two views on each endpoint: through the SDK's API classes (which deserialize into the models
and raise the SDK's exceptions) and as raw HTTP, where each JSON body is checked key by key
against the model's fields and parsed by the model strictly.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import lakefs_sdk
import pytest
from lakefs_sdk import (
    ApiClient,
    BranchCreation,
    BranchesApi,
    Commit,
    CommitCreation,
    CommitList,
    CommitsApi,
    Configuration,
    HealthCheckApi,
    ObjectsApi,
    ObjectStats,
    ObjectStatsList,
    Ref,
    RefsApi,
    RepositoriesApi,
    Repository,
    RepositoryCreation,
)
from lakefs_sdk import Error as ErrorModel
from lakefs_sdk.exceptions import (
    BadRequestException,
    NotFoundException,
    UnauthorizedException,
)

from payband_testing.checks import port_is_closed
from payband_testing.lakefs import LakeFSTestServer

HEX64 = "0123456789abcdef"


class Sdk:
    """lakefs-sdk's API classes bound to one server."""

    def __init__(self, server: LakeFSTestServer, secret: str | None = None) -> None:
        configuration = Configuration(
            host=f"{server.endpoint}/api/v1",
            username=server.access_key_id,
            password=server.secret_access_key if secret is None else secret,
        )
        self.client = ApiClient(configuration)
        self.repositories = RepositoriesApi(self.client)
        self.branches = BranchesApi(self.client)
        self.objects = ObjectsApi(self.client)
        self.commits = CommitsApi(self.client)
        self.refs = RefsApi(self.client)
        self.health = HealthCheckApi(self.client)

    def close(self) -> None:
        self.client.close()
        self.client.rest_client.pool_manager.clear()


@pytest.fixture
def sdk(lakefs_server: LakeFSTestServer) -> Iterator[Sdk]:
    client = Sdk(lakefs_server)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def repo(sdk: Sdk) -> str:
    sdk.repositories.create_repository(
        RepositoryCreation(name="repo", storage_namespace="s3://bucket/repo")
    )
    return "repo"


def raw(
    server: LakeFSTestServer,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request with the standard library; returns status, headers, body."""
    sent = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    if auth:
        token = f"{server.access_key_id}:{server.secret_access_key}".encode()
        sent["Authorization"] = "Basic " + base64.b64encode(token).decode()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, f"/api/v1{path}", body=body, headers=sent)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def parse_exactly(model: type, body: bytes) -> Any:
    """Parse a JSON body with an SDK model, refusing keys the model does not define."""
    payload = json.loads(body)
    assert set(payload) <= {field.alias for field in model.__fields__.values()}, payload
    return model.parse_obj(payload)


def assert_error(status: int, body: bytes, expected_status: int, fragment: str) -> None:
    assert status == expected_status, body
    error = parse_exactly(ErrorModel, body)
    assert fragment in error.message


def upload(sdk: Sdk, tmp_path, repo: str, path: str, data: bytes, branch: str = "main"):
    source = tmp_path / hashlib.sha256(data + path.encode()).hexdigest()
    source.write_bytes(data)
    return sdk.objects.upload_object(repo, branch, path, content=str(source))


def test_sdk_reports_the_server_version_it_is_written_against():
    assert lakefs_sdk.__version__ == "1.88.0"


def test_repository_endpoints_parse_as_sdk_models(lakefs_server, sdk):
    created = sdk.repositories.create_repository(
        RepositoryCreation(name="data", storage_namespace="s3://b/p", default_branch="trunk")
    )
    assert isinstance(created, Repository)
    assert (created.id, created.default_branch, created.storage_namespace) == (
        "data",
        "trunk",
        "s3://b/p",
    )
    assert sdk.repositories.get_repository("data") == created

    status, _, body = raw(lakefs_server, "GET", "/repositories/data")
    assert status == 200
    assert parse_exactly(Repository, body) == created

    # A new repository has its default branch at a first, empty commit.
    branch = sdk.branches.get_branch("data", "trunk")
    assert isinstance(branch, Ref)
    first = sdk.commits.get_commit("data", branch.commit_id)
    assert (first.message, first.parents, first.metadata) == ("Repository created", [], {})
    assert len(first.id) == 64
    assert set(first.id) <= set(HEX64)


def test_bare_repository_has_no_branch(sdk):
    sdk.repositories.create_repository(
        RepositoryCreation(name="bare-repo", storage_namespace="s3://b/bare"), bare=True
    )
    with pytest.raises(NotFoundException):
        sdk.branches.get_branch("bare-repo", "main")


def test_duplicate_and_invalid_repositories_are_refused(lakefs_server, sdk, repo):
    status, _, body = raw(
        lakefs_server, "POST", "/repositories", {"name": repo, "storage_namespace": "s3://x/y"}
    )
    assert_error(status, body, 409, "already exists")
    status, _, body = raw(
        lakefs_server, "POST", "/repositories", {"name": "Bad_Name", "storage_namespace": "s3://x"}
    )
    assert_error(status, body, 400, "invalid repository name")
    status, _, body = raw(lakefs_server, "POST", "/repositories", {"name": "ok-name"})
    assert_error(status, body, 400, "storage namespace")


def test_branch_endpoints(lakefs_server, sdk, repo):
    main = sdk.branches.get_branch(repo, "main")
    # createBranch answers the commit id as text, which the SDK returns as str.
    answer = sdk.branches.create_branch(repo, BranchCreation(name="data", source="main"))
    assert answer == main.commit_id
    assert sdk.branches.get_branch(repo, "data") == Ref(id="data", commit_id=main.commit_id)

    status, _, body = raw(lakefs_server, "GET", f"/repositories/{repo}/branches/data")
    assert status == 200
    assert parse_exactly(Ref, body).commit_id == main.commit_id

    status, _, body = raw(
        lakefs_server, "POST", f"/repositories/{repo}/branches", {"name": "data", "source": "main"}
    )
    assert_error(status, body, 409, "already exists")
    status, _, body = raw(
        lakefs_server, "POST", f"/repositories/{repo}/branches", {"name": "x", "source": "nope"}
    )
    assert_error(status, body, 404, "not found")


def test_upload_multipart_as_the_sdk_sends_it(lakefs_server, sdk, repo, tmp_path):
    # Bytes that look like multipart framing must survive the round trip.
    data = b"\x00\x01--boundary\r\n\r\nline\r\n" * 3
    stats = upload(sdk, tmp_path, repo, "raw/adult/adult.data", data)
    assert isinstance(stats, ObjectStats)
    assert (stats.path, stats.path_type, stats.size_bytes) == (
        "raw/adult/adult.data",
        "object",
        len(data),
    )
    assert stats.checksum == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert stats.physical_address.startswith("s3://bucket/repo/data/")
    assert bytes(sdk.objects.get_object(repo, "main", "raw/adult/adult.data")) == data
    assert lakefs_server.requests[-2][:2] == (
        "POST",
        f"/api/v1/repositories/{repo}/branches/main/objects",
    )


def test_upload_octet_stream_and_raw_shapes(lakefs_server, repo):
    data = bytes(range(256))
    status, _, body = raw(
        lakefs_server,
        "POST",
        f"/repositories/{repo}/branches/main/objects?path=a%2Fb.bin",
        data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 201
    stats = parse_exactly(ObjectStats, body)
    assert (stats.path, stats.size_bytes) == ("a/b.bin", 256)

    status, headers, body = raw(
        lakefs_server, "GET", f"/repositories/{repo}/refs/main/objects?path=a/b.bin"
    )
    assert (status, body) == (200, data)
    assert headers["ETag"] == f'"{stats.checksum}"'

    status, _, body = raw(
        lakefs_server, "POST", f"/repositories/{repo}/branches/main/objects", b"x"
    )
    assert_error(status, body, 400, "path")


def test_commit_snapshots_staged_objects(sdk, repo, tmp_path):
    upload(sdk, tmp_path, repo, "d/a.txt", b"one")
    first = sdk.commits.commit(repo, "main", CommitCreation(message="first", metadata={"k": "v"}))
    assert isinstance(first, Commit)
    assert (first.message, first.metadata, first.committer) == ("first", {"k": "v"}, "admin")
    assert len(first.id) == 64
    assert sdk.branches.get_branch(repo, "main").commit_id == first.id
    assert sdk.commits.get_commit(repo, first.id) == first

    # Staged changes are visible on the branch, not at the commit.
    upload(sdk, tmp_path, repo, "d/a.txt", b"two")
    assert bytes(sdk.objects.get_object(repo, "main", "d/a.txt")) == b"two"
    assert bytes(sdk.objects.get_object(repo, first.id, "d/a.txt")) == b"one"
    second = sdk.commits.commit(repo, "main", CommitCreation(message="second"))
    assert second.parents == [first.id]
    assert second.generation == first.generation + 1
    assert bytes(sdk.objects.get_object(repo, first.id, "d/a.txt")) == b"one"
    assert bytes(sdk.objects.get_object(repo, second.id, "d/a.txt")) == b"two"


def test_commit_without_changes_is_refused_unless_allowed(lakefs_server, sdk, repo, tmp_path):
    with pytest.raises(BadRequestException) as caught:
        sdk.commits.commit(repo, "main", CommitCreation(message="nothing"))
    assert "no changes" in ErrorModel.from_json(caught.value.body).message

    # Uploading then deleting a new path nets to no change either.
    upload(sdk, tmp_path, repo, "tmp.txt", b"x")
    sdk.objects.delete_object(repo, "main", "tmp.txt")
    status, _, body = raw(
        lakefs_server, "POST", f"/repositories/{repo}/branches/main/commits", {"message": "m"}
    )
    assert_error(status, body, 400, "no changes")

    empty = sdk.commits.commit(repo, "main", CommitCreation(message="empty", allow_empty=True))
    assert empty.message == "empty"

    status, _, body = raw(
        lakefs_server, "POST", f"/repositories/{repo}/branches/main/commits", {"metadata": {}}
    )
    assert_error(status, body, 400, "message")


def test_delete_object(sdk, repo, tmp_path):
    upload(sdk, tmp_path, repo, "d/a.txt", b"a")
    before = sdk.commits.commit(repo, "main", CommitCreation(message="add"))
    assert sdk.objects.delete_object(repo, "main", "d/a.txt") is None
    with pytest.raises(NotFoundException):
        sdk.objects.get_object(repo, "main", "d/a.txt")
    after = sdk.commits.commit(repo, "main", CommitCreation(message="delete"))
    assert bytes(sdk.objects.get_object(repo, before.id, "d/a.txt")) == b"a"
    with pytest.raises(NotFoundException):
        sdk.objects.get_object(repo, after.id, "d/a.txt")
    with pytest.raises(NotFoundException):
        sdk.objects.delete_object(repo, "main", "d/a.txt")


def test_list_objects_pages_and_groups_by_delimiter(lakefs_server, sdk, repo, tmp_path):
    for path in ["raw/adult/a", "raw/adult/b", "raw/adult/c", "raw/adult/x/deep", "raw/pums/p"]:
        upload(sdk, tmp_path, repo, path, path.encode())

    listed = sdk.objects.list_objects(repo, "main", prefix="raw/adult/", delimiter="/", amount=2)
    assert isinstance(listed, ObjectStatsList)
    assert [s.path for s in listed.results] == ["raw/adult/a", "raw/adult/b"]
    assert listed.pagination.has_more
    assert listed.pagination.next_offset == "raw/adult/b"
    assert (listed.pagination.results, listed.pagination.max_per_page) == (2, 2)

    rest = sdk.objects.list_objects(
        repo, "main", prefix="raw/adult/", delimiter="/", after=listed.pagination.next_offset
    )
    assert [(s.path, s.path_type) for s in rest.results] == [
        ("raw/adult/c", "object"),
        ("raw/adult/x/", "common_prefix"),
    ]
    assert not rest.pagination.has_more
    assert rest.pagination.next_offset == ""

    everything = sdk.objects.list_objects(repo, "main")
    assert len(everything.results) == 5

    status, _, body = raw(
        lakefs_server, "GET", f"/repositories/{repo}/refs/main/objects/ls?prefix=raw/&delimiter=/"
    )
    assert status == 200
    page = parse_exactly(ObjectStatsList, body)
    for entry in json.loads(body)["results"]:
        assert set(entry) <= {f.alias for f in ObjectStats.__fields__.values()}
    assert [s.path for s in page.results] == ["raw/adult/", "raw/pums/"]


def test_log_commits_pages_newest_first(lakefs_server, sdk, repo, tmp_path):
    made = []
    for number in range(5):
        upload(sdk, tmp_path, repo, "f", str(number).encode())
        made.append(sdk.commits.commit(repo, "main", CommitCreation(message=f"c{number}")).id)
    first_commit = sdk.branches.get_branch(repo, "main").commit_id
    assert first_commit == made[-1]

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = sdk.refs.log_commits(repo, "main", after=after, amount=2)
        assert isinstance(page, CommitList)
        pages += 1
        seen += [commit.id for commit in page.results]
        if not page.pagination.has_more:
            assert page.pagination.next_offset == ""
            break
        assert page.pagination.next_offset == page.results[-1].id
        after = page.pagination.next_offset
    # Five commits plus "Repository created", newest first.
    assert seen[:5] == made[::-1]
    assert len(seen) == 6
    assert pages == 3

    # Log from a commit id starts there.
    from_commit = sdk.refs.log_commits(repo, made[2])
    assert [c.id for c in from_commit.results][:3] == made[2::-1]

    status, _, body = raw(lakefs_server, "GET", f"/repositories/{repo}/refs/main/commits?amount=1")
    assert status == 200
    page = parse_exactly(CommitList, body)
    for entry in json.loads(body)["results"]:
        assert set(entry) <= {f.alias for f in Commit.__fields__.values()}
    assert page.results[0].id == made[-1]


def test_unsupported_parameters_are_refused_not_ignored(lakefs_server, repo):
    status, _, body = raw(
        lakefs_server, "GET", f"/repositories/{repo}/refs/main/commits?prefixes=a/"
    )
    assert_error(status, body, 501, "not supported")


def test_not_found_shapes(lakefs_server, sdk, repo):
    cases = [
        ("GET", "/repositories/nope", "repository not found"),
        ("GET", f"/repositories/{repo}/branches/nope", "branch not found"),
        ("GET", f"/repositories/{repo}/commits/{'0' * 64}", "commit not found"),
        ("GET", f"/repositories/{repo}/refs/nope/objects?path=a", "ref not found"),
        ("GET", f"/repositories/{repo}/refs/main/objects?path=missing", "object not found"),
        ("GET", f"/repositories/{repo}/refs/nope/commits", "ref not found"),
        ("GET", "/no/such/route", "not found"),
    ]
    for method, path, fragment in cases:
        status, headers, body = raw(lakefs_server, method, path)
        assert headers["Content-Type"] == "application/json"
        assert_error(status, body, 404, fragment)

    with pytest.raises(NotFoundException) as caught:
        sdk.commits.get_commit(repo, "f" * 64)
    assert ErrorModel.from_json(caught.value.body).message.startswith("commit not found")

    status, _, body = raw(lakefs_server, "PUT", f"/repositories/{repo}")
    assert_error(status, body, 405, "not allowed")


def test_authentication_is_required(lakefs_server, repo):
    status, _, body = raw(lakefs_server, "GET", f"/repositories/{repo}", auth=False)
    assert_error(status, body, 401, "error authenticating request")

    wrong = Sdk(lakefs_server, secret="not-the-secret")
    try:
        with pytest.raises(UnauthorizedException) as caught:
            wrong.repositories.get_repository(repo)
        assert ErrorModel.from_json(caught.value.body).message == "error authenticating request"
        # The health check is open, as in lakeFS.
        assert wrong.health.health_check() is None
    finally:
        wrong.close()


def test_servers_have_their_own_random_keys():
    one, two = LakeFSTestServer(), LakeFSTestServer()
    assert one.access_key_id != two.access_key_id
    assert one.secret_access_key != two.secret_access_key
    chosen = LakeFSTestServer(access_key_id="AKIATEST", secret_access_key="s3cr3t")
    assert (chosen.access_key_id, chosen.secret_access_key) == ("AKIATEST", "s3cr3t")


def test_stop_closes_the_port_and_open_connections():
    server = LakeFSTestServer().start()
    port = server.port
    assert server.endpoint == f"http://127.0.0.1:{port}"
    # An idle keep-alive connection must not keep the server alive.
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        idle.sendall(b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += idle.recv(1000)
        assert answer.startswith(b"HTTP/1.1 204")
        server.stop()
        assert idle.recv(100) == b""  # closed by the server
    finally:
        idle.close()
    assert port_is_closed(port)
    assert not server.running
    server.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.endpoint


def test_context_manager_starts_and_stops():
    with LakeFSTestServer() as server:
        port = server.port
        status, _, _ = raw(server, "GET", "/healthcheck", auth=False)
        assert status == 204
    assert port_is_closed(port)
