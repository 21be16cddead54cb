"""The serving code location, run in process against a real MLflow registry."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from payband_serving.bundle import verify_bundle
from payband_serving.definitions import JOB, ServingRun, build_definitions, defs
from payband_serving.settings import ServingSettings
from payband_testing.dagster import validate_code_location

FAKE_ENGINE = Path(__file__).parent / "fake_engine" / "podman"
CHECK = AssetCheckKey(AssetKey("serving_bundle"), "serving_bundle_matches_manifest")


@pytest.fixture
def settings(mlflow_registry, tmp_path) -> ServingSettings:
    return ServingSettings(
        mlflow_tracking_uri=mlflow_registry.tracking_uri,
        bundle_dir=tmp_path / "bundles",
        container_engine="none",
        base_image="localbase:test",
    )


def _run(settings: ServingSettings, serving: ServingRun):
    with DagsterInstance.ephemeral() as instance:
        return (
            build_definitions(settings)
            .resolve_job_def(JOB)
            .execute_in_process(
                instance=instance, raise_on_error=False, resources={"serving": serving}
            )
        )


def _metadata(result) -> dict[str, dict[str, object]]:
    return {
        event.asset_key.to_user_string(): {
            key: value.value for key, value in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def test_two_assets_and_a_check_in_one_job(settings) -> None:
    assert callable(defs), "the module's `defs` loads lazily, when Dagster asks for it"
    definitions = build_definitions(settings)
    graph = definitions.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "serving_bundle",
        "serving_image",
    }
    assert graph.get(AssetKey("serving_image")).parent_keys == {AssetKey("serving_bundle")}
    assert graph.get(AssetKey("serving_bundle")).group_name == "serving"
    assert graph.asset_check_keys == {CHECK}
    job = definitions.resolve_job_def(JOB)
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {
        "serving_bundle",
        "serving_image",
    }


def test_job_bundles_the_champion(mlflow_registry, settings) -> None:
    result = _run(settings, ServingRun())
    assert result.success

    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.asset_check_key == CHECK
    assert evaluation.passed
    assert evaluation.metadata["files"].value == 5

    directory = settings.bundle_dir / "salary-band-1"
    manifest = verify_bundle(directory)
    assert manifest.model.version_uri == "models:/salary-band/1"
    assert manifest.model.uri == "models:/salary-band@champion"
    champion = mlflow_registry.versions["1"]
    assert (directory / "model" / "booster.json").read_bytes() == (
        champion.directory / "booster.json"
    ).read_bytes()

    metadata = _metadata(result)
    bundle = metadata["serving_bundle"]
    assert bundle["bundle_path"] == str(directory)
    assert bundle["model_version"] == "1"
    assert bundle["version_uri"] == "models:/salary-band/1"
    assert bundle["image_tag"] == "payband-model:salary-band-1"
    assert bundle["file_count"] == 5
    assert bundle["manifest_sha256"] == (
        hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()
    )
    image = metadata["serving_image"]
    assert image["built"] is False
    assert image["engine"] == ""
    assert image["tag"] == "payband-model:salary-band-1"
    assert "PAYBAND_SERVING_CONTAINER_ENGINE=none" in image["message"]
    assert "build the image later with: podman build" in image["message"]
    assert result.output_for_node("serving_image").built is False


def test_job_bundles_a_given_version_and_builds_its_image(settings, tmp_path, monkeypatch) -> None:
    """The engine is a test double (tests/fake_engine/podman); CI builds with podman (issue 10)."""
    engine_bin = tmp_path / "bin"
    engine_bin.mkdir()
    shutil.copyfile(FAKE_ENGINE, engine_bin / "podman")
    (engine_bin / "podman").chmod(0o755)
    monkeypatch.setenv("PATH", str(engine_bin))
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(tmp_path / "engine.log"))
    monkeypatch.delenv("FAKE_ENGINE_BUILD_ERROR", raising=False)
    monkeypatch.delenv("FAKE_ENGINE_INFO_ERROR", raising=False)
    output = tmp_path / "chosen"

    result = _run(
        settings.model_copy(update={"container_engine": "auto"}),
        ServingRun(model_uri="models:/salary-band/2", output_dir=str(output)),
    )
    assert result.success

    directory = output / "salary-band-2"
    manifest = verify_bundle(directory)
    assert manifest.model.band_labels == ("<=40K", "40K-80K", ">80K")
    assert not settings.bundle_dir.exists()
    image = _metadata(result)["serving_image"]
    assert (image["built"], image["engine"]) == (True, "podman")
    builds = [
        line.split("\t")
        for line in (tmp_path / "engine.log").read_text().splitlines()
        if line.startswith("build")
    ]
    assert builds == [
        [
            "build",
            "--format",
            "docker",
            "--build-arg",
            "BASE_IMAGE=localbase:test",
            "-t",
            "payband-model:salary-band-2",
            str(directory),
        ]
    ]


def test_an_unknown_alias_fails_the_bundle_in_one_line(settings) -> None:
    result = _run(settings, ServingRun(model_uri="models:/salary-band@nonexistent"))
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_key == "serving_bundle"
    assert failure.step_failure_data.error.cls_name == "Failure", "a message, not a traceback"
    assert failure.step_failure_data.user_failure_data.description == (
        "cannot resolve models:/salary-band@nonexistent: "
        "Registered model alias nonexistent not found."
    )
    assert not settings.bundle_dir.exists() or not any(settings.bundle_dir.iterdir())


def test_dagster_loads_the_code_location_by_module(settings, tmp_path) -> None:
    """What a code server does: `dagster definitions validate -m payband_serving.definitions`."""
    env = {
        "PAYBAND_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "PAYBAND_SERVING_BUNDLE_DIR": str(settings.bundle_dir),
        "PAYBAND_SERVING_CONTAINER_ENGINE": "none",
    }
    result = validate_code_location("payband_serving.definitions", env, tmp_path / "dagster")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful for code location payband_serving.definitions" in (
        result.stdout + result.stderr
    )
