"""Database URLs: one setting for psycopg and for dbt's profile, passwords kept out of messages
(the URL rules themselves are payband_contracts.database's, tested there)."""

from __future__ import annotations

import socket

import pytest

from payband_data.db import DatabaseError, connect, connection_params, dbt_env
from payband_local.postgres import PostgresConnectionInfo


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ana:s3cret@db.example:6543/payband",
        "postgresql+psycopg://ana:s3cret@db.example:6543/payband",
        "postgres://ana:s3cret@db.example:6543/payband",
        "host=db.example port=6543 user=ana password=s3cret dbname=payband",
    ],
)
def test_every_url_form_gives_the_same_dbt_profile(url: str) -> None:
    assert dbt_env(url) == {
        "PAYBAND_DBT_HOST": "db.example",
        "PAYBAND_DBT_PORT": "6543",
        "PAYBAND_DBT_USER": "ana",
        "PAYBAND_DBT_PASSWORD": "s3cret",
        "PAYBAND_DBT_DBNAME": "payband",
        "PAYBAND_DBT_SSLMODE": "prefer",
    }


def test_query_parameters_keep_their_libpq_meaning() -> None:
    params = connection_params(
        "postgresql+psycopg://postgres@/payband?host=/run/pg&sslmode=disable"
    )
    assert params == {
        "user": "postgres",
        "dbname": "payband",
        "host": "/run/pg",
        "sslmode": "disable",
    }
    env = dbt_env("postgresql+psycopg://postgres@/payband?host=/run/pg&sslmode=disable")
    assert env["PAYBAND_DBT_HOST"] == "/run/pg"
    assert env["PAYBAND_DBT_PORT"] == "5432"
    assert env["PAYBAND_DBT_SSLMODE"] == "disable"


def test_user_and_database_default_like_libpq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "ops")
    env = dbt_env("postgresql://127.0.0.1")
    assert (env["PAYBAND_DBT_USER"], env["PAYBAND_DBT_DBNAME"]) == ("ops", "ops")
    assert env["PAYBAND_DBT_PASSWORD"] == ""


def test_other_schemes_and_garbage_are_refused_without_the_password() -> None:
    with pytest.raises(DatabaseError, match="not a PostgreSQL URL") as caught:
        dbt_env("mysql://ana:s3cret@db/p")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(DatabaseError, match="invalid database URL"):
        connection_params("host=db dbname")


def test_connect_reaches_the_database_and_names_an_unreachable_one(
    postgres_database: PostgresConnectionInfo,
) -> None:
    with connect(postgres_database.url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (postgres_database.database,)
        assert not conn.autocommit

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"postgresql://ana:s3cret@127.0.0.1:{closed_port}/p"
    with pytest.raises(DatabaseError, match=f"cannot connect to .*:{closed_port}") as caught:
        connect(url, connect_timeout=2)
    assert "s3cret" not in str(caught.value)
    assert "\n" not in str(caught.value)
