"""Train/test split, Optuna search, fairness evaluation, MLflow tracking and the gated registry."""

import os
from importlib.metadata import version

# MLflow reports usage to an outside service unless this is set before it is imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = version("payband-training")
