"""Alembic environment: the database comes from the caller or PAYBAND_AUDIT_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from payband_audit.db import to_conninfo
from payband_audit.migrate import VERSION_TABLE
from payband_audit.settings import AuditSettings
from payband_contracts.database import sqlalchemy_url

config = context.config
url = config.attributes.get("database_url") or AuditSettings().database_url


def run_migrations_online() -> None:
    engine = create_engine(sqlalchemy_url(to_conninfo(url)), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                # In public, not in the audit schema, so the first migration can drop that
                # schema on downgrade.
                version_table=VERSION_TABLE,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
