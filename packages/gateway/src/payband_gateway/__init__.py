"""The public FastAPI application: validated, explained, audited predictions."""

from importlib.metadata import version

__version__ = version("payband-gateway")
