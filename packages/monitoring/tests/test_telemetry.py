import os
import subprocess
import sys

PRINT_SETTING = "import os, payband_monitoring; print(os.environ['NML_DISABLE_USAGE_LOGGING'])"


def setting_after_import(env: dict[str, str]) -> str:
    """NML_DISABLE_USAGE_LOGGING as seen after importing the package in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", PRINT_SETTING], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_importing_the_package_disables_nannyml_usage_logging():
    env = {k: v for k, v in os.environ.items() if k != "NML_DISABLE_USAGE_LOGGING"}
    assert setting_after_import(env) == "1"


def test_an_explicit_setting_is_kept():
    assert setting_after_import({**os.environ, "NML_DISABLE_USAGE_LOGGING": "true"}) == "true"


def test_importing_the_package_disables_mlflow_and_dagster_telemetry():
    names = ("MLFLOW_DISABLE_TELEMETRY", "DAGSTER_DISABLE_TELEMETRY")
    code = f"import os, payband_monitoring; print(*(os.environ[n] for n in {names!r}))"
    env = {k: v for k, v in os.environ.items() if k not in names}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["true", "true"]
