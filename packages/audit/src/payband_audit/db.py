"""Database URLs and connections."""

from __future__ import annotations

import re

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import tuple_row

from payband_audit.errors import AuditConfigError, AuditUnavailable

SCHEMA = "audit"


def to_conninfo(url: str) -> str:
    """A libpq connection string from a SQLAlchemy (`postgresql+psycopg://`) or libpq URL."""
    conninfo = re.sub(r"^postgresql\+psycopg://", "postgresql://", url.strip())
    try:
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as error:
        raise AuditConfigError(f"invalid database URL {redact(url)}: {error}") from None
    return conninfo


def to_sqlalchemy_url(url: str) -> str:
    """The URL in SQLAlchemy form with the psycopg 3 driver (for Alembic)."""
    conninfo = to_conninfo(url)
    if conninfo.startswith("postgresql://") or conninfo.startswith("postgres://"):
        return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", conninfo)
    # A key=value conninfo: SQLAlchemy takes it as the query of an empty URL.
    params = conninfo_to_dict(conninfo)
    return "postgresql+psycopg:///?" + "&".join(f"{k}={v}" for k, v in params.items())


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", re.sub(r"password=\S+", "password=***", url))


def describe(conninfo: str) -> str:
    """host:port/dbname of a connection string, for messages."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return redact(conninfo)
    return (
        f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
    )


def connect(
    url: str, *, role: str | None = None, connect_timeout: int = 5, autocommit: bool = False
) -> psycopg.Connection:
    """A connection to the audit database, as `role` if given; AuditUnavailable if unreachable."""
    conninfo = to_conninfo(url)
    try:
        conn = psycopg.connect(
            make_conninfo(conninfo, connect_timeout=connect_timeout), autocommit=autocommit
        )
    except psycopg.OperationalError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "no answer"
        raise AuditUnavailable(
            f"cannot connect to the audit database at {describe(conninfo)}: {first_line}"
        ) from None
    if role:
        try:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        except psycopg.Error as error:
            conn.close()
            raise AuditConfigError(f"cannot act as role {role!r}: {error}") from None
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
