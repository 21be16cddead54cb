"""The dbt project, run for real against PostgreSQL: Adult and PUMS features, bands and failures."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest

from payband_contracts import SalaryBands
from payband_data.db import connect
from payband_data.load import load_raw
from payband_data.sources.adult import ADULT_COLUMNS, adult_files
from payband_data.sources.pums import PUMS_COLUMNS
from payband_data.transform import (
    DBT_PROJECT_DIR,
    DbtResult,
    TransformError,
    build_features,
    dbt_environment,
    dbt_vars,
    run_dbt,
    validate_band_edges,
)
from payband_local.postgres import PostgresConnectionInfo

ADULT_URI = "local://raw/adult@" + "a" * 64
PUMS_URI = "local://raw/pums@" + "b" * 64
FEATURE_COLUMNS = (
    "record_id",
    "source",
    "age",
    "sex",
    "race",
    "education",
    "marital_status",
    "class_of_worker",
    "occupation",
    "hours_per_week",
    "birthplace",
    "band",
    "band_label",
    "dataset_uri",
)
FEATURES_QUERY = f"SELECT {', '.join(FEATURE_COLUMNS)} FROM marts.features"  # noqa: S608


@dataclass(frozen=True)
class Built:
    result: DbtResult
    features: dict[str, dict[str, Any]]


def read_features(database: PostgresConnectionInfo) -> dict[str, dict[str, Any]]:
    with connect(database.url) as conn:
        rows = conn.execute(FEATURES_QUERY.encode()).fetchall()
    return {row[0]: dict(zip(FEATURE_COLUMNS, row, strict=True)) for row in rows}


def adult_expected() -> pd.DataFrame:
    """Adult's kept records, computed with pandas: rows with a '?' anywhere are dropped."""
    frames = []
    for name, split, first_line in (("adult.data", "train", 1), ("adult.test", "test", 2)):
        frame = pd.read_csv(
            adult_files()[name],
            header=None,
            names=list(ADULT_COLUMNS),
            skipinitialspace=True,
            skiprows=first_line - 1,
        )
        frame["record_id"] = [f"adult-{split}-{i + first_line}" for i in range(len(frame))]
        frames.append(frame)
    everything = pd.concat(frames, ignore_index=True)
    assert len(everything) == 48_842
    kept = everything[~everything.eq("?").any(axis=1)]
    return kept.assign(over_50k=kept["income"].str.rstrip(".").eq(">50K"))


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dbt")


@pytest.fixture(scope="module")
def adult_build(postgres_module_database: PostgresConnectionInfo, work_dir: Path) -> Built:
    with connect(postgres_module_database.url) as conn:
        load_raw(conn, "adult", adult_files(), ADULT_URI)
    result = build_features(
        database_url=postgres_module_database.url,
        source="adult",
        band_edges=[50_000],
        work_dir=work_dir,
    )
    return Built(result, read_features(postgres_module_database))


def test_adult_features_are_the_records_without_unknowns(adult_build: Built) -> None:
    expected = adult_expected()
    features = adult_build.features

    assert len(features) == len(expected) == 45_222
    assert set(features) == set(expected["record_id"])
    assert {row["dataset_uri"] for row in features.values()} == {ADULT_URI}
    assert {row["source"] for row in features.values()} == {"adult"}
    bands = Counter((row["band"], row["band_label"]) for row in features.values())
    labels = Counter(expected["over_50k"])
    assert bands == {(0, "<=50K"): labels[False], (1, ">50K"): labels[True]}
    assert bands == {(0, "<=50K"): 34_014, (1, ">50K"): 11_208}
    for record_id, over_50k in zip(expected["record_id"], expected["over_50k"], strict=True):
        assert features[record_id]["band"] == int(over_50k)
    assert features["adult-train-1"] == {
        "record_id": "adult-train-1",
        "source": "adult",
        "age": 39,
        "sex": "male",
        "race": "white",
        "education": "bachelors_degree",
        "marital_status": "never_married",
        "class_of_worker": "state_government",
        "occupation": "office_administrative",
        "hours_per_week": 40,
        "birthplace": "united_states",
        "band": 0,
        "band_label": "<=50K",
        "dataset_uri": ADULT_URI,
    }
    # A test-file record: its label "<=50K." lost the dot; '?'-free; a foreign birthplace.
    foreign = expected[expected["native_country"].ne("United-States")].iloc[0]
    assert features[foreign["record_id"]]["birthplace"] == "abroad"


