"""payband: salary-band prediction built as a high-risk AI system under the EU AI Act."""

from importlib.metadata import version

__version__ = version("payband")
