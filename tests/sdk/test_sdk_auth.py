"""Credentials, scopes and live API-key management through the official SDK (contract §1.2, §1.7, §2.10)."""

from __future__ import annotations

import logging
import warnings

import pytest
from videovector import (
    ApiKey,
    ApiKeyWithSecret,
    AuthenticationError,
    AuthorizationError,
    DeleteResponse,
    NotFoundError,
    ValidationError,
)

from spool_sdk_helpers import URL_SAFE_ID, assert_timestamp, unique

WRONG_KEY = "sk_test_" + "0" * 48


def _assert_new_key(created: ApiKeyWithSecret, name: str, scopes: list) -> None:
    assert isinstance(created, ApiKeyWithSecret)
    assert URL_SAFE_ID.match(created.key_id), created.key_id
    assert created.name == name
    assert sorted(created.scopes) == sorted(scopes)
    assert isinstance(created.key, str) and len(created.key) >= 20
    assert created.key_prefix and created.key.startswith(created.key_prefix)
    assert created.key_prefix != created.key
    assert created.is_active is True
    assert created.revoked_at is None
    assert_timestamp(created.created_at)


# --- credentials ---------------------------------------------------------------------------


def test_wrong_api_key_is_authentication_error(make_client):
    bad = make_client(api_key=WRONG_KEY)
    with pytest.raises(AuthenticationError) as info:
        bad.indexes.list()
    assert info.value.status_code == 401
    assert info.value.error_code
    assert isinstance(info.value.request_id, str) and info.value.request_id
    with pytest.raises(AuthenticationError):
        bad.indexes.create(name=unique("never"))


def test_wrong_api_key_fails_authenticate(make_client):
    with pytest.raises(AuthenticationError):
        make_client(api_key=WRONG_KEY).authenticate()


def test_admin_key_works_as_bearer_token(spool_server, make_client):
    name = unique("bearer")
    index = make_client(bearer_token=spool_server.admin_key).indexes.create(name=name)
    assert index.name == name
    with pytest.raises(AuthenticationError):
        make_client(bearer_token=WRONG_KEY).indexes.list()


def test_authenticate_succeeds_without_warnings(client, caplog):
    caplog.set_level(logging.WARNING, logger="videovector")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = client.authenticate()
    # The SDK returns None (and logs a warning) when the ping fails for any non-auth reason.
    assert isinstance(result, dict), result
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [str(w.message) for w in caught] == []


# --- scopes --------------------------------------------------------------------------------


def test_read_key_can_list_but_not_create(client, make_client):
    created = client.api_keys.create(name=unique("reader"), scopes=["read"])
    _assert_new_key(created, created.name, ["read"])
    reader = make_client(api_key=created.key)

    visible = client.indexes.create(name=unique("visible-to-reader"))
    assert visible.index_id in [i.index_id for i in reader.indexes.list()]
    assert reader.indexes.retrieve(visible.index_id).index_id == visible.index_id

    name = unique("reader-create")
    with pytest.raises(AuthorizationError) as info:
        reader.indexes.create(name=name)
    assert info.value.status_code == 403
    assert info.value.error_code
    assert name not in [i.name for i in client.indexes.list()]

    with pytest.raises(AuthorizationError):
        reader.api_keys.create(name=unique("escalate"), scopes=["admin"])


def test_default_scope_is_read(client, make_client):
    created = client.api_keys.create(name=unique("default-scope"))
    assert created.scopes == ["read"]
    with pytest.raises(AuthorizationError):
        make_client(api_key=created.key).indexes.create(name=unique("nope"))


def test_search_scope_counts_as_read(client, make_client):
    created = client.api_keys.create(name=unique("searcher"), scopes=["search"])
    searcher = make_client(api_key=created.key)
    assert isinstance(searcher.indexes.list(), list)
    with pytest.raises(AuthorizationError):
        searcher.indexes.create(name=unique("nope"))


def test_write_key_cannot_manage_keys(client, make_client):
    created = client.api_keys.create(name=unique("writer"), scopes=["write"])
    writer = make_client(api_key=created.key)
    with pytest.raises(AuthorizationError):
        writer.api_keys.list()
    with pytest.raises(AuthorizationError):
        writer.api_keys.create(name=unique("escalate"), scopes=["admin"])


# --- API keys ------------------------------------------------------------------------------


