"""A deployable bundle per model version, and its container image.

``<bundle_dir>/<model_name>-<version>/`` holds everything one MLServer instance needs:

  model/               the model folder's files (booster.json, payband_model.json, ...)
  model-settings.json  MLServer's model settings: our runtime, the version, batching
  settings.json        MLServer's server settings: ports, workers, metrics
  Dockerfile           FROM the payband-serving base image; labels name the model version
  manifest.json        what the bundle holds: the model's lineage, the image tag and the
                       sha256 and size of every other file; written last

The image is built when a container engine (podman, then docker) answers; otherwise the
bundle is still produced and the message says how to build the image later.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from mlserver.settings import ModelSettings, Settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from payband_contracts.database import sqlalchemy_url
from payband_contracts.errors import first_problem
from payband_contracts.model import METADATA_FILE
from payband_serving import __version__
from payband_serving.runtime import IMPLEMENTATION
from payband_serving.settings import ServingSettings
from payband_serving.source import (
    ModelSource,
    ModelSourceError,
    is_mlflow_uri,
    load_booster,
)

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_IN_IMAGE",
    "IMAGE_USER",
    "MANIFEST_FILE",
    "MODEL_DIR",
    "Bundle",
    "BundleError",
    "BundleManifest",
    "BundledFile",
    "BundledImage",
    "BundledModel",
    "ImageResult",
    "build_bundle",
    "build_image",
    "image_build_command",
    "model_revision",
    "verify_bundle",
]

BUNDLE_FORMAT = "payband-serving-bundle/1"
MANIFEST_FILE = "manifest.json"
MODEL_DIR = "model"
MODEL_SETTINGS_FILE = "model-settings.json"
SETTINGS_FILE = "settings.json"
DOCKERFILE = "Dockerfile"
BUNDLE_IN_IMAGE = "/opt/payband/bundle"
# Numeric, so the image runs unprivileged even if the base image has no such user.
IMAGE_USER = "10001:10001"
ENGINES = ("podman", "docker")
# Set by MLflow on a run started from a git checkout.
GIT_COMMIT_TAG = "mlflow.source.git.commit"
ENGINE_PROBE_TIMEOUT_S = 60
BUILD_TIMEOUT_S = 1800
# Docker's rule for a tag (the part after the colon).
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SHA256 = r"^[0-9a-f]{64}$"
_CHUNK = 1 << 20


class BundleError(RuntimeError):
    """A bundle cannot be built, is not intact, or its image cannot be built; one line."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BundledFile(_Frozen):
    sha256: str = Field(pattern=_SHA256)
    size: int = Field(ge=0)


class BundledModel(_Frozen):
    """The model in the bundle and where it came from."""

    name: str  # the MLServer model name clients use
    registered_name: str | None
    version: str
    uri: str  # what it was resolved from, e.g. models:/salary-band@champion
    version_uri: str  # exactly this version, e.g. models:/salary-band/3
    run_id: str | None
    features_uri: str
    train_uri: str
    test_uri: str
    band_labels: tuple[str, ...]
    features: tuple[str, ...]


class BundledImage(_Frozen):
    tag: str


class BundleManifest(_Frozen):
    """``manifest.json``: the model, the image tag and a checksum of every other file."""

    format: Literal["payband-serving-bundle/1"] = BUNDLE_FORMAT
    model: BundledModel
    image: BundledImage
    payband_serving_version: str
    created_at: datetime
    files: dict[str, BundledFile]

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, files: dict[str, BundledFile]) -> dict[str, BundledFile]:
        # Paths are checked before any is opened, so a manifest cannot point outside its bundle.
        for name in files:
            path = PurePosixPath(name)
            if path.is_absolute() or ".." in path.parts or name in ("", MANIFEST_FILE):
                raise ValueError(f"{name!r} is not a file inside the bundle")
        return files


@dataclass(frozen=True)
class Bundle:
    directory: Path
    manifest: BundleManifest
    image_tag: str


