"""The base of every error a user of the data layer can cause."""

from __future__ import annotations


class DataError(Exception):
    """Bad input, a missing version, an unreachable store or database: one readable line."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message (drivers add context lines below)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
