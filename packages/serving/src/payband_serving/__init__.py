"""MLServer runtime with exact per-feature explanations and deployable bundles per model version."""

import os
from importlib.metadata import version

# MLflow and Dagster report usage to outside services unless these are set before import.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "true")
# A server's log is no place for MLflow's download progress bars.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__version__ = version("payband-serving")
