"""Every command line's help shows its defaults: rich must not eat "[default: ...]" as markup."""

from __future__ import annotations

import pytest

from payband_testing.cli import run_in_process


@pytest.mark.parametrize(
    ("script", "args", "shown"),
    [
        ("payband-data", ["ingest", "--help"], "[default: 2023]"),
        ("payband-data", ["build", "--help"], "[default: the newest of the source]"),
        ("payband-audit", ["migrate", "--help"], "[default: $PAYBAND_AUDIT_DATABASE_URL]"),
        (
            "payband-contracts",
            ["export-schemas", "--help"],
            "[default: packages/contracts/schemas]",
        ),
        ("payband-serving", ["serve", "--help"], "[default: PAYBAND_SERVING_MODEL_URI]"),
        ("payband-serving", ["bundle", "--help"], "[default: PAYBAND_SERVING_BUNDLE_DIR]"),
    ],
)
def test_help_shows_the_default(script: str, args: list[str], shown: str) -> None:
    result = run_in_process(script, *args, env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    assert shown in " ".join(result.stdout.split())
