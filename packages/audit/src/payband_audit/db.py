"""Database URLs and connections."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import tuple_row

from payband_audit.errors import AuditConfigError, AuditUnavailable
from payband_contracts import database
from payband_contracts.errors import first_line

# Whatever the database's own defaults: timestamps and transactions the code expects.
SESSION_OPTIONS = (
    "-c DateStyle=ISO -c TimeZone=UTC "
    r"-c default_transaction_isolation=read\ committed -c default_transaction_read_only=off"
)


def with_options(conninfo: str, options: str) -> str:
    """Server options after those the URL already carries (ours win where both set one)."""
    given = conninfo_to_dict(conninfo).get("options")
    return f"{given} {options}" if given else options


def to_conninfo(url: str) -> str:
    """The libpq connection string of a database URL (any form payband_contracts.database
    accepts); AuditConfigError, without the password, when libpq cannot read it."""
    try:
        conninfo = database.conninfo(url)
        conninfo_to_dict(conninfo)
    except database.DatabaseUrlError as error:
        raise AuditConfigError(str(error)) from None
    except psycopg.ProgrammingError:
        raise AuditConfigError(str(database.DatabaseUrlError.unreadable(url))) from None
    return conninfo


def connect(
    url: str, *, role: str | None = None, connect_timeout: int = 5, autocommit: bool = False
) -> psycopg.Connection:
    """A connection to the audit database, as `role` if given; AuditUnavailable if unreachable."""
    conninfo = to_conninfo(url)
    try:
        conn = psycopg.connect(
            make_conninfo(
                conninfo,
                connect_timeout=connect_timeout,
                options=with_options(conninfo, SESSION_OPTIONS),
            ),
            autocommit=autocommit,
        )
    except psycopg.OperationalError as error:
        raise AuditUnavailable(
            f"cannot connect to the audit database at {database.describe(conninfo)}: "
            f"{first_line(error)}"
        ) from None
    if role:
        try:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        except psycopg.Error as error:
            conn.close()
            raise AuditConfigError(f"cannot act as role {role!r}: {first_line(error)}") from None
        if not autocommit:
            conn.commit()
    return conn


def require_migrated(conn: psycopg.Connection) -> None:
    """AuditConfigError with what to do when the audit schema is missing."""
    with conn.cursor(row_factory=tuple_row) as cursor:
        row = cursor.execute("SELECT to_regclass('audit.chain_head') IS NOT NULL").fetchone()
    if not conn.autocommit:
        conn.commit()
    if not row or not row[0]:
        raise AuditConfigError(
            f"the audit schema is not migrated in database {conn.info.dbname!r}; "
            "run `payband-audit migrate`"
        )
