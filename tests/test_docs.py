"""The README and docs/ stay true to the tree: short, linking every package, listing every
variable a settings class reads, naming every workspace rule, and linking only to files that
exist."""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest
from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"
CONFIGURATION = DOCS / "configuration.md"
MAX_README_LINES = 160

PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
SOURCE_TREES = [ROOT / "src", *(ROOT / "packages" / name / "src" for name in PACKAGES)]

# [text](target); an image's ![alt](source) matches too.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section of a markdown text."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section '## {heading}'"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in ``text`` (header and rule rows included)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.lstrip().startswith("|")
    ]


def links(text: str) -> list[str]:
    return LINK.findall(text)


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_readme_keeps_the_two_commands():
    text = README.read_text()
    assert re.search(r"^uv run payband demo\b", text, re.M)
    assert re.search(r"^uv run pytest\b", text, re.M)
    assert "uv sync --all-packages --compile-bytecode" in text
    assert "PYTHONDONTWRITEBYTECODE" in text


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_is_in_the_readme_table(name: str):
    rows = table_rows(section(README.read_text(), "Where is what"))
    targets = {target for row in rows for target in links(row[0])}
    assert f"packages/{name}/README.md" in targets, f"packages/{name} is not in the README's table"


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_is_in_the_architecture(name: str):
    rows = table_rows(section(ARCHITECTURE.read_text(), "The packages"))
    names = {row[0] for row in rows}
    targets = {target for row in rows for target in links(row[-1])}
    assert name in names, f"docs/architecture.md does not describe {name}"
    assert f"../packages/{name}/README.md" in targets, f"docs/architecture.md does not link {name}"
    assert f"  {name}/" in section(ARCHITECTURE.read_text(), "Layout")


def test_the_architecture_names_every_workspace_test():
    tree = ast.parse((ROOT / "tests" / "test_workspace.py").read_text())
    tests = [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]
    rules = section(ARCHITECTURE.read_text(), "Dependency rules")
    missing = [name for name in tests if f"`{name}`" not in rules]
    assert tests
    assert not missing, f"docs/architecture.md does not state the rule of {missing}"


def test_the_architecture_states_the_allowed_imports():
    from tests.test_workspace import ALLOWED_PAYBAND_IMPORTS

    rows = table_rows(section(ARCHITECTURE.read_text(), "Dependency rules"))
    stated = {
        row[0]: set() if row[1].startswith("nothing") else set(re.split(r",\s*", row[1]))
        for row in rows
        if row[0] in ALLOWED_PAYBAND_IMPORTS
    }
    expected = {name: set(allowed) for name, allowed in ALLOWED_PAYBAND_IMPORTS.items()}
    assert stated == expected


def settings_classes() -> list[type[BaseSettings]]:
    """Every pydantic-settings class defined in the runtime sources (umbrella and members),
    found by importing each module that mentions BaseSettings."""
    found: list[type[BaseSettings]] = []
    for tree in SOURCE_TREES:
        for path in sorted(tree.rglob("*.py")):
            if "BaseSettings" not in path.read_text():
                continue
            module = importlib.import_module(".".join(path.relative_to(tree).with_suffix("").parts))
            found += [
                value
                for _, value in inspect.getmembers(module, inspect.isclass)
                if issubclass(value, BaseSettings)
                and value is not BaseSettings
                and value.__module__ == module.__name__
            ]
    return found


def environment_names(settings: type[BaseSettings]) -> set[str]:
    """The variables pydantic-settings reads for each field: an alias as it is (the prefix
    does not apply to it), else the prefix and the field's name."""
    prefix = settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias or field.alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        for choice in choices:
            if isinstance(choice, AliasPath):
                choice = choice.path[0]
            if isinstance(choice, str):
                names.add(choice.upper())
        if alias is None:
            names.add(f"{prefix}{field_name}".upper())
    return names


def settings_variables() -> dict[str, str]:
    """Variable -> the settings class that reads it."""
    return {
        name: f"{settings.__module__}.{settings.__qualname__}"
        for settings in settings_classes()
        for name in environment_names(settings)
    }


def documented_variables() -> set[str]:
    return set(re.findall(r"`([A-Z][A-Z0-9_]*)`", CONFIGURATION.read_text()))


def test_the_settings_classes_are_found():
    variables = settings_variables()
    readers = set(variables.values())
    assert len(readers) >= 8, readers
    assert "PAYBAND_AUDIT_DATABASE_URL" in variables
    assert "PAYBAND_ORCHESTRATION_CODE_LOCATIONS" in variables


def test_configuration_lists_every_settings_variable():
    documented = documented_variables()
    missing = {
        name: reader for name, reader in settings_variables().items() if name not in documented
    }
    assert not missing, f"docs/configuration.md does not list {missing}"


def test_configuration_lists_only_variables_payband_reads():
    # A PAYBAND_* variable named there is a setting, or appears in the sources (PAYBAND_HOME,
    # PAYBAND_REVISION, the dbt profile's PAYBAND_DBT_*): a renamed setting cannot linger.
    known = set(settings_variables())
    sources = "\n".join(
        path.read_text()
        for tree in SOURCE_TREES
        for path in tree.rglob("*")
        if path.suffix in {".py", ".yml", ".yaml"} and path.is_file()
    )
    stale = sorted(
        name
        for name in documented_variables()
        if name.startswith("PAYBAND_") and name not in known and name not in sources
    )
    assert not stale, f"docs/configuration.md names variables nothing reads: {stale}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}


@pytest.mark.parametrize(
    "document", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT))
)
def test_relative_links_point_to_files(document: Path):
    broken = []
    for target in links(document.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        path, _, fragment = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        has_anchor = resolved.suffix == ".md" and bool(fragment)
        if not resolved.exists() or (has_anchor and fragment not in anchors(resolved)):
            broken.append(target)
    assert not broken, f"{document.relative_to(ROOT)}: broken links {broken}"
