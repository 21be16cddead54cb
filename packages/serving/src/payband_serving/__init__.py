"""MLServer runtime with exact per-feature explanations and deployable bundles per model version."""

from importlib.metadata import version

__version__ = version("payband-serving")
