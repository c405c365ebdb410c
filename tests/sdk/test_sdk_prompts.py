"""Prompts through the official SDK (contract §2.8): create, retrieve, list, update (only the
given keys, clear_video_level), delete, test-schema, usage; bounds and hostile schemas refused
with the field named."""

from __future__ import annotations

import pytest
from videovector import NotFoundError, ValidationError

from spool_sdk_helpers import assert_error_envelope, assert_timestamp, unique

SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "people": {"type": "integer", "minimum": 0}},
    "required": ["summary"],
}


def test_a_prompt_is_created_read_listed_updated_and_deleted(client):
    name = unique("scenes")
    p = client.prompts.create(
        name=name,
        prompt_text="Describe what happens in each scene.",
        json_schema=SCHEMA,
        video_level={"instructions_text": "Summarise the whole video.", "json_schema": {"type": "object"}},
        semantic_indexing={"disabled_segment_fields": ["people"]},
    )
    assert p.prompt_id.startswith("prompt_") and p.name == name and p.description == ""
    assert p.json_schema == SCHEMA and p.video_level.instructions_text == "Summarise the whole video."
    assert p.semantic_indexing.disabled_segment_fields == ["people"] and p.is_active
    assert_timestamp(p.created_at)
    assert client.prompts.retrieve(p.prompt_id) == p
    listed = client.prompts.list()
    assert p.prompt_id in [q.prompt_id for q in listed.prompts]
    assert listed.total_count == len(listed.prompts) and listed.active_count == listed.total_count

    # Only the given keys change.
    u = client.prompts.update(p.prompt_id, description="Scenes of the field recordings")
    assert (u.name, u.description, u.json_schema) == (name, "Scenes of the field recordings", SCHEMA)
    assert u.video_level is not None
    cleared = client.prompts.update(p.prompt_id, clear_video_level=True)
    assert cleared.video_level is None and cleared.description == "Scenes of the field recordings"
    new_schema = {"type": "object", "properties": {"mood": {"enum": ["calm", "tense"]}}}
    assert client.prompts.update(p.prompt_id, json_schema=new_schema).json_schema == new_schema

    usage = client.prompts.get_usage(p.prompt_id)
    assert (usage.prompt_id, usage.name, usage.is_in_use, usage.schema_properties_count) == (p.prompt_id, name, False, 1)

    assert client.prompts.delete(p.prompt_id).message
    with pytest.raises(NotFoundError):
        client.prompts.retrieve(p.prompt_id)
    with pytest.raises(NotFoundError):
        client.prompts.delete(p.prompt_id)
    assert p.prompt_id not in [q.prompt_id for q in client.prompts.list().prompts]


@pytest.mark.parametrize(
    "field,kwargs",
    [
        ("name", {"name": "ab"}),
        ("name", {"name": "x" * 101}),
        ("prompt_text", {"prompt_text": "too short"}),
        ("description", {"description": "d" * 501}),
        ("json_schema", {"json_schema": {"type": 7}}),
        # A schema must not make the server fetch URLs or read files…
        ("json_schema", {"json_schema": {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/s.json"}}}}),
        ("json_schema", {"json_schema": {"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}}}),
        # …nor backtrack: patterns run on a linear-time engine.
        ("json_schema", {"json_schema": {"type": "string", "pattern": "(a)\\1"}}),
    ],
)
def test_bad_prompts_are_422_naming_the_field(client, raw, admin_headers, field, kwargs):
    body = {"name": unique("bad"), "prompt_text": "Describe each scene in detail.", "json_schema": SCHEMA, **kwargs}
    resp = raw.post("/api/v2/prompts", json=body, headers=admin_headers)
    err = assert_error_envelope(resp, 422, "validation_error")
    assert err["details"]["field"] == field, err
    with pytest.raises(ValidationError):
        client.prompts.create(**body)


def test_an_update_is_checked_like_a_create_and_an_unknown_prompt_is_404(client, raw, admin_headers):
    p = client.prompts.create(name=unique("upd"), prompt_text="Describe each scene.", json_schema=SCHEMA)
    resp = raw.put(f"/api/v2/prompts/{p.prompt_id}", json={"prompt_text": "short"}, headers=admin_headers)
    assert_error_envelope(resp, 422, "validation_error")
    both = raw.put(
        f"/api/v2/prompts/{p.prompt_id}",
        json={"video_level": {"instructions_text": "x", "json_schema": {}}, "clear_video_level": True},
        headers=admin_headers,
    )
    assert_error_envelope(both, 422, "validation_error")
    assert client.prompts.retrieve(p.prompt_id).prompt_text == "Describe each scene."
    with pytest.raises(NotFoundError):
        client.prompts.update("prompt_01KB0000000000000000000000", name="nobody")
    with pytest.raises(NotFoundError):
        client.prompts.get_usage("prompt_01KB0000000000000000000000")
    missing = raw.get("/api/v2/prompts/prompt_01KB0000000000000000000000", headers=admin_headers)
    assert_error_envelope(missing, 404, "resource_prompt_not_found")


def test_test_schema_validates_a_sample_without_storing_anything(client):
    before = client.prompts.list().total_count
    ok = client.prompts.test_schema(json_schema=SCHEMA, sample_data={"summary": "two people talk", "people": 2})
    assert ok.valid and ok.validated_data == {"summary": "two people talk", "people": 2}
    bad = client.prompts.test_schema(json_schema=SCHEMA, sample_data={"people": -1})
    assert not bad.valid and "/people" in bad.error and "summary" in bad.error
    broken = client.prompts.test_schema(json_schema={"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x"}}}, sample_data={})
    assert not broken.valid and broken.error
    assert client.prompts.list().total_count == before
