"""The Dagster instance of a payband deployment (webserver, daemon, code locations)."""

__version__ = "0.1.0"
