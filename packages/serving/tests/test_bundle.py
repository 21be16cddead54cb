"""Bundles built from a local model directory and from the MLflow registry, and their images.

The image builds here run against a test double of a container engine
(``tests/fake_engine/podman``, a shell script that records its arguments); the real podman
build of a bundle is exercised by CI in issue 10.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlserver.settings import ModelSettings, Settings

from payband_serving.bundle import (
    BUNDLE_FORMAT,
    Bundle,
    BundleError,
    build_bundle,
    build_image,
    model_revision,
    verify_bundle,
)
from payband_serving.settings import ServingSettings
from payband_serving.source import ModelSource, resolve

FAKE_ENGINE = Path(__file__).parent / "fake_engine" / "podman"
EXPECTED_FILES = {
    "Dockerfile",
    "model-settings.json",
    "settings.json",
    "model/booster.json",
    "model/payband_model.json",
}


@pytest.fixture
def settings(tmp_path: Path) -> ServingSettings:
    """Settings away from every default, so the bundle visibly carries them."""
    return ServingSettings(
        bundle_dir=tmp_path / "bundles",
        http_port=9180,
        grpc_port=9181,
        metrics_port=9182,
        parallel_workers=2,
        max_batch_size=16,
        max_batch_time_s=0.05,
        base_image="localbase:test",
        image_repository="registry.test/payband-model",
        container_engine="none",
    )


def _local(directory: Path, tmp_path: Path) -> ModelSource:
    return resolve(str(directory), tracking_uri="unused", download_dir=tmp_path / "download")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _labels(dockerfile: str) -> dict[str, str]:
    return dict(re.findall(r'([a-z][a-z0-9.-]+)="([^"]*)"', dockerfile))


def test_bundle_of_a_local_model_directory(tiny_model, settings, tmp_path) -> None:
    bundle = build_bundle(_local(tiny_model.directory, tmp_path), settings)

    version = "local-" + _sha256(tiny_model.directory / "booster.json")[:12]
    assert bundle.directory == settings.bundle_dir / f"salary-band-{version}"
    assert bundle.image_tag == f"registry.test/payband-model:salary-band-{version}"
    files = {
        path.relative_to(bundle.directory).as_posix()
        for path in bundle.directory.rglob("*")
        if path.is_file()
    }
    assert files == EXPECTED_FILES | {"manifest.json"}
    for name in ("booster.json", "payband_model.json"):
        assert (bundle.directory / "model" / name).read_bytes() == (
            tiny_model.directory / name
        ).read_bytes()

    # MLServer's own settings classes read what MLServer will read.
    model_settings = ModelSettings.parse_file(str(bundle.directory / "model-settings.json"))
    assert model_settings.name == "salary-band"
    assert model_settings.implementation_ == "payband_serving.runtime.SalaryBandRuntime"
    assert (model_settings.max_batch_size, model_settings.max_batch_time) == (16, 0.05)
    assert model_settings.parameters is not None
    assert model_settings.parameters.uri == "./model"
    assert model_settings.version == version
    assert model_settings.parameters.extra == {
        "registered_name": None,
        "source_uri": str(tiny_model.directory),
        "run_id": None,
    }
    server = Settings.model_validate(json.loads((bundle.directory / "settings.json").read_text()))
    assert (server.http_port, server.grpc_port, server.metrics_port) == (9180, 9181, 9182)
    # Inside a container the server listens on the container's own interfaces.
    assert (server.host, server.debug, server.parallel_workers) == ("0.0.0.0", False, 2)  # noqa: S104
    assert server.load_models_at_startup
    assert server.metrics_endpoint == "/metrics"

    manifest = bundle.manifest
    assert manifest.format == BUNDLE_FORMAT
    assert manifest.model.version == version
    assert manifest.model.registered_name is None
    assert manifest.model.features == tiny_model.schema.features
    assert manifest.model.band_labels == ("<=50K", ">50K")
    assert manifest.model.train_uri == tiny_model.schema.train_uri
    assert manifest.image.tag == bundle.image_tag
    on_disk = json.loads((bundle.directory / "manifest.json").read_text())
    assert on_disk["model"]["uri"] == str(tiny_model.directory)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", on_disk["created_at"])
    assert verify_bundle(bundle.directory) == manifest


def test_bundle_of_the_registry_champion(mlflow_registry, settings, tmp_path) -> None:
    source = resolve(
        mlflow_registry.champion_uri,
        tracking_uri=mlflow_registry.tracking_uri,
        download_dir=tmp_path / "download",
    )
    bundle = build_bundle(source, settings, output_dir=tmp_path / "elsewhere")

    assert bundle.directory == tmp_path / "elsewhere" / "salary-band-1"
    assert not settings.bundle_dir.exists(), "output_dir replaces the configured bundle_dir"
    assert bundle.image_tag == "registry.test/payband-model:salary-band-1"
    champion = mlflow_registry.versions["1"]
    for name in ("booster.json", "payband_model.json"):
        assert (bundle.directory / "model" / name).read_bytes() == (
            champion.directory / name
        ).read_bytes()

    model = bundle.manifest.model
    assert (model.name, model.registered_name, model.version) == ("salary-band", "salary-band", "1")
    assert model.uri == "models:/salary-band@champion"
    assert model.version_uri == "models:/salary-band/1"
    assert model.run_id == source.run_id
    assert model.run_id
    extra = ModelSettings.parse_file(str(bundle.directory / "model-settings.json")).parameters
    assert extra is not None
    assert extra.version == "1"
    assert extra.extra == {
        "registered_name": "salary-band",
        "source_uri": "models:/salary-band@champion",
        "run_id": source.run_id,
    }

    dockerfile = (bundle.directory / "Dockerfile").read_text()
    lines = dockerfile.splitlines()
    assert "ARG BASE_IMAGE=localbase:test" in lines
    assert "FROM ${BASE_IMAGE}" in lines
    assert "EXPOSE 9180 9181 9182" in lines
    assert "USER 10001:10001" in lines
    assert 'CMD ["payband-serving", "serve", "--bundle", "/opt/payband/bundle"]' in lines
    assert "COPY . /opt/payband/bundle/" in lines
    assert "http://127.0.0.1:9180/v2/health/ready" in dockerfile
    assert f"-t {bundle.image_tag} ." in dockerfile, "the comment says how to build it"
    labels = _labels(dockerfile)
    assert labels["org.opencontainers.image.version"] == "1"
    assert labels["io.payband.model.name"] == "salary-band"
    assert labels["io.payband.model.version"] == "1"
    assert labels["io.payband.model.uri"] == "models:/salary-band/1"
    assert labels["io.payband.training-data"] == champion.schema.train_uri
    assert labels["io.payband.features-data"] == champion.schema.features_uri
    assert (
        labels["org.opencontainers.image.created"]
        == (json.loads((bundle.directory / "manifest.json").read_text())["created_at"])
    )

    # The checksums, recomputed here independently of the bundle code.
    listed = json.loads((bundle.directory / "manifest.json").read_text())["files"]
    assert set(listed) == EXPECTED_FILES
    for name, entry in listed.items():
        path = bundle.directory / name
        assert entry == {"sha256": _sha256(path), "size": path.stat().st_size}
    assert verify_bundle(bundle.directory).model.version_uri == "models:/salary-band/1"


def test_versions_get_their_own_bundles(mlflow_registry, settings, tmp_path) -> None:
    bundles = {}
    for version in ("1", "2"):
        source = resolve(
            f"models:/salary-band/{version}",
            tracking_uri=mlflow_registry.tracking_uri,
            download_dir=tmp_path / "download",
        )
        bundles[version] = build_bundle(source, settings)
    assert sorted(path.name for path in settings.bundle_dir.iterdir()) == [
        "salary-band-1",
        "salary-band-2",
    ]
    assert bundles["2"].manifest.model.band_labels == ("<=40K", "40K-80K", ">80K")
    assert bundles["2"].manifest.model.uri == "models:/salary-band/2"
    assert (
        _labels((bundles["2"].directory / "Dockerfile").read_text())["io.payband.model.version"]
        == "2"
    )
    for bundle in bundles.values():
        verify_bundle(bundle.directory)


def test_the_runs_git_commit_labels_the_image(mlflow_registry, settings, tmp_path) -> None:
    source = resolve(
        "models:/salary-band/2",
        tracking_uri=mlflow_registry.tracking_uri,
        download_dir=tmp_path / "download",
    )
    assert model_revision(source, tracking_uri=mlflow_registry.tracking_uri) is None
    client = MlflowClient(tracking_uri=mlflow_registry.tracking_uri)
    client.set_tag(source.run_id, "mlflow.source.git.commit", "0123abcd" * 5)
    revision = model_revision(source, tracking_uri=mlflow_registry.tracking_uri)
    assert revision == "0123abcd" * 5

    bundle = build_bundle(source, settings, revision=revision)
    labels = _labels((bundle.directory / "Dockerfile").read_text())
    assert labels["org.opencontainers.image.revision"] == revision
    without = build_bundle(_local(mlflow_registry.versions["2"].directory, tmp_path), settings)
    assert "org.opencontainers.image.revision" not in _labels(
        (without.directory / "Dockerfile").read_text()
    )


def test_label_values_are_quoted_for_the_dockerfile(tiny_model, settings, tmp_path) -> None:
    odd = tmp_path / 'model "$HOME" \\ here'
    shutil.copytree(tiny_model.directory, odd)
    bundle = build_bundle(_local(odd, tmp_path), settings)
    dockerfile = (bundle.directory / "Dockerfile").read_text()
    line = next(line for line in dockerfile.splitlines() if "io.payband.model.uri=" in line)
    raw = re.search(r'="((?:[^"\\]|\\.)*)"', line)
    assert raw is not None, line
    # Inside double quotes a Dockerfile takes \x as x; an unescaped $ would be expanded.
    assert re.sub(r"\\(.)", r"\1", raw.group(1)) == str(odd)
    assert not re.search(r"(?<!\\)\$", raw.group(1))


def test_building_a_version_again_replaces_its_bundle(tiny_model, settings, tmp_path) -> None:
    source = _local(tiny_model.directory, tmp_path)
    first = build_bundle(source, settings)
    (first.directory / "left-over.txt").write_text("from an older build")
    second = build_bundle(source, settings.model_copy(update={"http_port": 9280}))

    assert second.directory == first.directory
    assert not (second.directory / "left-over.txt").exists()
    assert json.loads((second.directory / "settings.json").read_text())["http_port"] == 9280
    assert [path.name for path in settings.bundle_dir.iterdir()] == [first.directory.name], (
        "no temporary or old folder stays behind"
    )
    verify_bundle(second.directory)


def test_a_model_that_would_not_load_gets_no_bundle(tiny_model, settings, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model.directory, broken)
    source = _local(broken, tmp_path)
    (broken / "booster.json").write_text("{not json")

    with pytest.raises(BundleError, match=r"booster\.json is not an XGBoost model"):
        build_bundle(source, settings)
    assert not settings.bundle_dir.exists() or not any(settings.bundle_dir.iterdir())


@pytest.fixture
def local_bundle(tiny_model, settings, tmp_path) -> Bundle:
    return build_bundle(_local(tiny_model.directory, tmp_path), settings)


def _tamper(directory: Path) -> None:
    path = directory / "model" / "booster.json"
    data = bytearray(path.read_bytes())
    data[10] ^= 1  # same size, different content
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(_tamper, "model/booster.json has a different sha256", id="tampered"),
        pytest.param(
            lambda d: (d / "model" / "payband_model.json").write_text("{}"),
            "model/payband_model.json has 2 bytes, not ",
            id="resized",
        ),
        pytest.param(
            lambda d: (d / "settings.json").unlink(), "settings.json is missing", id="deleted"
        ),
        pytest.param(
            lambda d: (d / "model" / "notes.txt").write_text("stray"),
            "model/notes.txt is not in the manifest",
            id="stray",
        ),
    ],
)
def test_a_changed_bundle_fails_verification(local_bundle, change, expected) -> None:
    verify_bundle(local_bundle.directory)
    change(local_bundle.directory)
    with pytest.raises(BundleError) as raised:
        verify_bundle(local_bundle.directory)
    message = str(raised.value)
    assert expected in message
    assert str(local_bundle.directory) in message
    assert "\n" not in message


def test_a_bundle_without_a_sound_manifest_fails_verification(local_bundle) -> None:
    manifest = local_bundle.directory / "manifest.json"
    document = json.loads(manifest.read_text())

    manifest.write_text("{")
    with pytest.raises(BundleError, match=r"manifest\.json is malformed"):
        verify_bundle(local_bundle.directory)

    document["files"]["../outside"] = {"sha256": "0" * 64, "size": 1}
    manifest.write_text(json.dumps(document))
    with pytest.raises(BundleError, match=r"'\.\./outside' is not a file inside the bundle"):
        verify_bundle(local_bundle.directory)

    manifest.unlink()
    with pytest.raises(BundleError, match=r"has no manifest\.json: not a payband bundle"):
        verify_bundle(local_bundle.directory)


def test_no_image_when_engines_are_off(local_bundle, settings) -> None:
    result = build_image(local_bundle, settings)
    assert not result.built
    assert result.engine is None
    assert result.tag == local_bundle.image_tag
    assert "PAYBAND_SERVING_CONTAINER_ENGINE=none" in result.message
    assert f"the bundle is at {local_bundle.directory}" in result.message
    assert (
        "podman build --format docker --build-arg BASE_IMAGE=localbase:test "
        f"-t {local_bundle.image_tag} {local_bundle.directory}"
    ) in result.message
    verify_bundle(local_bundle.directory)


@pytest.fixture
def engine_bin(tmp_path, monkeypatch) -> Path:
    """An empty folder that is the whole PATH, for the engine test double."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(tmp_path / "engine.log"))
    monkeypatch.delenv("FAKE_ENGINE_INFO_ERROR", raising=False)
    monkeypatch.delenv("FAKE_ENGINE_BUILD_ERROR", raising=False)
    return folder


