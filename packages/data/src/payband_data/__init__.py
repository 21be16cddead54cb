"""Census sources, versioned storage, the dbt feature project and the data pipeline."""

from importlib.metadata import version

__version__ = version("payband-data")
