"""The OpenAPI description the server serves: readable without a key, equal to the committed
copy (which `cargo test` keeps equal to the route table), and naming every route the SDK calls
with the SDK's own model as its response schema."""

from __future__ import annotations

import json
from pathlib import Path

COMMITTED = Path(__file__).resolve().parents[2] / "crates/api/openapi/openapi.json"


def test_the_served_description_is_the_committed_one_and_needs_no_key(raw):
    r = raw.get("/api/v2/openapi.json", headers={"Authorization": ""})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc == json.loads(COMMITTED.read_text())
    assert doc["openapi"].startswith("3.1")


def test_sdk_routes_are_described_with_the_sdk_models(raw):
    doc = raw.get("/api/v2/openapi.json").json()
    paths = doc["paths"]

    def ok_schema(path, method):
        op = paths[path][method]
        code = next(c for c in op["responses"] if c[0] == "2" and c != "2XX")
        return op["responses"][code]["content"]["application/json"]["schema"]

    assert ok_schema("/import-jobs/{job_id}", "get") == {"$ref": "#/components/schemas/ImportJob"}
    assert ok_schema("/exports", "get")["items"] == {"$ref": "#/components/schemas/Export"}
    assert ok_schema("/indexes/{index_id}/videos", "get")["properties"]["data"]["items"] == {"$ref": "#/components/schemas/Video"}
    assert "export_id" in doc["components"]["schemas"]["Export"]["required"]
    envelope = doc["components"]["schemas"]["ErrorEnvelope"]["properties"]["error"]
    assert sorted(envelope["required"]) == ["code", "details", "message", "request_id"]
    # An unknown route is not described, and answers the envelope.
    r = raw.get("/api/v2/no-such-route")
    assert r.status_code == 404 and set(r.json()["error"]) == {"code", "message", "details", "request_id"}


def test_the_described_success_status_is_the_one_answered(raw, admin_headers):
    """A route's success status in the description is what it answers (issue 31, item 7:
    `POST /prompt-runs/execute` and `DELETE /indexes/{id}` were described as 202 and answered 200)."""
    paths = raw.get("/api/v2/openapi.json").json()["paths"]

    def described(path, method):
        return {c for c in paths[path][method]["responses"] if c.startswith("2") and c != "2XX"}

    index = raw.post("/api/v2/indexes", json={"name": "openapi-status"}, headers=admin_headers)
    assert index.status_code in {int(c) for c in described("/indexes", "post")}, index.text
    index_id = index.json()["index_id"]
    prompt = raw.post(
        "/api/v2/prompts",
        json={"name": "openapi-status", "prompt_text": "Describe each segment.", "json_schema": {"type": "object"}},
        headers=admin_headers,
    )
    assert prompt.status_code in {int(c) for c in described("/prompts", "post")}, prompt.text
    run = raw.post(
        "/api/v2/prompt-runs/execute",
        json={"prompt_id": prompt.json()["prompt_id"], "target": {"type": "index", "index_id": index_id}},
        headers=admin_headers,
    )
    assert str(run.status_code) in described("/prompt-runs/execute", "post"), (run.status_code, described("/prompt-runs/execute", "post"))
    gone = raw.delete(f"/api/v2/indexes/{index_id}", headers=admin_headers)
    assert str(gone.status_code) in described("/indexes/{index_id}", "delete"), (gone.status_code, described("/indexes/{index_id}", "delete"))
