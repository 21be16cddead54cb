"""PAYBAND_ORCHESTRATION_* variables: defaults, the names the compose file uses, and the
rules of the code location list (each broken rule is named, with the entry that breaks it)."""

import re

import pytest
from pydantic import ValidationError

from payband_orchestration.settings import (
    CodeLocation,
    OrchestrationSettings,
    parse_code_locations,
)


def test_defaults_fit_one_machine():
    settings = OrchestrationSettings()
    assert (settings.postgres_host, settings.postgres_port) == ("127.0.0.1", 5432)
    assert (settings.postgres_user, settings.postgres_db) == ("postgres", "dagster")
    assert settings.postgres_password.get_secret_value() == ""
    assert (settings.webserver_host, settings.webserver_port) == ("127.0.0.1", 3000)
    assert settings.max_concurrent_runs == 4
    assert [str(location) for location in settings.code_locations] == [
        "data=127.0.0.1:4000",
        "training=127.0.0.1:4001",
        "serving=127.0.0.1:4002",
        "monitoring=127.0.0.1:4003",
    ]


def test_reads_the_variables_the_compose_file_sets(monkeypatch: pytest.MonkeyPatch):
    variables = {
        "PAYBAND_ORCHESTRATION_POSTGRES_HOST": "postgres",
        "PAYBAND_ORCHESTRATION_POSTGRES_PORT": "6543",
        "PAYBAND_ORCHESTRATION_POSTGRES_USER": "dagster",
        "PAYBAND_ORCHESTRATION_POSTGRES_PASSWORD": "s3cret-pw",
        "PAYBAND_ORCHESTRATION_POSTGRES_DB": "dagster_prod",
        "PAYBAND_ORCHESTRATION_CODE_LOCATIONS": (
            "data=dagster-data:4000,training=dagster-training:4000,"
            "serving=dagster-serving:4000,monitoring=dagster-monitoring:4000"
        ),
        "PAYBAND_ORCHESTRATION_WEBSERVER_HOST": "0.0.0.0",  # noqa: S104 - only parsed here
        "PAYBAND_ORCHESTRATION_WEBSERVER_PORT": "3300",
        "PAYBAND_ORCHESTRATION_MAX_CONCURRENT_RUNS": "2",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = OrchestrationSettings()
    assert (settings.postgres_host, settings.postgres_port) == ("postgres", 6543)
    assert (settings.postgres_user, settings.postgres_db) == ("dagster", "dagster_prod")
    assert settings.postgres_password.get_secret_value() == "s3cret-pw"
    assert "s3cret-pw" not in repr(settings)
    assert settings.code_locations == (
        CodeLocation("data", "dagster-data", 4000),
        CodeLocation("training", "dagster-training", 4000),
        CodeLocation("serving", "dagster-serving", 4000),
        CodeLocation("monitoring", "dagster-monitoring", 4000),
    )
    assert (settings.webserver_host, settings.webserver_port) == ("0.0.0.0", 3300)  # noqa: S104
    assert settings.max_concurrent_runs == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data=127.0.0.1:4000", [("data", "127.0.0.1", 4000)]),
        (
            " data = dagster-data:4000 , training=dagster-training:4000, ",
            [("data", "dagster-data", 4000), ("training", "dagster-training", 4000)],
        ),
        ("my_loc-2=code.example.org:65535", [("my_loc-2", "code.example.org", 65535)]),
        ("v6=[::1]:4000", [("v6", "[::1]", 4000)]),
        # The same host with two ports, and two hosts with one port, are different servers.
        (
            "a=h:4000,b=h:4001,c=other:4000",
            [("a", "h", 4000), ("b", "h", 4001), ("c", "other", 4000)],
        ),
    ],
)
def test_parses_code_locations(text: str, expected: list[tuple[str, str, int]]):
    assert parse_code_locations(text) == tuple(CodeLocation(*e) for e in expected)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("data", "'data': write it as name=host:port"),
        ("data:4000", "'data:4000': write it as name=host:port"),
        ("=h:4000", "'=h:4000': the name must start with a letter"),
        ("9data=h:4000", "'9data=h:4000': the name must start with a letter"),
        ("da ta=h:4000", "'da ta=h:4000': the name must start with a letter"),
        ("data=dagster-data", "'data=dagster-data': the address must be host:port"),
        ("data=:4000", "'data=:4000': the address must be host:port"),
        ("data=bad_host!:4000", "'data=bad_host!:4000': the host must be a host name"),
        ("data=-h:4000", "'data=-h:4000': the host must be a host name"),
        ("data=h:0", "'data=h:0': the port must be a whole number from 1 to 65535"),
        ("data=h:65536", "'data=h:65536': the port must be a whole number from 1 to 65535"),
        ("data=h:four", "'data=h:four': the port must be a whole number from 1 to 65535"),
        ("data=h:", "'data=h:': the port must be a whole number from 1 to 65535"),
        ("data=h:-1", "'data=h:-1': the port must be a whole number from 1 to 65535"),
        # A digit of another script (FULLWIDTH DIGIT ONE) is not a port.
        ("data=h:\uff11", "'data=h:\uff11': the port must be a whole number from 1 to 65535"),
        ("data=h:000004000", "'data=h:000004000': the port must be a whole number"),
        (
            "data=a:1,training=b:2,Data=c:3",
            "'Data=c:3': the name 'Data' is used twice (also 'data=a:1'); names must be unique",
        ),
        (
            "data=h:4000,training=H:4000",
            "'training=H:4000': 'data=h:4000' has the same address; each code location has "
            "its own code server",
        ),
        ("", "no code location: give at least one name=host:port"),
        (" , ,", "no code location: give at least one name=host:port"),
    ],
)
def test_a_bad_code_location_names_the_entry_and_the_rule(text: str, rule: str):
    with pytest.raises(ValueError, match=re.escape(rule)):
        parse_code_locations(text)


def test_a_bad_variable_is_a_validation_error_naming_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PAYBAND_ORCHESTRATION_CODE_LOCATIONS", "data=h:4000,data=g:4000")
    with pytest.raises(ValidationError) as raised:
        OrchestrationSettings()
    (error,) = raised.value.errors()
    assert error["loc"] == ("code_locations",)
    assert "names must be unique" in error["msg"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PAYBAND_ORCHESTRATION_POSTGRES_PORT", "0"),
        ("PAYBAND_ORCHESTRATION_POSTGRES_PORT", "postgres"),
        ("PAYBAND_ORCHESTRATION_WEBSERVER_PORT", "70000"),
        ("PAYBAND_ORCHESTRATION_MAX_CONCURRENT_RUNS", "0"),
        ("PAYBAND_ORCHESTRATION_POSTGRES_HOST", ""),
        ("PAYBAND_ORCHESTRATION_POSTGRES_DB", ""),
    ],
)
def test_refuses_bad_values(monkeypatch: pytest.MonkeyPatch, variable: str, value: str):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        OrchestrationSettings()
    assert raised.value.errors()[0]["loc"] == (
        variable.removeprefix("PAYBAND_ORCHESTRATION_").lower(),
    )