def test_adult_build_runs_every_test_and_writes_only_to_the_work_dir(
    adult_build: Built, work_dir: Path, postgres_module_database: PostgresConnectionInfo
) -> None:
    result = adult_build.result
    statuses = Counter(node.status for node in result.nodes)
    kinds = Counter(node.resource_type for node in result.nodes)

    assert result.success
    assert result.failures == ()
    assert set(statuses) <= {"success", "pass"}
    assert kinds["seed"] == 8  # 7 Adult mappings + canonical_categories; PUMS seeds left out
    assert kinds["model"] == 4 - 1  # stg_pums left out
    assert kinds["test"] >= 80
    assert "stg_pums" not in {node.name for node in result.nodes}
    assert result.elapsed_s < 60, str(result)
    assert "ok" in str(result)
    assert "0 failed" in str(result)
    assert (work_dir / "target" / "manifest.json").is_file()
    assert (work_dir / "logs" / "dbt.log").is_file()
    assert not (DBT_PROJECT_DIR / "target").exists()
    assert not (DBT_PROJECT_DIR / "logs").exists()
    with connect(postgres_module_database.url) as conn:
        relations = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('staging', 'intermediate', 'marts')"
        ).fetchall()
    assert {name for (name,) in relations} == {
        "staging.stg_adult",
        "intermediate.int_candidates",
        "marts.features",
    }


def test_adult_with_other_band_edges_is_refused(
    postgres_module_database: PostgresConnectionInfo, work_dir: Path
) -> None:
    with pytest.raises(TransformError, match=r"adult supports only band edges \[50000\]"):
        build_features(
            database_url=postgres_module_database.url,
            source="adult",
            band_edges=[50_000, 100_000],
            work_dir=work_dir,
        )


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ([], "at least one"),
        ([30_000, 30_000], "strictly ascending"),
        ([60_000, 30_000], "strictly ascending"),
        ([0, 30_000], "positive"),
        ([30_000.5], "whole USD"),
        ([True], "whole USD"),
    ],
)
def test_band_edges_are_checked_before_dbt_runs(edges: list[Any], message: str) -> None:
    with pytest.raises(TransformError, match=message):
        validate_band_edges("pums", edges)


