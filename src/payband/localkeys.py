"""API keys for the local stack: made once per PAYBAND_HOME, kept in clear for local use only.

The gateway itself only ever sees names, roles and SHA-256 hashes (``Home.key_hashes``); the
clear keys (``Home.keys``, mode 600) exist so that `payband up` can print them and the demo can
call the API. A real deployment makes its keys with `payband-gateway keys new` instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from payband.home import Home
from payband_gateway.keys import ApiKey, Role, hash_key, new_key

__all__ = ["LOCAL_KEYS", "LocalKey", "ensure_keys"]


@dataclass(frozen=True)
class LocalKey:
    name: str
    role: Role
    key: str


# name -> role: an HR tool asking for predictions, a reviewer recording outcomes and reviews,
# an auditor reading the records.
LOCAL_KEYS: dict[str, Role] = {
    "local-hr-tool": Role.PREDICT,
    "local-reviewer": Role.REVIEW,
    "local-auditor": Role.AUDIT,
}


def _write_private(path: os.PathLike[str], text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # also when the file existed with a looser mode
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def _read(home: Home) -> dict[str, LocalKey]:
    try:
        entries = json.loads(home.keys.read_text())
        return {
            entry["name"]: LocalKey(entry["name"], Role(entry["role"]), entry["key"])
            for entry in entries
        }
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return {}


def ensure_keys(home: Home) -> dict[str, LocalKey]:
    """The local keys by name; missing ones are made, and the gateway's hash file rewritten."""
    keys = _read(home)
    for name, role in LOCAL_KEYS.items():
        if name not in keys or keys[name].role is not role:
            keys[name] = LocalKey(name, role, new_key())
    ordered = [keys[name] for name in LOCAL_KEYS]
    _write_private(
        home.keys,
        json.dumps([{"name": k.name, "role": str(k.role), "key": k.key} for k in ordered], indent=2)
        + "\n",
    )
    hashed = [
        ApiKey(name=k.name, roles=frozenset({k.role}), sha256=hash_key(k.key)).model_dump(
            mode="json"
        )
        for k in ordered
    ]
    home.key_hashes.write_text(json.dumps(hashed, indent=2) + "\n")
    return {k.name: k for k in ordered}
