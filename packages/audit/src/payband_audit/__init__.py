"""The inference log: migrated schema, append-only hash-chained records, writer and verifier."""

from importlib.metadata import version

__version__ = version("payband-audit")
