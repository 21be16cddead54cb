"""PostgreSQL URLs: one setting read by psycopg (loading, snapshots) and by dbt's profile.

Accepted: ``postgresql://`` and ``postgres://`` URLs, with or without a SQLAlchemy driver
suffix (``postgresql+psycopg://``), and libpq ``key=value`` strings. libpq's own parser (through
psycopg) reads them, so query parameters such as ``?host=/socket/dir`` keep their meaning.
"""

from __future__ import annotations

import getpass
import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from payband_data.errors import DataError, first_line

__all__ = ["DatabaseError", "connect", "connection_params", "conninfo", "dbt_env", "redact"]

_SCHEMES = ("postgresql", "postgres")
_URL_PASSWORD = re.compile(r"(://[^:/@?#]*:)[^@/?#]*(@)")
_PARAM_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]+)", re.IGNORECASE)


class DatabaseError(DataError):
    """The database URL is invalid or the database cannot be reached."""


def redact(url: str) -> str:
    """The URL or connection string with its password replaced by ``***``, fit for messages."""
    return _PARAM_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\2", url))


def connection_params(url: str) -> dict[str, str]:
    """The libpq parameters of a URL (host, port, user, password, dbname, ...), as given."""
    text = url.strip()
    if "://" in text:
        scheme, rest = text.split("://", 1)
        # SQLAlchemy names the driver after a '+'; libpq knows only the plain scheme.
        if scheme.split("+", 1)[0].lower() not in _SCHEMES:
            raise DatabaseError(
                f"database URL {redact(text)!r} is not a PostgreSQL URL "
                "(expected postgresql://, postgresql+psycopg:// or key=value)"
            )
        text = f"postgresql://{rest}"
    try:
        return {key: str(value) for key, value in conninfo_to_dict(text).items()}
    except psycopg.ProgrammingError as error:
        raise DatabaseError(f"invalid database URL {redact(url)!r}: {first_line(error)}") from None


def conninfo(url: str) -> str:
    """The libpq ``key=value`` connection string of a URL."""
    return make_conninfo(**connection_params(url))


def connect(url: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """A psycopg connection; an unreachable database raises ``DatabaseError`` in one line."""
    kwargs.setdefault("connect_timeout", 10)
    try:
        return psycopg.connect(conninfo(url), autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as error:
        raise DatabaseError(f"cannot connect to {redact(url)}: {first_line(error)}") from None


def dbt_env(url: str) -> dict[str, str]:
    """The ``PAYBAND_DBT_*`` variables the dbt project's profiles.yml reads.

    libpq's defaults fill what the URL leaves out, since dbt's profile needs every field:
    host localhost, port 5432, the login name as user and the user name as database.
    """
    params = connection_params(url)
    user = params.get("user") or getpass.getuser()
    return {
        "PAYBAND_DBT_HOST": params.get("host") or "localhost",
        "PAYBAND_DBT_PORT": params.get("port") or "5432",
        "PAYBAND_DBT_USER": user,
        "PAYBAND_DBT_PASSWORD": params.get("password", ""),
        "PAYBAND_DBT_DBNAME": params.get("dbname") or user,
        "PAYBAND_DBT_SSLMODE": params.get("sslmode") or "prefer",
    }
