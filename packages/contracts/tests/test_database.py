"""payband_contracts.database: every form of a database URL, for libpq and for SQLAlchemy, and
never a password in a message."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from payband_contracts.database import (
    DatabaseUrlError,
    conninfo,
    describe,
    redact,
    sqlalchemy_url,
)

# Passwords that break naive rules: "@", "/", ":", "#", "?", "&", quotes and spaces.
PASSWORDS = ["s3cret", "p@ss", "pa/ss:w#rd?", "a&b=c", "it's", "with space", "tail\\"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://ana:s3cret@db:6543/payband", "postgresql://ana:s3cret@db:6543/payband"),
        ("postgres://ana@db/payband", "postgresql://ana@db/payband"),
        ("postgresql+psycopg://ana@db/payband", "postgresql://ana@db/payband"),
        ("postgresql+psycopg2://ana@db/payband", "postgresql://ana@db/payband"),
        ("PostgreSQL+Psycopg://ana@db/payband", "postgresql://ana@db/payband"),
        ("  postgresql://ana@db/payband\n", "postgresql://ana@db/payband"),
        ("postgresql:///payband?host=/run/pg", "postgresql:///payband?host=/run/pg"),
        ("host=db port=6543 dbname=payband", "host=db port=6543 dbname=payband"),
        ("", ""),  # libpq's defaults (PGHOST, ...)
    ],
)
def test_conninfo_is_what_libpq_reads(url: str, expected: str) -> None:
    assert conninfo(url) == expected
    conninfo_to_dict(expected)  # libpq itself accepts it


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://ana:s3cret@db/payband", "is not a PostgreSQL URL"),
        ("sqlite:///payband.db", "is not a PostgreSQL URL"),
        ("localhost:5432/payband", "invalid database URL"),
        ("host=db dbname", "invalid database URL"),
        ("host=db password='s3cret", "a quoted value is not closed"),
        ("://ana:s3cret@db/payband", "invalid database URL"),
    ],
)
def test_conninfo_refuses_what_is_not_postgresql_without_the_password(
    url: str, message: str
) -> None:
    with pytest.raises(DatabaseUrlError, match=message) as caught:
        conninfo(url)
    assert "s3cret" not in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_an_unreadable_url_is_named_without_its_password() -> None:
    error = DatabaseUrlError.unreadable(" postgresql://ana:s3cret@[broken/db ")
    assert str(error) == (
        "invalid database URL 'postgresql://ana:***@[broken/db' "
        "(expected postgresql://user@host:port/dbname or key=value pairs)"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://ana@db/payband", "postgresql+psycopg://ana@db/payband"),
        ("postgres://ana@db/payband", "postgresql+psycopg://ana@db/payband"),
        ("postgresql+psycopg://ana@db/payband", "postgresql+psycopg://ana@db/payband"),
        # A driver named is the caller's choice.
        ("postgresql+psycopg2://ana@db/payband", "postgresql+psycopg2://ana@db/payband"),
        ("postgres+psycopg2://ana@db/payband", "postgresql+psycopg2://ana@db/payband"),
        ("postgresql:///payband?host=/run/pg", "postgresql+psycopg:///payband?host=/run/pg"),
        # MLflow's and Optuna's other stores pass through.
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("http://mlflow:5000", "http://mlflow:5000"),
        ("/var/lib/mlflow", "/var/lib/mlflow"),
        ("mlruns", "mlruns"),
        ("file:///tmp/a=b", "file:///tmp/a=b"),
    ],
)
def test_sqlalchemy_url_names_the_psycopg_3_driver(url: str, expected: str) -> None:
    assert sqlalchemy_url(url) == expected
    assert sqlalchemy_url(expected) == expected


def test_a_key_value_string_becomes_a_url_sqlalchemy_hands_to_libpq() -> None:
    from sqlalchemy.engine import make_url

    url = sqlalchemy_url(r"host=db port=6543 user=ana password='it\'s a b' dbname=payband")
    assert url == (
        "postgresql+psycopg:///?host=db&port=6543&user=ana&password=it%27s%20a%20b&dbname=payband"
    )
    assert make_url(url).query == {
        "host": "db",
        "port": "6543",
        "user": "ana",
        "password": "it's a b",
        "dbname": "payband",
    }


@pytest.mark.parametrize("password", PASSWORDS)
def test_redact_hides_a_url_password_with_any_character(password: str) -> None:
    for scheme in ("postgresql", "postgresql+psycopg", "http"):
        shown = redact(f"{scheme}://ana:{password}@db:5432/payband")
        assert shown == f"{scheme}://ana:***@db:5432/payband"


def test_redact_hides_passwords_in_a_url_query_and_in_key_value_pairs() -> None:
    assert (
        redact("postgresql://ana@db/p?password=s3cret&sslmode=require")
        == "postgresql://ana@db/p?password=***&sslmode=require"
    )
    assert redact("postgresql://ana@db/p?sslpassword=s3cret") == (
        "postgresql://ana@db/p?sslpassword=***"
    )
    assert redact("host=db password=s3cret dbname=p") == "host=db password=*** dbname=p"
    assert redact("host=db password = s3cret dbname=p") == "host=db password = *** dbname=p"
    assert redact("host=db PASSWORD=s3cret") == "host=db PASSWORD=***"
    assert redact("password=a&b=c host=db") == "password=*** host=db"


@pytest.mark.parametrize(
    "value", ["'with space'", r"'it\'s'", r"with\ space", "'unclosed quote", r"tail\\"]
)
def test_redact_hides_a_key_value_password_as_libpq_reads_it(value: str) -> None:
    assert redact(f"host=db password={value} dbname=p").startswith("host=db password=***")
    assert "space" not in redact(f"password={value}")


def test_redact_hides_every_url_in_a_text_and_keeps_the_rest() -> None:
    text = (
        "cannot reach http://alice:s3cret@mlflow:5000/api and "
        "'postgresql+psycopg://bob:hunter2@db/mlflow': connection refused"
    )
    assert redact(text) == (
        "cannot reach http://alice:***@mlflow:5000/api and "
        "'postgresql+psycopg://bob:***@db/mlflow': connection refused"
    )


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://ana@db:5432/payband",
        "postgresql:///payband?host=/run/pg&sslmode=disable",
        "models:/salary-band@champion",
        "http://mlflow:5000/api/2.0/mlflow/runs/get",
        "host=db dbname=payband user=ana",
        "/var/lib/mlflow",
    ],
)
def test_redact_leaves_what_has_no_password(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("postgresql://ana:s3cret@db.example:6543/payband", "db.example:6543/payband"),
        ("postgresql+psycopg://ana:p@ss/w@db/payband", "db:5432/payband"),
        ("postgres://db/payband", "db:5432/payband"),
        ("postgresql://", "localhost:5432"),
        ("postgresql:///payband?host=/run/pg", "/run/pg:5432/payband"),
        ("postgresql://[::1]:5433/payband", "[::1]:5433/payband"),
        ("postgresql://h1:5433,h2:5434/payband", "h1:5433,h2:5434/payband"),
        ("postgresql://h1,h2/payband?port=5433", "h1:5433,h2:5433/payband"),
        ("postgresql://db/my%20db", "db:5432/my db"),
        ("host=db port=6543 password=s3cret dbname=payband", "db:6543/payband"),
        # Unreadable: the URL without its password.
        ("postgresql://ana:s3cret@[broken/db", "postgresql://ana:***@[broken/db"),
        ("mysql://ana:s3cret@db/payband", "mysql://ana:***@db/payband"),
    ],
)
def test_describe_says_where_and_never_who(url: str, where: str) -> None:
    assert describe(url) == where
