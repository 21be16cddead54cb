"""Build every payband image with podman, offline, and print how long each took.

    uv run python deploy/images/build.py [PACKAGE ...] [--base-image IMAGE] [--report FILE]

Every image is built from the one recipe, ``deploy/images/Dockerfile``, with the repository
root as context; the packages with an image are that file's per-package sections
(``FROM runtime AS payband-<name>``). Each build passes:

- ``PACKAGE``: the package's name, which picks what is installed and its section;
- ``BASE_IMAGE``: ``--base-image`` if given (e.g. ``python:3.11-slim-bookworm`` where a
  registry answers), else ``localhost/payband-base:bookworm``, made here with debootstrap
  from the machine's own Debian mirror when it does not exist yet (no registry needed);
- ``UV_IMAGE``: ``localhost/payband-uv:<version>``, an image holding only the uv binary
  this script runs with, so the image installs with the same uv that wrote the lock;
- ``UV_OFFLINE=true`` and this machine's uv cache mounted into the build: ``uv sync
  --frozen`` inside the image takes every locked wheel from the cache, so nothing is
  downloaded (``uv sync --all-packages`` fills the cache first);
- ``VERSION`` (the package's version) and ``REVISION`` (``git rev-parse HEAD``, with
  ``-dirty`` when the work tree has uncommitted changes), which become image labels.

Images are tagged ``payband-<name>:<version>``. The report (JSON) lists each image with its
tag, seconds and size; ``deploy/images/tests`` reads it. Errors are one line, exit 1.
On machines whose podman needs it (ENVIRONMENT.md: runc, fixed ulimits), ``CONTAINERS_CONF``
defaults to ``deploy/images/containers.conf``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DOCKERFILE = HERE / "Dockerfile"
SECTION = re.compile(r"^FROM runtime AS payband-(?P<package>[a-z]+)\s*$", re.MULTILINE)
BASE_IMAGE = "localhost/payband-base:bookworm"
DEFAULT_REPORT = ROOT / "build" / "images.json"
LOGS = ROOT / "build" / "logs"  # one build log per package
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


class BuildError(RuntimeError):
    """One readable line."""


@dataclass(frozen=True)
class Built:
    package: str
    tag: str
    version: str
    revision: str
    seconds: float
    size_mb: float


def image_packages(dockerfile: Path = DOCKERFILE) -> tuple[str, ...]:
    """The packages with an image: the recipe's per-package sections, in their order."""
    try:
        text = dockerfile.read_text()
    except OSError as error:
        raise BuildError(f"cannot read {dockerfile}: {error.strerror or error}") from None
    packages = tuple(match["package"] for match in SECTION.finditer(text))
    if not packages:
        raise BuildError(f"{dockerfile} has no section 'FROM runtime AS payband-<name>'")
    return packages


def run(command: list[str], *, what: str, capture: bool = False, log: Path | None = None) -> str:
    """Run ``command``; its output goes to ``log`` if given. A failure is a BuildError naming
    ``what``, the last error line (podman's ``Error: ...``) and the log."""
    try:
        result = subprocess.run(
            command, check=False, text=True, capture_output=capture or log is not None
        )
    except OSError as error:  # e.g. tar or git missing
        raise BuildError(f"{what}: cannot run {command[0]}: {error.strerror or error}") from None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        lines = ((result.stdout or "") + (result.stderr or "")).strip().splitlines()
        errors = [line for line in lines if line.startswith(("Error", "error"))]
        last = (errors or lines or [""])[-1]
        where = f" (log: {log})" if log is not None else ""
        raise BuildError(f"{what} failed (exit {result.returncode}): {last}{where}")
    return result.stdout or ""


def podman(*args: str, what: str, capture: bool = False, log: Path | None = None) -> str:
    return run(["podman", *args], what=what, capture=capture, log=log)


def image_exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], check=False).returncode == 0


def debian_mirror() -> str:
    """The first Debian mirror this machine's apt uses (never a host name of ours)."""
    for path in SOURCES:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1:
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2:
                return next(w for w in words[1:] if not w.startswith("["))
    raise BuildError("no Debian mirror found in /etc/apt/sources.list(.d): pass --base-image")


def make_base_image(tag: str) -> float:
    """debootstrap a minimal bookworm with python3 and import it as ``tag``; seconds taken."""
    if shutil.which("debootstrap") is None:
        raise BuildError(
            "debootstrap is not installed (apt-get install debootstrap) and "
            f"{tag} does not exist: install it or pass --base-image"
        )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="payband-rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv",
                "bookworm",
                str(rootfs),
                debian_mirror(),
            ],
            what="debootstrap",
            capture=True,
        )
        # No package caches or lists in the image (an image that needs a package runs
        # apt-get update itself, as the monitoring image does).
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        archive = Path(scratch) / "rootfs.tar"
        run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], what="tar of the rootfs")
        podman(
            "import",
            "--change",
            'CMD ["python3"]',
            str(archive),
            tag,
            what="podman import of the base image",
            capture=True,
        )
    return time.monotonic() - started


