"""The census test double: serves published zips byte for byte, 404s the rest, obeys faults."""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from email.message import Message
from pathlib import Path

import pytest

from payband_testing.census import CensusTestServer
from payband_testing.checks import port_is_closed

YEAR = 2019


def _get(server: CensusTestServer, path: str) -> tuple[int, Message, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def _status(server: CensusTestServer, state: str, year: int = YEAR) -> int:
    return _get(server, server.path(state, year))[0]


def test_a_published_file_is_served_byte_for_byte(
    census_server: CensusTestServer, tmp_path: Path
) -> None:
    served = census_server.publish(tmp_path, "ny", year=2021, rows=50, seed=3)

    assert census_server.url == f"http://127.0.0.1:{census_server.port}/pums"
    assert census_server.path("NY", 2021) == "/pums/2021/1-Year/csv_pny.zip"
    status, headers, body = _get(census_server, "/pums/2021/1-Year/csv_pny.zip")
    assert status == 200
    assert headers["Content-Type"] == "application/zip"
    assert headers["Content-Length"] == str(len(body))
    assert served == tmp_path / "served_NY.zip"
    assert body == served.read_bytes()
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        lines = archive.read("psam_p36.csv").decode("ascii").splitlines()
    assert len(lines) == 51
    assert lines[1].split(",")[1].startswith("2021")


def test_publishing_again_replaces_the_file(
    census_server: CensusTestServer, tmp_path: Path
) -> None:
    first = census_server.publish(tmp_path, "CA", year=YEAR, seed=1).read_bytes()
    second = census_server.publish(tmp_path, "CA", year=YEAR, seed=2).read_bytes()

    assert first != second
    assert _get(census_server, census_server.path("CA", YEAR))[2] == second


def test_unknown_paths_are_404(census_server: CensusTestServer, tmp_path: Path) -> None:
    census_server.publish(tmp_path, "CA", year=YEAR, rows=10)

    assert _status(census_server, "CA") == 200
    assert _status(census_server, "CA", 2021) == 404
    assert _status(census_server, "NY") == 404
    assert _get(census_server, "/pums/2019/1-Year/")[0] == 404
    assert _get(census_server, "/2019/1-Year/csv_pca.zip")[0] == 404
    assert census_server.count("NY", YEAR) == 1


def test_serve_and_unpublish(census_server: CensusTestServer) -> None:
    census_server.serve("TX", b"hand-made", year=YEAR)
    assert _get(census_server, census_server.path("TX", YEAR))[::2] == (200, b"hand-made")

    census_server.unpublish("TX", year=YEAR)
    census_server.unpublish("TX", year=YEAR)  # nothing left to remove is fine
    assert _status(census_server, "TX") == 404


@pytest.mark.parametrize("status", [503, 500, 429, 403, 404])
def test_a_status_fault_answers_once_then_the_file_is_served(
    census_server: CensusTestServer, tmp_path: Path, status: int
) -> None:
    served = census_server.publish(tmp_path, "CA", year=YEAR, rows=10)
    census_server.fail("CA", status, year=YEAR)

    assert _status(census_server, "CA") == status
    assert _get(census_server, census_server.path("CA", YEAR))[::2] == (200, served.read_bytes())


def test_truncate_announces_the_full_length_sends_half_and_closes(
    census_server: CensusTestServer, tmp_path: Path
) -> None:
    body = census_server.publish(tmp_path, "CA", year=YEAR, rows=100).read_bytes()
    census_server.fail("CA", "truncate", year=YEAR)

    connection = http.client.HTTPConnection("127.0.0.1", census_server.port, timeout=10)
    try:
        connection.request("GET", census_server.path("CA", YEAR))
        response = connection.getresponse()
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(body))
        with pytest.raises(http.client.IncompleteRead) as error:
            response.read()
    finally:
        connection.close()
    assert error.value.partial == body[: len(body) // 2]
    assert _get(census_server, census_server.path("CA", YEAR))[2] == body


def test_replacement_bytes_are_served_instead_of_the_file(
    census_server: CensusTestServer, tmp_path: Path
) -> None:
    body = census_server.publish(tmp_path, "CA", year=YEAR, rows=10).read_bytes()
    census_server.fail("CA", b"not a zip", year=YEAR)

    status, headers, served = _get(census_server, census_server.path("CA", YEAR))
    assert (status, served, headers["Content-Length"]) == (200, b"not a zip", "9")
    assert _get(census_server, census_server.path("CA", YEAR))[2] == body


def test_faults_are_used_in_order_and_per_file(
    census_server: CensusTestServer, tmp_path: Path
) -> None:
    body = census_server.publish(tmp_path, "CA", year=YEAR, rows=10).read_bytes()
    census_server.publish(tmp_path, "NY", year=YEAR, rows=10)
    census_server.fail("CA", 503, b"x", year=YEAR)
    census_server.fail("CA", 429, year=YEAR)
    census_server.fail("CA", 500, year=2021)  # another year's file

    assert _status(census_server, "NY") == 200
    responses = [_get(census_server, census_server.path("CA", YEAR)) for _ in range(4)]
    assert [status for status, _, _ in responses] == [503, 200, 429, 200]
    assert [responses[1][2], responses[3][2]] == [b"x", body]


def test_faults_for_a_file_not_served(census_server: CensusTestServer) -> None:
    # A status is answered as it is; truncation and replacement bytes need a file: 404.
    census_server.fail("CA", 502, "truncate", b"zip", year=YEAR)

    assert [_status(census_server, "CA") for _ in range(4)] == [502, 404, 404, 404]
    census_server.serve("CA", b"now there", year=YEAR)
    assert _get(census_server, census_server.path("CA", YEAR))[::2] == (200, b"now there")


def test_requests_lists_every_path_asked_for_in_order(
    census_server: CensusTestServer, tmp_path: Path
) -> None:
    census_server.publish(tmp_path, "CA", year=YEAR, rows=10)
    census_server.fail("CA", 503, year=YEAR)
    assert census_server.requests == []

    for state in ("CA", "CA", "WY", "CA"):
        _status(census_server, state)
    _get(census_server, "/elsewhere")

    ca, wy = census_server.path("CA", YEAR), census_server.path("WY", YEAR)
    assert census_server.requests == [ca, ca, wy, ca, "/elsewhere"]
    assert (census_server.count("CA", YEAR), census_server.count("WY", YEAR)) == (3, 1)
    assert census_server.count("CA", 2021) == 0
    census_server.requests.clear()  # a copy: the log is not changed through it
    assert len(census_server.requests) == 5


def test_stop_frees_the_port_and_is_idempotent() -> None:
    server = CensusTestServer()
    assert not server.running
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url

    assert server.start() is server
    port = server.port
    assert server.start().port == port  # already running: nothing new
    server.serve("CA", b"zip", year=YEAR)
    assert _status(server, "CA") == 200
    server.stop()

    assert not server.running
    assert port_is_closed(port)
    server.stop()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port


def test_stop_cuts_off_a_download_in_progress() -> None:
    # More than the loopback socket buffers hold, so the handler is still writing at stop().
    body = b"x" * (64 << 20)
    with CensusTestServer() as server:
        server.serve("CA", body, year=YEAR)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.request("GET", server.path("CA", YEAR))
            response = connection.getresponse()
            assert response.status == 200
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 2
            with pytest.raises((http.client.IncompleteRead, ConnectionError)):
                response.read()
        finally:
            connection.close()


def test_a_restarted_server_keeps_what_it_serves() -> None:
    with CensusTestServer() as server:
        server.serve("CA", b"zip", year=YEAR)
        first_port = server.port
    assert port_is_closed(first_port)

    with server:
        assert _get(server, server.path("CA", YEAR))[::2] == (200, b"zip")
        assert server.requests == [server.path("CA", YEAR)]
    assert not server.running


def test_the_fixture_keeps_loopback_away_from_proxies(census_server: CensusTestServer) -> None:
    assert os.environ["NO_PROXY"] == os.environ["no_proxy"] == "127.0.0.1"
    assert census_server.running
    assert census_server.requests == []


_INNER_TEST = """
import json
from pathlib import Path


def test_fails_on_purpose(census_server):
    Path(__file__).with_name("port.json").write_text(json.dumps(census_server.port))
    raise AssertionError("the server must be stopped all the same")
"""


def test_the_fixture_stops_the_server_when_the_test_fails(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\naddopts = --import-mode=importlib -p no:cacheprovider\nfilterwarnings = error\n"
    )
    (tmp_path / "test_inner.py").write_text(_INNER_TEST)
    # Other packages get the plugin by auto-loading, so this run must too.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 failed" in output, output
    assert port_is_closed(json.loads((tmp_path / "port.json").read_text()))
