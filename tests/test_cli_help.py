"""Every command line's help shows its defaults: rich must not eat "[default: ...]" as markup."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from payband_audit.cli import app as audit_app
from payband_contracts.cli import app as contracts_app
from payband_data.cli import app as data_app
from payband_serving.cli import app as serving_app


@pytest.mark.parametrize(
    ("app", "args", "shown"),
    [
        (data_app, ["ingest", "--help"], "[default: 2023]"),
        (data_app, ["build", "--help"], "[default: the newest of the source]"),
        (audit_app, ["migrate", "--help"], "[default: $PAYBAND_AUDIT_DATABASE_URL]"),
        (contracts_app, ["export-schemas", "--help"], "[default: packages/contracts/schemas]"),
        (serving_app, ["serve", "--help"], "[default: PAYBAND_SERVING_MODEL_URI]"),
        (serving_app, ["bundle", "--help"], "[default: PAYBAND_SERVING_BUNDLE_DIR]"),
    ],
)
def test_help_shows_the_default(app: typer.Typer, args: list[str], shown: str) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert shown in " ".join(result.output.split())
