"""Alembic environment: the database comes from the caller or PAYBAND_MONITORING_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from payband_contracts.database import conninfo, sqlalchemy_url
from payband_monitoring.settings import MonitoringSettings
from payband_monitoring.store import VERSION_TABLE

config = context.config
url = config.attributes.get("database_url") or MonitoringSettings().database_url


def run_migrations_online() -> None:
    engine = create_engine(sqlalchemy_url(conninfo(url)), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            # In public, so that the first migration can drop the monitoring schema.
            context.configure(
                connection=connection,
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
