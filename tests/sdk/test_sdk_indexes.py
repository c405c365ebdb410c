"""Indexes through the official SDK (contract §2.6, §1.4 idempotency, §3 pages)."""

from __future__ import annotations

import uuid

import pytest
from videovector import (
    AuthorizationError,
    ConflictError,
    Index,
    IndexDeletionResponse,
    NotFoundError,
    SyncPage,
    ValidationError,
)

from spool_sdk_helpers import URL_SAFE_ID, assert_timestamp, poll, unique

DELETION_STATES = {"draining", "deleting", "deleted"}


def _assert_index(index: Index, name: str) -> None:
    assert isinstance(index, Index)
    assert URL_SAFE_ID.match(index.index_id), index.index_id
    assert index.name == name
    assert isinstance(index.user_id, str) and index.user_id
    assert_timestamp(index.created_at)
    assert index.is_default is False


def _ids(indexes) -> list:
    return [i.index_id for i in indexes]


def test_index_lifecycle_create_list_retrieve_delete(client):
    name = unique("lifecycle")
    created = client.indexes.create(name=name)
    _assert_index(created, name)

    listed = client.indexes.list()
    assert isinstance(listed, list)
    assert _ids(listed).count(created.index_id) == 1
    assert created.index_id in _ids(client.indexes.list(include_defaults=False))

    fetched = client.indexes.retrieve(created.index_id)
    assert fetched == created

    first = client.indexes.delete(created.index_id)
    assert isinstance(first, IndexDeletionResponse)
    assert first.index_id == created.index_id
    assert first.status in DELETION_STATES
    assert URL_SAFE_ID.match(first.deletion_id), first.deletion_id

    again = client.indexes.delete(created.index_id)
    assert again.deletion_id == first.deletion_id
    assert again.index_id == created.index_id
    assert again.status in DELETION_STATES

    done = poll(
        lambda: client.indexes.get_deletion(created.index_id),
        lambda d: d.status == "deleted",
        "index deletion status 'deleted'",
    )
    assert done.deletion_id == first.deletion_id
    assert done.index_id == created.index_id

    def retrieve_outcome():
        try:
            client.indexes.retrieve(created.index_id)
        except NotFoundError as exc:
            return exc
        return None

    gone = poll(retrieve_outcome, lambda e: e is not None, "retrieve of a deleted index → 404")
    assert gone.status_code == 404

    assert created.index_id not in _ids(client.indexes.list())

    # A DELETE retried after completion (the SDK retries DELETE on 5xx/timeouts) resumes
    # the same deletion instead of failing.
    after = client.indexes.delete(created.index_id)
    assert after.deletion_id == first.deletion_id
    assert after.status == "deleted"


def test_create_replays_with_same_idempotency_key(client):
    name = unique("replay")
    key = f"index-create:{uuid.uuid4().hex}"
    first = client.indexes.create(name=name, idempotency_key=key)
    second = client.indexes.create(name=name, idempotency_key=key)
    assert second.index_id == first.index_id
    assert second == first  # the stored response is replayed, not rebuilt
    matching = [i for i in client.indexes.list() if i.name == name]
    assert len(matching) == 1, matching


def test_create_without_key_creates_distinct_indexes(client):
    # The SDK generates a fresh key per call, so two plain creates are two indexes.
    name = unique("twice")
    a = client.indexes.create(name=name)
    b = client.indexes.create(name=name)
    assert a.index_id != b.index_id
    assert sorted(i.index_id for i in client.indexes.list() if i.name == name) == sorted(
        [a.index_id, b.index_id]
    )


def test_same_idempotency_key_different_body_conflicts(client):
    key = f"index-create:{uuid.uuid4().hex}"
    name_a, name_b = unique("mismatch-a"), unique("mismatch-b")
    client.indexes.create(name=name_a, idempotency_key=key)
    with pytest.raises(ConflictError) as info:
        client.indexes.create(name=name_b, idempotency_key=key)
    assert info.value.status_code == 409
    assert info.value.error_code == "idempotency_request_mismatch"
    assert isinstance(info.value.request_id, str) and info.value.request_id
    names = [i.name for i in client.indexes.list()]
    assert name_a in names
    assert name_b not in names


def test_missing_index_is_not_found(client):
    missing = "idx_" + uuid.uuid4().hex
    with pytest.raises(NotFoundError) as info:
        client.indexes.retrieve(missing)
    assert info.value.status_code == 404
    assert info.value.error_code
    assert isinstance(info.value.request_id, str) and info.value.request_id
    with pytest.raises(NotFoundError):
        client.indexes.delete(missing)
    with pytest.raises(NotFoundError):
        client.indexes.list_videos(missing)
    with pytest.raises(NotFoundError):
        client.indexes.list_prompt_runs(missing)


@pytest.mark.parametrize("bad_name", ["", "x" * 256], ids=["empty", "256-chars"])
def test_create_rejects_invalid_name(client, bad_name):
    with pytest.raises(ValidationError) as info:
        client.indexes.create(name=bad_name)
    assert info.value.status_code == 422
    assert info.value.error_code == "validation_error"


def test_fresh_index_has_empty_video_and_prompt_run_pages(client):
    index = client.indexes.create(name=unique("empty-pages"))

    videos = client.indexes.list_videos(index.index_id)
    assert isinstance(videos, SyncPage)
    assert videos.data == []
    assert videos.has_more is False
    assert list(videos.auto_paging_iter()) == []

    runs = client.indexes.list_prompt_runs(index.index_id, limit=10)
    assert isinstance(runs, SyncPage)
    assert runs.data == []
    assert runs.has_more is False
    assert list(runs.auto_paging_iter()) == []


def test_delete_needs_admin_scope(client, make_client):
    writer = client.api_keys.create(name=unique("writer"), scopes=["write"])
    index = make_client(api_key=writer.key).indexes.create(name=unique("not-yours-to-delete"))
    with pytest.raises(AuthorizationError) as info:
        make_client(api_key=writer.key).indexes.delete(index.index_id)
    assert info.value.status_code == 403
    assert client.indexes.retrieve(index.index_id).index_id == index.index_id
