"""The data pipeline as a Dagster code location: `dagster dev -m payband_data.definitions`.

raw_dataset (source files committed to the versioned store)
  -> raw_records (raw.<source> in PostgreSQL, loaded with COPY)
  -> dbt seeds and models, one asset each; dbt tests are asset checks
  -> features_snapshot (the features mart as parquet, committed to the versioned store)

Which source, survey year, states and band edges: the `pipeline` resource (Adult with the
50,000 USD edge by default), set per run in the launchpad or in run config.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    ConfigurableResource,
    Definitions,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
    definitions,
)
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from pydantic import Field

from payband_data import steps
from payband_data.settings import DataSettings
from payband_data.transform import DBT_PROJECT_DIR, dbt_environment, dbt_vars, run_dbt

# Nothing phones home: dagster reads this before uploading usage statistics.
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

RAW_RECORDS = AssetKey("raw_records")


class DataPipeline(ConfigurableResource):
    """What the pipeline builds: a source, for PUMS a year and states, and the band edges."""

    source: str = Field(default="adult", description="adult or pums")
    year: int | None = Field(default=None, description="PUMS survey year (2018+, not 2020)")
    states: list[str] = Field(default_factory=list, description="PUMS states, e.g. ['CA']")
    band_edges: list[int] = Field(
        default_factory=lambda: [50_000], description="Ascending band edges in USD"
    )

    def settings(self) -> DataSettings:
        return DataSettings()


def _project_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(DBT_PROJECT_DIR.rglob("*")):
        if path.is_file() and "target" not in path.parts:
            digest.update(str(path.relative_to(DBT_PROJECT_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def prepare_manifest(settings: DataSettings) -> Path:
    """dbt's manifest for this project, parsed again only when the project changed."""
    work_dir = settings.dbt_work_dir / "dagster"
    manifest = work_dir / "target" / "manifest.json"
    stamp = work_dir / "target" / "project.sha256"
    digest = _project_digest()
    if not manifest.exists() or not stamp.exists() or stamp.read_text() != digest:
        run_dbt(["parse"], database_url=settings.database_url, work_dir=work_dir)
        stamp.write_text(digest)
    return manifest


_ENVIRON_LOCK = threading.Lock()


@contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """dagster-dbt passes os.environ to the dbt process; set the connection only meanwhile."""
    with _ENVIRON_LOCK:
        saved = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class PaybandDbtTranslator(DagsterDbtTranslator):
    """Both dbt sources (raw.adult, raw.pums) are the one `raw_records` asset."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return RAW_RECORDS
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "dbt"


def build_definitions(settings: DataSettings | None = None) -> Definitions:
    """The code location; `settings` fixes where it reads and writes (tests pass their own)."""
    settings = settings or DataSettings()
    manifest = prepare_manifest(settings)
    project = DbtProject(
        project_dir=DBT_PROJECT_DIR,
        target_path=manifest.parent,
        profiles_dir=DBT_PROJECT_DIR,
    )

    @asset(group_name="raw", description="The source's raw files, committed to the store.")
    def raw_dataset(context: AssetExecutionContext, pipeline: DataPipeline) -> str:
        def progress(state: str, done: int, total: int | None) -> None:
            if total is not None and done == total:
                context.log.info(f"{state}: {done:,} bytes")

        version = steps.ingest(
            pipeline.source,
            settings,
            year=pipeline.year,
            states=steps.parse_states(pipeline.states),
            progress=progress,
        )
        context.add_output_metadata(
            {
                "uri": MetadataValue.text(version.uri),
                "row_count": int(version.metadata["row_count"]),
                "sha256": version.metadata["sha256"],
            }
        )
        return version.uri

    @asset(
        key=RAW_RECORDS,
        group_name="raw",
        description="raw.<source> in PostgreSQL, loaded with COPY from the raw version.",
    )
    def raw_records(raw_dataset: str) -> MaterializeResult:
        rows = steps.load(raw_dataset, settings)
        return MaterializeResult(
            metadata={"uri": MetadataValue.text(raw_dataset), "row_count": rows}
        )

    @dbt_assets(
        manifest=manifest,
        project=project,
        dagster_dbt_translator=PaybandDbtTranslator(
            settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)
        ),
    )
    def payband_dbt_models(
        context: AssetExecutionContext, dbt: DbtCliResource, pipeline: DataPipeline
    ) -> Iterator[Any]:
        work_dir = settings.dbt_work_dir / "dagster"
        variables = dbt_vars(pipeline.source, pipeline.band_edges)
        with _environment(dbt_environment(settings.database_url, work_dir)):
            invocation = dbt.cli(
                ["build", "--vars", json.dumps(variables)],
                context=context,
                target_path=work_dir / "runs" / context.run_id,
            )
        yield from invocation.stream()

    @asset(
        deps=[AssetKey("features")],
        group_name="features",
        description="The features mart as parquet, committed to the store with statistics.",
    )
    def features_snapshot(context: AssetExecutionContext, pipeline: DataPipeline) -> str:
        version = steps.snapshot(pipeline.source, pipeline.band_edges, settings)
        context.add_output_metadata(
            {
                "uri": MetadataValue.text(version.uri),
                "row_count": int(version.metadata["row_count"]),
                "rows_per_band": MetadataValue.json(json.loads(version.metadata["rows_per_band"])),
                "rows_per_sex": MetadataValue.json(json.loads(version.metadata["rows_per_sex"])),
                "rows_per_race": MetadataValue.json(json.loads(version.metadata["rows_per_race"])),
            }
        )
        return version.uri

    assets = [raw_dataset, raw_records, payband_dbt_models, features_snapshot]
    return Definitions(
        assets=assets,
        jobs=[define_asset_job("features_job", selection=assets, description=__doc__)],
        resources={
            "dbt": DbtCliResource(
                project_dir=os.fspath(DBT_PROJECT_DIR), profiles_dir=os.fspath(DBT_PROJECT_DIR)
            ),
            "pipeline": DataPipeline(),
        },
    )


@definitions
def defs() -> Definitions:
    """Loaded by Dagster when the code location starts, not when this module is imported."""
    return build_definitions()