@dataclass(frozen=True)
class ImageResult:
    built: bool
    engine: str | None
    tag: str
    message: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_revision(source: ModelSource, *, tracking_uri: str) -> str | None:
    """The source control revision MLflow recorded for the model's run, if any."""
    if not source.run_id:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri=sqlalchemy_url(tracking_uri)).get_run(source.run_id)
    except MlflowException:
        return None
    return run.data.tags.get(GIT_COMMIT_TAG) or None


def _bundle_version(source: ModelSource) -> str:
    """The registry's version, else a short hash of the booster (so equal models share it)."""
    if source.version:
        return source.version
    prefix = "run" if is_mlflow_uri(source.uri) else "local"
    return f"{prefix}-{_sha256(source.folder / source.schema.booster_file)[:12]}"


def _model_files(folder: Path) -> Iterator[Path]:
    """Regular files under the model folder, hidden ones (.DS_Store, .git) left out."""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            yield relative


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _model_settings(source: ModelSource, settings: ServingSettings, version: str) -> dict[str, Any]:
    return {
        "name": settings.model_name,
        "implementation": IMPLEMENTATION,
        "parameters": {
            "uri": f"./{MODEL_DIR}",
            "version": version,
            "extra": {
                "registered_name": source.registered_name,
                "source_uri": source.uri,
                "run_id": source.run_id,
            },
        },
        "max_batch_size": settings.max_batch_size,
        "max_batch_time": settings.max_batch_time_s,
    }


def _server_settings(settings: ServingSettings) -> dict[str, Any]:
    # Listens on every interface: inside a container that is the container's own network.
    return {
        "debug": False,
        "host": "0.0.0.0",  # noqa: S104
        "http_port": settings.http_port,
        "grpc_port": settings.grpc_port,
        "metrics_port": settings.metrics_port,
        "metrics_endpoint": "/metrics",
        "parallel_workers": settings.parallel_workers,
        "load_models_at_startup": True,
    }


def _check_mlserver_settings(directory: Path) -> None:
    """Parse both settings files the way MLServer does, so a bad bundle fails here."""
    try:
        model = ModelSettings.parse_file(str(directory / MODEL_SETTINGS_FILE))
        Settings.model_validate(json.loads((directory / SETTINGS_FILE).read_text("utf-8")))
    except ValidationError as exc:
        raise BundleError(f"MLServer rejects the bundle's settings: {first_problem(exc)}") from None
    if model.implementation_ != IMPLEMENTATION:
        raise BundleError(f"MLServer reads the implementation as {model.implementation_!r}")


def _label(value: str) -> str:
    """A Dockerfile string: quoted, with $ escaped so nothing is expanded."""
    text = " ".join(value.split("\n"))
    for char in ("\\", '"', "$"):
        text = text.replace(char, "\\" + char)
    return f'"{text}"'


def image_build_command(
    directory: Path, tag: str, settings: ServingSettings, engine: str = "podman"
) -> list[str]:
    """The command that builds a bundle's image with ``engine`` (a name or a path)."""
    command = [engine, "build"]
    # Podman's default OCI format drops HEALTHCHECK; the Docker format keeps it.
    if Path(engine).name == "podman":
        command += ["--format", "docker"]
    return [*command, "--build-arg", f"BASE_IMAGE={settings.base_image}", "-t", tag, str(directory)]


