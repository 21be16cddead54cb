import copy
import json
import shutil
import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field
from typer.testing import CliRunner

from payband_contracts import Candidate
from payband_contracts.base import ContractModel
from payband_contracts.catalogue import (
    Birthplace,
    ClassOfWorker,
    Education,
    MaritalStatus,
    Occupation,
    Race,
)
from payband_contracts.cli import app
from payband_contracts.schemas import (
    EXPORTED_MODELS,
    SCHEMA_VERSION,
    check_schemas,
    default_schema_dir,
    exported_files,
    incompatibilities,
    schema_of,
)

SCHEMA_DIR = default_schema_dir()
runner = CliRunner()


def checked_in(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def test_checked_in_schemas_match_the_code():
    # Fails when a model changed without `uv run payband-contracts export-schemas`.
    for file_name, text in exported_files().items():
        path = SCHEMA_DIR / file_name
        assert path.is_file(), f"{file_name} is not exported"
        assert path.read_text() == text, f"{file_name} differs from the code: export again"
    exported = {p.name for p in SCHEMA_DIR.iterdir()}
    assert exported == set(exported_files())


def test_checked_in_schemas_are_compatible_with_the_code():
    check = check_schemas(SCHEMA_DIR)
    assert check.old_version == SCHEMA_VERSION
    assert check.breaking == ()
    assert check.stale_files == ()


def test_schemas_carry_version_and_reject_unknown_fields():
    schema = checked_in("candidate")
    assert schema["x-payband-schema-version"] == SCHEMA_VERSION
    assert schema["additionalProperties"] is False
    assert schema["properties"]["age"]["minimum"] == 17
    assert schema["properties"]["age"]["maximum"] == 99
    batch = checked_in("batch-prediction-request")
    assert batch["properties"]["candidates"]["maxItems"] == 1000


class SexWithoutMale(StrEnum):
    FEMALE = "female"


class CandidateWithRemovedSexValue(ContractModel):
    """The candidate as it would be if a code change removed an enum value."""

    age: Annotated[int, Field(ge=17, le=99)]
    sex: SexWithoutMale
    race: Race
    education: Education
    marital_status: MaritalStatus
    class_of_worker: ClassOfWorker
    occupation: Occupation
    hours_per_week: Annotated[int, Field(ge=1, le=99)]
    birthplace: Birthplace


def test_removed_enum_value_in_code_is_breaking():
    check = check_schemas(SCHEMA_DIR, models={"candidate": CandidateWithRemovedSexValue})
    assert [str(b) for b in check.blocking] == ["candidate: sex: enum value 'male' removed"]


def test_major_version_bump_allows_the_break():
    check = check_schemas(
        SCHEMA_DIR, version="2.0.0", models={"candidate": CandidateWithRemovedSexValue}
    )
    assert len(check.breaking) == 1
    assert check.major_bumped
    assert check.blocking == ()
    minor = check_schemas(
        SCHEMA_DIR, version="1.1.0", models={"candidate": CandidateWithRemovedSexValue}
    )
    assert len(minor.blocking) == 1


def mutated(name: str, mutate) -> list[str]:
    old = checked_in(name)
    new = copy.deepcopy(old)
    mutate(new)
    return [str(i) for i in incompatibilities(name, old, new)]


def test_field_removed_is_breaking():
    def remove(schema):
        del schema["properties"]["hours_per_week"]
        schema["required"].remove("hours_per_week")

    assert mutated("candidate", remove) == ["candidate: hours_per_week: field removed"]


def test_new_required_field_is_breaking_but_optional_is_not():
    def add_required(schema):
        schema["properties"]["ssn"] = {"type": "string"}
        schema["required"].append("ssn")

    def add_optional(schema):
        schema["properties"]["note"] = {"type": "string"}

    def make_required(schema):
        schema["required"].append("observed_at")

    assert mutated("candidate", add_required) == ["candidate: ssn: new required field"]
    assert mutated("candidate", add_optional) == []
    assert mutated("outcome", make_required) == ["outcome: observed_at: new required field"]


def test_range_narrowed_is_breaking_and_widened_is_not():
    def narrow(schema):
        schema["properties"]["age"]["minimum"] = 18

    def widen(schema):
        schema["properties"]["age"]["maximum"] = 120

    def fewer_items(schema):
        schema["properties"]["candidates"]["maxItems"] = 500

    assert mutated("candidate", narrow) == ["candidate: age: range narrowed: minimum 17 -> 18"]
    assert mutated("candidate", widen) == []
    assert mutated("batch-prediction-request", fewer_items) == [
        "batch-prediction-request: candidates: range narrowed: maxItems 1000 -> 500"
    ]


def test_enum_value_added_is_compatible_and_removed_in_nested_ref_is_not():
    def add(schema):
        schema["$defs"]["Race"]["enum"].append("pacific_islander")

    def remove(schema):
        schema["$defs"]["Occupation"]["enum"].remove("military")

    assert mutated("candidate", add) == []
    assert mutated("prediction-request", remove) == [
        "prediction-request: candidate.occupation: enum value 'military' removed"
    ]


def test_null_no_longer_accepted_is_breaking():
    def not_nullable(schema):
        schema["properties"]["observed_at"] = {"type": "string", "format": "date-time"}

    assert mutated("outcome", not_nullable) == ["outcome: observed_at: null is no longer accepted"]


def test_type_change_is_breaking():
    def to_string(schema):
        schema["properties"]["age"]["type"] = "string"

    assert mutated("candidate", to_string) == [
        "candidate: age: type changed from integer to string"
    ]


def copy_of_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, target)
    return target


