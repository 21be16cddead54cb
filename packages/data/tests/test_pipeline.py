"""The Dagster code location, materialised in process on a real PostgreSQL with real dbt."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance

from payband_data.definitions import build_definitions, defs
from payband_data.settings import DataSettings
from payband_data.store import open_store
from payband_testing.dagster import validate_code_location

# Dagster jobs run end to end (ingest, dbt, snapshot)
pytestmark = pytest.mark.e2e

VERSIONED = re.compile(r"^local://features/adult@[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def settings(postgres_module_database, tmp_path_factory) -> DataSettings:
    home = tmp_path_factory.mktemp("pipeline")
    return DataSettings(
        database_url=postgres_module_database.url,
        store_dir=home / "store",
        dbt_work_dir=home / "dbt",
    )


@pytest.fixture(scope="module")
def definitions(settings):
    return build_definitions(settings)


def test_one_definitions_object_with_a_job_per_source(definitions) -> None:
    assert callable(defs), "the module's `defs` loads lazily, when Dagster asks for it"
    keys = {key.to_user_string() for key in definitions.resolve_asset_graph().get_all_asset_keys()}
    models = {"staging/stg_adult", "staging/stg_pums", "intermediate/int_candidates"}
    assert models | {"marts/features", "seeds/pums_occp", "seeds/adult_education"} <= keys
    for source in ("adult", "pums"):
        assert {f"raw_files/{source}", f"raw/{source}", f"features_snapshot/{source}"} <= keys
        job = definitions.resolve_job_def(f"{source}_features")
        selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
        other = "pums" if source == "adult" else "adult"
        assert f"staging/stg_{source}" in selected
        assert f"staging/stg_{other}" not in selected
        assert f"raw/{other}" not in selected
    checks = definitions.resolve_asset_graph().asset_check_keys
    assert any(check.asset_key == AssetKey(["marts", "features"]) for check in checks)


def test_adult_job_materialises_a_versioned_features_snapshot(definitions, settings, tmp_path):
    with DagsterInstance.ephemeral() as instance:
        result = definitions.resolve_job_def("adult_features").execute_in_process(
            instance=instance, raise_on_error=False
        )
    assert result.success

    uri = result.output_for_node("features_snapshot__adult")
    assert VERSIONED.match(uri), uri
    raw_uri = result.output_for_node("raw_files__adult")

    checks = result.get_asset_check_evaluations()
    assert len(checks) > 50, "every dbt test is an asset check"
    assert all(check.passed for check in checks), [c.check_name for c in checks if not c.passed]
    materialized = {
        event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
    }
    assert {"raw/adult", "marts/features", "features_snapshot/adult"} <= materialized

    with open_store(settings) as store:
        version = store.get(uri)
        assert version.metadata["raw_uri"] == raw_uri
        assert store.latest("raw/adult").uri == raw_uri
        table = pq.read_table(store.fetch(uri, tmp_path)["features.parquet"])
    assert table.num_rows == int(version.metadata["row_count"]) == 45_222


def test_dagster_loads_the_code_location_by_module(settings, tmp_path) -> None:
    """What a code server does: `dagster definitions validate -m payband_data.definitions`."""
    env = {
        "PAYBAND_DATA_DATABASE_URL": settings.database_url,
        "PAYBAND_DATA_STORE_DIR": str(settings.store_dir),
        "PAYBAND_DATA_DBT_WORK_DIR": str(settings.dbt_work_dir),
    }
    result = validate_code_location("payband_data.definitions", env, tmp_path / "dagster")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful for code location payband_data.definitions" in (
        result.stdout + result.stderr
    )
