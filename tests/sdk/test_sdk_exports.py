"""Exports through the official SDK (contract §2.4, §1.8, §1.9, §6.2), end to end.

One module-wide corpus (an index with three videos, a run of the built-in `probe` and a run of
the worker with video-level results over it; another index with its own run; a run over a list
of playground videos) feeds every test. An export is one JSON document (`spool.export.v1`),
made once and kept: a download export streams the kept bytes (`application/json` with its
Content-Length), a connector export is written to `<root>/<export_base_path>/<subpath>/<id>.json`
of a local connector. Every Export JSON the server shows, at every status (`pending`,
`processing` running and retrying, `completed`, `failed`), goes through the SDK's `Export`
model and its validators.

Covered: both export kinds; the document checked against the API (runs, videos, segments and
their metadata as `prompt_runs.list_results` shows them, video-level results); the same bytes on
every download, their SHA-256 the Export's; `prompt_run_ids`; connector destinations (the file,
its hash, `destination_uri`) and the refusals (`destination_subpath` that could leave the base
path, a connector without the `export` scope, runs of another index, unknown targets); the list,
newest first; the Idempotency-Key the SDK sends; `download_url()` → None over plain http;
`export.ready` / `export.failed` webhooks; a read-only key.

Regression tests are named after what broke (a connector export that followed a symbolic link
out of its local root).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set

import pytest
from videovector import (
    AuthorizationError,
    ConflictError,
    Export,
    ExportDownloadUrlResult,
    NotFoundError,
    ProcessingError,
    ValidationError,
    VideoVector,
)

from prompt_worker import PROCESSOR_NAME
from spool_sdk_helpers import FIXTURES, assert_error_envelope, assert_timestamp, unique
from test_sdk_webhooks import Receiver, verify

WAIT_S = 30.0
MP4 = "h264_aac.mp4"  # 2 s: two 1 s segments
MOV = "h264_faststart.mov"  # 1 s: one 1 s segment
HEX64 = set("0123456789abcdef")
DOC_KEYS = {"format", "export_id", "export_type", "target_id", "created_at", "index", "prompt_runs", "videos"}
QUEUE_STATUS = {
    "pending": {"queued"},
    "processing": {"running", "retrying"},
    "completed": {"succeeded"},
    "failed": {"failed"},
}
NO_EXPORT = "exp_01KB0000000000000000000000"

# What the probe's answers satisfy.
PROBE_SCHEMA = {
    "type": "object",
    "properties": {"duration_seconds": {"type": "number"}, "media_type": {"type": "string"}},
    "required": ["duration_seconds", "media_type"],
}
# What the worker's answers (mode=valid) satisfy, per segment and per video.
WORKER_SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "bytes_read": {"type": "integer"}},
    "required": ["label", "bytes_read"],
}
VIDEO_SCHEMA = {
    "type": "object",
    "properties": {"segment_count": {"type": "integer"}, "labels": {"type": "array", "items": {"type": "string"}}},
    "required": ["segment_count", "labels"],
}


# ---------------------------------------------------------------------------------------------
# the corpus


@dataclass(frozen=True)
class Corpus:
    index: str
    index_name: str
    videos: List[str]  # the index's videos in upload order: MP4, MOV, then one no run has seen
    probe_run: str  # the probe over the index (1 s segments)
    worker_run: str  # the worker over the index, with video-level results
    prompts: Dict[str, dict]  # run id -> what its prompt was created with
    other_index: str
    other_video: str
    other_run: str
    loose_video: str  # a playground video
    loose_run: str  # a run over [loose_video], no index


def _wait_job(client: VideoVector, job_id: str):
    deadline = time.monotonic() + WAIT_S
    while True:
        job = client.import_jobs.retrieve(job_id)
        if job.status in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def _upload(client: VideoVector, name: str, index_id: Optional[str]) -> str:
    job = _wait_job(client, client.videos.upload(file=FIXTURES / name, title=unique(name), index_id=index_id).job_id)
    assert (job.status, job.progress.imported) == ("completed", 1), job
    (out,) = job.outputs.items
    return out.video_id


def _run(client: VideoVector, prompts: Dict[str, dict], target: dict, *, worker: bool = False) -> str:
    spec: dict = {"name": unique("export-run"), "prompt_text": "Describe the clip. mode=valid"}
    if worker:
        spec["json_schema"] = WORKER_SCHEMA
        spec["video_level"] = {"instructions_text": "Gather the labels. mode=valid", "json_schema": VIDEO_SCHEMA}
    else:
        spec["json_schema"] = PROBE_SCHEMA
    prompt = client.prompts.create(**spec)
    run = client.prompt_runs.execute(
        prompt_id=prompt.prompt_id,
        target=target,
        video_segmentation_type="fixed",
        video_segment_duration=1,
        processing_model=PROCESSOR_NAME if worker else "probe",
    )
    done = client.prompt_runs.wait_for_completion(run.run_id, poll_interval=0.1, timeout=WAIT_S)
    assert done.status == "completed", done
    prompts[run.run_id] = {"prompt_id": prompt.prompt_id, "video_level": None, **spec}
    return run.run_id


@pytest.fixture(scope="module")
def corpus(spool_server) -> Iterator[Corpus]:
    client = VideoVector(api_key=spool_server.admin_key, base_url=spool_server.api_base, timeout=10, max_retries=0)
    try:
        name = unique("exported")
        index = client.indexes.create(name=name).index_id
        mp4, mov = _upload(client, MP4, index), _upload(client, MOV, index)
        prompts: Dict[str, dict] = {}
        probe_run = _run(client, prompts, {"type": "index", "index_id": index})
        worker_run = _run(client, prompts, {"type": "index", "index_id": index}, worker=True)
        late = _upload(client, MOV, index)  # in the index, in no run
        other_index = client.indexes.create(name=unique("elsewhere")).index_id
        other_video = _upload(client, MOV, other_index)
        other_run = _run(client, prompts, {"type": "index", "index_id": other_index})
        loose_video = _upload(client, MOV, None)
        loose_run = _run(client, prompts, {"type": "videos", "video_ids": [loose_video]})
        yield Corpus(
            index=index, index_name=name, videos=[mp4, mov, late], probe_run=probe_run, worker_run=worker_run,
            prompts=prompts, other_index=other_index, other_video=other_video, other_run=other_run,
            loose_video=loose_video, loose_run=loose_run,
        )
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# helpers


def _check_model(body: dict) -> Export:
    """The SDK's `Export` model (with its validators) accepts the JSON, and Spool's own rules
    hold: the queue status fits the status; only a completed download has its download path."""
    e = Export.model_validate(body)
    assert e.export_id.startswith("exp_") and e.export_type in ("index", "prompt_run"), body
    assert e.status in QUEUE_STATUS and e.queue_status in QUEUE_STATUS[e.status], body
    assert e.destination_type in ("download", "connector"), body
    assert (e.max_attempts, 0 <= e.attempts <= 3) == (3, True), body
    assert_timestamp(e.created_at)
    assert_timestamp(e.updated_at)
    assert_timestamp(e.available_at)
    downloadable = e.status == "completed" and e.destination_type == "download"
    assert e.download_url == (f"/api/v2/exports/{e.export_id}/download" if downloadable else None), body
    assert (e.status == "pending") == (e.attempts == 0) == (e.started_at is None), body
    assert (e.completed_at is not None) == (e.status in ("completed", "failed")), body
    assert (e.error_message is not None) == (e.status == "failed"), body
    if e.status == "completed":
        assert e.file_size_bytes and e.file_size_bytes > 0, body
        assert len(body["sha256"]) == 64 and set(body["sha256"]) <= HEX64, body
        assert e.last_error is None, body
    if e.destination_type == "download":
        assert (e.destination_base_path, e.destination_subpath, e.destination_uri) == (None, None, None), body
    return e


def _get(raw, h, export_id: str) -> dict:
    resp = raw.get(f"/api/v2/exports/{export_id}", headers=h)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _settle(raw, h, export_id: str, seen: Optional[List[dict]] = None) -> dict:
    """Retrieve until the export is completed or failed; every JSON seen passes `_check_model`."""
    deadline = time.monotonic() + WAIT_S
    while True:
        body = _get(raw, h, export_id)
        _check_model(body)
        if seen is not None:
            seen.append(body)
        if body["status"] in ("completed", "failed"):
            return body
        assert time.monotonic() < deadline, f"export not finished within {WAIT_S} s: {body!r}"
        time.sleep(0.02)


def _created(result) -> str:
    """The 202 answer: an id and a status (the SDK's `ExportCreateResult`)."""
    assert result.export_id.startswith("exp_") and result.status in QUEUE_STATUS, result
    return result.export_id


def _download(client: VideoVector, export_id: str) -> bytes:
    buf = io.BytesIO()
    n = client.exports.download(export_id, buf)
    data = buf.getvalue()
    assert n == len(data) > 0
    return data


def _segments(client: VideoVector, run_id: str, video_id: str) -> List[dict]:
    """A run's results for a video as the API lists them, in the artifact's shape."""
    return [
        {
            "segment_id": r.segment_id,
            "start_time": r.start_time,
            "end_time": r.end_time,
            "status": "completed",
            "metadata": r.metadata,
            "metadata_text": r.metadata_text,
            "failure": None,
        }
        for r in client.prompt_runs.list_results(run_id, video_id=video_id, limit=100).auto_paging_iter()
    ]


def _check_document(
    client: VideoVector, raw, h, corpus: Corpus, doc: dict, export: dict, runs: List[str], videos: List[str]
) -> None:
    """The artifact says what the API says: its runs (with their prompts), its videos (their
    facts), and per video and run its segments' results and its video-level result."""
    assert set(doc) == DOC_KEYS, sorted(doc)
    assert doc["format"] == "spool.export.v1"
    assert (doc["export_id"], doc["export_type"], doc["target_id"]) == (
        export["export_id"], export["export_type"], export["target_id"],
    )
    assert doc["created_at"] == export["created_at"]
    assert [r["run_id"] for r in doc["prompt_runs"]] == runs
    for r in doc["prompt_runs"]:
        run = dict(r)
        prompt = run.pop("prompt")
        assert run == raw.get(f"/api/v2/prompt-runs/{r['run_id']}", headers=h).json()
        spec = corpus.prompts[r["run_id"]]
        assert (prompt["name"], prompt["prompt_text"], prompt["json_schema"]) == (
            spec["name"], spec["prompt_text"], spec["json_schema"],
        )
        assert prompt["video_level"] == spec.get("video_level"), prompt
    assert [v["video_id"] for v in doc["videos"]] == videos
    for v in doc["videos"]:
        api = raw.get(f"/api/v2/videos/{v['video_id']}", headers=h).json()
        assert set(v) == {"video_id", "title", "media_type", "duration_seconds", "media", "source", "results"}
        assert (v["title"], v["media_type"], v["duration_seconds"], v["media"]) == (
            api["title"], api["media_type"], api["duration_seconds"], api["media"],
        )
        assert v["source"] == {"path": api["source"]["path"], "sha256": api["sha256"], "size_bytes": api["size_bytes"]}
        in_runs = [r for r in runs if v["video_id"] in _videos_of(client, corpus, r)]
        assert [res["run_id"] for res in v["results"]] == in_runs, v["video_id"]
        for res in v["results"]:
            assert set(res) == {"run_id", "segmentation_method", "segments", "video_level"}
            assert res["segmentation_method"] == "fixed"
            assert res["segments"] == _segments(client, res["run_id"], v["video_id"])
            assert res["segments"], "a video of a completed run has results"
            vr = raw.get(f"/api/v2/prompt-runs/{res['run_id']}/videos/{v['video_id']}/video-result", headers=h)
            if corpus.prompts[res["run_id"]].get("video_level") is None:
                assert vr.status_code == 404 and res["video_level"] is None
            else:
                assert vr.status_code == 200 and res["video_level"] == vr.json()
                assert res["video_level"]["metadata"]["labels"] == [s["metadata"]["label"] for s in res["segments"]]


def _videos_of(client: VideoVector, corpus: Corpus, run_id: str) -> Set[str]:
    if run_id in (corpus.probe_run, corpus.worker_run):
        return set(corpus.videos[:2])
    if run_id == corpus.other_run:
        return {corpus.other_video}
    assert run_id == corpus.loose_run
    return {corpus.loose_video}


def _local_connector(raw, h, spool_server, *, scopes=("import", "export"), base: Optional[str] = "out"):
    root = spool_server.local_root / ("exports-" + uuid.uuid4().hex[:10])
    root.mkdir()
    body = {"name": unique("export-dest"), "root": str(root), "scopes": list(scopes)}
    if base is not None:
        body["export_base_path"] = base
    resp = raw.post("/api/v2/connectors/local", json=body, headers=h)
    assert resp.status_code == 201, resp.text
    return resp.json()["connector_id"], root


@pytest.fixture
def receiver():
    """A webhook receiver on loopback (test_sdk_webhooks.py)."""
    r = Receiver()
    yield r
    r.close()


def _files(root) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# exports that work


def test_an_index_export_downloads_one_json_document_that_says_what_the_api_says(client, raw, admin_headers, corpus):
    h = admin_headers
    created = client.exports.create_index_export(corpus.index)  # no body at all
    export_id = _created(created)
    done = client.exports.wait_for_completion(export_id, poll_interval=0.2, timeout=60)
    assert (done.export_id, done.export_type, done.target_id, done.status) == (export_id, "index", corpus.index, "completed")
    assert (done.destination_type, done.destination_connector_id, done.queue_status, done.attempts) == ("download", None, "succeeded", 1)
    assert done.download_url == f"/api/v2/exports/{export_id}/download"
    assert done.user_id and done.error_message is None and done.last_error is None
    assert_timestamp(done.started_at)
    assert_timestamp(done.completed_at)
    body = _get(raw, h, export_id)
    assert _check_model(body) == done == client.exports.retrieve(export_id)
    assert body["export_params"] == {"prompt_run_ids": [], "destination_subpath": None}

    data = _download(client, export_id)
    assert len(data) == done.file_size_bytes
    assert hashlib.sha256(data).hexdigest() == body["sha256"]
    # The same bytes on every download, streamed or not, with what the SDK demands (§1.8).
    assert _download(client, export_id) == data
    assert b"".join(client.exports.iter_download(export_id, chunk_size=1000)) == data
    resp = raw.get(f"/api/v2/exports/{export_id}/download", headers={**h, "Accept-Encoding": "gzip"})
    assert resp.status_code == 200 and resp.content == data
    assert resp.headers["content-type"].split(";")[0] == "application/json"
    assert resp.headers["content-length"] == str(len(data))
    assert resp.headers.get("content-encoding", "identity") == "identity"

    doc = json.loads(data)
    assert doc["index"] == {"index_id": corpus.index, "name": corpus.index_name}
    # Every run of the index, oldest first; every video of the index, the one no run saw too.
    _check_document(client, raw, h, corpus, doc, body, [corpus.probe_run, corpus.worker_run], corpus.videos)
    assert doc["videos"][2]["results"] == []


def test_a_kept_artifact_gives_the_same_bytes_after_the_index_changes(client, raw, admin_headers, corpus):
    h = admin_headers
    first = client.exports.create_index_export(corpus.other_index).export_id
    body = _settle(raw, h, first)
    data = _download(client, first)
    assert [r["run_id"] for r in json.loads(data)["prompt_runs"]] == [corpus.other_run]
    # A new run of the index changes what a new export holds, not the kept one.
    prompts: Dict[str, dict] = {}
    newer = _run(client, prompts, {"type": "index", "index_id": corpus.other_index})
    again = _download(client, first)
    assert again == data and hashlib.sha256(again).hexdigest() == body["sha256"]
    assert _get(raw, h, first) == body
    second = client.exports.create_index_export(corpus.other_index).export_id
    _settle(raw, h, second)
    doc = json.loads(_download(client, second))
    assert [r["run_id"] for r in doc["prompt_runs"]] == [corpus.other_run, newer]
    ((video),) = doc["videos"]
    assert [r["run_id"] for r in video["results"]] == [corpus.other_run, newer]


def test_a_prompt_run_export_holds_only_its_run(client, raw, admin_headers, corpus):
    h = admin_headers
    export_id = _created(client.exports.create_prompt_run_export(corpus.worker_run))
    body = _settle(raw, h, export_id)
    assert (body["status"], body["export_type"], body["target_id"]) == ("completed", "prompt_run", corpus.worker_run)
    assert body["export_params"] == {"prompt_run_ids": None, "destination_subpath": None}
    data = _download(client, export_id)
    assert hashlib.sha256(data).hexdigest() == body["sha256"] and len(data) == body["file_size_bytes"]
    doc = json.loads(data)
    assert doc["index"] == {"index_id": corpus.index, "name": corpus.index_name}
    # The run's own videos (not the index's third one), with this run's results only.
    _check_document(client, raw, h, corpus, doc, body, [corpus.worker_run], corpus.videos[:2])
    assert all(v["results"][0]["video_level"]["status"] == "completed" for v in doc["videos"])

    # A run over a list of playground videos: no index.
    loose = client.exports.create_prompt_run_export(corpus.loose_run).export_id
    loose_body = _settle(raw, h, loose)
    loose_doc = json.loads(_download(client, loose))
    assert loose_doc["index"] is None
    _check_document(client, raw, h, corpus, loose_doc, loose_body, [corpus.loose_run], [corpus.loose_video])


def test_prompt_run_ids_limit_an_index_export_to_those_runs(client, raw, admin_headers, corpus):
    h = admin_headers
    export_id = client.exports.create_index_export(corpus.index, prompt_run_ids=[corpus.probe_run, corpus.probe_run]).export_id
    body = _settle(raw, h, export_id)
    assert body["export_params"]["prompt_run_ids"] == [corpus.probe_run]  # duplicates dropped
    doc = json.loads(_download(client, export_id))
    # Still every video of the index; results of the named run only.
    _check_document(client, raw, h, corpus, doc, body, [corpus.probe_run], corpus.videos)
    both = client.exports.create_index_export(corpus.index, prompt_run_ids=[corpus.probe_run, corpus.worker_run]).export_id
    both_body = _settle(raw, h, both)
    assert both_body["export_params"]["prompt_run_ids"] == [corpus.probe_run, corpus.worker_run]
    _check_document(
        client, raw, h, corpus, json.loads(_download(client, both)), both_body, [corpus.probe_run, corpus.worker_run], corpus.videos
    )


def test_an_export_to_a_local_connector_is_written_inside_its_export_base_path(client, raw, admin_headers, corpus, spool_server):
    h = admin_headers
    conn, root = _local_connector(raw, h, spool_server)
    export_id = client.exports.create_index_export(
        corpus.index, destination_connector_id=conn, destination_subpath="daily/2026-12"
    ).export_id
    done = client.exports.wait_for_completion(export_id, poll_interval=0.2, timeout=60)
    assert (done.status, done.destination_type, done.destination_connector_id, done.download_url) == ("completed", "connector", conn, None)
    assert (done.destination_base_path, done.destination_subpath) == ("out", "daily/2026-12")
    assert done.destination_uri == f"file:///out/daily/2026-12/{export_id}.json"
    assert done.export_params["destination_subpath"] == "daily/2026-12"
    body = _get(raw, h, export_id)
    _check_model(body)
    # The object, and nothing else (no staging file left behind).
    assert _files(root) == [f"out/daily/2026-12/{export_id}.json"]
    written = (root / "out" / "daily" / "2026-12" / f"{export_id}.json").read_bytes()
    assert len(written) == done.file_size_bytes and hashlib.sha256(written).hexdigest() == body["sha256"]
    doc = json.loads(written)
    _check_document(client, raw, h, corpus, doc, body, [corpus.probe_run, corpus.worker_run], corpus.videos)

    # It is not a download: 409 export_not_downloadable, and no URL.
    with pytest.raises(ConflictError) as e:
        _download(client, export_id)
    assert e.value.error_code == "export_not_downloadable"
    assert_error_envelope(raw.get(f"/api/v2/exports/{export_id}/download", headers=h), 409, "export_not_downloadable")
    assert client.exports.download_url(export_id) is None
    minted = raw.post(f"/api/v2/exports/{export_id}/download-url", headers=h).json()
    ExportDownloadUrlResult.model_validate(minted)
    assert (minted["destination_type"], minted["destination_connector_id"], minted["download_url"]) == ("connector", conn, None)

    # A run export with no subpath lands in the base path itself; a trailing / is dropped.
    flat = client.exports.create_prompt_run_export(corpus.probe_run, destination_connector_id=conn).export_id
    flat_body = _settle(raw, h, flat)
    assert (flat_body["status"], flat_body["destination_subpath"], flat_body["destination_uri"]) == (
        "completed", "", f"file:///out/{flat}.json",
    )
    assert hashlib.sha256((root / "out" / f"{flat}.json").read_bytes()).hexdigest() == flat_body["sha256"]
    slash = client.exports.create_prompt_run_export(corpus.probe_run, destination_connector_id=conn, destination_subpath="weekly/").export_id
    slash_body = _settle(raw, h, slash)
    assert (slash_body["destination_subpath"], slash_body["destination_uri"]) == ("weekly", f"file:///out/weekly/{slash}.json")
    assert (root / "out" / "weekly" / f"{slash}.json").is_file()

    # A connector without an export_base_path: the root itself.
    bare, bare_root = _local_connector(raw, h, spool_server, base=None)
    at_root = client.exports.create_prompt_run_export(corpus.probe_run, destination_connector_id=bare, destination_subpath="x").export_id
    at_root_body = _settle(raw, h, at_root)
    assert (at_root_body["status"], at_root_body["destination_uri"]) == ("completed", f"file:///x/{at_root}.json")
    assert at_root_body["destination_base_path"] in ("", None)
    assert _files(bare_root) == [f"x/{at_root}.json"]


def test_the_list_is_newest_first_and_the_sdk_idempotency_key_replays(client, raw, admin_headers, corpus):
    h = admin_headers
    a = client.exports.create_prompt_run_export(corpus.probe_run).export_id
    b = client.exports.create_index_export(corpus.other_index).export_id
    listed = client.exports.list()
    assert [e.export_id for e in listed[:2]] == [b, a]
    assert [e.export_id for e in client.exports.list(limit=1)] == [b]
    assert len(client.exports.list(limit=100)) <= 100
    raw_list = raw.get("/api/v2/exports", params={"limit": 100}, headers=h).json()
    assert isinstance(raw_list, list) and [e["export_id"] for e in raw_list[:2]] == [b, a]
    stamps = [e["created_at"] for e in raw_list]
    assert stamps == sorted(stamps, reverse=True)
    for bad in (0, 101, "x"):
        assert_error_envelope(raw.get("/api/v2/exports", params={"limit": bad}, headers=h), 422, "validation_error")
    with pytest.raises(ValidationError):
        client.exports.list(limit=0)

    # The same key and body answer the same export; another body under the key is refused.
    key = unique("export-key")
    first = client.exports.create_index_export(corpus.index, prompt_run_ids=[corpus.probe_run], idempotency_key=key)
    again = client.exports.create_index_export(corpus.index, prompt_run_ids=[corpus.probe_run], idempotency_key=key)
    assert again.export_id == first.export_id
    with pytest.raises(ConflictError):
        client.exports.create_index_export(corpus.index, prompt_run_ids=[corpus.worker_run], idempotency_key=key)
    assert [e.export_id for e in client.exports.list(limit=3)].count(first.export_id) == 1
    for e in (a, b, first.export_id):
        _settle(raw, h, e)


def test_the_sdk_gets_no_download_url_because_the_server_base_is_http(client, raw, admin_headers, corpus):
    h = admin_headers
    export_id = client.exports.create_prompt_run_export(corpus.probe_run).export_id
    _settle(raw, h, export_id)
    assert client.exports.download_url(export_id) is None
    resp = raw.post(f"/api/v2/exports/{export_id}/download-url", headers=h)
    assert resp.status_code == 200, resp.text
    minted = resp.json()
    ExportDownloadUrlResult.model_validate(minted)
    assert (minted["export_id"], minted["status"], minted["destination_type"]) == (export_id, "completed", "download")
    assert (minted["destination_connector_id"], minted["download_url"]) == (None, None)
    # The status field is the authenticated path, never a bearer URL.
    assert client.exports.retrieve(export_id).download_url == f"/api/v2/exports/{export_id}/download"
    # Without a key, only a valid minted token opens the download.
    assert_error_envelope(raw.get(f"/api/v2/exports/{export_id}/download"), 401)
    forged = "v1." + "A" * 40 + "." + "B" * 43
    assert_error_envelope(raw.get(f"/api/v2/exports/{export_id}/download", params={"token": forged}), 401, "download_token_invalid")
    with pytest.raises(NotFoundError):
        client.exports.download_url(NO_EXPORT)


def test_every_export_the_server_shows_passes_the_sdk_model_at_every_status(client, raw, admin_headers, corpus, spool_server):
    """pending (the 202), processing (running, and retrying after a failed write), completed,
    failed: the SDK's validators accept each retrieve and list answer."""
    h = admin_headers
    seen: List[dict] = []

    # A write that fails (the base path is a file), then works: attempt 1 fails, a durable
    # timer brings attempt 2 about 2 s later, and it writes the kept artifact.
    conn, root = _local_connector(raw, h, spool_server)
    (root / "out").write_bytes(b"in the way")
    resp = raw.post(f"/api/v2/exports/prompt-run/{corpus.probe_run}", json={"destination_connector_id": conn, "destination_subpath": "r"}, headers=h)
    assert resp.status_code == 202, resp.text
    seen.append(resp.json())
    _check_model(resp.json())
    retried = resp.json()["export_id"]
    deadline = time.monotonic() + WAIT_S
    while True:
        body = _get(raw, h, retried)
        _check_model(body)
        seen.append(body)
        if body["queue_status"] == "retrying":
            break
        assert body["status"] in ("pending", "processing") and time.monotonic() < deadline, body
        time.sleep(0.02)
    assert (body["status"], body["attempts"], body["error_message"]) == ("processing", 1, None), body
    assert body["last_error"] and body["available_at"] > body["created_at"], body
    assert client.exports.retrieve(retried).queue_status == "retrying"
    assert retried in [e.export_id for e in client.exports.list(limit=100)]
    (root / "out").unlink()
    done = _settle(raw, h, retried, seen)
    assert (done["status"], done["attempts"], done["queue_status"], done["last_error"]) == ("completed", 2, "succeeded", None), done
    written = (root / "out" / "r" / f"{retried}.json").read_bytes()
    assert hashlib.sha256(written).hexdigest() == done["sha256"]

    # A connector whose folder is gone: failed at once (not retryable), and the SDK's wait says so.
    gone, gone_root = _local_connector(raw, h, spool_server)
    shutil.rmtree(gone_root)
    resp = raw.post(f"/api/v2/exports/index/{corpus.index}", json={"destination_connector_id": gone}, headers=h)
    assert resp.status_code == 202, resp.text
    seen.append(resp.json())
    failed = resp.json()["export_id"]
    with pytest.raises(ProcessingError) as e:
        client.exports.wait_for_completion(failed, poll_interval=0.1, timeout=WAIT_S)
    assert e.value.details == {"export_id": failed}
    body = _settle(raw, h, failed, seen)
    assert (body["status"], body["queue_status"], body["attempts"]) == ("failed", "failed", 1), body
    assert body["error_message"] and body["error_message"] == body["last_error"]
    assert client.exports.retrieve(failed).status == "failed"
    assert_error_envelope(raw.get(f"/api/v2/exports/{failed}/download", headers=h), 409, "export_not_downloadable")
    assert client.exports.download_url(failed) is None

    # A download export, polled from its 202.
    resp = raw.post(f"/api/v2/exports/prompt-run/{corpus.loose_run}", headers=h)
    assert resp.status_code == 202, resp.text
    seen.append(resp.json())
    _settle(raw, h, resp.json()["export_id"], seen)

    for e in seen:
        _check_model(e)
    assert {"pending", "processing", "completed", "failed"} <= {e["status"] for e in seen}
    assert {"queued", "retrying", "succeeded", "failed"} <= {e["queue_status"] for e in seen}
    # Every export the list shows passes the model too (the SDK validates each).
    listed = raw.get("/api/v2/exports", params={"limit": 100}, headers=h).json()
    for e in listed:
        _check_model(e)
    assert [e.export_id for e in client.exports.list(limit=100)] == [e["export_id"] for e in listed]


def test_webhooks_hear_export_ready_and_export_failed(client, raw, admin_headers, corpus, spool_server, receiver):
    h = admin_headers
    wh = client.webhooks.create(name=unique("wh-exports"), url=receiver.url, events=["export.ready", "export.failed"], index_ids=[corpus.index])
    other = Receiver()
    elsewhere = client.webhooks.create(name=unique("wh-exports"), url=other.url, events=["export.ready"], index_ids=[corpus.other_index])
    try:
        ready = client.exports.create_index_export(corpus.index).export_id
        ready_body = _settle(raw, h, ready)
        gone, gone_root = _local_connector(raw, h, spool_server)
        shutil.rmtree(gone_root)
        failed = client.exports.create_prompt_run_export(corpus.probe_run, destination_connector_id=gone).export_id
        failed_body = _settle(raw, h, failed)
        assert failed_body["status"] == "failed"

        def mine():  # each delivery verified both ways; those of these two exports
            payloads = [verify(wh.secret, headers, body) for headers, body in list(receiver.requests)]
            return [p for p in payloads if p["data"].get("export_id") in (ready, failed)]

        deadline = time.monotonic() + WAIT_S
        while len(mine()) < 2:
            assert time.monotonic() < deadline, f"export deliveries: {[p['event'] for p in mine()]}"
            time.sleep(0.05)
        time.sleep(0.3)
        got = {p["data"]["export_id"]: p for p in mine()}
        assert len(mine()) == 2 and set(got) == {ready, failed}, "one delivery per export"
        r, f = got[ready], got[failed]
        assert (r["event"], r["index_id"], r["webhook_id"]) == ("export.ready", corpus.index, wh.webhook_id)
        assert r["data"]["status"] == "completed" and r["data"]["export_type"] == "index"
        assert (r["data"]["target_id"], r["data"]["index_id"], r["data"]["destination_type"]) == (corpus.index, corpus.index, "download")
        assert r["data"]["file_size_bytes"] == ready_body["file_size_bytes"]
        assert (f["event"], f["data"]["status"], f["data"]["destination_type"]) == ("export.failed", "failed", "connector")
        assert (f["data"]["export_type"], f["data"]["target_id"]) == ("prompt_run", corpus.probe_run)
        assert f["data"]["error_message"] == failed_body["error_message"]
        # The other index's webhook heard neither.
        assert all(json.loads(b)["data"].get("export_id") not in (ready, failed) for _, b in other.requests)
    finally:
        client.webhooks.delete(wh.webhook_id)
        client.webhooks.delete(elsewhere.webhook_id)
        other.close()


def test_a_read_key_reads_and_downloads_exports_but_cannot_create_them(client, make_client, raw, admin_headers, corpus):
    export_id = client.exports.create_prompt_run_export(corpus.probe_run).export_id
    _settle(raw, admin_headers, export_id)
    reader = make_client(api_key=client.api_keys.create(name=unique("export-reader"), scopes=["read"]).key)
    assert reader.exports.retrieve(export_id) == client.exports.retrieve(export_id)
    assert export_id in [e.export_id for e in reader.exports.list(limit=100)]
    assert _download(reader, export_id) == _download(client, export_id)
    before = [e.export_id for e in client.exports.list(limit=5)]
    with pytest.raises(AuthorizationError):
        reader.exports.create_index_export(corpus.index)
    with pytest.raises(AuthorizationError):
        reader.exports.create_prompt_run_export(corpus.probe_run)
    assert [e.export_id for e in client.exports.list(limit=5)] == before


# ---------------------------------------------------------------------------------------------
# refusals


BAD_SUBPATHS = [
    "../x", "..", "a/../../x", "a/..", "/abs", "/", "a//b", "a\\b", "..\\x", "%2e%2e/x", "a%2Fb",
    "a/./b", "./a", ".", "a/\x00b", "a\nb", "a" * 513,
]


def test_destination_subpaths_that_could_leave_the_export_base_path_are_refused(client, raw, admin_headers, corpus, spool_server):
    h = admin_headers
    conn, root = _local_connector(raw, h, spool_server)
    before = [e["export_id"] for e in raw.get("/api/v2/exports", params={"limit": 100}, headers=h).json()]
    for sub in BAD_SUBPATHS:
        for path in (f"/api/v2/exports/index/{corpus.index}", f"/api/v2/exports/prompt-run/{corpus.probe_run}"):
            resp = raw.post(path, json={"destination_connector_id": conn, "destination_subpath": sub}, headers=h)
            err = assert_error_envelope(resp, 422, "validation_error")
            assert err["details"].get("field") == "destination_subpath", (sub, err)
    for sub in ("../x", "a/../../x", "/abs"):
        with pytest.raises(ValidationError) as e:
            client.exports.create_index_export(corpus.index, destination_connector_id=conn, destination_subpath=sub)
        assert (e.value.status_code, e.value.details.get("field")) == (422, "destination_subpath")
    # A subpath needs a connector.
    with pytest.raises(ValidationError) as e:
        client.exports.create_prompt_run_export(corpus.probe_run, destination_subpath="daily")
    assert e.value.details.get("field") == "destination_subpath"
    resp = raw.post(f"/api/v2/exports/index/{corpus.index}", json={"destination_subpath": "daily"}, headers=h)
    assert assert_error_envelope(resp, 422, "validation_error")["details"]["field"] == "destination_subpath"
    # None of these made an export or wrote a file.
    after = [e["export_id"] for e in raw.get("/api/v2/exports", params={"limit": 100}, headers=h).json()]
    assert after == before
    assert _files(root) == []


def test_a_connector_without_the_export_scope_or_an_unknown_one_is_refused(client, raw, admin_headers, corpus, spool_server):
    h = admin_headers
    import_only, root = _local_connector(raw, h, spool_server, scopes=("import",))
    with pytest.raises(ValidationError) as e:
        client.exports.create_index_export(corpus.index, destination_connector_id=import_only)
    assert (e.value.status_code, e.value.error_code) == (422, "connector_scope_missing")
    resp = raw.post(f"/api/v2/exports/prompt-run/{corpus.probe_run}", json={"destination_connector_id": import_only}, headers=h)
    assert_error_envelope(resp, 422, "connector_scope_missing")
    for unknown in ("conn_01KB0000000000000000000000", "not-a-connector"):
        with pytest.raises(NotFoundError):
            client.exports.create_index_export(corpus.index, destination_connector_id=unknown)
    # A deleted connector is unknown.
    conn, _ = _local_connector(raw, h, spool_server)
    client.connectors.delete(conn)
    resp = raw.post(f"/api/v2/exports/index/{corpus.index}", json={"destination_connector_id": conn}, headers=h)
    assert_error_envelope(resp, 404)
    assert _files(root) == []


def test_runs_and_targets_that_do_not_fit_are_refused(client, raw, admin_headers, corpus):
    h = admin_headers
    before = [e["export_id"] for e in raw.get("/api/v2/exports", params={"limit": 100}, headers=h).json()]
    # A run of another index (or over playground videos) is not the index's.
    for run in (corpus.other_run, corpus.loose_run):
        with pytest.raises(ValidationError) as e:
            client.exports.create_index_export(corpus.index, prompt_run_ids=[corpus.probe_run, run])
        assert (e.value.status_code, e.value.error_code) == (422, "prompt_run_not_in_index")
        resp = raw.post(f"/api/v2/exports/index/{corpus.index}", json={"prompt_run_ids": [run]}, headers=h)
        assert_error_envelope(resp, 422, "prompt_run_not_in_index")
    # Unknown runs, indexes, exports: 404.
    for run in ("run_01KB0000000000000000000000", "not-a-run"):
        with pytest.raises(NotFoundError):
            client.exports.create_index_export(corpus.index, prompt_run_ids=[run])
        with pytest.raises(NotFoundError):
            client.exports.create_prompt_run_export(run)
    for index in ("idx_01KB0000000000000000000000", "not-an-index"):
        with pytest.raises(NotFoundError):
            client.exports.create_index_export(index)
        assert_error_envelope(raw.post(f"/api/v2/exports/index/{index}", headers=h), 404)
    assert_error_envelope(raw.post("/api/v2/exports/prompt-run/run_01KB0000000000000000000000", headers=h), 404)
    for path in ("", "/download"):
        assert_error_envelope(raw.get(f"/api/v2/exports/{NO_EXPORT}{path}", headers=h), 404)
        assert_error_envelope(raw.get(f"/api/v2/exports/not-an-export{path}", headers=h), 404)
    assert_error_envelope(raw.post(f"/api/v2/exports/{NO_EXPORT}/download-url", headers=h), 404)
    with pytest.raises(NotFoundError):
        client.exports.retrieve(NO_EXPORT)
    with pytest.raises(NotFoundError):
        _download(client, NO_EXPORT)
    # Bodies that do not fit.
    run_path = f"/api/v2/exports/prompt-run/{corpus.probe_run}"
    err = assert_error_envelope(raw.post(run_path, json={"prompt_run_ids": [corpus.probe_run]}, headers=h), 422, "validation_error")
    assert err["details"]["field"] == "prompt_run_ids"
    index_path = f"/api/v2/exports/index/{corpus.index}"
    for body in ({"colour": "red"}, {"prompt_run_ids": corpus.probe_run}, {"destination_connector_id": 7}, [corpus.probe_run]):
        assert_error_envelope(raw.post(index_path, json=body, headers=h), 422, "validation_error")
    too_many = [f"run_01KB{i:022d}" for i in range(101)]
    assert_error_envelope(raw.post(index_path, json={"prompt_run_ids": too_many}, headers=h), 422)
    after = [e["export_id"] for e in raw.get("/api/v2/exports", params={"limit": 100}, headers=h).json()]
    assert after == before, "a refused request made an export"


# ---------------------------------------------------------------------------------------------
# Regression tests of server bugs these tests found.


def test_a_connector_export_does_not_follow_a_symbolic_link_out_of_its_root(client, raw, admin_headers, corpus, spool_server, tmp_path):
    h = admin_headers
    outside = tmp_path / "outside"  # under no SPOOL_LOCAL_ROOTS folder
    outside.mkdir()
    # The export base path is a link to outside the root...
    linked_base, root = _local_connector(raw, h, spool_server)
    (root / "out").symlink_to(outside, target_is_directory=True)
    a = client.exports.create_prompt_run_export(corpus.probe_run, destination_connector_id=linked_base).export_id
    # ...or a folder of the subpath is.
    linked_sub, sub_root = _local_connector(raw, h, spool_server)
    (sub_root / "out").mkdir()
    (sub_root / "out" / "daily").symlink_to(outside, target_is_directory=True)
    b = client.exports.create_prompt_run_export(corpus.probe_run, destination_connector_id=linked_sub, destination_subpath="daily").export_id
    statuses = [_settle(raw, h, e)["status"] for e in (a, b)]
    assert sorted(p.name for p in outside.rglob("*")) == [], "the export was written outside the connector's root"
    assert statuses == ["failed", "failed"], "an export that could not stay inside its root says it completed"