def _install_engine(folder: Path, name: str) -> Path:
    path = folder / name
    shutil.copyfile(FAKE_ENGINE, path)
    path.chmod(0o755)
    return path


def _calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "engine.log"
    return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []


def test_no_image_without_an_engine_on_path(local_bundle, settings, engine_bin) -> None:
    result = build_image(local_bundle, settings.model_copy(update={"container_engine": "auto"}))
    assert not result.built
    assert "no container engine was found" in result.message
    assert str(local_bundle.directory) in result.message
    assert f"-t {local_bundle.image_tag} {local_bundle.directory}" in result.message

    explicit = build_image(local_bundle, settings.model_copy(update={"container_engine": "docker"}))
    assert not explicit.built
    assert "the container engine docker was not found on PATH" in explicit.message


def test_image_built_with_podman(local_bundle, settings, engine_bin, tmp_path) -> None:
    _install_engine(engine_bin, "podman")
    _install_engine(engine_bin, "docker")
    result = build_image(local_bundle, settings.model_copy(update={"container_engine": "auto"}))

    assert result.built
    assert result.engine == "podman"
    assert result.tag == local_bundle.image_tag
    assert result.tag.endswith(":salary-band-" + local_bundle.manifest.model.version)
    info, build = _calls(tmp_path)
    assert info == ["info"]
    assert build == [
        "build",
        "--format",
        "docker",
        "--build-arg",
        "BASE_IMAGE=localbase:test",
        "-t",
        local_bundle.image_tag,
        str(local_bundle.directory),
    ]


