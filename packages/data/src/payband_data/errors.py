"""The base of every error a user of the data layer can cause."""

from __future__ import annotations

from payband_contracts.cli_support import first_line

__all__ = ["DataError", "first_line"]


class DataError(Exception):
    """Bad input, a missing version, an unreachable store or database: one readable line."""
