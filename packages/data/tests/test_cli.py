"""payband-data through its console script: ingest, build, snapshot, versions, bad input.

The commands run in this process (``payband_data``); one smoke test runs the installed script
as a process, and so does the test of two builds at once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from payband_data.settings import DataSettings
from payband_data.store import open_store
from payband_testing.cli import run_in_process

ADULT_ROWS = 48_842
URI = re.compile(r"^local://(?P<dataset>[a-z/]+)@(?P<version>[0-9a-f]{64})$")
CLI = Path(sys.executable).with_name("payband-data")


@pytest.fixture(scope="module")
def environment(postgres_module_database, tmp_path_factory) -> dict[str, str]:
    """The variables the commands get, on top of this process's environment."""
    home = tmp_path_factory.mktemp("payband-home")
    return {
        "PAYBAND_HOME": str(home),
        "PAYBAND_DATA_DATABASE_URL": postgres_module_database.url,
        "COLUMNS": "200",
    }


def payband_data(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (arguments, messages, exit codes, results)."""
    return run_in_process("payband-data", *args, env=environment)


def payband_data_process(
    environment: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """The installed script as its own process, as a user runs it."""
    return subprocess.run(
        [str(CLI), *args],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def settings_for(environment: dict[str, str]) -> DataSettings:
    return DataSettings(
        store_dir=Path(environment["PAYBAND_HOME"]) / "store",
        database_url=environment["PAYBAND_DATA_DATABASE_URL"],
    )


def test_version(environment) -> None:
    result = payband_data(environment, "--version")
    assert result.returncode == 0
    assert result.stdout.startswith("payband-data 0.")


@pytest.fixture(scope="module")
def adult_raw_uri(environment) -> str:
    result = payband_data(environment, "ingest", "--source", "adult")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_smoke_ingest_commits_the_adult_files_once(environment, adult_raw_uri) -> None:
    match = URI.match(adult_raw_uri)
    assert match, adult_raw_uri
    assert match["dataset"] == "raw/adult"
    # The second ingest is the real script, as a process: the smoke test of the entry point.
    again = payband_data_process(environment, "ingest", "--source", "adult")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == adult_raw_uri, "same files, same version"
    version = open_store(settings_for(environment)).get(adult_raw_uri)
    assert version.metadata["row_count"] == str(ADULT_ROWS)
    assert version.metadata["source"] == "adult"
    assert set(version.files) == {"adult.data", "adult.test"}


@pytest.fixture(scope="module")
def built(environment, adult_raw_uri) -> subprocess.CompletedProcess[str]:
    result = payband_data(environment, "build", "--source", "adult")
    assert result.returncode == 0, result.stderr
    return result


def test_build_loads_the_newest_raw_version_and_runs_dbt(built, adult_raw_uri) -> None:
    assert f"loaded {ADULT_ROWS} rows of {adult_raw_uri}" in built.stdout
    summary = built.stdout.strip().splitlines()[-1]
    assert re.search(r"dbt build.*: \d+ ok, 0 warned, 0 failed", summary), summary


def test_snapshot_commits_parquet_with_statistics(environment, built, adult_raw_uri, tmp_path):
    result = payband_data(environment, "snapshot", "--source", "adult")
    assert result.returncode == 0, result.stderr
    uri = result.stdout.strip().splitlines()[-1]
    assert URI.match(uri)["dataset"] == "features/adult"

    store = open_store(settings_for(environment))
    version = store.get(uri)
    files = store.fetch(uri, tmp_path)
    table = pq.read_table(files["features.parquet"])
    assert table.num_rows == int(version.metadata["row_count"])
    assert set(table.column("dataset_uri").to_pylist()) == {adult_raw_uri}
    assert version.metadata["raw_uri"] == adult_raw_uri
    assert version.metadata["year"] == "1994"
    per_band = json.loads(version.metadata["rows_per_band"])
    per_sex = json.loads(version.metadata["rows_per_sex"])
    assert set(per_band) == {"<=50K", ">50K"}
    assert sum(per_band.values()) == sum(per_sex.values()) == table.num_rows
    bands = table.column("band_label").to_pylist()
    assert per_band == {label: bands.count(label) for label in per_band}

    listed = payband_data(environment, "versions")
    assert listed.returncode == 0, listed.stderr
    assert uri in listed.stdout
    assert adult_raw_uri in listed.stdout
    only_raw = payband_data(environment, "versions", "raw/adult")
    assert uri not in only_raw.stdout
    assert adult_raw_uri in only_raw.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ingest", "--source", "census"), "source 'census' is not one of: adult, pums"),
        (("ingest", "--source", "pums", "--states", "CA,XX", "--year", "2022"), "XX"),
        (("ingest", "--source", "pums", "--states", "CA", "--year", "2020"), "2020"),
        (("ingest", "--source", "pums"), "at least one state"),
        (("ingest", "--source", "adult", "--year", "2022"), "pums source only"),
        (("build", "--band-edges", "50000,100000"), "supports only band edges [50000]"),
        (("build", "--band-edges", "fifty"), "--band-edges: 'fifty'"),
        (("build", "--source", "pums"), "no raw/pums version"),
        (("versions", "nope//x"), "nope//x"),
        (("build", "--source", "pums", "--raw-uri", "local://raw/adult@" + "0" * 64), "0000"),
    ],
)
def test_bad_arguments_give_one_clear_line(environment, args, message) -> None:
    result = payband_data(environment, *args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_snapshot_of_a_source_not_built_is_one_line(environment, built) -> None:
    result = payband_data(environment, "snapshot", "--source", "pums")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: marts.features has no rows for source 'pums': "
        "build the features for pums first (payband-data build --source pums)"
    )


def test_unreachable_database_is_one_line(environment, adult_raw_uri) -> None:
    unreachable = {**environment, "PAYBAND_DATA_DATABASE_URL": "postgresql://u@127.0.0.1:9/x"}
    result = payband_data(unreachable, "build", "--source", "adult")
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot connect to the database at 127.0.0.1:9/x: ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.e2e
def test_pums_through_lakefs_end_to_end(
    postgres_database, census_server, lakefs_server, tmp_path
) -> None:
    """Download two states from the census test server, commit to lakeFS, build 3 bands."""
    year = 2022
    published = {
        state: census_server.publish(tmp_path, state, year=year, rows=3_000, seed=seed)
        for seed, state in enumerate(("CA", "NY"), start=1)
    }
    env = {
        "PAYBAND_HOME": str(tmp_path / "home"),
        "PAYBAND_DATA_DATABASE_URL": postgres_database.url,
        "PAYBAND_DATA_PUMS_BASE_URL": census_server.url,
        "PAYBAND_DATA_STORE": "lakefs",
        "PAYBAND_DATA_LAKEFS_ENDPOINT": lakefs_server.endpoint,
        "PAYBAND_DATA_LAKEFS_ACCESS_KEY_ID": lakefs_server.access_key_id,
        "PAYBAND_DATA_LAKEFS_SECRET_ACCESS_KEY": lakefs_server.secret_access_key,
    }
    lakefs_uri = re.compile(r"^lakefs://payband/[0-9a-f]{64}/(?P<dataset>[a-z/]+)/$")

    ingested = payband_data(
        env, "ingest", "--source", "pums", "--year", str(year), "--states", "ny,CA"
    )
    assert ingested.returncode == 0, ingested.stderr
    raw_uri = ingested.stdout.strip().splitlines()[-1]
    assert lakefs_uri.match(raw_uri)["dataset"] == "raw/pums"
    assert census_server.count("CA", year) == census_server.count("NY", year) == 1

    edges = "30000,60000"
    built = payband_data(env, "build", "--source", "pums", "--band-edges", edges)
    assert built.returncode == 0, built.stderr
    mismatch = payband_data(env, "snapshot", "--source", "pums", "--band-edges", "40000")
    assert mismatch.returncode == 2
    assert "that the edges [40000] do not make" in mismatch.stderr
    # Same labels, other meaning: bands are checked by index and label, not by label alone.
    shifted = payband_data(env, "snapshot", "--source", "pums", "--band-edges", "20000,30000,60000")
    assert shifted.returncode == 2
    assert "'1 30K-60K'" in shifted.stderr
    snapshot = payband_data(env, "snapshot", "--source", "pums", "--band-edges", edges)
    assert snapshot.returncode == 0, snapshot.stderr
    features_uri = snapshot.stdout.strip().splitlines()[-1]
    assert lakefs_uri.match(features_uri)["dataset"] == "features/pums"

    with open_store(
        DataSettings(
            store="lakefs",
            lakefs_endpoint=lakefs_server.endpoint,
            lakefs_access_key_id=lakefs_server.access_key_id,
            lakefs_secret_access_key=lakefs_server.secret_access_key,
        )
    ) as store:
        raw = store.get(raw_uri)
        version = store.get(features_uri)
        table = pq.read_table(store.fetch(features_uri, tmp_path / "out")["features.parquet"])
    assert raw.metadata["states"] == "CA,NY"
    assert raw.metadata["year"] == str(year)
    assert version.metadata["states"] == "CA,NY"
    assert version.metadata["band_edges_usd"] == "[30000, 60000]"
    assert set(table.column("band_label").to_pylist()) == {"<=30K", "30K-60K", ">60K"}
    assert 0 < table.num_rows <= int(raw.metadata["row_count"]) < 6_000
    assert set(table.column("source").to_pylist()) == {"pums"}
    assert published["CA"].exists()


def test_a_second_build_waits_for_the_first(environment, built) -> None:
    """While another process holds the build lock, a build says so and waits for it.

    A real process: the build must run while this test holds the lock and reads its first
    line of stderr as it is written.
    """
    from payband_data.db import connect
    from payband_data.steps import _BUILD_LOCK_KEY

    with connect(environment["PAYBAND_DATA_DATABASE_URL"], autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (_BUILD_LOCK_KEY,))
        waiting = subprocess.Popen(
            [str(CLI), "snapshot", "--source", "adult"],
            env={**os.environ, **environment},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = waiting.stderr.readline()
            assert "another payband-data build holds the database; waiting for it" in line
            assert waiting.poll() is None, "it waits while the lock is held"
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (_BUILD_LOCK_KEY,))
    stdout, stderr = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, stderr
    assert URI.match(stdout.strip().splitlines()[-1])
