"""The serving pipeline as a Dagster code location (module `payband_serving.definitions`).

  serving_bundle   the bundle of one model version (the champion unless a run says otherwise):
                   model files, MLServer settings, Dockerfile and a manifest with checksums;
                   its asset check verifies every file against the manifest
  -> serving_image the bundle's container image, when podman or docker answers; otherwise
                   recorded as not built, with the reason and the command to build it later

The job `build_serving_bundle` runs both. Which model and where its bundle goes come from the
`serving` resource, set per run; everything else from PAYBAND_SERVING_*.
"""

# No `from __future__ import annotations`: Dagster reads the annotations of asset functions.

import hashlib
import os
import tempfile
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    ConfigurableResource,
    Definitions,
    Failure,
    MetadataValue,
    asset,
    asset_check,
    define_asset_job,
    definitions,
)
from pydantic import Field

from payband_serving.bundle import (
    MANIFEST_FILE,
    Bundle,
    BundleError,
    ImageResult,
    build_bundle,
    build_image,
    model_revision,
    verify_bundle,
)
from payband_serving.settings import ServingSettings
from payband_serving.source import ModelSourceError, is_mlflow_uri, resolve

# Nothing phones home: dagster reads this before uploading usage statistics.
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

GROUP = "serving"
JOB = "build_serving_bundle"


class ServingRun(ConfigurableResource):
    """Which model one run bundles and where the bundle goes (empty: PAYBAND_SERVING_*)."""

    model_uri: str = Field(
        default="",
        description="models:/name@alias, models:/name/version, runs:/... or a model directory; "
        "empty: PAYBAND_SERVING_MODEL_URI (the champion)",
    )
    output_dir: str = Field(
        default="", description="Directory of bundles; empty: PAYBAND_SERVING_BUNDLE_DIR"
    )

    def resolved_uri(self, settings: ServingSettings) -> str:
        return self.model_uri or settings.model_uri

    def resolved_output_dir(self, settings: ServingSettings) -> Path:
        return Path(self.output_dir).expanduser() if self.output_dir else settings.bundle_dir


def build_definitions(settings: ServingSettings | None = None) -> Definitions:
    """The code location; `settings` fixes the registry, ports and engine (tests pass their own)."""
    base = settings or ServingSettings()

    @asset(
        group_name=GROUP,
        description="The deployable bundle of one model version, with a checksummed manifest.",
    )
    def serving_bundle(context: AssetExecutionContext, serving: ServingRun) -> Bundle:
        uri = serving.resolved_uri(base)
        context.log.info(f"resolving {uri}")
        try:
            # MLflow models are downloaded here, copied into the bundle, then removed.
            with tempfile.TemporaryDirectory(prefix="payband-serving-") as download:
                source = resolve(
                    uri, tracking_uri=base.mlflow_tracking_uri, download_dir=Path(download)
                )
                context.log.info(f"resolved {uri} to {source.version_uri}")
                revision = (
                    model_revision(source, tracking_uri=base.mlflow_tracking_uri)
                    if is_mlflow_uri(uri)
                    else None
                )
                bundle = build_bundle(
                    source, base, output_dir=serving.resolved_output_dir(base), revision=revision
                )
            manifest = verify_bundle(bundle.directory)
        except (ModelSourceError, BundleError) as exc:
            # A Failure shows its description as the step's error, without a traceback.
            raise Failure(description=str(exc)) from None
        context.log.info(f"bundle of {manifest.model.version_uri} written to {bundle.directory}")
        # Not "path": the filesystem IO manager records its pickle's path under that key.
        context.add_output_metadata(
            {
                "bundle_path": MetadataValue.path(str(bundle.directory)),
                "model_version": manifest.model.version,
                "version_uri": MetadataValue.text(manifest.model.version_uri),
                "image_tag": MetadataValue.text(bundle.image_tag),
                "file_count": len(manifest.files),
                "manifest_sha256": hashlib.sha256(
                    (bundle.directory / MANIFEST_FILE).read_bytes()
                ).hexdigest(),
            }
        )
        return bundle

    @asset_check(
        asset=serving_bundle,
        blocking=True,
        description="Every file of the bundle has the size and sha256 its manifest lists, "
        "and no other file is there.",
    )
    def serving_bundle_matches_manifest(serving_bundle: Bundle) -> AssetCheckResult:
        try:
            manifest = verify_bundle(serving_bundle.directory)
        except BundleError as exc:
            return AssetCheckResult(
                passed=False, metadata={"problem": MetadataValue.text(str(exc))}
            )
        return AssetCheckResult(
            passed=True,
            metadata={
                "files": len(manifest.files),
                "bytes": sum(entry.size for entry in manifest.files.values()),
            },
        )

    @asset(
        group_name=GROUP,
        description="The bundle's container image; not built (and said why) without an engine.",
    )
    def serving_image(context: AssetExecutionContext, serving_bundle: Bundle) -> ImageResult:
        try:
            result = build_image(serving_bundle, base)
        except BundleError as exc:
            raise Failure(description=str(exc)) from None
        if result.built:
            context.log.info(result.message)
        else:
            context.log.warning(result.message)
        context.add_output_metadata(
            {
                "built": result.built,
                "engine": result.engine or "",
                "tag": MetadataValue.text(result.tag),
                "message": MetadataValue.text(result.message),
            }
        )
        return result

    assets = [serving_bundle, serving_image]
    return Definitions(
        assets=assets,
        asset_checks=[serving_bundle_matches_manifest],
        jobs=[
            define_asset_job(
                JOB,
                selection=assets,
                description="model version -> bundle (verified) -> container image",
            )
        ],
        resources={"serving": ServingRun()},
    )


@definitions
def defs() -> Definitions:
    """Loaded by Dagster when the code location starts, not when this module is imported."""
    return build_definitions()
