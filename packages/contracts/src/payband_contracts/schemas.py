"""JSON Schemas of the contracts: export, drift check and compatibility check.

The exported files in packages/contracts/schemas/ are what existing clients build on. A
change that would break them (a field or enum value removed, a new required field, a range
narrowed, a type no longer accepted) is refused unless the major version is bumped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from payband_contracts.bands import SalaryBands
from payband_contracts.candidate import Candidate
from payband_contracts.catalogue import FEATURE_CATALOGUE, FeatureCatalogue
from payband_contracts.errors import ErrorBody
from payband_contracts.messages import (
    AuditRecord,
    BatchPrediction,
    BatchPredictionRequest,
    Outcome,
    Prediction,
    PredictionRequest,
    Review,
)

# The version of the exported schemas as a whole; bump the major for a breaking change.
SCHEMA_VERSION = "1.1.0"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
VERSION_KEY = "x-payband-schema-version"
CATALOGUE_FILE = "feature-catalogue.json"
INDEX_FILE = "index.json"

EXPORTED_MODELS: dict[str, type[BaseModel]] = {
    "candidate": Candidate,
    "prediction-request": PredictionRequest,
    "batch-prediction-request": BatchPredictionRequest,
    "prediction": Prediction,
    "batch-prediction": BatchPrediction,
    "outcome": Outcome,
    "review": Review,
    "audit-record": AuditRecord,
    "error-body": ErrorBody,
    "salary-bands": SalaryBands,
    "feature-catalogue": FeatureCatalogue,
}


def default_schema_dir() -> Path:
    """packages/contracts/schemas in a source checkout."""
    return Path(__file__).resolve().parents[2] / "schemas"


def schema_file(name: str) -> str:
    return f"{name}.schema.json"


def schema_of(name: str, model: type[BaseModel], version: str = SCHEMA_VERSION) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:payband:contracts:{name}:{version.split('.')[0]}",
        VERSION_KEY: version,
        **schema,
    }


def render(document: Any) -> str:
    """The exact text written for a JSON document (stable, diff-friendly)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def exported_files(version: str = SCHEMA_VERSION) -> dict[str, str]:
    """Every file the export writes, by file name, as text."""
    files = {
        schema_file(name): render(schema_of(name, model, version))
        for name, model in EXPORTED_MODELS.items()
    }
    files[CATALOGUE_FILE] = render(FEATURE_CATALOGUE.model_dump(mode="json"))
    files[INDEX_FILE] = render(
        {
            VERSION_KEY: version,
            "schemas": {name: schema_file(name) for name in EXPORTED_MODELS},
            "feature_catalogue": CATALOGUE_FILE,
        }
    )
    return files


@dataclass(frozen=True)
class Incompatibility:
    """One change that would break existing clients."""

    schema: str
    path: str
    change: str

    def __str__(self) -> str:
        return f"{self.schema}: {self.path}: {self.change}"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _major(version: str) -> int:
    return _version_tuple(version)[0]


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = set()
    while "$ref" in node and node["$ref"] not in seen:
        seen.add(node["$ref"])
        target: Any = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target.get(part, {})
        node = target
    return node


