"""A local test double of the lakeFS REST API: in memory, standard library only.

This is NOT lakeFS. lakeFS cannot be installed on these machines, so payband's lakeFS adapter
is tested against this server, which answers the endpoints the adapter uses with the response
shapes of lakeFS's OpenAPI spec (``lakefs-sdk``'s pydantic models parse every response; the
tests of this package check that). It listens on 127.0.0.1 only and keeps everything in memory.

Endpoints covered, all under ``/api/v1`` (operation ids as in lakeFS's spec):

====== ============================================================= =================
GET    /healthcheck                                                  healthCheck
POST   /repositories  (query ``bare``)                               createRepository
GET    /repositories/{repository}                                    getRepository
POST   /repositories/{repository}/branches                           createBranch
GET    /repositories/{repository}/branches/{branch}                  getBranch
POST   /repositories/{repository}/branches/{branch}/objects ?path=   uploadObject
DELETE /repositories/{repository}/branches/{branch}/objects ?path=   deleteObject
POST   /repositories/{repository}/branches/{branch}/commits          commit
GET    /repositories/{repository}/commits/{commitId}                 getCommit
GET    /repositories/{repository}/refs/{ref}/commits                 logCommits
GET    /repositories/{repository}/refs/{ref}/objects ?path=          getObject
GET    /repositories/{repository}/refs/{ref}/objects/ls              listObjects
====== ============================================================= =================

Semantics follow lakeFS where the adapter can observe them: a repository is created with its
default branch and a first commit "Repository created" (none with ``bare=true``); branches
point at commits and stage uploads and deletes until a commit snapshots them; a commit without
changes is refused with 400 "commit: no changes" unless ``allow_empty``; reads take a branch
name (staged changes included) or a full 64-hex commit id; ``logCommits`` follows first
parents, newest first, paged with ``after``/``amount`` and ``has_more``/``next_offset``;
``listObjects`` pages the same way and groups by ``delimiter``. Uploads are
``multipart/form-data`` (field ``content``, as lakefs-sdk sends them) or
``application/octet-stream``; object checksums are MD5 hex like S3 ETags. Every endpoint but
the health check needs HTTP Basic auth with the server's key pair (401 otherwise). Errors are
lakeFS's ``{"message": ...}``. Not covered: tags, merges, short or relative refs (``main~1``),
presigned URLs, byte ranges, ``logCommits`` filters (``objects``, ``prefixes``, ``since``...),
users and policies; such parameters get 501 rather than being silently ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from payband_testing._http import BackgroundHTTPServer, LoopbackHTTPServer

__all__ = ["LakeFSTestServer"]

_API = "/api/v1"
_REPOSITORY_ID = re.compile(r"[a-z0-9][a-z0-9-]{2,62}")
_BRANCH_ID = re.compile(r"\w[-\w]*")
_COMMIT_ID = re.compile(r"[0-9a-f]{64}")
_DEFAULT_AMOUNT = 100
_MAX_AMOUNT = 1000


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _Object:
    data: bytes
    checksum: str
    physical_address: str
    mtime: int
    content_type: str


@dataclass(frozen=True)
class _Commit:
    id: str
    parents: list[str]
    committer: str
    message: str
    creation_date: int
    meta_range_id: str
    metadata: dict[str, str]
    generation: int
    objects: dict[str, _Object]


@dataclass
class _Branch:
    name: str
    head: str
    staged: dict[str, _Object | None] = field(default_factory=dict)


@dataclass
class _Repository:
    id: str
    storage_namespace: str
    default_branch: str
    creation_date: int
    branches: dict[str, _Branch] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Request:
    method: str
    params: dict[str, str]
    query: dict[str, str]
    headers: Message
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            parsed = json.loads(self.body or b"null")
        except ValueError:
            raise _HTTPError(400, "request body is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise _HTTPError(400, "request body must be a JSON object")
        return parsed


def _json(status: int, payload: object) -> _Response:
    return _Response(status, json.dumps(payload).encode())


class _State:
    """The in-memory lakeFS: repositories, branches, commits, objects."""

    def __init__(self, access_key_id: str, secret_access_key: str) -> None:
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.repositories: dict[str, _Repository] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str, int]] = []
        self._counter = 0

    # --- helpers -------------------------------------------------------------------------

    def repository(self, name: str) -> _Repository:
        try:
            return self.repositories[name]
        except KeyError:
            raise _HTTPError(404, f"repository not found: {name}") from None

    def branch(self, repository: _Repository, name: str) -> _Branch:
        try:
            return repository.branches[name]
        except KeyError:
            raise _HTTPError(404, f"branch not found: {name}") from None

    def commit_of(self, repository: _Repository, ref: str) -> _Commit:
        if ref in repository.branches:
            return repository.commits[repository.branches[ref].head]
        if ref in repository.commits:
            return repository.commits[ref]
        raise _HTTPError(404, f"ref not found: {ref}")

    def objects_at(self, repository: _Repository, ref: str) -> dict[str, _Object]:
        """What a read at ``ref`` sees: a commit's snapshot, or a branch with its staging."""
        if ref in repository.branches:
            return _branch_objects(repository, repository.branches[ref])
        return self.commit_of(repository, ref).objects

    def new_commit(
        self,
        repository: _Repository,
        *,
        parents: list[str],
        message: str,
        metadata: dict[str, str],
        objects: dict[str, _Object],
        creation_date: int,
    ) -> _Commit:
        self._counter += 1
        meta_range = [(path, objects[path].physical_address) for path in sorted(objects)]
        meta_range_id = (
            hashlib.sha256(json.dumps(meta_range).encode()).hexdigest() if objects else ""
        )
        identity = [repository.id, parents, message, metadata, creation_date, meta_range_id]
        identity.append(self._counter)
        commit_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        generation = 1 + max((repository.commits[p].generation for p in parents), default=0)
        commit = _Commit(
            id=commit_id,
            parents=parents,
            committer="admin",
            message=message,
            creation_date=creation_date,
            meta_range_id=meta_range_id,
            metadata=metadata,
            generation=generation,
            objects=objects,
        )
        repository.commits[commit_id] = commit
        return commit

    # --- endpoints -----------------------------------------------------------------------

    def health_check(self, request: _Request) -> _Response:
        return _Response(204)

    def create_repository(self, request: _Request) -> _Response:
        body = request.json()
        name = body.get("name")
        namespace = body.get("storage_namespace")
        default_branch = body.get("default_branch") or "main"
        if not isinstance(name, str) or not _REPOSITORY_ID.fullmatch(name):
            raise _HTTPError(400, f"invalid repository name: {name!r}")
        if not isinstance(namespace, str) or not re.fullmatch(r"[a-z0-9]+://\S+", namespace):
            raise _HTTPError(400, f"invalid storage namespace: {namespace!r}")
        if not isinstance(default_branch, str) or not _BRANCH_ID.fullmatch(default_branch):
            raise _HTTPError(400, f"invalid default branch name: {default_branch!r}")
        if name in self.repositories:
            raise _HTTPError(409, f"repository already exists: {name}")
        repository = _Repository(name, namespace, default_branch, int(time.time()))
        if not _flag(request.query.get("bare", "")):
            first = self.new_commit(
                repository,
                parents=[],
                message="Repository created",
                metadata={},
                objects={},
                creation_date=repository.creation_date,
            )
            repository.branches[default_branch] = _Branch(default_branch, first.id)
        self.repositories[name] = repository
        return _json(201, _repository_json(repository))

    def get_repository(self, request: _Request) -> _Response:
        return _json(200, _repository_json(self.repository(request.params["repository"])))

    def create_branch(self, request: _Request) -> _Response:
        repository = self.repository(request.params["repository"])
        body = request.json()
        name, source = body.get("name"), body.get("source")
        if not isinstance(name, str) or not _BRANCH_ID.fullmatch(name):
            raise _HTTPError(400, f"invalid branch name: {name!r}")
        if not isinstance(source, str):
            raise _HTTPError(400, "source is required")
        head = self.commit_of(repository, source)
        if name in repository.branches:
            raise _HTTPError(409, f"branch already exists: {name}")
        repository.branches[name] = _Branch(name, head.id)
        # lakeFS answers the new branch's commit id as text.
        return _Response(201, head.id.encode(), content_type="text/html")

    def get_branch(self, request: _Request) -> _Response:
        repository = self.repository(request.params["repository"])
        branch = self.branch(repository, request.params["branch"])
        return _json(200, {"id": branch.name, "commit_id": branch.head})

    def upload_object(self, request: _Request) -> _Response:
        repository = self.repository(request.params["repository"])
        branch = self.branch(repository, request.params["branch"])
        path = _required(request, "path")
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            data, part_type = _multipart_field(request.body, content_type, "content")
        elif content_type.startswith("application/octet-stream") or not content_type:
            data, part_type = request.body, "application/octet-stream"
        else:
            raise _HTTPError(400, f"unsupported upload content type: {content_type}")
        visible = _branch_objects(repository, branch)
        if request.headers.get("If-None-Match") == "*" and path in visible:
            raise _HTTPError(412, "precondition failed: object exists")
        now = int(time.time())
        stored = _Object(
            data=data,
            checksum=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            physical_address=f"{repository.storage_namespace.rstrip('/')}/data/{uuid.uuid4().hex}",
            mtime=now,
            content_type=part_type,
        )
        branch.staged[path] = stored
        return _json(201, _object_json(path, stored))

    def delete_object(self, request: _Request) -> _Response:
        repository = self.repository(request.params["repository"])
        branch = self.branch(repository, request.params["branch"])
        path = _required(request, "path")
        if path not in _branch_objects(repository, branch):
            raise _HTTPError(404, f"object not found: {path}")
        branch.staged[path] = None
        return _Response(204)

    def commit(self, request: _Request) -> _Response:
        repository = self.repository(request.params["repository"])
        branch = self.branch(repository, request.params["branch"])
        body = request.json()
        message, metadata = body.get("message"), body.get("metadata") or {}
        if not isinstance(message, str):
            raise _HTTPError(400, "message is required")
        if not isinstance(metadata, dict) or not all(
            isinstance(value, str) for value in metadata.values()
        ):
            raise _HTTPError(400, "metadata must map strings to strings")
        date = body.get("date")
        if date is not None and not isinstance(date, int):
            raise _HTTPError(400, "date must be an integer (Unix seconds)")
        head = repository.commits[branch.head]
        objects = _branch_objects(repository, branch)
        unchanged = {p: o.physical_address for p, o in objects.items()} == {
            p: o.physical_address for p, o in head.objects.items()
        }
        if unchanged and not body.get("allow_empty", False):
            raise _HTTPError(400, "commit: no changes")
        created = self.new_commit(
            repository,
            parents=[head.id],
            message=message,
            metadata=dict(metadata),
            objects=objects,
            creation_date=date if date is not None else int(time.time()),
        )
        branch.head = created.id
        branch.staged.clear()
        return _json(201, _commit_json(created))

    def get_commit(self, request: _Request) -> _Response:
        repository = self.repository(request.params["repository"])
        commit_id = request.params["commitId"]
        if commit_id not in repository.commits:
            raise _HTTPError(404, f"commit not found: {commit_id}")
        return _json(200, _commit_json(repository.commits[commit_id]))

    def log_commits(self, request: _Request) -> _Response:
        repository = self.repository(request.params["repository"])
        current: _Commit | None = self.commit_of(repository, request.params["ref"])
        chain: list[_Commit] = []
        while current is not None:
            chain.append(current)
            current = repository.commits[current.parents[0]] if current.parents else None
        after = request.query.get("after")
        if after:
            ids = [commit.id for commit in chain]
            chain = chain[ids.index(after) + 1 :] if after in ids else []
        return _json(200, _page(chain, _amount(request), lambda c: c.id, _commit_json))

    def get_object(self, request: _Request) -> _Response:
        repository = self.repository(request.params["repository"])
        path = _required(request, "path")
        found = self.objects_at(repository, request.params["ref"]).get(path)
        if found is None:
            raise _HTTPError(404, f"object not found: {path}")
        headers = (("ETag", f'"{found.checksum}"'),)
        return _Response(200, found.data, content_type=found.content_type, headers=headers)

    def list_objects(self, request: _Request) -> _Response:
        repository = self.repository(request.params["repository"])
        objects = self.objects_at(repository, request.params["ref"])
        prefix = request.query.get("prefix", "")
        delimiter = request.query.get("delimiter", "")
        after = request.query.get("after", "")
        entries: dict[str, dict[str, Any]] = {}
        for path in sorted(objects):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                entries[common] = {
                    "path": common,
                    "path_type": "common_prefix",
                    "physical_address": "",
                    "checksum": "",
                    "mtime": 0,
                }
            else:
                entries[path] = _object_json(path, objects[path])
        listed = [entries[path] for path in sorted(entries) if path > after]
        return _json(200, _page(listed, _amount(request), lambda e: e["path"], lambda e: e))


