"""Raw HTTP checks of what the SDK relies on implicitly (contract §1.1, §1.3, §1.6, §3).

Uses httpx (the SDK's own transport) with redirects not followed; the `raw` fixture fails a
test whose responses include a 204 or any 3xx.
"""

from __future__ import annotations

import json
import uuid

import pytest
from videovector import ValidationError

from spool_sdk_helpers import assert_error_envelope, unique

OVERSIZED_BYTES = 3 * 1024 * 1024
INDEX_FIELDS = {"index_id", "name", "user_id", "created_at"}


def _json_headers(admin_headers: dict, idem: bool = True) -> dict:
    headers = {**admin_headers, "Content-Type": "application/json"}
    if idem:
        headers["Idempotency-Key"] = f"index-create:{uuid.uuid4().hex}"
    return headers


def _media_type(resp) -> str:
    return resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# --- operator endpoints --------------------------------------------------------------------


def test_healthz_answers_without_key(raw):
    resp = raw.get("/healthz")
    assert resp.status_code == 200, resp.text


def test_metrics_answers_text_without_key(raw):
    resp = raw.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert _media_type(resp) == "text/plain", resp.headers.get("content-type")
    assert isinstance(resp.text, str)


# --- error envelope ------------------------------------------------------------------------


def test_missing_credential_is_401_envelope(raw):
    assert_error_envelope(raw.get("/api/v2/indexes"), 401)


def test_wrong_credential_is_401_envelope(raw):
    resp = raw.get("/api/v2/indexes", headers={"X-API-Key": "sk_test_" + "1" * 48})
    assert_error_envelope(resp, 401)


def test_missing_index_is_404_envelope(raw, admin_headers):
    resp = raw.get(f"/api/v2/indexes/idx_{uuid.uuid4().hex}", headers=admin_headers)
    assert_error_envelope(resp, 404)


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_route_is_404_envelope(raw, admin_headers, method):
    resp = raw.request(method, "/api/v2/no-such-route", headers=admin_headers)
    assert_error_envelope(resp, 404)


def test_request_ids_differ_between_errors(raw, admin_headers):
    a = assert_error_envelope(raw.get("/api/v2/no-such-route", headers=admin_headers), 404)
    b = assert_error_envelope(raw.get("/api/v2/no-such-route", headers=admin_headers), 404)
    assert a["request_id"] != b["request_id"]


def test_trailing_slash_is_not_redirected(raw, admin_headers):
    resp = raw.get("/api/v2/indexes/", headers=admin_headers)
    assert not (300 <= resp.status_code < 400), resp.headers
    if resp.status_code != 200:
        assert_error_envelope(resp, 404)


# --- request validation --------------------------------------------------------------------


def test_malformed_json_is_422(raw, admin_headers):
    resp = raw.post("/api/v2/indexes", content=b'{"name": ', headers=_json_headers(admin_headers))
    assert_error_envelope(resp, 422, "validation_error")


def test_non_object_json_is_422(raw, admin_headers):
    resp = raw.post("/api/v2/indexes", content=b"[]", headers=_json_headers(admin_headers))
    assert_error_envelope(resp, 422, "validation_error")


@pytest.mark.parametrize("body", [{"name": 5}, {}], ids=["wrong-type", "missing"])
def test_bad_field_is_422_naming_the_field(raw, admin_headers, body):
    resp = raw.post(
        "/api/v2/indexes", content=json.dumps(body).encode(), headers=_json_headers(admin_headers)
    )
    err = assert_error_envelope(resp, 422, "validation_error")
    assert "name" in err["message"] or "name" in json.dumps(err["details"]), err


def test_oversized_body_is_413(raw, admin_headers):
    body = json.dumps({"name": "x" * OVERSIZED_BYTES}).encode()
    resp = raw.post("/api/v2/indexes", content=body, headers=_json_headers(admin_headers))
    assert_error_envelope(resp, 413)


def test_oversized_body_through_sdk_is_validation_error(client):
    # Any 4xx other than 401/403/404/409/422/429 maps to ValidationError (contract §1.6).
    with pytest.raises(ValidationError) as info:
        client.indexes.create(name="x" * OVERSIZED_BYTES)
    assert info.value.status_code == 413


# --- success shapes ------------------------------------------------------------------------


def test_index_list_is_bare_json_array(raw, admin_headers):
    created = raw.post(
        "/api/v2/indexes",
        content=json.dumps({"name": unique("raw-list")}).encode(),
        headers=_json_headers(admin_headers),
    )
    assert created.status_code in (200, 201), created.text
    index_id = created.json()["index_id"]
    for params in ({}, {"include_defaults": "true"}, {"include_defaults": "false"}):
        resp = raw.get("/api/v2/indexes", params=params, headers=admin_headers)
        assert resp.status_code == 200, resp.text
        assert _media_type(resp) == "application/json"
        body = resp.json()
        assert isinstance(body, list), body
        assert all(isinstance(i, dict) and INDEX_FIELDS <= set(i) for i in body), body
        assert index_id in [i["index_id"] for i in body]


def test_index_pages_are_cursor_envelopes(raw, admin_headers):
    created = raw.post(
        "/api/v2/indexes",
        content=json.dumps({"name": unique("raw-pages")}).encode(),
        headers=_json_headers(admin_headers),
    )
    assert created.status_code in (200, 201), created.text
    index_id = created.json()["index_id"]
    for sub in ("videos", "prompt-runs"):
        resp = raw.get(f"/api/v2/indexes/{index_id}/{sub}", params={"limit": 50}, headers=admin_headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert isinstance(body, dict), body
        assert body["data"] == []
        pagination = body["pagination"]
        assert isinstance(pagination, dict), body
        assert pagination["limit"] == 50
        assert pagination["has_more"] is False
        assert pagination.get("next_cursor") is None


@pytest.mark.parametrize("limit", [0, 101])
def test_page_limit_out_of_range_is_422(raw, admin_headers, limit):
    created = raw.post(
        "/api/v2/indexes",
        content=json.dumps({"name": unique("raw-limit")}).encode(),
        headers=_json_headers(admin_headers),
    )
    index_id = created.json()["index_id"]
    resp = raw.get(f"/api/v2/indexes/{index_id}/videos", params={"limit": limit}, headers=admin_headers)
    assert_error_envelope(resp, 422, "validation_error")


def test_idempotent_create_replays_status_and_body(raw, admin_headers):
    headers = _json_headers(admin_headers)
    body = json.dumps({"name": unique("raw-replay")}).encode()
    first = raw.post("/api/v2/indexes", content=body, headers=headers)
    assert first.status_code in (200, 201), first.text
    second = raw.post("/api/v2/indexes", content=body, headers=headers)
    assert second.status_code == first.status_code
    assert second.json() == first.json()

    other = json.dumps({"name": unique("raw-replay-other")}).encode()
    conflict = raw.post("/api/v2/indexes", content=other, headers=headers)
    assert_error_envelope(conflict, 409, "idempotency_request_mismatch")


def test_processing_activity_ping_answers_json_object(raw, admin_headers):
    payload = {"event_id": str(uuid.uuid4()), "surface": "sdk", "reason": "authentication"}
    resp = raw.post(
        "/api/v2/auth/processing-activity",
        content=json.dumps(payload).encode(),
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    assert isinstance(resp.json(), dict)
    unauth = raw.post(
        "/api/v2/auth/processing-activity",
        content=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert_error_envelope(unauth, 401)