def _branches(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(node.get("anyOf") or node.get("oneOf") or [node])


def _kind(node: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    resolved = _resolve(node, root)
    if "type" in resolved:
        return str(resolved["type"])
    if "enum" in resolved or "const" in resolved:
        return "enum"
    if "properties" in resolved:
        return "object"
    return "any"


# Keyword, and whether a larger new value narrows what is accepted.
_BOUNDS: tuple[tuple[str, bool], ...] = (
    ("minimum", True),
    ("exclusiveMinimum", True),
    ("minLength", True),
    ("minItems", True),
    ("maximum", False),
    ("exclusiveMaximum", False),
    ("maxLength", False),
    ("maxItems", False),
)


class _Comparison:
    def __init__(self, name: str, old_root: Mapping[str, Any], new_root: Mapping[str, Any]):
        self.name = name
        self.old_root = old_root
        self.new_root = new_root
        self.found: list[Incompatibility] = []
        self._seen: set[tuple[int, int]] = set()

    def report(self, path: str, change: str) -> None:
        self.found.append(Incompatibility(self.name, path or "(root)", change))

    def compare(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        old_branches, new_branches = _branches(old), _branches(new)
        if len(old_branches) > 1 or len(new_branches) > 1:
            self._compare_unions(old_branches, new_branches, path)
            return
        old, new = _resolve(old, self.old_root), _resolve(new, self.new_root)
        key = (id(old), id(new))
        if key in self._seen:
            return
        self._seen.add(key)
        self._compare_values(old, new, path)
        self._compare_bounds(old, new, path)
        self._compare_objects(old, new, path)
        if "items" in old and "items" in new:
            self.compare(old["items"], new["items"], f"{path}[]")

    def _compare_unions(
        self,
        old_branches: list[Mapping[str, Any]],
        new_branches: list[Mapping[str, Any]],
        path: str,
    ) -> None:
        by_kind = {_kind(branch, self.new_root): branch for branch in new_branches}
        for branch in old_branches:
            kind = _kind(branch, self.old_root)
            if kind in by_kind:
                self.compare(branch, by_kind[kind], path)
            elif "any" not in by_kind:
                self.report(path, f"{kind} is no longer accepted")

    def _compare_values(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        old_type, new_type = old.get("type"), new.get("type")
        if old_type and new_type and old_type != new_type:
            widened = old_type == "integer" and new_type == "number"
            if not widened:
                self.report(path, f"type changed from {old_type} to {new_type}")
        old_values = old.get("enum", [old["const"]] if "const" in old else None)
        new_values = new.get("enum", [new["const"]] if "const" in new else None)
        if new_values is None:
            return
        if old_values is None:
            self.report(path, "now restricted to the values " + ", ".join(map(str, new_values)))
            return
        for value in old_values:
            if value not in new_values:
                self.report(path, f"enum value {value!r} removed")

    def _compare_bounds(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        for keyword, larger_narrows in _BOUNDS:
            if keyword not in new:
                continue
            before, after = old.get(keyword), new[keyword]
            narrowed = before is None or (after > before if larger_narrows else after < before)
            if narrowed:
                self.report(path, f"range narrowed: {keyword} {before} -> {after}")
        if "pattern" in new and new.get("pattern") != old.get("pattern"):
            self.report(path, f"pattern changed from {old.get('pattern')} to {new['pattern']}")

    def _compare_objects(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        for field, old_field in old_props.items():
            field_path = f"{path}.{field}" if path else field
            if field not in new_props:
                self.report(field_path, "field removed")
            else:
                self.compare(old_field, new_props[field], field_path)
        for field in sorted(set(new.get("required", [])) - set(old.get("required", []))):
            self.report(f"{path}.{field}" if path else field, "new required field")
        if old.get("additionalProperties", True) is not False and (
            new.get("additionalProperties", True) is False
        ):
            self.report(path, "unknown fields are no longer accepted")


def incompatibilities(
    name: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[Incompatibility]:
    """Every change from the old schema to the new one that would break existing clients."""
    comparison = _Comparison(name, old, new)
    comparison.compare(old, new, "")
    return comparison.found


@dataclass(frozen=True)
class SchemaCheck:
    """The exported files compared with the code."""

    old_version: str | None
    new_version: str
    stale_files: tuple[str, ...]
    breaking: tuple[Incompatibility, ...]

    @property
    def major_bumped(self) -> bool:
        return self.old_version is not None and _major(self.new_version) > _major(self.old_version)

    @property
    def version_went_back(self) -> bool:
        if self.old_version is None:
            return False
        return _version_tuple(self.new_version) < _version_tuple(self.old_version)

    @property
    def blocking(self) -> tuple[Incompatibility, ...]:
        """Breaking changes not covered by a major version bump."""
        return () if self.major_bumped else self.breaking


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def check_schemas(
    directory: Path,
    version: str = SCHEMA_VERSION,
    models: Mapping[str, type[BaseModel]] | None = None,
) -> SchemaCheck:
    """Compare the exported files in `directory` with what the code exports now.

    `models` replaces the exported models (tests use it to simulate a change of the code);
    then only those schemas are compared and no file drift is reported.
    """
    current = EXPORTED_MODELS if models is None else models
    index = directory / INDEX_FILE
    old_version = _read_json(index).get(VERSION_KEY) if index.is_file() else None
    stale: list[str] = []
    if models is None:
        for file_name, text in exported_files(version).items():
            path = directory / file_name
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(file_name)
    breaking: list[Incompatibility] = []
    for name, model in current.items():
        path = directory / schema_file(name)
        if path.is_file():
            breaking.extend(
                incompatibilities(name, _read_json(path), schema_of(name, model, version))
            )
    if models is None:
        for path in sorted(directory.glob("*.schema.json")):
            name = path.name.removesuffix(".schema.json")
            if name not in current:
                stale.append(path.name)
                breaking.append(Incompatibility(name, "(root)", "schema removed"))
    return SchemaCheck(old_version, version, tuple(stale), tuple(breaking))


def write_schemas(directory: Path, version: str = SCHEMA_VERSION) -> list[str]:
    """Write every exported file into `directory`; remove schemas no longer exported."""
    directory.mkdir(parents=True, exist_ok=True)
    files = exported_files(version)
    written = []
    for file_name, text in files.items():
        path = directory / file_name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(file_name)
    for path in directory.glob("*.schema.json"):
        if path.name not in files:
            path.unlink()
            written.append(path.name)
    return written