# The routes: method, path template under /api/v1, handler, query parameters it understands.
_ROUTES: list[tuple[str, str, Callable[[_State, _Request], _Response], frozenset[str]]] = [
    ("GET", "/healthcheck", _State.health_check, frozenset()),
    ("POST", "/repositories", _State.create_repository, frozenset({"bare"})),
    ("GET", "/repositories/{repository}", _State.get_repository, frozenset()),
    ("POST", "/repositories/{repository}/branches", _State.create_branch, frozenset()),
    ("GET", "/repositories/{repository}/branches/{branch}", _State.get_branch, frozenset()),
    (
        "POST",
        "/repositories/{repository}/branches/{branch}/objects",
        _State.upload_object,
        frozenset({"path", "force"}),
    ),
    (
        "DELETE",
        "/repositories/{repository}/branches/{branch}/objects",
        _State.delete_object,
        frozenset({"path", "force"}),
    ),
    ("POST", "/repositories/{repository}/branches/{branch}/commits", _State.commit, frozenset()),
    ("GET", "/repositories/{repository}/commits/{commitId}", _State.get_commit, frozenset()),
    (
        "GET",
        "/repositories/{repository}/refs/{ref}/commits",
        _State.log_commits,
        frozenset({"after", "amount"}),
    ),
    (
        "GET",
        "/repositories/{repository}/refs/{ref}/objects",
        _State.get_object,
        frozenset({"path"}),
    ),
    (
        "GET",
        "/repositories/{repository}/refs/{ref}/objects/ls",
        _State.list_objects,
        frozenset({"prefix", "after", "amount", "delimiter", "user_metadata"}),
    ),
]


