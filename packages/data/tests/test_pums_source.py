"""PumsSource against a census-like HTTP server on 127.0.0.1 serving synthetic person zips."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import socket
import threading
import zipfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from rich.console import Console

from payband_data.settings import DataSettings
from payband_data.sources import SourceError, pums
from payband_data.sources.pums import (
    PUMS_COLUMNS,
    PumsSource,
    check_year,
    normalise_states,
    rich_progress,
)
from payband_testing.census import CensusTestServer, Fault
from payband_testing.pums import write_persons_zip

YEAR = 2019
HEADER = "YEAR,SERIALNO,SPORDER,ST,AGEP,COW,SCHL,MAR,OCCP,RAC1P,SEX,POBP,WKHP,WAGP,PINCP,PWGTP"


@pytest.fixture
def census(census_server: CensusTestServer) -> CensusTestServer:
    """The shared census test server under a shorter name."""
    return census_server


def _source(
    census: CensusTestServer, tmp_path: Path, states: object = ("CA",), **kw: object
) -> PumsSource:
    options: dict[str, object] = {"retries": 2, "backoff_s": 0.0} | kw
    return PumsSource(
        YEAR,
        states,  # type: ignore[arg-type]
        base_url=census.url,
        cache_dir=tmp_path / "cache",
        **options,  # type: ignore[arg-type]
    )


def _expected(zip_path: Path) -> list[list[str]]:
    """The folktables filter and normalisation, done independently with the csv module."""

    def number(value: str) -> int | None:
        return int(value) if value != "" else None

    with zipfile.ZipFile(zip_path) as archive:
        name = next(n for n in archive.namelist() if n.startswith("psam_p"))
        text = archive.read(name).decode("ascii")
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        age, income = number(row["AGEP"]), number(row["PINCP"])
        hours, weight = number(row["WKHP"]), number(row["PWGTP"])
        if None in (age, income, hours, weight):
            continue
        if age > 16 and income > 100 and hours > 0 and weight >= 1:  # type: ignore[operator]
            rows.append(
                [str(YEAR), row["SERIALNO"]]
                + [str(int(row[c])) if row[c] else "" for c in HEADER.split(",")[2:]]
            )
    return rows


def _read(path: Path) -> tuple[str, list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as file:
        header = file.readline().rstrip("\n")
        return header, list(csv.reader(file))


def test_fetch_keeps_exactly_the_persons_that_pass_the_filter(
    census: CensusTestServer, tmp_path: Path
) -> None:
    served = census.publish(tmp_path, "CA", rows=600, year=YEAR)
    raw = _source(census, tmp_path).fetch(tmp_path / "work")

    header, rows = _read(raw.files["persons.csv"])
    expected = _expected(served)
    assert header == HEADER == ",".join(PUMS_COLUMNS)
    assert rows == expected
    assert 0 < len(rows) < 600
    assert raw.source == "pums"
    assert raw.dataset == "raw/pums"
    assert raw.files == {"persons.csv": tmp_path / "work" / "persons.csv"}
    assert raw.metadata == {
        "source": "pums",
        "year": "2019",
        "states": "CA",
        "row_count": str(len(expected)),
        "rows_read": "600",
    }
    assert census.requests == [f"/pums/{YEAR}/1-Year/csv_pca.zip"]


def test_fetch_normalises_integers_and_treats_blanks_as_missing(
    census: CensusTestServer, tmp_path: Path
) -> None:
    header = (
        "RT,SERIALNO,SPORDER,ST,PWGTP,AGEP,COW,MAR,SCHL,SEX,WAGP,WKHP,OCCP,PINCP,POBP,RAC1P,SOCP"
    )
    lines = [
        "P,2019HU0000001,1,06,0012,017,1,1,021,2,0050000,40,0010,0050000,006,1,11102X",  # kept
        "P,2019HU0000001,2,06,12,16,1,1,21,2,50000,40,0010,50000,006,1,",  # age 16
        "P,2019HU0000002,1,06,12,30,,5,,1,0,1,,101,303,9,",  # kept, blanks stay blank
        "P,2019HU0000003,1,06,12,30,1,1,21,2,100,40,4700,100,006,1,",  # income 100
        "P,2019HU0000004,1,06,12,30,1,1,21,2,0,0,4700,-5000,006,1,",  # income < 0
        "P,2019HU0000005,1,06,12,30,1,1,21,2,9000,0,4700,9000,006,1,",  # no hours
        "P,2019HU0000006,1,06,0,30,1,1,21,2,9000,40,4700,9000,006,1,",  # weight 0
        "P,2019HU0000007,1,06,1,30,1,1,21,2,9000,,4700,9000,006,1,",  # hours missing
        "P,2019GQ0000008,1,06,1,80,2,3,16,1,0,8,9830,,110,2,",  # income missing
    ]
    archive_path = tmp_path / "handmade.zip"
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("psam_p06.csv", "\n".join([header, *lines]) + "\n")
    census.serve("CA", archive_path.read_bytes(), year=YEAR)

    raw = _source(census, tmp_path).fetch(tmp_path / "work")

    assert raw.files["persons.csv"].read_text() == (
        HEADER + "\n"
        "2019,2019HU0000001,1,6,17,1,21,1,10,1,2,6,40,50000,50000,12\n"
        "2019,2019HU0000002,1,6,30,,,5,,9,1,303,1,0,101,12\n"
    )
    assert raw.metadata["row_count"] == "2"
    assert raw.metadata["rows_read"] == "9"


def test_two_states_are_combined_in_one_file(census: CensusTestServer, tmp_path: Path) -> None:
    california = census.publish(tmp_path, "CA", rows=300, seed=1, year=YEAR)
    new_york = census.publish(tmp_path, "NY", rows=200, seed=2, year=YEAR)

    raw = _source(census, tmp_path, states=["ny", "CA", "ca"]).fetch(tmp_path / "work")

    _, rows = _read(raw.files["persons.csv"])
    assert rows == _expected(california) + _expected(new_york)
    assert {row[3] for row in rows} == {"6", "36"}
    assert raw.metadata["states"] == "CA,NY"
    assert raw.metadata["rows_read"] == "500"
    assert raw.metadata["row_count"] == str(len(rows))
    assert sorted(census.requests) == [
        f"/pums/{YEAR}/1-Year/csv_pca.zip",
        f"/pums/{YEAR}/1-Year/csv_pny.zip",
    ]


def _zip_bytes(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def _bad_crc(body: bytes) -> bytes:
    """The served zip with one byte of the compressed person data flipped."""
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        info = archive.getinfo("psam_p06.csv")
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    return body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]


@pytest.mark.parametrize(
    "fault",
    ["truncate", "garbage", "no person csv", "two person csvs", "bad crc", 503, 429],
)
def test_a_bad_first_response_is_rejected_and_retried(
    census: CensusTestServer, tmp_path: Path, fault: str | int
) -> None:
    served = census.publish(tmp_path, "CA", year=YEAR)
    body = served.read_bytes()
    replacements: dict[object, Fault] = {
        "truncate": "truncate",
        "garbage": b"not a zip archive " * (len(body) // 18),
        "no person csv": _zip_bytes({"ACS2019_PUMS_README.pdf": "%PDF-1.4"}),
        "two person csvs": _zip_bytes({"psam_p06.csv": "RT\n", "PSAM_P07.CSV": "RT\n"}),
        "bad crc": _bad_crc(body),
    }
    census.fail("CA", replacements.get(fault, fault), year=YEAR)

    raw = _source(census, tmp_path, retries=1).fetch(tmp_path / "work")

    assert census.count("CA", YEAR) == 2
    assert _read(raw.files["persons.csv"])[1] == _expected(served)
    cached = tmp_path / "cache" / str(YEAR) / "csv_pca.zip"
    assert cached.read_bytes() == body
    assert sorted(p.name for p in cached.parent.iterdir()) == [
        "csv_pca.zip",
        "manifest.json",
        "manifest.lock",
    ]


def test_retries_exhausted_give_a_source_error(census: CensusTestServer, tmp_path: Path) -> None:
    census.publish(tmp_path, "CA", year=YEAR)
    census.fail("CA", 503, "truncate", 503, year=YEAR)

    with pytest.raises(SourceError, match=r"csv_pca\.zip failed after 3 attempt\(s\): HTTP 503"):
        _source(census, tmp_path, retries=2).fetch(tmp_path / "work")

    assert census.count("CA", YEAR) == 3
    assert list((tmp_path / "cache" / str(YEAR)).iterdir()) == []  # no partial file left


def test_retries_back_off_exponentially_up_to_a_cap(
    census: CensusTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    census.publish(tmp_path, "CA", year=YEAR)
    census.fail("CA", 503, 503, 503, 503, year=YEAR)
    delays: list[float] = []
    monkeypatch.setattr(pums, "time", SimpleNamespace(sleep=delays.append))

    _source(census, tmp_path, retries=4, backoff_s=3.0).fetch(tmp_path / "work")

    assert delays == [3.0, 6.0, 10.0, 10.0]
    assert census.count("CA", YEAR) == 5


def test_an_unreachable_server_is_retried_then_reported(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = PumsSource(
        YEAR,
        ["CA"],
        base_url=f"http://127.0.0.1:{port}",
        cache_dir=tmp_path,
        retries=1,
        backoff_s=0.0,
    )
    with pytest.raises(SourceError, match=r"failed after 2 attempt\(s\): ConnectError"):
        source.fetch(tmp_path / "work")


@pytest.mark.parametrize(
    ("status", "message"), [(404, "no PUMS person file for CA in 2019"), (403, "HTTP 403")]
)
def test_client_errors_fail_at_once(
    census: CensusTestServer, tmp_path: Path, status: int, message: str
) -> None:
    census.publish(tmp_path, "CA", year=YEAR)
    census.fail("CA", status, year=YEAR)

    with pytest.raises(SourceError, match=message):
        _source(census, tmp_path, retries=3).fetch(tmp_path / "work")
    assert census.count("CA", YEAR) == 1


def test_a_missing_file_is_a_404_naming_state_and_year(
    census: CensusTestServer, tmp_path: Path
) -> None:
    with pytest.raises(SourceError) as error:
        _source(census, tmp_path, states=["WY"]).fetch(tmp_path / "work")
    assert "WY" in str(error.value)
    assert "2019" in str(error.value)
    assert "404" in str(error.value)
    assert census.count("WY", YEAR) == 1


def test_second_fetch_uses_the_cache_without_any_request(
    census: CensusTestServer, tmp_path: Path
) -> None:
    served = census.publish(tmp_path, "CA", year=YEAR)
    first = _source(census, tmp_path).fetch(tmp_path / "first")
    census.unpublish("CA", year=YEAR)  # a request would now fail with 404

    second = _source(census, tmp_path).fetch(tmp_path / "second")

    assert census.requests == [f"/pums/{YEAR}/1-Year/csv_pca.zip"]
    assert second.files["persons.csv"].read_bytes() == first.files["persons.csv"].read_bytes()
    assert second.metadata == first.metadata
    manifest = json.loads((tmp_path / "cache" / str(YEAR) / "manifest.json").read_text())
    assert manifest["csv_pca.zip"] == {
        "sha256": hashlib.sha256(served.read_bytes()).hexdigest(),
        "size": served.stat().st_size,
        "url": f"{census.url}/{YEAR}/1-Year/csv_pca.zip",
    }


@pytest.mark.parametrize("damage", ["tampered zip", "manifest removed", "manifest unreadable"])
def test_a_cache_file_that_fails_its_checksum_is_downloaded_again(
    census: CensusTestServer, tmp_path: Path, damage: str
) -> None:
    served = census.publish(tmp_path, "CA", year=YEAR)
    body = served.read_bytes()
    _source(census, tmp_path).fetch(tmp_path / "first")
    folder = tmp_path / "cache" / str(YEAR)
    if damage == "tampered zip":
        data = bytearray((folder / "csv_pca.zip").read_bytes())
        data[len(data) // 2] ^= 0x01
        (folder / "csv_pca.zip").write_bytes(bytes(data))
    elif damage == "manifest removed":
        (folder / "manifest.json").unlink()
    else:
        (folder / "manifest.json").write_text("{not json")

    raw = _source(census, tmp_path).fetch(tmp_path / "second")

    assert census.count("CA", YEAR) == 2
    assert (folder / "csv_pca.zip").read_bytes() == body
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["csv_pca.zip"]["size"] == len(body)
    assert _read(raw.files["persons.csv"])[1] == _expected(served)


def test_cache_checks_and_publishing_wait_for_the_cache_lock(
    census: CensusTestServer, tmp_path: Path
) -> None:
    """A zip and its manifest entry change together: a reader never sees one without the other
    (it would discard another process's fresh download as not matching the manifest)."""
    census.publish(tmp_path, "CA", year=YEAR)
    folder = tmp_path / "cache" / str(YEAR)
    zip_path = folder / "csv_pca.zip"

    def in_thread_while_locked(action: Callable[[], object]) -> tuple[list[object], bool, bool]:
        """(results, whether the action waited for the lock, whether the zip existed then)."""
        done: list[object] = []
        with (folder / "manifest.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            worker = threading.Thread(target=lambda: done.append(action()))
            worker.start()
            worker.join(timeout=0.5)
            waited = worker.is_alive() and not done
            present = zip_path.exists()
        worker.join(timeout=10)
        return done, waited, present

    folder.mkdir(parents=True)
    downloaded, waited, present = in_thread_while_locked(_source(census, tmp_path).archives)
    assert waited, "the download published its zip without the lock"
    assert not present, "the zip was published while another process held the lock"
    assert downloaded == [{"CA": zip_path}]
    assert json.loads((folder / "manifest.json").read_text())["csv_pca.zip"]["size"] > 0

    cached, waited, _ = in_thread_while_locked(_source(census, tmp_path).archives)
    assert waited, "the cached zip was judged without the lock"
    assert cached == [{"CA": zip_path}]
    assert census.count("CA", YEAR) == 1


def test_progress_reports_bytes_up_to_the_file_size(
    census: CensusTestServer, tmp_path: Path
) -> None:
    size = census.publish(tmp_path, "CA", rows=3000, year=YEAR).stat().st_size
    calls: list[tuple[str, int, int | None]] = []

    _source(census, tmp_path, progress=lambda *call: calls.append(call)).fetch(tmp_path / "w1")

    assert calls[0] == ("CA", 0, size)
    assert calls[-1] == ("CA", size, size)
    done = [call[1] for call in calls]
    assert done == sorted(done)
    assert len(calls) > 2  # several chunks, not one report at the end

    calls.clear()
    _source(census, tmp_path, progress=lambda *call: calls.append(call)).fetch(tmp_path / "w2")
    assert calls == [("CA", size, size)]  # a cache hit is reported as complete


def test_rich_progress_draws_a_bar_per_state() -> None:
    output = io.StringIO()
    with rich_progress(Console(file=output, width=100)) as progress:
        progress("CA", 512, 2048)
        progress("CA", 2048, 2048)
        progress("NY", 10, None)
    text = output.getvalue()
    assert "PUMS CA" in text
    assert "2.0/2.0 kB" in text
    assert "PUMS NY" in text


def test_a_csv_without_a_needed_column_is_a_source_error(
    census: CensusTestServer, tmp_path: Path
) -> None:
    body = _zip_bytes({"psam_p06.csv": "RT,SERIALNO,SPORDER,ST,AGEP\nP,2019HU0000001,1,06,40\n"})
    census.serve("CA", body, year=YEAR)
    with pytest.raises(SourceError, match=r"lacks the column\(s\) COW, SCHL, MAR, OCCP"):
        _source(census, tmp_path).fetch(tmp_path / "work")
    assert census.count("CA", YEAR) == 1


def test_a_non_integer_value_is_a_source_error(census: CensusTestServer, tmp_path: Path) -> None:
    header = ",".join(HEADER.split(",")[1:])
    body = _zip_bytes(
        {"psam_p06.csv": f"{header}\n2019HU0000001,1,06,40,1,21,1,xx,1,1,006,40,1,200,5\n"}
    )
    census.serve("CA", body, year=YEAR)
    with pytest.raises(SourceError, match=r"not a valid PUMS person file.*'xx'"):
        _source(census, tmp_path).fetch(tmp_path / "work")


@pytest.mark.parametrize(
    ("states", "named"),
    [(["CA", "XX"], "XX"), (["zz"], "ZZ"), ("CA,QQ", "QQ"), ([], "no state"), ([" "], "no state")],
)
def test_bad_states_are_named(tmp_path: Path, states: object, named: str) -> None:
    with pytest.raises(SourceError, match=named):
        PumsSource(YEAR, states, base_url="http://127.0.0.1:9", cache_dir=tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("year", "rule"),
    [
        (2017, "2017 is not supported.*OCCP.*2018 or later"),
        (2020, "2020 is not supported.*experimental"),
        (3000, "3000 is not released"),
        ("2019", "must be an integer.*'2019'"),
        (True, "must be an integer"),
    ],
)
def test_bad_years_are_named_with_the_rule(tmp_path: Path, year: object, rule: str) -> None:
    with pytest.raises(SourceError, match=rule):
        PumsSource(year, ["CA"], base_url="http://127.0.0.1:9", cache_dir=tmp_path)  # type: ignore[arg-type]


def test_the_latest_year_is_the_one_before_today() -> None:
    assert check_year(2025, today=date(2026, 1, 1)) == 2025
    assert check_year(2018, today=date(2026, 1, 1)) == 2018
    with pytest.raises(SourceError, match="latest possible year is 2025"):
        check_year(2026, today=date(2026, 12, 31))


def test_states_are_normalised() -> None:
    assert normalise_states(["ny", "CA", "ca", " tx "]) == ("CA", "NY", "TX")
    assert normalise_states("pr, dc") == ("DC", "PR")


def test_url_follows_the_census_layout(tmp_path: Path) -> None:
    source = PumsSource(2019, ["CA"], base_url="https://www2.census.gov/pums/", cache_dir=tmp_path)
    assert source.url("CA") == "https://www2.census.gov/pums/2019/1-Year/csv_pca.zip"


def test_from_settings_takes_the_pums_settings(tmp_path: Path) -> None:
    settings = DataSettings(
        pums_base_url="http://127.0.0.1:9/pums",
        pums_cache_dir=tmp_path / "pums",
        pums_retries=0,
        pums_timeout_s=5.0,
    )
    source = PumsSource.from_settings(settings, 2021, ["wa"])
    assert source.url("WA") == "http://127.0.0.1:9/pums/2021/1-Year/csv_pwa.zip"
    assert source.cache_dir == tmp_path / "pums" / "2021"
    assert (source.year, source.states, source.retries, source.timeout_s) == (2021, ("WA",), 0, 5.0)


def test_a_client_passed_in_is_used_and_left_open(census: CensusTestServer, tmp_path: Path) -> None:
    census.publish(tmp_path, "CA", year=YEAR)
    with httpx.Client(headers={"X-Test": "yes"}) as client:
        raw = _source(census, tmp_path, client=client).fetch(tmp_path / "work")
        assert not client.is_closed
    assert raw.metadata["rows_read"] == "400"
    assert census.count("CA", YEAR) == 1


def test_a_body_shorter_than_its_content_length_is_reported_as_truncated(tmp_path: Path) -> None:
    # Over a socket h11 already rejects this; a transport that does not is checked all the same.
    body = write_persons_zip(tmp_path / "ca.zip", 50, year=YEAR, state_fips=6).read_bytes()
    sent: list[int] = []

    def respond(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        content = body[:100] if len(sent) == 1 else body
        headers = {"Content-Length": str(len(body))}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(content))

    with httpx.Client(transport=httpx.MockTransport(respond)) as client:
        source = PumsSource(
            YEAR, ["CA"], base_url="http://127.0.0.1:9", cache_dir=tmp_path, retries=0,
            client=client,
        )  # fmt: skip
        with pytest.raises(SourceError, match=f"truncated body: 100 of {len(body)} bytes"):
            source.fetch(tmp_path / "work")
        raw = source.fetch(tmp_path / "work")
    assert len(sent) == 2
    assert raw.metadata["rows_read"] == "50"
    assert (tmp_path / str(YEAR) / "csv_pca.zip").read_bytes() == body


def test_a_redirect_loop_is_a_source_error_and_a_bad_encoding_is_retried(tmp_path: Path) -> None:
    body = write_persons_zip(tmp_path / "ca.zip", 20, year=YEAR, state_fips=6).read_bytes()
    served: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        served.append(request.url.path)
        if request.url.path.endswith("csv_pny.zip"):
            return httpx.Response(302, headers={"Location": str(request.url)})
        if len(served) == 1:
            return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")
        headers = {"Content-Length": str(len(body))}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))

    transport = httpx.MockTransport(respond)
    with httpx.Client(transport=transport, follow_redirects=True) as client:
        source = PumsSource(
            YEAR, ["CA"], base_url="http://127.0.0.1:9", cache_dir=tmp_path / "c", retries=1,
            backoff_s=0.0, client=client,
        )  # fmt: skip
        raw = source.fetch(tmp_path / "work")
        looping = PumsSource(
            YEAR, ["NY"], base_url="http://127.0.0.1:9", cache_dir=tmp_path / "c", retries=3,
            backoff_s=0.0, client=client,
        )  # fmt: skip
        with pytest.raises(SourceError, match=r"cannot download .*csv_pny\.zip: .*redirects"):
            looping.fetch(tmp_path / "work")
    assert served[:2] == [f"/{YEAR}/1-Year/csv_pca.zip"] * 2, "the bad encoding was retried"
    assert raw.metadata["rows_read"] == "20"
    assert len(served) - 2 == 21, "a redirect loop is not retried: one attempt of 21 requests"