def _dockerfile(
    model: BundledModel,
    settings: ServingSettings,
    *,
    created: str,
    revision: str | None,
    build_command: str,
) -> str:
    labels = {
        "org.opencontainers.image.title": f"payband {model.name}",
        "org.opencontainers.image.description": (
            f"payband salary-band model {model.version_uri} served by MLServer"
        ),
        "org.opencontainers.image.version": model.version,
        "org.opencontainers.image.created": created,
        **({"org.opencontainers.image.revision": revision} if revision else {}),
        "io.payband.model.name": model.registered_name or model.name,
        "io.payband.model.version": model.version,
        "io.payband.model.uri": model.version_uri,
        "io.payband.training-data": model.train_uri,
        "io.payband.features-data": model.features_uri,
        "io.payband.serving.version": __version__,
    }
    label_lines = " \\\n      ".join(f"{key}={_label(value)}" for key, value in labels.items())
    probe = (
        "import urllib.request; urllib.request.urlopen("
        f"'http://127.0.0.1:{settings.http_port}/v2/health/ready', timeout=2)"
    )
    healthcheck = json.dumps(["python3", "-c", probe])
    command = json.dumps(["payband-serving", "serve", "--bundle", BUNDLE_IN_IMAGE])
    ports = f"{settings.http_port} {settings.grpc_port} {settings.metrics_port}"
    return f"""\
# The serving image of {model.version_uri}, written by payband-serving {__version__}.
# Build it from this directory:
#   {build_command}
ARG BASE_IMAGE={settings.base_image}
FROM ${{BASE_IMAGE}}

LABEL {label_lines}

COPY . {BUNDLE_IN_IMAGE}/
# MLServer writes .envs and .metrics into its working directory; the bundle stays read-only.
WORKDIR /tmp
USER {IMAGE_USER}
EXPOSE {ports}
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \\
  CMD {healthcheck}
CMD {command}
"""


def _manifest_files(directory: Path) -> dict[str, BundledFile]:
    files = {}
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name != MANIFEST_FILE:
            files[name] = BundledFile(sha256=_sha256(path), size=path.stat().st_size)
    return files


