"""PostgreSQL URLs: one setting read by psycopg (loading, snapshots) and by dbt's profile.

Accepted: every form ``payband_contracts.database`` accepts (``postgresql://`` and
``postgres://`` URLs, with or without a SQLAlchemy driver suffix, and libpq ``key=value``
strings). libpq's own parser (through psycopg) reads them, so query parameters such as
``?host=/socket/dir`` keep their meaning.
"""

from __future__ import annotations

import getpass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from payband_contracts import database
from payband_contracts.errors import first_line
from payband_data.errors import DataError

__all__ = ["DatabaseError", "connect", "connection_params", "dbt_env"]


class DatabaseError(DataError):
    """The database URL is invalid or the database cannot be reached."""


def connection_params(url: str) -> dict[str, str]:
    """The libpq parameters of a URL (host, port, user, password, dbname, ...), as given."""
    try:
        params = conninfo_to_dict(database.conninfo(url))
    except database.DatabaseUrlError as error:
        raise DatabaseError(str(error)) from None
    except psycopg.ProgrammingError:
        raise DatabaseError(str(database.DatabaseUrlError.unreadable(url))) from None
    return {key: str(value) for key, value in params.items()}


def connect(url: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """A psycopg connection; an unreachable database raises ``DatabaseError`` in one line."""
    kwargs.setdefault("connect_timeout", 10)
    params = connection_params(url)
    try:
        return psycopg.connect(make_conninfo(**params), autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as error:
        raise DatabaseError(
            f"cannot connect to the database at {database.describe(url)}: {first_line(error)}"
        ) from None


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
