"""The workspace's shape: every member laid out alike, depending only on what it imports.

These tests keep the rules of docs/architecture.md true as the packages grow: dependencies between
packages point one way, and each member runs with nothing but its declared dependencies.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ["contracts", "data", "training", "serving", "gateway", "audit", "monitoring"]
# Deployed on their own, never a dependency of the umbrella: the Dagster instance (webserver
# and daemon) serves the other packages' code locations over gRPC, it does not import them.
DEPLOYABLES = ["orchestration"]
# Runtime code of the local stack (embedded PostgreSQL, processes, ports): the umbrella and the
# test fixtures use it; and the fixtures themselves, never a runtime dependency.
MEMBERS = [*SERVICES, *DEPLOYABLES, "local", "testing"]
# What only tests need: no runtime installation of any package may carry these.
TEST_ONLY = {"payband-testing", "pytest", "moto"}

# Which payband packages each member may import (docs/architecture.md, "Dependency rules").
ALLOWED_PAYBAND_IMPORTS = {
    "contracts": set(),
    "data": {"contracts"},
    # Training reads feature snapshots and commits its splits through the data package's
    # public versioned-store API (payband_data.store), rather than a second implementation.
    "training": {"contracts", "data"},
    "serving": {"contracts"},
    "audit": {"contracts"},
    "gateway": {"contracts", "audit"},
    "monitoring": {"contracts", "audit"},
    # The shared fixtures build test models in the one model format (payband_contracts.model)
    # and run their servers with the local machinery.
    "testing": {"contracts", "local"},
    "local": set(),
    "orchestration": set(),
}


def pyproject(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def requirement_name(requirement: str) -> str:
    return normalized(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])


def imported_modules(source_dir: Path) -> set[str]:
    """Top-level modules a package imports, including ones located with find_spec("...")."""
    found: set[str] = set()
    for path in source_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "find_spec"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(str(node.args[0].value).split(".")[0])
    return found


def test_workspace_members_are_the_architecture_packages():
    root = pyproject(ROOT)
    assert root["tool"]["uv"]["workspace"]["members"] == ["packages/*"]
    found = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
    assert found == sorted(MEMBERS)
    root_dependencies = {requirement_name(r) for r in root["project"]["dependencies"]}
    assert root_dependencies >= {f"payband-{name}" for name in SERVICES}
    assert root_dependencies.isdisjoint({f"payband-{name}" for name in DEPLOYABLES})
    assert root["project"]["requires-python"] == ">=3.11,<3.13"


@pytest.mark.parametrize("name", MEMBERS)
def test_member_layout(name: str):
    package = ROOT / "packages" / name
    project = pyproject(package)["project"]
    assert project["name"] == f"payband-{name}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["requires-python"] == ">=3.11,<3.13"
    assert f"payband-{name}" in (package / "README.md").read_text()
    assert (package / "src" / f"payband_{name}" / "__init__.py").is_file()
    assert (package / "tests").is_dir()


def assert_declares_what_it_imports(project_dir: Path, own: str) -> set[str]:
    """Every module imported under ``src/`` comes from a declared dependency (an extra's
    counts: the module that needs it imports it lazily), and every dependency is imported;
    returns the payband services imported."""
    project = pyproject(project_dir)["project"]
    declared = {requirement_name(r) for r in project["dependencies"]}
    extras = {
        requirement_name(r)
        for extra in project.get("optional-dependencies", {}).values()
        for r in extra
    }
    modules = imported_modules(project_dir / "src") - set(sys.stdlib_module_names)
    distributions = packages_distributions()
    used: set[str] = set()
    for module in modules - {own}:
        providers = {normalized(d) for d in distributions.get(module, [module])}
        assert providers & (declared | extras), f"{own} imports {module} without declaring it"
        used |= providers & declared
    assert declared == used, f"declared but never imported: {sorted(declared - used)}"
    return {m.removeprefix("payband_") for m in modules if m.startswith("payband_")}


@pytest.mark.parametrize("name", MEMBERS)
def test_member_imports_only_what_it_declares(name: str):
    payband_imports = assert_declares_what_it_imports(ROOT / "packages" / name, f"payband_{name}")
    payband_imports.discard(name)
    assert payband_imports <= ALLOWED_PAYBAND_IMPORTS[name], "imports another service's code"


def test_the_umbrella_declares_what_it_imports():
    # `payband demo` drives every package, so it may import any of them.
    assert_declares_what_it_imports(ROOT, "payband")


def test_no_runtime_dependency_on_the_test_fixtures():
    projects = {"payband": ROOT} | {f"payband-{n}": ROOT / "packages" / n for n in MEMBERS}
    for name, path in projects.items():
        if name == "payband-testing":
            continue
        declared = {requirement_name(r) for r in pyproject(path)["project"]["dependencies"]}
        assert not declared & TEST_ONLY, f"{name} depends at runtime on {declared & TEST_ONLY}"


@pytest.mark.parametrize("package", ["payband", *(f"payband-{n}" for n in [*SERVICES, "local"])])
def test_a_runtime_installation_carries_no_test_tool(package: str):
    # What `uv sync --no-dev --package <package>` installs, read from the lock.
    result = subprocess.run(
        [uv_executable(), "export", "--frozen", "--no-dev", "--no-hashes", "--package", package],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    installed = set()
    for line in result.stdout.splitlines():
        requirement = line.split(";")[0].strip()
        if not requirement or requirement.startswith("#"):
            continue
        if requirement.startswith("-e "):  # a workspace member, by its directory
            directory = ROOT / requirement.removeprefix("-e ").strip()
            installed.add(pyproject(directory)["project"]["name"])
        else:
            installed.add(requirement_name(requirement))
    assert package in installed
    if package == "payband":
        assert "payband-local" in installed  # the umbrella runs the local stack on it
    assert not installed & TEST_ONLY, f"{package} installs {sorted(installed & TEST_ONLY)}"


def uv_executable() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv is needed for this test (set UV or put uv on PATH)"
    return found


@pytest.mark.parametrize("name", MEMBERS)
def test_member_runs_with_only_its_own_dependencies(name: str):
    # A throwaway environment with just this member and its locked dependencies.
    result = subprocess.run(
        [
            uv_executable(),
            "run",
            "--isolated",
            "--no-dev",
            "--frozen",
            "--package",
            f"payband-{name}",
            "python",
            "-c",
            f"import payband_{name} as m; print(m.__version__)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == pyproject(ROOT / "packages" / name)["project"]["version"]


def source_modules(roots: list[Path]) -> dict[str, Path]:
    """Every module of the payband packages under ``roots``: dotted name -> file."""
    modules: dict[str, Path] = {}
    for root in roots:
        for package in sorted(root.glob("payband*")):
            for path in sorted(package.rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, in functions too, but not under TYPE_CHECKING
    (those never run)."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [node]
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                found += _import_nodes(other)
        else:
            found += _import_nodes(child)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the payband modules it imports; ``from pkg import name`` counts as an import
    of ``pkg.name`` when that is a module, of ``pkg`` otherwise."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported: set[str] = set()
        for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                imported.add(submodule if submodule in modules else base)
        graph[module] = {name for name in imported if name in modules and name != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while (member := stack.pop()) != module:
                component.append(member)
            if component:
                found.append(sorted([module, *component]))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def test_the_import_graph_sees_relative_imports_and_imports_in_functions(tmp_path: Path):
    package = tmp_path / "payband_demo"
    (package / "store").mkdir(parents=True)
    sources = {
        "__init__.py": "",
        "store/__init__.py": "def open_store():\n    from .local import Local\n",
        "store/local.py": "from . import base\nfrom payband_demo.store import Base\n",
        "store/base.py": "import typing\nif typing.TYPE_CHECKING:\n    from .. import cli\n",
        "cli.py": "import payband_demo.store.base\nfrom .store.base import Base\n",
    }
    for name, text in sources.items():
        (package / name).write_text(text)
    graph = import_graph(source_modules([tmp_path]))
    assert graph == {
        "payband_demo": set(),
        "payband_demo.cli": {"payband_demo.store.base"},
        "payband_demo.store": {"payband_demo.store.local"},
        "payband_demo.store.base": set(),
        "payband_demo.store.local": {"payband_demo.store", "payband_demo.store.base"},
    }
    assert cycles(graph) == [["payband_demo.store", "payband_demo.store.local"]]


def test_the_import_graph_has_no_cycle():
    graph = import_graph(source_modules([*sorted((ROOT / "packages").glob("*/src")), ROOT / "src"]))
    assert "payband_training.registry" in graph["payband_training.pipeline"]
    problems = [
        " <-> ".join(component)
        + " ("
        + ", ".join(
            f"{module} -> {target}"
            for module in component
            for target in sorted(graph[module] & set(component))
        )
        + ")"
        for component in cycles(graph)
    ]
    assert not problems, "import cycles: " + "; ".join(problems)
