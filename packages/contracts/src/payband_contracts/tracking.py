"""Whether an MLflow tracking store can be reached, asked before MLflow is.

Training, serving and monitoring each talk to MLflow, which retries an unreachable database
for about 100 s and a server for minutes, logging a warning each time. They ask here first
and fail in one line.
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

__all__ = ["shown_uri", "tracking_problem", "tracking_url"]

# The SQLAlchemy backends MLflow's database store supports.
_DATABASE_BACKENDS = {"postgresql", "sqlite", "mysql", "mssql"}


def tracking_url(uri: str) -> str:
    """The URI MLflow needs: postgresql:// would mean psycopg2, which is not installed;
    psycopg 3 is."""
    if uri.startswith("postgresql://"):
        return "postgresql+psycopg://" + uri.removeprefix("postgresql://")
    return uri


def shown_uri(uri: str) -> str:
    """A tracking URI fit for messages: a database password is hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except ArgumentError:
        return uri


def _reason(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _server_problem(uri: str, timeout: float) -> str | None:
    parsed = urlparse(uri)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        return f"cannot reach the MLflow tracking server {shown_uri(uri)}: {reason}"


def tracking_problem(uri: str, *, timeout: int = 10) -> str | None:
    """None when the tracking server or database answers (or the URI is neither, e.g. a
    directory); else what is wrong, in one line."""
    if urlparse(uri).scheme in ("http", "https"):
        return _server_problem(uri, timeout)
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    try:
        url = sqlalchemy.engine.make_url(uri)
    except ArgumentError:
        return None
    if url.get_backend_name() not in _DATABASE_BACKENDS:
        return None
    connect_args = {"connect_timeout": timeout} if url.get_backend_name() == "postgresql" else {}
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (SQLAlchemyError, ImportError) as error:
        return f"cannot use the tracking URI {shown_uri(uri)}: {_reason(error)}"
    try:
        with engine.connect():
            return None
    except SQLAlchemyError as error:
        return f"cannot reach the MLflow database {shown_uri(uri)}: {_reason(error)}"
    finally:
        engine.dispose()
