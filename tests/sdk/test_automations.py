"""Index automations (contract §5, no SDK methods: raw requests with the admin key): the export
automation exports every run of its index that ends completed, exactly once, to its destination
connector; pause holds runs and resume exports them; PUT replaces the document and is
idempotent; every bad field is refused. The import automation's configuration is stored and
checked; the watch itself is in test_automation_watch.py."""

from __future__ import annotations

import time
from pathlib import Path

from spool_sdk_helpers import FIXTURES, assert_error_envelope, unique

SCHEMA = {"type": "object", "properties": {"duration_seconds": {"type": "number"}}, "required": ["duration_seconds"]}


def _video(client, index_id):
    job = client.videos.upload(file=FIXTURES / "h264_aac.mp4", title=unique("auto"), index_id=index_id)
    deadline = time.monotonic() + 30
    while client.import_jobs.retrieve(job.job_id).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _run(client, index_id, prompt_id):
    run = client.prompt_runs.execute(
        prompt_id=prompt_id, target={"type": "index", "index_id": index_id},
        video_segmentation_type="fixed", video_segment_duration=1, processing_model="probe",
    )
    return client.prompt_runs.wait_for_completion(run.run_id, poll_interval=0.1, timeout=30)


def _until(fetch, done, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fetch()
        if done(v):
            return v
        assert time.monotonic() < deadline, f"{what}: {v}"
        time.sleep(0.05)


def _setup(client, raw, admin_headers, spool_server, scopes=("export",)):
    index = client.indexes.create(name=unique("automated")).index_id
    root = Path(spool_server.local_root) / unique("dest")
    root.mkdir()
    r = raw.post(
        "/api/v2/connectors/local",
        json={"name": unique("dest"), "root": str(root), "scopes": list(scopes), "export_base_path": "out"},
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    prompt = client.prompts.create(name=unique("facts"), prompt_text="Report the media facts.", json_schema=SCHEMA)
    return index, r.json()["connector_id"], root, prompt.prompt_id


def test_the_export_automation_exports_each_completed_run_once_and_pause_holds_runs(client, raw, admin_headers, spool_server):
    index, conn, root, prompt = _setup(client, raw, admin_headers, spool_server)
    url = f"/api/v2/indexes/{index}/automations/export"
    assert_error_envelope(raw.get(url, headers=admin_headers), 404, "automation_not_found")
    assert_error_envelope(raw.post(f"{url}/pause", headers=admin_headers), 404, "automation_not_found")
    body = {"enabled": True, "paused": False, "destination_connector_id": conn, "destination_subpath": "auto"}
    r = raw.put(url, json=body, headers=admin_headers)
    assert r.status_code == 200, r.text
    a = r.json()
    assert (a["type"], a["index_id"], a["enabled"], a["paused"], a["paused_at"]) == ("export", index, True, False, None)
    assert (a["destination_connector_id"], a["destination_subpath"], a["last_export_id"]) == (conn, "auto", None)
    # PUT is idempotent: the same document changes nothing.
    again = raw.put(url, json=body, headers=admin_headers).json()
    assert (again["automation_id"], again["updated_at"]) == (a["automation_id"], a["updated_at"])

    _video(client, index)
    run = _run(client, index, prompt)
    a = _until(lambda: raw.get(url, headers=admin_headers).json(), lambda v: v["last_export_id"], "the export automation")
    export = client.exports.wait_for_completion(a["last_export_id"], poll_interval=0.1, timeout=30)
    assert export.export_params["prompt_run_ids"] == [run.run_id] and export.destination_type == "connector"
    assert (root / "out" / "auto" / f"{export.export_id}.json").is_file()
    assert a["exported_runs"] == 1 and a["pending_run_ids"] == [] and a["last_triggered_at"]

    # Paused: a completed run waits; resumed: it is exported, once.
    paused = raw.post(f"{url}/pause", headers=admin_headers).json()
    assert paused["paused"] and paused["paused_at"]
    assert raw.post(f"{url}/pause", headers=admin_headers).json()["paused_at"] == paused["paused_at"]
    run2 = _run(client, index, prompt)
    held = _until(lambda: raw.get(url, headers=admin_headers).json(), lambda v: v["pending_run_ids"], "the held run")
    assert held["pending_run_ids"] == [run2.run_id] and held["last_export_id"] == export.export_id
    resumed = raw.post(f"{url}/resume", headers=admin_headers).json()
    assert not resumed["paused"]
    done = _until(lambda: raw.get(url, headers=admin_headers).json(), lambda v: v["last_export_id"] != export.export_id, "the resumed export")
    second = client.exports.wait_for_completion(done["last_export_id"], poll_interval=0.1, timeout=30)
    assert second.export_params["prompt_run_ids"] == [run2.run_id]
    time.sleep(0.3)
    final = raw.get(url, headers=admin_headers).json()
    assert final["exported_runs"] == 2 and final["pending_run_ids"] == []
    exports = [e for e in client.exports.list(limit=100) if e.target_id == index]
    assert len(exports) == 2, exports


def test_bad_automation_documents_are_refused_with_the_field_named(client, raw, admin_headers, spool_server):
    index, conn, _root, prompt = _setup(client, raw, admin_headers, spool_server, scopes=("import",))
    imp = f"/api/v2/indexes/{index}/automations/import"
    exp = f"/api/v2/indexes/{index}/automations/export"
    good = {
        "enabled": True, "paused": False, "connector_id": conn, "source_prefix": "incoming/", "file_pattern": "*.mp4",
        "recursive": True, "debounce_interval": "10m", "prompt_preset": {"prompt_id": prompt},
    }
    r = raw.put(imp, json=good, headers=admin_headers)
    assert r.status_code == 200, r.text
    a = r.json()
    assert (a["type"], a["debounce_interval"], a["prompt_preset"]["prompt_id"], a["watching"]) == ("import", "10m", prompt, True)
    for bad, code, field in [
        ({**good, "debounce_interval": "7m"}, 422, "debounce_interval"),
        ({**good, "prompt_preset": {}}, 422, "prompt_preset"),
        ({**good, "prompt_preset": {"prompt_id": prompt, "video_segmentation_type": "weekly"}}, 422, "prompt_preset.video_segmentation_type"),
        ({**good, "prompt_preset": {"prompt_id": prompt, "video_segmentation_type": "fixed"}}, 422, "video_segment_duration"),
        ({**good, "file_pattern": " "}, 422, "file_pattern"),
        ({k: v for k, v in good.items() if k != "connector_id"}, 422, "connector_id"),
        ({k: v for k, v in good.items() if k != "debounce_interval"}, 422, "debounce_interval"),
        ({k: v for k, v in good.items() if k != "source_prefix"}, 422, "source_prefix"),
        ({**good, "source_prefix": "in\ncoming/"}, 422, "source_prefix"),
        ({**good, "source_prefix": "x" * 1025}, 422, "source_prefix"),
        ({**good, "file_pattern": "*.{mp4,mov"}, 422, "file_pattern"),
        ({**good, "recursive": "yes"}, 422, "recursive"),
        ({**good, "enabled": 1}, 422, "enabled"),
        ({**good, "prompt_preset": {"prompt_id": prompt, "processing_model": "no-such-model"}}, 422, "prompt_preset.processing_model"),
        ({**good, "prompt_preset": {"prompt_id": prompt, "audio_segmentation_type": "smart"}}, 422, "prompt_preset.audio_segmentation_type"),
        ({**good, "prompt_preset": {"prompt_id": prompt, "video_segmentation_type": "fixed", "video_segment_duration": 301}}, 422, "prompt_preset.video_segment_duration"),
    ]:
        r = raw.put(imp, json=bad, headers=admin_headers)
        assert r.status_code == code, (bad, r.text)
        assert r.json()["error"]["details"].get("field") == field, (bad, r.text)
    assert_error_envelope(raw.put(imp, json={**good, "prompt_preset": {"prompt_id": "prompt_01JD0000000000000000000000"}}, headers=admin_headers), 404, "resource_prompt_not_found")
    assert_error_envelope(raw.put(imp, json={**good, "connector_id": "conn_01JD0000000000000000000000"}, headers=admin_headers), 404, "resource_connector_not_found")
    # Nothing refused changed what was stored.
    assert raw.get(imp, headers=admin_headers).json()["updated_at"] == a["updated_at"]
    # The export automation needs a connector with the export scope, and a path inside it.
    r = raw.put(exp, json={"destination_connector_id": conn}, headers=admin_headers)
    assert_error_envelope(r, 422, "connector_scope_missing")
    _i, export_conn, _r, _p = _setup(client, raw, admin_headers, spool_server, scopes=("export",))
    for sub in ["../x", "/abs", "a//b", "%2e%2e", "a\\..\\b"]:
        r = raw.put(exp, json={"destination_connector_id": export_conn, "destination_subpath": sub}, headers=admin_headers)
        assert r.status_code == 422, (sub, r.text)
        assert r.json()["error"]["details"]["field"] == "destination_subpath", (sub, r.text)
    assert_error_envelope(raw.get("/api/v2/indexes/idx_01JD0000000000000000000000/automations/export", headers=admin_headers), 404, "resource_index_not_found")
    # Pause and resume keep the configuration.
    p = raw.post(f"{imp}/pause", headers=admin_headers).json()
    assert p["paused"] and p["file_pattern"] == "*.mp4"
    r = raw.post(f"{imp}/resume", headers=admin_headers).json()
    assert not r["paused"] and r["debounce_interval"] == "10m"


def test_a_prompt_named_by_an_import_automation_is_in_use_and_a_deleted_index_drops_its_automations(client, raw, admin_headers, spool_server):
    index, conn, _root, prompt = _setup(client, raw, admin_headers, spool_server, scopes=("import",))
    imp = f"/api/v2/indexes/{index}/automations/import"
    body = {
        "enabled": True, "paused": False, "connector_id": conn, "source_prefix": "incoming/", "file_pattern": "*.mp4",
        "recursive": True, "debounce_interval": "10m", "prompt_preset": {"prompt_id": prompt},
    }
    r = raw.put(imp, json=body, headers=admin_headers)
    assert r.status_code == 200, r.text
    auto_id = r.json()["automation_id"]
    # In use: its usage says so, and a delete without force is refused.
    assert raw.get(f"/api/v2/prompts/{prompt}/usage", headers=admin_headers).json()["is_in_use"] is True
    r = raw.delete(f"/api/v2/prompts/{prompt}", headers=admin_headers)
    assert r.status_code == 409 and "force" in r.json()["error"]["message"], r.text
    listed = raw.get(f"/api/v2/console/lists/automations?index_id={index}", headers=admin_headers).json()["items"]
    assert [a["automation_id"] for a in listed] == [auto_id]
    # The index deleted: its automations leave the state (no list shows them), and the prompt
    # is no longer in use.
    client.indexes.delete(index)
    _until(lambda: raw.get(f"/api/v2/indexes/{index}/deletion", headers=admin_headers).json(),
           lambda d: d.get("status") in ("completed", "deleted"), "the index deleted")
    listed = _until(lambda: raw.get(f"/api/v2/console/lists/automations?index_id={index}", headers=admin_headers).json()["items"],
                    lambda items: items == [], "the automation gone")
    assert listed == []
    assert raw.get(f"/api/v2/prompts/{prompt}/usage", headers=admin_headers).json()["is_in_use"] is False
    r = raw.delete(f"/api/v2/prompts/{prompt}", headers=admin_headers)
    assert r.status_code == 200, r.text
