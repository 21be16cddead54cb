"""Whether an MLflow tracking store can be reached, asked before MLflow is.

Training, serving and monitoring each talk to MLflow, which retries an unreachable database
for about 100 s and a server for minutes, logging a warning each time. They ask here first
and fail in one line. A database store is opened with SQLAlchemy, imported only then: it
comes with the ``tracking`` extra (``payband-contracts[tracking]``), which those packages ask for.
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from payband_contracts.database import redact, sqlalchemy_url
from payband_contracts.errors import first_line

__all__ = ["tracking_problem"]

# The SQLAlchemy backends MLflow's database store supports.
_DATABASE_BACKENDS = {"postgresql", "sqlite", "mysql", "mssql"}


def _server_problem(uri: str, timeout: float) -> str | None:
    parsed = urlparse(uri)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        return f"cannot reach the MLflow tracking server {redact(uri)}: {reason}"


def tracking_problem(uri: str, *, timeout: int = 10) -> str | None:
    """None when the tracking server or database answers (or the URI is neither, e.g. a
    directory); else what is wrong, in one line. A ``postgresql://`` URI is tried with
    psycopg 3, as MLflow is given it (``payband_contracts.database.sqlalchemy_url``)."""
    if urlparse(uri).scheme in ("http", "https"):
        return _server_problem(uri, timeout)
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    try:
        url = sqlalchemy.engine.make_url(sqlalchemy_url(uri))
    except ArgumentError:
        return None
    if url.get_backend_name() not in _DATABASE_BACKENDS:
        return None
    connect_args = {"connect_timeout": timeout} if url.get_backend_name() == "postgresql" else {}
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (SQLAlchemyError, ImportError) as error:
        return f"cannot use the tracking URI {redact(uri)}: {first_line(error)}"
    try:
        with engine.connect():
            return None
    except SQLAlchemyError as error:
        return f"cannot reach the MLflow database {redact(uri)}: {first_line(error)}"
    finally:
        engine.dispose()
