"""API keys with roles: generated once, shown once, stored only as SHA-256 hashes.

Keys are 256-bit random tokens, so a fast hash is safe to store: nobody can search that space.
A caller sends its key as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from payband_contracts.errors import first_problem

__all__ = [
    "ApiKey",
    "Caller",
    "KeyRing",
    "Role",
    "check_unique",
    "hash_key",
    "new_key",
    "read_key_file",
]

KEY_PREFIX = "pb_"


class Role(StrEnum):
    """What a key may do. ``admin`` may do everything."""

    PREDICT = "predict"  # ask for predictions; see the explanation charts of its own
    REVIEW = "review"  # record outcomes and reviews; see explanation charts
    AUDIT = "audit"  # read stored records and explanation charts
    ADMIN = "admin"


class ApiKey(BaseModel):
    """One configured key: who it belongs to, what it may do, and the hash of the key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
    roles: Annotated[frozenset[Role], Field(min_length=1)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of a request."""

    name: str
    roles: frozenset[Role]

    def may(self, role: Role) -> bool:
        return role in self.roles or Role.ADMIN in self.roles


def hash_key(key: str) -> str:
    """The SHA-256 (hex) that is stored in place of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh key: ``pb_`` and 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_unique(keys: Iterable[ApiKey]) -> None:
    """ValueError when two keys share a name or a hash."""
    names: set[str] = set()
    hashes: set[str] = set()
    for key in keys:
        if key.name in names:
            raise ValueError(f"two API keys are named {key.name!r}")
        if key.sha256 in hashes:
            raise ValueError(f"API key {key.name!r} has the same hash as another key")
        names.add(key.name)
        hashes.add(key.sha256)


_KEY_LIST = TypeAdapter(tuple[ApiKey, ...])


def read_key_file(path: Path) -> tuple[ApiKey, ...]:
    """The keys of a JSON file holding a list of ``{"name", "roles", "sha256"}``."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"cannot read the API key file {path}: {error.strerror}") from None
    try:
        return _KEY_LIST.validate_python(json.loads(text))
    except json.JSONDecodeError as error:
        raise ValueError(f"the API key file {path} is not JSON: {error}") from None
    except ValidationError as error:
        raise ValueError(f"the API key file {path} is invalid: {first_problem(error)}") from None


class KeyRing:
    """Looks a presented key up by its hash."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._callers = {key.sha256: Caller(key.name, key.roles) for key in keys}

    def __len__(self) -> int:
        return len(self._callers)

    def caller(self, presented: str) -> Caller | None:
        """The caller a presented key belongs to; None for an unknown key."""
        # Looking up the hash, not the key: timing reveals nothing about any stored key.
        return self._callers.get(hash_key(presented))
