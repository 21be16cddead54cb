"""payband_contracts.tracking: one line on an unreachable MLflow store, a password never shown."""

from __future__ import annotations

import socket

import pytest

from payband_contracts.tracking import tracking_problem


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_is_one_line_without_its_password():
    port = free_port()
    problem = tracking_problem(f"http://alice:s3cret@127.0.0.1:{port}", timeout=2)
    assert problem == (
        f"cannot reach the MLflow tracking server http://alice:***@127.0.0.1:{port}: "
        "Connection refused"
    )


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "postgresql"])
def test_an_unreachable_database_is_one_line_without_its_password(scheme):
    # postgresql:// is tried with psycopg 3, as MLflow is given it (psycopg2 is not installed).
    port = free_port()
    problem = tracking_problem(f"{scheme}://u:s3cret@127.0.0.1:{port}/mlflow")
    assert problem is not None
    assert problem.startswith(
        f"cannot reach the MLflow database {scheme}://u:***@127.0.0.1:{port}/mlflow: "
    )
    assert "s3cret" not in problem
    assert "\n" not in problem


def test_a_reachable_database_and_other_stores_are_fine(tmp_path):
    assert tracking_problem(f"sqlite:///{tmp_path}/mlflow.db") is None
    assert tracking_problem(str(tmp_path)) is None  # a directory: nothing to reach


def test_an_unusable_uri_is_named():
    problem = tracking_problem("mysql://u@127.0.0.1:1/mlflow")
    assert problem is not None
    assert problem.startswith("cannot use the tracking URI mysql://u@127.0.0.1:1/mlflow: ")
