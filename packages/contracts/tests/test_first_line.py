"""payband_contracts.errors.first_line: an error's message in one line."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from payband_contracts.errors import first_line


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ValueError("bad value"), "bad value"),
        (
            OSError(
                'connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
                "\tIs the server running on that host and accepting TCP/IP connections?"
            ),
            'connection to server at "127.0.0.1", port 1 failed: Connection refused',
        ),
        (RuntimeError("\n\n   the reason  \nthe hint"), "the reason"),
        (KeyError(), "KeyError"),
        (RuntimeError("  \n \n"), "RuntimeError"),
    ],
)
def test_first_line_is_the_first_line_with_words(error: BaseException, line: str) -> None:
    assert first_line(error) == line


def test_first_line_of_a_wrapped_driver_error_is_the_drivers() -> None:
    driver = ConnectionRefusedError("could not connect: Connection refused\nIs it running?")
    wrapped = OperationalError("SELECT 1", {}, driver)
    assert first_line(wrapped) == "could not connect: Connection refused"
