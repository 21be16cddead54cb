"""Train/test split, Optuna search, fairness evaluation, MLflow tracking and the gated registry."""

from importlib.metadata import version

__version__ = version("payband-training")