def test_auto_passes_over_an_engine_that_does_not_answer(
    local_bundle, settings, engine_bin, tmp_path, monkeypatch
) -> None:
    _install_engine(engine_bin, "docker")
    daemon_down = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
    monkeypatch.setenv("FAKE_ENGINE_INFO_ERROR", daemon_down)
    auto = settings.model_copy(update={"container_engine": "auto"})

    result = build_image(local_bundle, auto)
    assert not result.built
    assert f"docker does not answer: {daemon_down}" in result.message
    assert _calls(tmp_path) == [["info"]]

    monkeypatch.delenv("FAKE_ENGINE_INFO_ERROR")
    result = build_image(local_bundle, auto)
    assert (result.built, result.engine) == (True, "docker")
    assert _calls(tmp_path)[-1] == [
        "build",
        "--build-arg",
        "BASE_IMAGE=localbase:test",
        "-t",
        local_bundle.image_tag,
        str(local_bundle.directory),
    ], "docker build has no --format option"


def test_a_failed_build_raises_the_engines_error(
    local_bundle, settings, engine_bin, tmp_path, monkeypatch
) -> None:
    _install_engine(engine_bin, "podman")
    monkeypatch.setenv("FAKE_ENGINE_BUILD_ERROR", "creating build container: base image not found")

    with pytest.raises(BundleError) as raised:
        build_image(local_bundle, settings.model_copy(update={"container_engine": "podman"}))
    message = str(raised.value)
    assert message.startswith(f"podman build of {local_bundle.image_tag} failed (exit 125): ")
    assert "Error: creating build container: base image not found" in message
    assert str(local_bundle.directory) in message
    assert _calls(tmp_path)[0][0] == "build", "an explicit engine is used without a probe"
    verify_bundle(local_bundle.directory)


def test_a_postgresql_registry_without_psycopg_is_one_line(tmp_path: Path):
    # An environment without the driver (sys.modules[...] = None hides it from find_spec and
    # import) fails before MLflow would, naming what is missing.
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from pathlib import Path\n"
        "from payband_serving.source import ModelSourceError, resolve\n"
        "try:\n"
        "    resolve('models:/salary-band@champion', download_dir=Path(sys.argv[1]),\n"
        "            tracking_uri='postgresql://u@127.0.0.1:1/mlflow')\n"
        "except ModelSourceError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert result.stdout == "the tracking store is PostgreSQL, which needs psycopg installed\n"
