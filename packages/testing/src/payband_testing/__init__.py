"""Shared test fixtures for every payband package: a real PostgreSQL and S3 on loopback.

The fixtures come from ``payband_testing.plugin`` (a pytest plugin, loaded automatically);
the server classes are importable for other uses, e.g. the local stack launcher.
"""

from importlib.metadata import version

from payband_testing.postgres import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    PostgresConnectionInfo,
)
from payband_testing.s3 import MotoS3Server, S3Bucket, S3Endpoint

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "MotoS3Server",
    "PostgresConnectionInfo",
    "S3Bucket",
    "S3Endpoint",
]

__version__ = version("payband-testing")