def _make_readable(directory: Path) -> None:
    # The image runs as an unprivileged user: every file must be readable by all.
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _replace(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; an older bundle there is removed after the swap."""
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        target.rename(old)
    except FileNotFoundError:
        staging.rename(target)
        return
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def build_bundle(
    source: ModelSource,
    settings: ServingSettings,
    *,
    output_dir: Path | None = None,
    revision: str | None = None,
) -> Bundle:
    """Write the bundle of ``source`` to ``<output_dir or bundle_dir>/<model_name>-<version>``.

    Built in a temporary folder beside it and renamed into place, so a bundle directory is
    always complete; building the same version again replaces it. ``revision`` (a source
    control revision) becomes the image's OCI revision label when known.
    """
    try:
        # A bundle never ships a model that would fail to load in the server.
        load_booster(source.folder, source.schema)
    except ModelSourceError as exc:
        raise BundleError(str(exc)) from None
    if not (source.folder / METADATA_FILE).is_file():
        raise BundleError(f"{source.folder} has no {METADATA_FILE}")
    version = _bundle_version(source)
    tag_suffix = f"{settings.model_name}-{version}"
    if not _TAG.match(tag_suffix):
        raise BundleError(f"model version {version!r} cannot be part of an image tag")
    image_tag = f"{settings.image_repository}:{tag_suffix}"
    parent = (output_dir or settings.bundle_dir).expanduser()
    target = parent / tag_suffix
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    except OSError as exc:
        raise BundleError(f"cannot write bundles to {parent}: {exc.strerror or exc}") from None

    created_at = datetime.now(UTC).replace(microsecond=0)
    schema = source.schema
    model = BundledModel(
        name=settings.model_name,
        registered_name=source.registered_name,
        version=version,
        uri=source.uri,
        version_uri=source.version_uri,
        run_id=source.run_id,
        features_uri=schema.features_uri,
        train_uri=schema.train_uri,
        test_uri=schema.test_uri,
        band_labels=schema.band_labels,
        features=schema.features,
    )
    try:
        for relative in _model_files(source.folder):
            destination = staging / MODEL_DIR / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.folder / relative, destination)
        _write_json(staging / MODEL_SETTINGS_FILE, _model_settings(source, settings, version))
        _write_json(staging / SETTINGS_FILE, _server_settings(settings))
        _check_mlserver_settings(staging)
        build_command = shlex.join(image_build_command(Path(), image_tag, settings))
        (staging / DOCKERFILE).write_text(
            _dockerfile(
                model,
                settings,
                created=created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                revision=revision,
                build_command=build_command,
            ),
            encoding="utf-8",
        )
        _make_readable(staging)
        manifest = BundleManifest(
            model=model,
            image=BundledImage(tag=image_tag),
            payband_serving_version=__version__,
            created_at=created_at,
            files=_manifest_files(staging),
        )
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n", "utf-8")
        (staging / MANIFEST_FILE).chmod(0o644)
        _replace(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleError(f"cannot write the bundle {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle(directory=target, manifest=manifest, image_tag=image_tag)


def _read_manifest(directory: Path) -> BundleManifest:
    path = directory / MANIFEST_FILE
    try:
        return BundleManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise BundleError(f"{directory} has no {MANIFEST_FILE}: not a payband bundle") from None
    except ValidationError as exc:
        raise BundleError(f"{path} is malformed: {first_problem(exc)}") from None


def verify_bundle(directory: Path) -> BundleManifest:
    """The bundle's manifest, once every file matches it and no other file is there."""
    if not directory.is_dir():
        raise BundleError(f"bundle directory {directory} does not exist")
    manifest = _read_manifest(directory)
    problems: list[str] = []
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != expected.size:
            problems.append(f"{name} has {path.stat().st_size} bytes, not {expected.size}")
        elif _sha256(path) != expected.sha256:
            problems.append(f"{name} has a different sha256")
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if not path.is_dir() and name != MANIFEST_FILE and name not in manifest.files:
            problems.append(f"{name} is not in the manifest")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BundleError(f"bundle {directory} does not match its manifest: {problems[0]}{more}")
    return manifest


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _find_engine(choice: str) -> tuple[str | None, str | None, str]:
    """(name, path, why none) of the engine to use; auto skips an engine that does not answer.

    A docker client without a reachable daemon is common; its build would only fail.
    """
    if choice == "none":
        return None, None, "building images is off: PAYBAND_SERVING_CONTAINER_ENGINE=none"
    if choice != "auto":
        path = shutil.which(choice)
        if path is None:
            return None, None, f"the container engine {choice} was not found on PATH"
        return choice, path, ""
    reasons = []
    for name in ENGINES:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            probe = subprocess.run(
                [path, "info"],
                capture_output=True,
                text=True,
                timeout=ENGINE_PROBE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{name} does not answer ({type(exc).__name__})")
            continue
        if probe.returncode == 0:
            return name, path, ""
        reason = _last_line(probe.stderr) or _last_line(probe.stdout) or f"exit {probe.returncode}"
        reasons.append(f"{name} does not answer: {reason}")
    if not reasons:
        return None, None, "no container engine was found (neither podman nor docker is on PATH)"
    return None, None, "no container engine is available: " + "; ".join(reasons)


def build_image(bundle: Bundle, settings: ServingSettings) -> ImageResult:
    """Build the bundle's image with podman or docker; built=False when there is neither.

    A build that fails raises ``BundleError`` with the engine's last error line; the bundle
    stays on disk either way.
    """
    name, path, why = _find_engine(settings.container_engine)
    if name is None or path is None:
        later = shlex.join(image_build_command(bundle.directory, bundle.image_tag, settings))
        message = (
            f"image {bundle.image_tag} not built ({why}); the bundle is at {bundle.directory}; "
            f"build the image later with: {later}"
        )
        return ImageResult(built=False, engine=None, tag=bundle.image_tag, message=message)
    command = image_build_command(bundle.directory, bundle.image_tag, settings, engine=path)
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BundleError(
            f"{name} build of {bundle.image_tag} took more than {BUILD_TIMEOUT_S} s"
        ) from None
    except OSError as exc:
        raise BundleError(f"cannot run {path}: {exc.strerror or exc}") from None
    if result.returncode != 0:
        reason = _last_line(result.stderr) or _last_line(result.stdout)
        raise BundleError(
            f"{name} build of {bundle.image_tag} failed (exit {result.returncode}): "
            f"{reason or 'no output'}; the bundle stays at {bundle.directory}"
        )
    return ImageResult(
        built=True,
        engine=name,
        tag=bundle.image_tag,
        message=f"built image {bundle.image_tag} with {name} from {bundle.directory}",
    )
