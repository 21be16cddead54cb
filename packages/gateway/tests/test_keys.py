"""API keys: stored as hashes, looked up by hash, roles, the key file, duplicates."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from payband_gateway.keys import ApiKey, KeyRing, Role, hash_key, new_key, read_key_file
from payband_gateway.settings import GatewaySettings


def entry(name: str, key: str, *roles: str) -> dict:
    return {"name": name, "roles": list(roles), "sha256": hash_key(key)}


def test_a_new_key_is_long_random_and_found_only_by_itself():
    first, second = new_key(), new_key()
    assert first != second
    assert first.startswith("pb_")
    assert len(first) == 46
    ring = KeyRing([ApiKey.model_validate(entry("hr-tool", first, "predict"))])
    caller = ring.caller(first)
    assert caller is not None
    assert caller.name == "hr-tool"
    assert ring.caller(second) is None
    assert ring.caller(hash_key(first)) is None  # the stored hash is not a key


def test_admin_may_do_everything_and_others_only_their_roles():
    ring = KeyRing(
        [
            ApiKey.model_validate(entry("ops", "k-admin", "admin")),
            ApiKey.model_validate(entry("both", "k-both", "review", "audit")),
        ]
    )
    admin, both = ring.caller("k-admin"), ring.caller("k-both")
    assert admin is not None
    assert both is not None
    assert all(admin.may(role) for role in Role)
    assert [role for role in Role if both.may(role)] == [Role.REVIEW, Role.AUDIT]


def test_settings_take_keys_from_the_environment_and_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    key_file = tmp_path / "keys.json"
    key_file.write_text(json.dumps([entry("auditor", "k2", "audit")]))
    monkeypatch.setenv("PAYBAND_GATEWAY_API_KEYS", json.dumps([entry("hr-tool", "k1", "predict")]))
    monkeypatch.setenv("PAYBAND_GATEWAY_API_KEYS_FILE", str(key_file))
    settings = GatewaySettings()
    assert [key.name for key in settings.all_keys()] == ["hr-tool", "auditor"]


def test_a_plain_key_in_place_of_a_hash_is_refused():
    with pytest.raises(ValidationError, match="sha256"):
        ApiKey.model_validate({"name": "hr-tool", "roles": ["predict"], "sha256": "pb_secret"})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([entry("a", "k1", "predict"), entry("a", "k2", "audit")], "two API keys are named 'a'"),
        ([entry("a", "k1", "predict"), entry("b", "k1", "audit")], "same hash"),
    ],
)
def test_duplicate_names_or_keys_are_refused(keys: list[dict], message: str):
    with pytest.raises(ValidationError, match=message):
        GatewaySettings(api_keys=keys)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the API key file"),
        ("{", "is not JSON"),
        (
            '[{"name": "x", "roles": ["boss"], "sha256": "' + "0" * 64 + '"}]',
            "is invalid: \\[0\\].roles",
        ),
        ('[{"name": "x", "roles": [], "sha256": "' + "0" * 64 + '"}]', "is invalid: \\[0\\].roles"),
    ],
)
def test_a_bad_key_file_is_one_clear_error(tmp_path: Path, content: str | None, message: str):
    path = tmp_path / "keys.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_key_file(path)
