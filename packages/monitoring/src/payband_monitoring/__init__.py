"""Post-deployment monitoring: NannyML drift and performance, fairness, Prometheus metrics."""

import os
from importlib.metadata import version

# NannyML, MLflow and Dagster report usage to outside services unless these are set before
# they are imported.
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "true")

__version__ = version("payband-monitoring")
