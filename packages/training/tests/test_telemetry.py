"""Nothing phones home: importing payband_training switches MLflow's telemetry off."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_package_disables_mlflow_telemetry() -> None:
    code = (
        "import os; os.environ.pop('MLFLOW_DISABLE_TELEMETRY', None); "
        "import payband_training; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "true"
