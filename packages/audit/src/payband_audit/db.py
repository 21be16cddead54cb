"""Database URLs and connections."""

from __future__ import annotations

import re
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import tuple_row

from payband_audit.errors import AuditConfigError, AuditUnavailable

# Whatever the database's own defaults: timestamps and transactions the code expects.
SESSION_OPTIONS = (
    "-c DateStyle=ISO -c TimeZone=UTC "
    r"-c default_transaction_isolation=read\ committed -c default_transaction_read_only=off"
)


def with_options(conninfo: str, options: str) -> str:
    """Server options after those the URL already carries (ours win where both set one)."""
    given = conninfo_to_dict(conninfo).get("options")
    return f"{given} {options}" if given else options


def first_line(error: BaseException) -> str:
    """The most telling line of a (libpq) error message."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    # libpq puts the reason on the first line and hints ("Is the server running...") after.
    return lines[0]


def to_conninfo(url: str) -> str:
    """A libpq connection string from a SQLAlchemy (`postgresql+psycopg://`) or libpq URL."""
    conninfo = re.sub(r"^postgresql\+psycopg://", "postgresql://", url.strip())
    try:
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        # libpq's message quotes the whole URL, password included: say it without it.
        raise AuditConfigError(
            f"invalid database URL {redact(url)}: expected postgresql://user@host:port/dbname"
        ) from None
    return conninfo


def to_sqlalchemy_url(url: str) -> str:
    """The URL in SQLAlchemy form with the psycopg 3 driver (for Alembic)."""
    conninfo = to_conninfo(url)
    if re.match(r"^postgres(ql)?://", conninfo):
        return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", conninfo)
    # A key=value conninfo: SQLAlchemy passes the query of an empty URL on to libpq.
    params = conninfo_to_dict(conninfo)
    query = "&".join(f"{quote(str(k))}={quote(str(v), safe='')}" for k, v in params.items())
    return f"postgresql+psycopg:///?{query}"


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    url = re.sub(r"password\s*=\s*\S+", "password=***", url)
    return re.sub(r"(://[^:/@\s]+):[^@\s]*@", r"\1:***@", url)


def describe(conninfo: str) -> str:
    """host:port/dbname of a connection string, for messages."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return redact(conninfo)
    host, port = params.get("host", "localhost"), params.get("port", 5432)
    return f"{host}:{port}/{params.get('dbname', '')}"


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
            f"cannot connect to the audit database at {describe(conninfo)}: {first_line(error)}"
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
