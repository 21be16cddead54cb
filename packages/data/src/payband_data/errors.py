"""The base of every error a user of the data layer can cause."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(Exception):
    """Bad input, a missing version, an unreachable store or database: one readable line."""