def test_the_project_guards_its_vars_when_run_from_the_dbt_cli(
    postgres_module_database: PostgresConnectionInfo, tmp_path: Path
) -> None:
    """dbt on its own (as dagster-dbt runs it) refuses Adult with other edges, clearly."""
    variables = json.dumps({"source": "adult", "band_edges": [50_000, 100_000]})
    env = {**os.environ, **dbt_environment(postgres_module_database.url, tmp_path)}
    dbt = shutil.which("dbt", path=str(Path(sys.executable).parent))
    assert dbt is not None
    completed = subprocess.run(
        [dbt, "parse", "--vars", variables],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode != 0
    assert "source 'adult' supports only band_edges [50000]" in completed.stdout
    assert "[50000, 100000] cannot be computed" in completed.stdout


def person(
    serial: int,
    *,
    wagp: int | None = 50_000,
    age: int = 40,
    cow: int | None = 1,
    schl: int = 21,
    mar: int = 1,
    occp: int | None = 10,
    rac1p: int = 1,
    sex: int = 1,
    pobp: int = 6,
    wkhp: int = 40,
) -> str:
    """One raw PUMS line; None is a blank field."""
    values = (2023, f"2023HU{serial:07d}", 1, 6, age, cow, schl, mar, occp, rac1p, sex, pobp)
    values += (wkhp, wagp, (wagp or 0) + 1_000, 20)
    return ",".join("" if value is None else str(value) for value in values)


# serial -> (band, label, features that differ from person()'s defaults) for kept persons.
PUMS_KEPT: dict[int, tuple[int, str, dict[str, Any]]] = {
    1: (0, "<=30K", {}),
    2: (0, "<=30K", {}),
    3: (1, "30K-60K", {}),
    4: (1, "30K-60K", {}),
    5: (2, ">60K", {}),
    6: (
        2,
        ">60K",
        {
            "sex": "female",
            "race": "asian_pacific_islander",
            "education": "doctorate",
            "marital_status": "never_married",
            "class_of_worker": "federal_government",
            "occupation": "military",
            "birthplace": "abroad",
            "age": 99,
            "hours_per_week": 99,
        },
    ),
    10: (
        1,
        "30K-60K",
        {
            "race": "american_indian_alaska_native",
            "education": "below_grade_5",
            "class_of_worker": "without_pay",
            "occupation": "other_service",
            "age": 17,
            "hours_per_week": 1,
        },
    ),
    11: (
        1,
        "30K-60K",
        {
            "education": "high_school_graduate",
            "occupation": "protective_service",
            "birthplace": "abroad",
            "marital_status": "widowed",
        },
    ),
}
PUMS_LINES = [
    person(1, wagp=0),
    person(2, wagp=30_000),
    person(3, wagp=30_001),
    person(4, wagp=60_000),
    person(5, wagp=60_001),
    person(
        6, wagp=250_000, sex=2, rac1p=7, schl=24, mar=5, cow=5, occp=9830, pobp=72, age=99, wkhp=99
    ),
    person(7, occp=9920),  # "never worked": no occupation, left out like a blank
    person(8, cow=None),
    person(9, wagp=None),
    person(10, wagp=45_000, rac1p=3, schl=1, cow=8, occp=3601, pobp=56, age=17, wkhp=1),
    person(11, wagp=45_000, schl=16, occp=3700, pobp=554, mar=2),
]


def write_pums(path: Path, lines: list[str]) -> Path:
    path.write_text(",".join(PUMS_COLUMNS) + "\n" + "\n".join(lines) + "\n")
    return path


def test_pums_gives_three_bands_with_edges_in_the_lower_band(
    postgres_module_database: PostgresConnectionInfo, work_dir: Path, tmp_path: Path
) -> None:
    with connect(postgres_module_database.url) as conn:
        load_raw(
            conn, "pums", {"persons.csv": write_pums(tmp_path / "p.csv", PUMS_LINES)}, PUMS_URI
        )

    result = build_features(
        database_url=postgres_module_database.url,
        source="pums",
        band_edges=[30_000, 60_000],
        work_dir=work_dir,
    )
    features = read_features(postgres_module_database)

    assert result.success
    assert "stg_adult" not in {node.name for node in result.nodes}
    defaults = {
        "source": "pums",
        "age": 40,
        "sex": "male",
        "race": "white",
        "education": "bachelors_degree",
        "marital_status": "married",
        "class_of_worker": "private",
        "occupation": "management_business_financial",
        "hours_per_week": 40,
        "birthplace": "united_states",
        "dataset_uri": PUMS_URI,
    }
    expected = {
        f"pums-2023-2023HU{serial:07d}-1": {
            **defaults,
            **changes,
            "record_id": f"pums-2023-2023HU{serial:07d}-1",
            "band": band,
            "band_label": label,
        }
        for serial, (band, label, changes) in PUMS_KEPT.items()
    }
    assert features == expected
    assert SalaryBands(edges_usd=(30_000.0, 60_000.0)).labels == ("<=30K", "30K-60K", ">60K")


def test_jinja_band_labels_agree_with_the_contracts(
    postgres_module_database: PostgresConnectionInfo, tmp_path: Path
) -> None:
    """dbt computes the labels itself and checks them against the ones passed from Python."""
    edges = [500, 52_500, 1_250_000, 2_000_000, 123_456_789]
    labels = dbt_vars("pums", edges)["band_labels"]
    assert labels == ["<=500", "500-52.5K", "52.5K-1.25M", "1.25M-2M", "2M-123.457M", ">123.457M"]

    run_dbt(
        ["compile", "--select", "features"],
        database_url=postgres_module_database.url,
        source="pums",
        band_edges=edges,
        work_dir=tmp_path,
    )

    compiled = (tmp_path / "target/compiled/payband/models/marts/features.sql").read_text()
    for index, label in enumerate(labels):
        assert f"when {index} then '{label}'" in compiled
    assert "when wage_usd <= 123456789 then 4" in compiled


def _insert_pums(conn: psycopg.Connection[Any], line: str) -> None:
    columns = ", ".join(name.lower() for name in PUMS_COLUMNS)
    values = [None if value == "" else value for value in line.split(",")]
    placeholders = ", ".join(["%s"] * len(values))
    conn.execute(
        f"INSERT INTO raw.pums ({columns}, dataset_uri) VALUES ({placeholders}, %s)".encode(),  # noqa: S608
        [*values, PUMS_URI],
    )


def test_a_failure_names_the_model_and_an_unmapped_code_fails_its_test(
    postgres_database: PostgresConnectionInfo, tmp_path: Path
) -> None:
    url = postgres_database.url
    # Nothing loaded yet: the staging model has no table to read.
    with pytest.raises(TransformError) as missing:
        build_features(database_url=url, source="pums", band_edges=[30_000], work_dir=tmp_path)
    lines = str(missing.value).splitlines()
    assert lines[0].startswith("dbt build --exclude tag:adult failed: model stg_pums (")
    assert lines[1:] == ['model stg_pums: error: relation "raw.pums" does not exist']

    with connect(url) as conn:
        load_raw(
            conn, "pums", {"persons.csv": write_pums(tmp_path / "p.csv", PUMS_LINES)}, PUMS_URI
        )
        _insert_pums(conn, person(20, schl=99))
        _insert_pums(conn, person(21, occp=3690))  # between two census groups: no code

    with pytest.raises(TransformError) as unmapped:
        build_features(database_url=url, source="pums", band_edges=[30_000], work_dir=tmp_path)

    head, *details = str(unmapped.value).splitlines()
    assert head.startswith("dbt build --exclude tag:adult failed: test pums_")
    assert "test pums_schl_mapped" in head
    assert "test pums_occp_mapped" in head
    assert sorted(details) == [
        "test pums_occp_mapped: fail: 1 failing row(s), e.g. 3690",
        "test pums_schl_mapped: fail: 1 failing row(s), e.g. 99",
    ]
    result = unmapped.value.result
    assert result is not None
    skipped = {node.name for node in result.nodes if node.status == "skipped"}
    assert {"int_candidates", "features"} <= skipped
    with connect(url) as conn:
        built = conn.execute("SELECT to_regclass('marts.features')").fetchone()
    assert built == (None,)


def test_an_empty_raw_table_fails_the_build_instead_of_an_empty_mart(
    postgres_database: PostgresConnectionInfo, tmp_path: Path
) -> None:
    """Every other test passes on zero rows: not_empty is what stops an empty features mart."""
    url = postgres_database.url
    with connect(url) as conn:
        header_only = tmp_path / "persons.csv"
        header_only.write_text(",".join(PUMS_COLUMNS) + "\n")
        assert load_raw(conn, "pums", {"persons.csv": header_only}, PUMS_URI) == 0

    with pytest.raises(TransformError) as caught:
        build_features(database_url=url, source="pums", band_edges=[30_000], work_dir=tmp_path)

    head, *details = str(caught.value).splitlines()
    assert head.startswith("dbt build --exclude tag:adult failed: test int_candidates_not_empty")
    assert details == [
        "test int_candidates_not_empty: fail: 1 failing row(s), "
        "e.g. int_candidates has no rows: is raw.pums empty?"
    ]
    result = caught.value.result
    assert result is not None
    assert "features" in {node.name for node in result.nodes if node.status == "skipped"}
    with connect(url) as conn:
        assert conn.execute("SELECT to_regclass('marts.features')").fetchone() == (None,)


def test_an_unreachable_database_is_one_readable_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"postgresql://ana:s3cret@127.0.0.1:{closed_port}/payband"

    with pytest.raises(TransformError) as caught:
        run_dbt(["build"], database_url=url, work_dir=tmp_path)

    head = str(caught.value).splitlines()[0]
    assert head == (
        f'dbt build failed: connection to server at "127.0.0.1", port {closed_port} failed: '
        "Connection refused"
    )
    assert "s3cret" not in str(caught.value)
