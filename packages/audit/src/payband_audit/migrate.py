"""Alembic migrations of the audit schema, run from code (`payband-audit migrate`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import ArgumentError, DBAPIError

from payband_audit.db import to_conninfo
from payband_audit.errors import AuditConfigError, AuditUnavailable
from payband_contracts.database import describe, sqlalchemy_url
from payband_contracts.errors import first_line

VERSION_TABLE = "payband_audit_alembic_version"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "payband_audit:migrations")
    config.attributes["database_url"] = database_url
    return config


def _unavailable(database_url: str, error: DBAPIError) -> AuditUnavailable:
    return AuditUnavailable(
        f"cannot migrate the audit database at {describe(database_url)}: {first_line(error)}"
    )


@contextmanager
def _clear_errors(database_url: str) -> Iterator[None]:
    try:
        yield
    except DBAPIError as error:
        raise _unavailable(database_url, error) from None
    except (CommandError, ArgumentError, ValueError, RuntimeError) as error:
        # An unknown revision, a malformed URL, or a migration that refuses (downgrade).
        raise AuditConfigError(first_line(error)) from None


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the audit schema up to `revision` (default: the latest)."""
    with _clear_errors(database_url):
        command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Migrate the audit schema down to `revision` ("base" removes it).

    Refused while the log holds records, unless PAYBAND_AUDIT_DOWNGRADE_DROPS_RECORDS=yes.
    """
    with _clear_errors(database_url):
        command.downgrade(alembic_config(database_url), revision)


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    engine = create_engine(sqlalchemy_url(to_conninfo(database_url)), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    except DBAPIError as error:
        raise _unavailable(database_url, error) from None
    finally:
        engine.dispose()