def uv_binary() -> tuple[Path, str]:
    found = shutil.which("uv")
    if found is None:
        try:
            import uv  # the PyPI wheel, when uv was installed with pip

            found = uv.find_uv_bin()
        except ImportError as error:
            raise BuildError("uv is not on PATH") from error
    version = run([found, "--version"], what="uv --version", capture=True).split()[1]
    return Path(found).resolve(), version


def make_uv_image(binary: Path, version: str) -> str:
    """An image holding just ``/uv`` (the layout of ghcr.io/astral-sh/uv)."""
    tag = f"localhost/payband-uv:{version}"
    if image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="payband-uv-") as scratch:
        archive = Path(scratch) / "uv.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(binary, arcname="uv")
        podman("import", str(archive), tag, what="podman import of the uv image", capture=True)
    return tag


def revision() -> str:
    if not (ROOT / ".git").exists():
        return "unknown"
    head = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], what="git", capture=True)
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain"], what="git", capture=True)
    return head.strip() + ("-dirty" if dirty.strip() else "")


def package_version(package: str) -> str:
    pyproject = ROOT / "packages" / package / "pyproject.toml"
    try:
        return tomllib.loads(pyproject.read_text())["project"]["version"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as error:
        raise BuildError(f"no version of payband-{package} in {pyproject}: {error}") from None


def uv_cache_dir(uv: Path) -> str:
    return run([str(uv), "cache", "dir"], what="uv cache dir", capture=True).strip()


def build(package: str, *, base: str, uv_image: str, cache: str, rev: str) -> Built:
    version = package_version(package)
    tag = f"payband-{package}:{version}"
    started = time.monotonic()
    podman(
        "build",
        "--format",
        "docker",
        "--file",
        str(DOCKERFILE),
        "--tag",
        tag,
        "--build-arg",
        f"PACKAGE={package}",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"UV_IMAGE={uv_image}",
        "--build-arg",
        "UV_OFFLINE=true",
        "--build-arg",
        "UV_CACHE_DIR=/uv-cache",
        "--volume",
        f"{cache}:/uv-cache",
        "--build-arg",
        f"VERSION={version}",
        "--build-arg",
        f"REVISION={rev}",
        str(ROOT),
        what=f"podman build of payband-{package}",
        log=LOGS / f"{package}.log",
    )
    seconds = time.monotonic() - started
    size = podman("image", "inspect", "--format", "{{.Size}}", tag, what="inspect", capture=True)
    return Built(package, tag, version, rev, round(seconds, 1), round(int(size) / 1e6, 1))


def write_report(path: Path, base: str, built: list[Built], order: tuple[str, ...]) -> None:
    """Record the images just built; entries of other packages from an earlier run of this
    script stay (so building one package again keeps the others listed)."""
    images = {}
    if path.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            images = {i["package"]: i for i in json.loads(path.read_text())["images"]}
    images.update({b.package: asdict(b) for b in built})
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = [images[name] for name in order if name in images]
    path.write_text(json.dumps({"base_image": base, "images": ordered}, indent=2) + "\n")


def table(rows: list[Built], base_seconds: float | None) -> str:
    lines = [f"{'image':<32} {'build s':>8} {'size MB':>8}"]
    if base_seconds is not None:
        lines.append(f"{'(base image, debootstrap)':<32} {base_seconds:>8.1f} {'':>8}")
    lines += [f"{b.tag:<32} {b.seconds:>8.1f} {b.size_mb:>8.0f}" for b in rows]
    lines.append(
        f"{'total':<32} {sum(b.seconds for b in rows):>8.1f} {sum(b.size_mb for b in rows):>8.0f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        packages = image_packages()
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "packages",
        nargs="*",
        metavar="PACKAGE",
        help=f"some of {', '.join(packages)} (default: all)",
    )
    parser.add_argument("--base-image", help=f"BASE_IMAGE (default: {BASE_IMAGE}, made here)")
    parser.add_argument(
        "--report",
        type=Path,
        default=DEFAULT_REPORT,
        help="where to write the JSON report (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.packages if name not in packages]
    if unknown:
        print(
            f"error: {unknown[0]!r} has no image: choose from {', '.join(packages)}",
            file=sys.stderr,
        )
        return 1
    os.environ.setdefault("CONTAINERS_CONF", str(HERE / "containers.conf"))
    built: list[Built] = []
    base_seconds = None
    base = args.base_image or BASE_IMAGE
    try:
        if shutil.which("podman") is None:
            raise BuildError("podman is not installed (apt-get install podman runc)")
        if args.base_image is None and not image_exists(base):
            base_seconds = make_base_image(base)
        uv, uv_version = uv_binary()
        uv_image = make_uv_image(uv, uv_version)
        cache, rev = uv_cache_dir(uv), revision()
        for package in dict.fromkeys(args.packages) or packages:
            built.append(build(package, base=base, uv_image=uv_image, cache=cache, rev=rev))
            print(f"built {built[-1].tag} in {built[-1].seconds:.0f} s", flush=True)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        # What was built is recorded even when a later image fails.
        if built:
            write_report(args.report, base, built, packages)
    print(table(built, base_seconds))
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
