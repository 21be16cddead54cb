"""The data pipeline as a Dagster code location (module `payband_data.definitions`).

For each source (adult, pums):
  raw_files/<source>          the source's raw files, committed to the versioned store
  -> raw/<source>             raw.<source> in PostgreSQL, loaded with COPY (a dbt source)
  -> dbt seeds and models     one asset each; every dbt test is an asset check
  -> features_snapshot/<source>  the features mart as parquet, committed to the store

`adult_features` and `pums_features` run the whole chain for one source. Survey year,
states and band edges come from the `pipeline` resource, set per run in the launchpad.
"""

# No `from __future__ import annotations`: Dagster reads the annotations of asset functions.

import hashlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
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
    build_dbt_asset_selection,
    dbt_assets,
)
from pydantic import Field

from payband_data import steps
from payband_data.settings import DataSettings
from payband_data.transform import DBT_PROJECT_DIR, dbt_environment, dbt_vars, run_dbt

# Nothing phones home: dagster reads this before uploading usage statistics.
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


class DataPipeline(ConfigurableResource):
    """Run settings: for PUMS a year and states; the band edges for either source."""

    year: int | None = Field(default=None, description="PUMS survey year (2018+, not 2020)")
    states: list[str] = Field(default_factory=list, description="PUMS states, e.g. ['CA']")
    band_edges: list[int] = Field(
        default_factory=lambda: [50_000], description="Ascending band edges in USD"
    )
    source: str = Field(
        default="adult",
        description="Source of the shared models when no staging model says which",
    )


def _project_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(DBT_PROJECT_DIR.rglob("*")):
        if path.is_file():
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
    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "dbt"


def _source_assets(source: str, settings: DataSettings) -> list[AssetsDefinition]:
    """raw_files/<source>, raw/<source> and features_snapshot/<source>."""

    @asset(
        key=AssetKey(["raw_files", source]),
        group_name="raw",
        description=f"The {source} raw files, committed to the versioned store.",
    )
    def raw_files(context: AssetExecutionContext, pipeline: DataPipeline) -> str:
        def progress(state: str, done: int, total: int | None) -> None:
            if total is not None and done == total:
                context.log.info(f"{state}: {done:,} bytes")

        version = steps.ingest(
            source,
            settings,
            year=pipeline.year if source == "pums" else None,
            states=steps.parse_states(pipeline.states) if source == "pums" else (),
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
        key=AssetKey(["raw", source]),
        ins={"raw_uri": AssetIn(AssetKey(["raw_files", source]))},
        group_name="raw",
        description=f"raw.{source} in PostgreSQL, loaded with COPY from the raw version.",
    )
    def raw_table(raw_uri: str) -> MaterializeResult:
        with steps.exclusive_build(settings):
            rows = steps.load(raw_uri, settings, source=source)
        return MaterializeResult(metadata={"uri": MetadataValue.text(raw_uri), "row_count": rows})

    @asset(
        key=AssetKey(["features_snapshot", source]),
        deps=[AssetKey(["marts", "features"])],
        group_name="features",
        description=f"The {source} features as parquet, committed to the store with statistics.",
    )
    def features_snapshot(context: AssetExecutionContext, pipeline: DataPipeline) -> str:
        with steps.exclusive_build(settings):
            version = steps.snapshot(source, pipeline.band_edges, settings)
        context.add_output_metadata(
            {
                "uri": MetadataValue.text(version.uri),
                "row_count": int(version.metadata["row_count"]),
                **{
                    key: MetadataValue.json(json.loads(version.metadata[key]))
                    for key in ("rows_per_band", "rows_per_sex", "rows_per_race")
                },
            }
        )
        return version.uri

    return [raw_files, raw_table, features_snapshot]


def _selected_source(context: AssetExecutionContext, pipeline: DataPipeline) -> str:
    """The source whose staging model is selected, else the job's, else the resource's.

    A re-execution from failure may select only the shared models; the job still says which.
    """
    staged = [
        source
        for source in steps.SOURCES
        if AssetKey(["staging", f"stg_{source}"]) in context.selected_asset_keys
    ]
    if len(staged) == 1:
        return staged[0]
    job_source = context.run.job_name.removesuffix("_features")
    return job_source if job_source in steps.SOURCES else pipeline.source


def _dbt_executable() -> str:
    """The dbt installed beside this interpreter, so an inactive virtualenv still finds it."""
    beside = Path(sys.executable).with_name("dbt")
    return os.fspath(beside) if beside.exists() else "dbt"


def build_definitions(settings: DataSettings | None = None) -> Definitions:
    """The code location; `settings` fixes where it reads and writes (tests pass their own)."""
    settings = settings or DataSettings()
    manifest = prepare_manifest(settings)
    project = DbtProject(
        project_dir=DBT_PROJECT_DIR, target_path=manifest.parent, profiles_dir=DBT_PROJECT_DIR
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
        source = _selected_source(context, pipeline)
        variables = dbt_vars(source, pipeline.band_edges)
        # As in `payband-data build`: the other source's models, seeds and tests stay out.
        other = next(name for name in steps.SOURCES if name != source)
        target_path = work_dir / "runs" / context.run.run_id
        with steps.exclusive_build(settings):
            with _environment(dbt_environment(settings.database_url, work_dir)):
                invocation = dbt.cli(
                    ["build", "--exclude", f"tag:{other}", "--vars", json.dumps(variables)],
                    context=context,
                    target_path=target_path,
                )
            yield from invocation.stream()
        # Kept when dbt fails (its logs are there); a successful run's artifacts are in Dagster.
        shutil.rmtree(target_path, ignore_errors=True)

    assets: list[AssetsDefinition] = [payband_dbt_models]
    jobs = []
    for source in steps.SOURCES:
        per_source = _source_assets(source, settings)
        assets += per_source
        other = next(name for name in steps.SOURCES if name != source)
        selection = AssetSelection.assets(*per_source) | build_dbt_asset_selection(
            [payband_dbt_models], dbt_exclude=f"tag:{other}"
        )
        jobs.append(
            define_asset_job(
                f"{source}_features",
                selection=selection,
                description=f"{source}: raw files -> raw table -> dbt -> features snapshot",
            )
        )
    return Definitions(
        assets=assets,
        jobs=jobs,
        resources={
            "dbt": DbtCliResource(
                project_dir=os.fspath(DBT_PROJECT_DIR),
                profiles_dir=os.fspath(DBT_PROJECT_DIR),
                dbt_executable=_dbt_executable(),
            ),
            "pipeline": DataPipeline(),
        },
    )


@definitions
def defs() -> Definitions:
    """Loaded by Dagster when the code location starts, not when this module is imported."""
    return build_definitions()
