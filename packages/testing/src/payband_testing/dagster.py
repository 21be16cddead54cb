"""Load a Dagster code location the way a code server does, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def validate_code_location(
    module: str, env: Mapping[str, str], dagster_home: Path
) -> subprocess.CompletedProcess[str]:
    """`dagster definitions validate -m <module>` with `env` added to this environment.

    `dagster_home` gets a dagster.yaml with telemetry off, so nothing phones home.
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.run(
        [str(dagster), "definitions", "validate", "-m", module],
        env={**os.environ, **env, "DAGSTER_HOME": str(dagster_home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
