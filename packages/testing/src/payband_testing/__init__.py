"""Shared test fixtures for every payband package: a real PostgreSQL and S3 on loopback.

The fixtures come from ``payband_testing.plugin`` (a pytest plugin, loaded automatically).
The servers themselves are runtime code in ``payband_local`` (PostgreSQL, processes, ports);
this package holds only what tests need, and no runtime package depends on it.
"""

from importlib.metadata import version

from payband_testing.s3 import MotoS3Server, S3Bucket, S3Endpoint

__all__ = ["MotoS3Server", "S3Bucket", "S3Endpoint"]

__version__ = version("payband-testing")