def _branch_objects(repository: _Repository, branch: _Branch) -> dict[str, _Object]:
    """The branch's head snapshot with its staged uploads and deletes applied."""
    objects = dict(repository.commits[branch.head].objects)
    for path, staged in branch.staged.items():
        if staged is None:
            objects.pop(path, None)
        else:
            objects[path] = staged
    return objects


def _flag(value: str) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it (lakefs-sdk sends "True")."""
    if value in ("", "0", "f", "F", "false", "False", "FALSE"):
        return False
    if value in ("1", "t", "T", "true", "True", "TRUE"):
        return True
    raise _HTTPError(400, f"invalid boolean: {value!r}")


def _required(request: _Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise _HTTPError(400, f"missing required query parameter: {name}")
    return value


def _amount(request: _Request) -> int:
    raw = request.query.get("amount", "")
    try:
        amount = int(raw) if raw else _DEFAULT_AMOUNT
    except ValueError:
        raise _HTTPError(400, f"invalid amount: {raw!r}") from None
    if amount < -1 or amount > _MAX_AMOUNT:
        raise _HTTPError(400, f"amount must be between -1 and {_MAX_AMOUNT}")
    return amount if amount > 0 else _DEFAULT_AMOUNT


def _page(
    items: list[Any], amount: int, key: Callable[[Any], str], render: Callable[[Any], Any]
) -> dict[str, Any]:
    shown, has_more = items[:amount], len(items) > amount
    return {
        "pagination": {
            "has_more": has_more,
            "next_offset": key(shown[-1]) if has_more else "",
            "results": len(shown),
            "max_per_page": amount,
        },
        "results": [render(item) for item in shown],
    }


def _repository_json(repository: _Repository) -> dict[str, Any]:
    return {
        "id": repository.id,
        "creation_date": repository.creation_date,
        "default_branch": repository.default_branch,
        "storage_namespace": repository.storage_namespace,
        "read_only": False,
    }


def _object_json(path: str, stored: _Object) -> dict[str, Any]:
    return {
        "path": path,
        "path_type": "object",
        "physical_address": stored.physical_address,
        "checksum": stored.checksum,
        "size_bytes": len(stored.data),
        "mtime": stored.mtime,
        "metadata": {},
        "content_type": stored.content_type,
    }


def _commit_json(commit: _Commit) -> dict[str, Any]:
    return {
        "id": commit.id,
        "parents": list(commit.parents),
        "committer": commit.committer,
        "message": commit.message,
        "creation_date": commit.creation_date,
        "meta_range_id": commit.meta_range_id,
        "metadata": dict(commit.metadata),
        "generation": commit.generation,
        "version": 1,
    }


def _multipart_field(body: bytes, content_type: str, name: str) -> tuple[bytes, str]:
    """The bytes and content type of one field of a multipart/form-data body."""
    header = Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise _HTTPError(400, "multipart body without boundary")
    for part in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if part.startswith(b"--"):
            break
        head, separator, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not separator:
            continue
        headers = Message()
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip()] = value.strip()
        if headers.get_param("name", header="content-disposition") == name:
            return data.removesuffix(b"\r\n"), headers.get(
                "Content-Type", "application/octet-stream"
            )
    raise _HTTPError(400, f'multipart body has no "{name}" field')


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailers end with an empty line.
                while handler.rfile.readline().strip():
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lakefs-test-server"
    # Headers and body go out in separate writes; without this, delayed ACKs cost 40 ms each.
    disable_nagle_algorithm = True
    # Idle keep-alive connections are dropped after this many seconds.
    timeout = 30
    server: LoopbackHTTPServer[_State]

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is ``LakeFSTestServer.requests``."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        body = _read_body(self)
        url = urlsplit(self.path)
        state = self.server.state
        try:
            response = self._route(state, method, url.path, url.query, body)
        except _HTTPError as error:
            response = _json(error.status, {"message": error.message})
        except Exception as error:  # noqa: BLE001 - a server answers 500, it does not crash
            response = _json(500, {"message": f"test server error: {error!r}"})
        with state.lock:
            state.requests.append((method, url.path, response.status))
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for key, value in response.headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(response.body)

    def _route(self, state: _State, method: str, path: str, query: str, body: bytes) -> _Response:
        if not path.startswith(_API + "/"):
            raise _HTTPError(404, f"not found: {path}")
        segments = path[len(_API) + 1 :].split("/")
        allowed: list[str] = []
        for route_method, template, handler, known in _ROUTES:
            params = _match(template, segments)
            if params is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            if template != "/healthcheck":
                self._authenticate(state)
            parsed = {key: values[-1] for key, values in parse_qs(query).items()}
            unsupported = sorted(set(parsed) - known)
            if unsupported:
                raise _HTTPError(
                    501, f"lakeFS test server: query parameter(s) {unsupported} not supported"
                )
            if "Range" in self.headers:
                raise _HTTPError(501, "lakeFS test server: Range requests are not supported")
            request = _Request(method, params, parsed, self.headers, body)
            with state.lock:
                return handler(state, request)
        if allowed:
            raise _HTTPError(405, f"method {method} not allowed on {path}")
        raise _HTTPError(404, f"not found: {path}")

    def _authenticate(self, state: _State) -> None:
        scheme, _, encoded = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
            except ValueError:
                user = password = ""
            if hmac.compare_digest(user, state.access_key_id) and hmac.compare_digest(
                password, state.secret_access_key
            ):
                return
        raise _HTTPError(401, "error authenticating request")


def _match(template: str, segments: list[str]) -> dict[str, str] | None:
    parts = template.strip("/").split("/")
    if len(parts) != len(segments):
        return None
    params: dict[str, str] = {}
    for part, segment in zip(parts, segments, strict=True):
        if part.startswith("{"):
            if not segment:
                return None
            params[part[1:-1]] = unquote(segment)
        elif part != segment:
            return None
    return params


class LakeFSTestServer(BackgroundHTTPServer[_State]):
    """An in-memory lakeFS REST test double on 127.0.0.1 (see the module docstring).

    ``start()`` binds a free port and serves from a daemon thread; ``stop()`` closes the
    listener and every open connection. Also a context manager. ``requests`` lists
    ``(method, path, status)`` of every request served, for tests that assert on traffic.
    """

    _handler = _Handler
    _name = "lakeFS test server"

    def __init__(
        self, access_key_id: str | None = None, secret_access_key: str | None = None
    ) -> None:
        # Fresh random keys per server unless a test chooses its own.
        self.access_key_id = access_key_id or f"AKIAPAYBAND{secrets.token_hex(5).upper()}"
        self.secret_access_key = secret_access_key or secrets.token_urlsafe(30)
        super().__init__(_State(self.access_key_id, self.secret_access_key))

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``; the API is under ``/api/v1``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        with self._state.lock:
            return list(self._state.requests)