def test_api_key_create_list_retrieve_and_use(client, make_client, raw, admin_headers):
    name = unique("key")
    created = client.api_keys.create(name=name, scopes=["write"], expires_in_days=30)
    _assert_new_key(created, name, ["write"])
    assert_timestamp(created.expires_at)

    listed = client.api_keys.list()
    assert isinstance(listed, list) and all(isinstance(k, ApiKey) for k in listed)
    mine = [k for k in listed if k.key_id == created.key_id]
    assert len(mine) == 1
    assert mine[0].name == name
    assert mine[0].key_prefix == created.key_prefix
    assert sorted(mine[0].scopes) == ["write"]
    assert mine[0].is_active is True

    fetched = client.api_keys.retrieve(created.key_id)
    assert isinstance(fetched, ApiKey)
    assert (fetched.key_id, fetched.name, fetched.key_prefix) == (created.key_id, name, created.key_prefix)

    # The secret is shown once: never again, in any field (the SDK models would drop extras).
    for path in ("/api/v2/api-keys", f"/api/v2/api-keys/{created.key_id}"):
        resp = raw.get(path, headers=admin_headers)
        assert resp.status_code == 200, resp.text
        assert created.key not in resp.text, f"{path} echoes the secret"
    assert isinstance(raw.get("/api/v2/api-keys", headers=admin_headers).json(), list)

    # A new key works at once.
    index_name = unique("made-by-new-key")
    index = make_client(api_key=created.key).indexes.create(name=index_name)
    assert index.name == index_name
    assert index.index_id in [i.index_id for i in client.indexes.list()]


def test_api_key_revoke(client, make_client):
    created = client.api_keys.create(name=unique("revoke-me"), scopes=["write"])
    user = make_client(api_key=created.key)
    assert isinstance(user.indexes.list(), list)

    revoked = client.api_keys.revoke(created.key_id)
    assert isinstance(revoked, ApiKey)
    assert revoked.key_id == created.key_id
    assert revoked.is_active is False
    assert_timestamp(revoked.revoked_at)

    with pytest.raises(AuthenticationError):
        user.indexes.list()
    with pytest.raises(AuthenticationError):
        make_client(api_key=created.key).indexes.create(name=unique("after-revoke"))

    # Revoked keys stay visible, inactive.
    still = client.api_keys.retrieve(created.key_id)
    assert still.is_active is False
    assert [k.is_active for k in client.api_keys.list() if k.key_id == created.key_id] == [False]


def test_api_key_rotate(client, make_client):
    old = client.api_keys.create(name=unique("rotate-me"), scopes=["read", "write"])
    assert isinstance(make_client(api_key=old.key).indexes.list(), list)

    new = client.api_keys.rotate(old.key_id)
    assert isinstance(new, ApiKeyWithSecret)
    assert new.key != old.key
    assert new.key.startswith(new.key_prefix)
    assert sorted(new.scopes) == ["read", "write"]
    assert new.is_active is True

    with pytest.raises(AuthenticationError):
        make_client(api_key=old.key).indexes.list()
    fresh = make_client(api_key=new.key)
    name = unique("after-rotate")
    assert fresh.indexes.create(name=name).name == name

    if new.key_id != old.key_id:
        assert client.api_keys.retrieve(old.key_id).is_active is False
    assert client.api_keys.retrieve(new.key_id).is_active is True


def test_api_key_delete(client, make_client):
    created = client.api_keys.create(name=unique("delete-me"), scopes=["read"])
    assert isinstance(make_client(api_key=created.key).indexes.list(), list)

    deleted = client.api_keys.delete(created.key_id)
    assert isinstance(deleted, DeleteResponse)
    assert isinstance(deleted.message, str) and deleted.message.strip()

    with pytest.raises(AuthenticationError):
        make_client(api_key=created.key).indexes.list()
    with pytest.raises(NotFoundError):
        client.api_keys.retrieve(created.key_id)
    assert created.key_id not in [k.key_id for k in client.api_keys.list()]


def test_api_key_missing_is_not_found(client):
    with pytest.raises(NotFoundError):
        client.api_keys.retrieve("key_" + "0" * 24)
    with pytest.raises(NotFoundError):
        client.api_keys.revoke("key_" + "0" * 24)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "x" * 101},
        {"name": "bad-scope", "scopes": ["root"]},
        {"name": "too-long", "expires_in_days": 366},
        {"name": "too-short", "expires_in_days": 0},
    ],
    ids=["empty-name", "long-name", "unknown-scope", "expiry-366", "expiry-0"],
)
def test_api_key_create_validates(client, kwargs):
    with pytest.raises(ValidationError) as info:
        client.api_keys.create(**kwargs)
    assert info.value.status_code == 422
    assert info.value.error_code == "validation_error"


def test_secrets_are_not_logged_or_stored_in_plaintext(spool_server, client, make_client):
    created = client.api_keys.create(name=unique("plaintext-check"), scopes=["read"])
    assert isinstance(make_client(api_key=created.key).indexes.list(), list)

    log = spool_server.log_text()
    assert spool_server.admin_key not in log, "server output contains SPOOL_API_KEY"
    assert created.key not in log, "server output contains an API key secret"

    needles = (spool_server.admin_key.encode(), created.key.encode())
    for path in (p for d in spool_server.data_dirs for p in d.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                assert needle not in data, f"{path} holds a key secret in plaintext"