def test_cli_check_passes_on_checked_in_files():
    result = runner.invoke(app, ["check-schemas"])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_smoke_check_schemas_as_a_process():
    # The real script, as a process: the smoke test of the entry point (the CLI tests here
    # run its Typer app in this process).
    result = subprocess.run(
        [str(Path(sys.executable).with_name("payband-contracts")), "check-schemas"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: schemas in {SCHEMA_DIR} match the code")


def test_cli_check_reports_drift(tmp_path: Path):
    target = copy_of_schemas(tmp_path)
    schema = json.loads((target / "review.schema.json").read_text())
    schema["description"] = "An older description."
    (target / "review.schema.json").write_text(json.dumps(schema))
    result = runner.invoke(app, ["check-schemas", "--dir", str(target)])
    assert result.exit_code == 1
    assert "out of date (review.schema.json)" in result.output


def test_cli_export_refuses_breaking_change_without_major_bump(tmp_path: Path):
    target = copy_of_schemas(tmp_path)
    # The checked-in file knows a value the code does not: exporting would remove it.
    schema = json.loads((target / "candidate.schema.json").read_text())
    schema["$defs"]["Sex"]["enum"].append("intersex")
    (target / "candidate.schema.json").write_text(json.dumps(schema))
    result = runner.invoke(app, ["export-schemas", "--dir", str(target)])
    assert result.exit_code == 1
    assert "candidate: sex: enum value 'intersex' removed" in result.output
    assert "bump the major version" in result.output
    assert json.loads((target / "candidate.schema.json").read_text()) == schema


def test_cli_export_writes_into_empty_directory(tmp_path: Path):
    target = tmp_path / "fresh"
    result = runner.invoke(app, ["export-schemas", "--dir", str(target)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in target.iterdir()) == sorted(exported_files())
    assert check_schemas(target).stale_files == ()


def test_every_exported_model_has_a_schema_with_its_name():
    for name, model in EXPORTED_MODELS.items():
        schema = schema_of(name, model)
        assert schema["$id"] == f"urn:payband:contracts:{name}:1"
        assert schema["title"] == model.__name__
    assert EXPORTED_MODELS["candidate"] is Candidate


def test_cli_version_names_the_schema_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"payband-contracts 0.1.0 (schema version {SCHEMA_VERSION})"
