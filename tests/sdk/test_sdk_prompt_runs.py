"""Prompt runs through the official SDK (contract §2.9, engine-spec/machines/prompt-run.md,
engine-spec/processors.md), end to end: the session server calls `prompt_worker.py` as its
`http` processor `worker` (conftest.py), and the built-in `probe` is the default.

Covered: execute over an index, a list of videos and the playground; wait_for_completion; list
(newest first) and retrieve; results in cursor pages; video-level results; failed segments,
segment retries and their status; the estimate; processor calls (`llm-calls`); cancel; the
video's status and segments; /videos/{id}/process, /videos/{id}/prompt-runs and
/indexes/{id}/prompt-runs; retries on durable timers (1 s, then 5 s, three attempts) and the
failure codes of a worker that fails (500), hangs (timeout) or answers too much; refused
bodies; deleting a prompt a running run uses. The worker checks every request's Standard
Webhooks signature and reads the first KiB of the signed media URL it is given.

Regression tests are named after what broke (the processing-activity ping that closed its
connection, a results page that promised more, a video-level task that reused its attempt).
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
from datetime import datetime, timezone
from typing import Dict, Optional

import httpx
import pytest
from videovector import ConflictError, NotFoundError, ProcessingError, ValidationError

from prompt_worker import (
    HUGE_BYTES,
    OUTPUT_TOKENS,
    PROCESSOR_NAME,
    PROCESSOR_RESPONSE_MAX_BYTES,
    PROCESSOR_TIMEOUT_S,
    TIMEOUT_SLEEP_S,
)
from spool_sdk_helpers import FIXTURES, assert_error_envelope, assert_timestamp, unique

WAIT_S = 60.0
TERMINAL = {"completed", "completed_with_failures", "failed", "cancelled"}
MP4 = "h264_aac.mp4"  # 2 s, h264 176x144 + aac: two 1 s segments
MOV = "h264_faststart.mov"  # 1 s, h264 160x120 + aac: one 1 s segment
MP4_BYTES = (FIXTURES / MP4).stat().st_size

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "bytes_read": {"type": "integer"}},
    "required": ["label", "bytes_read"],
}
VIDEO_SCHEMA = {
    "type": "object",
    "properties": {"segment_count": {"type": "integer"}, "labels": {"type": "array", "items": {"type": "string"}}},
    "required": ["segment_count", "labels"],
}
# What the probe's answers satisfy (its metadata is validated like any processor's).
PROBE_SCHEMA = {
    "type": "object",
    "properties": {"duration_seconds": {"type": "number"}, "media_type": {"type": "string"}},
    "required": ["duration_seconds", "media_type"],
}

# The session's `worker` processor (conftest.py): the worker's mode=timeout outlasts its
# timeout, mode=huge outgrows its answer bound.
assert TIMEOUT_SLEEP_S > PROCESSOR_TIMEOUT_S and HUGE_BYTES > PROCESSOR_RESPONSE_MAX_BYTES


# ---------------------------------------------------------------------------------------------
# helpers


def _wait_job(client, job_id: str):
    deadline = time.monotonic() + WAIT_S
    while True:
        job = client.import_jobs.retrieve(job_id)
        if job.status in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def _upload(client, *, index_id: Optional[str] = None, name: str = MP4) -> str:
    """Upload a fixture (to the playground without `index_id`) and return its video's id."""
    job = client.videos.upload(file=FIXTURES / name, title=unique(name), index_id=index_id)
    job = _wait_job(client, job.job_id)
    assert (job.status, job.progress.imported, job.progress.failed) == ("completed", 1, 0), job
    (out,) = job.outputs.items
    return out.video_id


def _prompt(
    client, mode: str, *, video_level: bool = False, video_mode: Optional[str] = None, schema: dict = SCHEMA, extra: str = ""
):
    """A prompt whose text tells the worker how to answer (`mode=…`, prompt_worker.py); its
    video-level instructions (with `video_level`) say `mode=<video_mode or mode>`."""
    text = f"Label each segment of the clip. mode={mode} {extra}".strip()
    kwargs = {}
    if video_level:
        kwargs["video_level"] = {
            "instructions_text": f"Gather the labels of the segments. mode={video_mode or mode}",
            "json_schema": VIDEO_SCHEMA,
        }
    return client.prompts.create(name=unique(f"run-{mode}"), prompt_text=text, json_schema=schema, **kwargs)


def _execute(client, prompt, target: dict, *, seconds: Optional[int] = 1, model: Optional[str] = PROCESSOR_NAME):
    kwargs = {}
    if seconds is not None:
        kwargs.update(video_segmentation_type="fixed", video_segment_duration=seconds)
    if model is not None:
        kwargs["processing_model"] = model
    return client.prompt_runs.execute(prompt_id=prompt.prompt_id, target=target, **kwargs)


def _wait(client, run_id: str):
    """The SDK's own wait (raises ProcessingError for a failed run)."""
    return client.prompt_runs.wait_for_completion(run_id, poll_interval=0.2, timeout=WAIT_S)


def _finished(client, run_id: str, timeout: float = WAIT_S):
    """Retrieve until the run is terminal, whatever its end (also `failed`)."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.prompt_runs.retrieve(run_id)
        if run.status in TERMINAL:
            return run
        assert time.monotonic() < deadline, f"run not finished within {timeout} s: {run!r}"
        time.sleep(0.1)


def _poll(fetch, done, what: str, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = fetch()
    while not done(last):
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout} s; last={last!r}"
        time.sleep(interval)
        last = fetch()
    return last


def _assert_signed_and_read(calls) -> None:
    """Every call came from Spool signed, verified, and could read its media URL."""
    assert calls, "the worker got no call"
    for c in calls:
        assert c.verified, (c.headers, c.body and c.body.get("task_id"))
        assert c.headers["webhook-id"].startswith("msg_") and c.headers["webhook-signature"].startswith("v1,")
        assert c.media_status == 206 and c.bytes_read == 1024, (c.media_status, c.media_error, c.task_id)
        assert (c.media_content_range or "").startswith("bytes 0-1023/"), c.media_content_range


def _size(call) -> int:
    return int(call.media_content_range.rsplit("/", 1)[1]) if call.media_content_range else -1


# ---------------------------------------------------------------------------------------------
# runs that work


def test_a_run_over_an_index_on_the_worker_answers_each_segment_once(client, raw, admin_headers, worker):
    index = client.indexes.create(name=unique("runs")).index_id
    vid = _upload(client, index_id=index)
    before = client.videos.retrieve(vid)
    assert (before.status, before.processing_status) == ("not_processed", None)
    assert list(client.videos.list_segments(vid)) == []
    prompt = _prompt(client, "valid", video_level=True)

    run = _execute(client, prompt, {"type": "index", "index_id": index})
    assert run.run_id.startswith("run_") and run.status in ("pending", "processing")
    assert (run.prompt_id, run.prompt_name, run.prompt_type) == (prompt.prompt_id, prompt.name, "custom")
    assert run.run_context == {"type": "index", "index_id": index}
    assert (run.video_segmentation_type, run.video_segment_duration, run.processing_model) == ("fixed", 1, "worker")
    assert run.video_level_enabled and run.billing_estimated_mt == 0.0 and run.executed_by
    assert_timestamp(run.executed_at)

    done = _wait(client, run.run_id)
    assert done.status == "completed", done
    assert (done.total_videos, done.completed_videos, done.failed_videos, done.partial_videos, done.cancelled_videos) == (1, 1, 0, 0, 0)
    assert (done.total_segments, done.completed_segments, done.field_extraction_failures) == (2, 2, 0)
    assert done.field_extraction_succeeded is True and done.error_message is None
    assert (done.video_level_total_items, done.video_level_completed_items, done.video_level_failed_items) == (1, 1, 0)
    assert done.total_video_seconds == pytest.approx(2.0) and done.created_new_segments
    assert done.stop_state.requested_at is None
    assert client.prompt_runs.retrieve(run.run_id) == done
    assert client.prompt_runs.list()[0].run_id == run.run_id  # the newest

    # Results: one per segment, in time order, in pages of one.
    page = client.prompt_runs.list_results(run.run_id, video_id=vid, limit=1)
    assert len(page) == 1 and page.has_more and page.next_cursor
    second = page.next_page()
    assert second is not None and len(second) == 1 and not second.has_more and second.next_page() is None
    results = list(page.auto_paging_iter())
    assert [r.segment_id for r in results] == [page[0].segment_id, second[0].segment_id]
    assert [(r.start_time, r.end_time) for r in results] == [(0.0, 1.0), (1.0, 2.0)]
    assert len({r.segment_id for r in results}) == 2
    for r in results:
        assert (r.run_id, r.video_id, r.prompt_id, r.source_index_id) == (run.run_id, vid, prompt.prompt_id, index)
        assert r.segment_id.startswith("seg_") and r.field_extraction_succeeded
        # bytes_read > 0: the signed media URL served the stored bytes to the worker.
        assert r.metadata == {"label": f"{r.start_time}-{r.end_time}", "bytes_read": 1024}
        assert r.metadata_text == f"segment {r.start_time}-{r.end_time}"
        assert r.video_name == before.title and json.loads(r.schema_used) == SCHEMA
        assert_timestamp(r.executed_at)

    vr = client.prompt_runs.get_video_result(run.run_id, vid)
    assert (vr.run_id, vr.video_id, vr.prompt_id, vr.status) == (run.run_id, vid, prompt.prompt_id, "completed")
    assert vr.metadata == {"segment_count": 2, "labels": ["0.0-1.0", "1.0-2.0"], "bytes_read": 1024}
    assert (vr.successful_segment_count, vr.failed_segment_count) == (2, 0)

    # The worker: one signed call per task, attempt 1 each, with what the protocol promises.
    by_task = worker.by_task(run.run_id)
    video_task = f"{run.run_id}_video_{vid}"
    assert set(by_task) == {r.segment_id for r in results} | {video_task}, sorted(by_task)
    assert all([c.attempt for c in cs] == [1] for cs in by_task.values()), by_task
    calls = worker.calls_for(run_id=run.run_id)
    _assert_signed_and_read(calls)
    media = raw.get(f"/api/v2/videos/{vid}", headers=admin_headers).json()["media"]
    assert all(c.body["video"] == {"video_id": vid, "title": before.title, "media_type": "video", "facts": media} for c in calls)
    for c in calls:  # the media URL reads for 15 minutes
        expires = datetime.fromisoformat(c.body["media_url_expires_at"].replace("Z", "+00:00"))
        assert 14 * 60 <= (expires - datetime.now(timezone.utc)).total_seconds() <= 15 * 60 + 5
        assert abs(int(c.headers["webhook-timestamp"]) - time.time()) < 60
    assert {_size(c) for c in calls} == {MP4_BYTES}
    assert len({c.headers["webhook-id"] for c in calls}) == len(calls)
    for r in results:
        (c,) = by_task[r.segment_id]
        b = c.body
        assert (b["version"], b["kind"], b["run_id"], b["task_id"], b["attempt"]) == (1, "segment", run.run_id, r.segment_id, 1)
        assert b["prompt"] == {"prompt_id": prompt.prompt_id, "name": prompt.name, "text": prompt.prompt_text, "json_schema": SCHEMA}
        assert (b["video"]["video_id"], b["video"]["media_type"]) == (vid, "video")
        assert b["video"]["facts"]["duration_seconds"] == pytest.approx(2.0, abs=0.05)
        assert b["segment"] == {"segment_id": r.segment_id, "start_time": r.start_time, "end_time": r.end_time}
        assert b["segments"] is None and "/media/" in b["media_url"] and "sig=" in b["media_url"]
        assert_timestamp(b["media_url_expires_at"])
        assert c.answered == 200
    (vc,) = by_task[video_task]
    assert (vc.body["kind"], vc.body["segment"]) == ("video", None)
    assert vc.body["prompt"]["text"] == prompt.video_level.instructions_text
    assert vc.body["prompt"]["json_schema"] == VIDEO_SCHEMA
    assert [(s["segment_id"], s["metadata"]) for s in vc.body["segments"]] == [(r.segment_id, r.metadata) for r in results]

    # Processor calls: one record per call, tokens as the worker reported them.
    llm = client.prompt_runs.get_llm_calls(run.run_id)
    assert len(llm) == 3 and len({c.llm_call_id for c in llm}) == 3
    for c in llm:
        assert (c.model, c.status, c.prompt_run_id, c.output_tokens) == ("worker", "succeeded", run.run_id, OUTPUT_TOKENS)
        assert c.total_tokens == c.input_tokens + c.output_tokens
        assert_timestamp(c.invoked_at)
    segs = [c for c in llm if c.purpose == "segment_extraction"]
    (video_call,) = [c for c in llm if c.purpose == "video_level_extraction"]
    assert [(c.input_tokens, c.video_seconds) for c in segs] == [(len(prompt.prompt_text), 1.0)] * 2
    assert (video_call.input_tokens, video_call.video_seconds) == (len(prompt.video_level.instructions_text), 2.0)

    # The video is processed; its status and its segments tell the run.
    after = client.videos.retrieve(vid)
    assert after.status == "processed"
    (ps,) = after.processing_status
    assert (ps.run_id, ps.prompt_id, ps.status) == (run.run_id, prompt.prompt_id, "completed")
    assert (ps.total_segments, ps.pending_segments, ps.processing_segments, ps.successful_segments, ps.failed_segments) == (2, 0, 0, 2, 0)
    assert ps.video_level is not None and ps.video_level.status == "completed"
    (st,) = client.videos.batch_status([vid])
    assert st.status == "processed" and st.processing_status == after.processing_status
    listed = list(client.videos.list_segments(vid))
    assert [(s.segment_id, s.start_time, s.end_time, s.metadata) for s in listed] == [
        (r.segment_id, r.start_time, r.end_time, r.metadata) for r in results
    ]
    assert all(s.processed and s.segment_status == "completed" and s.from_run_id == run.run_id and s.video_id == vid for s in listed)
    assert all(s.metadata_text == r.metadata_text for s, r in zip(listed, results))


def test_the_default_probe_answers_media_facts_and_runs_are_listed_newest_first(client, raw, admin_headers):
    index = client.indexes.create(name=unique("probe")).index_id
    vid = _upload(client, index_id=index)
    probe_prompt = _prompt(client, "valid", schema=PROBE_SCHEMA)

    # No processing_model: the default processor, `probe`; default (smart) segmentation: one
    # 2 s segment (the target is 10 s).
    first = client.prompt_runs.execute(prompt_id=probe_prompt.prompt_id, target={"type": "index", "index_id": index})
    assert first.processing_model == "probe" and first.video_segmentation_type == "smart"
    first = _wait(client, first.run_id)
    assert (first.status, first.total_segments, first.completed_segments) == ("completed", 1, 1), first
    (res,) = client.prompt_runs.list_results(first.run_id, video_id=vid)
    m = res.metadata
    assert (res.start_time, res.end_time) == (0.0, 2.0)
    assert (m["media_type"], m["video_codec"], m["width"], m["height"], m["audio_codec"]) == ("video", "h264", 176, 144, "aac")
    assert m["duration_seconds"] == pytest.approx(2.0, abs=0.01) and (m["start_time"], m["end_time"]) == (0.0, 2.0)
    assert "h264 176x144 video with aac audio" in res.metadata_text
    (call,) = client.prompt_runs.get_llm_calls(first.run_id)
    assert (call.model, call.purpose, call.status, call.input_tokens, call.output_tokens, call.video_seconds) == (
        "probe", "segment_extraction", "succeeded", 0, 0, 2.0,
    )
    # No video_level on the prompt: no video-level result.
    with pytest.raises(NotFoundError):
        client.prompt_runs.get_video_result(first.run_id, vid)
    missing = raw.get(f"/api/v2/prompt-runs/{first.run_id}/videos/{vid}/video-result", headers=admin_headers)
    assert_error_envelope(missing, 404, "resource_video_result_not_found")

    # A second run on the same index, on the worker.
    second = _wait(client, _execute(client, _prompt(client, "valid"), {"type": "index", "index_id": index}).run_id)
    assert second.status == "completed" and second.processing_model == "worker"

    ids = [r.run_id for r in client.prompt_runs.list()]
    assert ids.index(second.run_id) < ids.index(first.run_id)
    assert [r.run_id for r in client.prompt_runs.list(limit=1)] == [ids[0]]
    page = client.indexes.list_prompt_runs(index, limit=1)
    assert [r.run_id for r in page] == [second.run_id] and page.has_more and page.next_cursor
    nxt = page.next_page()
    assert nxt is not None and [r.run_id for r in nxt] == [first.run_id] and not nxt.has_more
    assert [r.run_id for r in page.auto_paging_iter()] == [second.run_id, first.run_id]
    assert client.indexes.list_prompt_runs(index).data == [client.prompt_runs.retrieve(second.run_id), client.prompt_runs.retrieve(first.run_id)]
    assert [r.run_id for r in client.videos.list_prompt_runs(vid)] == [second.run_id, first.run_id]
    assert [r.run_id for r in client.videos.list_prompt_runs(vid, limit=1)] == [second.run_id]

    # Segments: the latest run's by default, any run's by run_id, all runs' newest first.
    latest = list(client.videos.list_segments(vid))
    assert [(s.from_run_id, s.start_time, s.end_time) for s in latest] == [(second.run_id, 0.0, 1.0), (second.run_id, 1.0, 2.0)]
    assert all(s.metadata["label"] == f"{s.start_time}-{s.end_time}" for s in latest)
    (old,) = client.videos.list_segments(vid, run_id=first.run_id)
    assert old.metadata == res.metadata and old.from_run_id == first.run_id
    every = list(client.videos.list_segments(vid, latest_run=False, limit=1).auto_paging_iter())
    assert [s.from_run_id for s in every] == [second.run_id, second.run_id, first.run_id]
    # In a batch (it answered `segments: []` for every video before): the latest run's, or the
    # named run's, with their results; a video never in a run has none.
    (b,) = client.videos.batch_segments([vid])
    assert b.run_id == second.run_id
    assert [(s.segment_id, s.start_time, s.metadata, s.metadata_text) for s in b.segments] == [
        (s.segment_id, s.start_time, s.metadata, s.metadata_text) for s in latest
    ]
    from videovector._types import BatchVideoSegmentsTarget
    (b,) = client.videos.batch_segments_for_targets([BatchVideoSegmentsTarget(video_id=vid, run_id=first.run_id)])
    assert b.run_id == first.run_id and [s.metadata for s in b.segments] == [old.metadata]

    v = client.videos.retrieve(vid)
    assert v.status == "processed"
    assert [(p.run_id, p.status, p.total_segments, p.successful_segments) for p in v.processing_status] == [
        (first.run_id, "completed", 1, 1), (second.run_id, "completed", 2, 2),
    ]


def test_runs_over_a_list_of_videos_and_over_the_playground(client, worker):
    a = _upload(client)  # no index: the playground
    b = _upload(client, name=MOV)
    prompt = _prompt(client, "valid")

    listed = _execute(client, prompt, {"type": "videos", "video_ids": [a, b, a]})
    assert listed.run_context == {"type": "videos", "video_ids": [a, b], "index_id": None}  # duplicates dropped
    listed = _wait(client, listed.run_id)
    assert (listed.status, listed.total_videos, listed.completed_videos, listed.total_segments) == ("completed", 2, 2, 3)
    assert [(r.start_time, r.end_time) for r in client.prompt_runs.list_results(listed.run_id, video_id=a)] == [(0.0, 1.0), (1.0, 2.0)]
    (rb,) = client.prompt_runs.list_results(listed.run_id, video_id=b)
    assert (rb.start_time, rb.end_time, rb.source_index_id) == (0.0, 1.0, None)
    assert rb.metadata == {"label": "0.0-1.0", "bytes_read": 1024}

    key = unique("execute")
    fixed = dict(video_segmentation_type="fixed", video_segment_duration=1, processing_model="worker")
    play = client.prompt_runs.execute(prompt_id=prompt.prompt_id, target={"type": "playground"}, idempotency_key=key, **fixed)
    assert play.run_context == {"type": "playground"}
    # The same key and body answer the same run; another body with it is refused.
    again = client.prompt_runs.execute(prompt_id=prompt.prompt_id, target={"type": "playground"}, idempotency_key=key, **fixed)
    assert again.run_id == play.run_id
    with pytest.raises(ConflictError):
        client.prompt_runs.execute(prompt_id=prompt.prompt_id, target={"type": "videos", "video_ids": [a]}, idempotency_key=key)
    play = _wait(client, play.run_id)
    assert play.status == "completed", play
    playground = {v.video_id for v in client.videos.list_playground(limit=100).auto_paging_iter()}
    assert {a, b} <= playground
    assert play.total_videos + play.total_audios + play.total_images == len(playground)
    for vid, n in ((a, 2), (b, 1)):
        got = list(client.prompt_runs.list_results(play.run_id, video_id=vid))
        assert len(got) == n and all(r.metadata["label"] == f"{r.start_time}-{r.end_time}" for r in got)
        assert [r.run_id for r in client.videos.list_prompt_runs(vid)] == [play.run_id, listed.run_id]
        assert client.videos.retrieve(vid).status == "processed"
    _assert_signed_and_read(worker.calls_for(run_id=listed.run_id))
    assert all(c.verified and c.answered == 200 for c in worker.calls_for(run_id=play.run_id))
    ids = [r.run_id for r in client.prompt_runs.list()]
    assert ids.index(play.run_id) < ids.index(listed.run_id)


def test_process_runs_one_video_with_fixed_segments_on_the_default_processor(client, worker):
    index = client.indexes.create(name=unique("process")).index_id
    vid = _upload(client, index_id=index)
    prompt = _prompt(client, "valid", schema=PROBE_SCHEMA)
    # No default prompt is configured: the refusal says how to set one.
    with pytest.raises(ValidationError) as refused:
        client.videos.process(vid, segment_duration=1)
    assert "SPOOL_DEFAULT_PROMPT" in refused.value.message
    started = client.videos.process(vid, prompt_id=prompt.prompt_id, segment_duration=1)
    (run_id,) = re.findall(r"\brun_[0-9A-Z]{26}\b", started.message)
    # The video is in the run's list once the run has listed it.
    (run,) = _poll(lambda: client.videos.list_prompt_runs(vid), bool, "the video's runs")
    assert run.run_id == run_id
    assert run.run_context == {"type": "videos", "video_ids": [vid], "index_id": None}
    assert (run.processing_model, run.video_segmentation_type, run.video_segment_duration) == ("probe", "fixed", 1)
    run = _wait(client, run.run_id)
    assert (run.status, run.total_segments, run.completed_segments) == ("completed", 2, 2)
    assert worker.calls_for(run_id=run.run_id) == []  # the probe, not the worker
    v = client.videos.retrieve(vid)
    assert v.status == "processed"
    (ps,) = v.processing_status
    assert (ps.status, ps.total_segments, ps.successful_segments, ps.failed_segments, ps.pending_segments) == ("completed", 2, 2, 0, 0)
    assert [s.metadata["duration_seconds"] for s in client.videos.list_segments(vid)] == [1.0, 1.0]
    # A run over a list of videos that names no index is in no index's list; one that names
    # its index is.
    assert run.run_id not in [r.run_id for r in client.indexes.list_prompt_runs(index)]
    named = _execute(client, prompt, {"type": "videos", "video_ids": [vid], "index_id": index}, model=None)
    assert named.run_context == {"type": "videos", "video_ids": [vid], "index_id": index}
    assert [r.run_id for r in client.indexes.list_prompt_runs(index)] == [named.run_id]
    named = _wait(client, named.run_id)
    (r0, _) = client.prompt_runs.list_results(named.run_id, video_id=vid)
    assert r0.source_index_id == index


def test_audio_and_images_are_segmented_by_their_own_rules(client, raw, admin_headers):
    index = client.indexes.create(name=unique("media-kinds")).index_id
    mp3, wav, jpg = (_upload(client, index_id=index, name=n) for n in ("tone.mp3", "tone.wav", "still.jpg"))
    prompt = _prompt(client, "valid", schema=PROBE_SCHEMA)
    run = client.prompt_runs.execute(
        prompt_id=prompt.prompt_id, target={"type": "index", "index_id": index},
        audio_segmentation_type="fixed", audio_segment_duration=1,
    )
    assert (run.audio_segmentation_type, run.audio_segment_duration, run.processing_model) == ("fixed", 1, "probe")
    run = _wait(client, run.run_id)
    assert run.status == "completed", run
    assert (run.total_videos, run.total_audios, run.completed_audios, run.total_images, run.completed_images) == (0, 2, 2, 1, 1)
    # tone.mp3 lasts about 2 s (ffprobe 2.04 s; the probe's own duration decides): 1 s segments,
    # the last one what is left.
    mp3_duration = raw.get(f"/api/v2/videos/{mp3}", headers=admin_headers).json()["media"]["duration_seconds"]
    assert 1.95 <= mp3_duration <= 2.1
    n = math.ceil(mp3_duration - 1e-6)
    assert (run.total_segments, run.completed_segments) == (n + 2, n + 2)
    got = list(client.prompt_runs.list_results(run.run_id, video_id=mp3))
    assert [(r.start_time, r.end_time) for r in got][:2] == [(0.0, 1.0), (1.0, 2.0)]
    assert len(got) == n and got[-1].end_time == pytest.approx(mp3_duration, abs=1e-6)
    m = got[0].metadata
    assert (m["media_type"], m["audio_codec"], m["sample_rate"], m["channels"], m["video_codec"]) == ("audio", "mp3", 44100, 2, None)
    (w,) = client.prompt_runs.list_results(run.run_id, video_id=wav)
    assert (w.start_time, w.end_time, w.metadata["audio_codec"], w.metadata["sample_rate"], w.metadata["channels"]) == (0.0, 1.0, "pcm_s16le", 22050, 1)
    (j,) = client.prompt_runs.list_results(run.run_id, video_id=jpg)
    assert (j.start_time, j.end_time) == (0.0, 0.0)
    assert (j.metadata["media_type"], j.metadata["width"], j.metadata["height"], j.metadata["duration_seconds"]) == ("image", 64, 48, 0.0)
    assert "image of 64x48" in j.metadata_text
    assert all(client.videos.retrieve(v).status == "processed" for v in (mp3, wav, jpg))


def test_the_estimate_costs_nothing_and_starts_nothing(client, worker):
    index = client.indexes.create(name=unique("estimate")).index_id
    _upload(client, index_id=index)
    prompt = _prompt(client, "valid")
    before = [r.run_id for r in client.prompt_runs.list(limit=5)]
    est = client.prompt_runs.estimate(
        prompt_id=prompt.prompt_id, target={"type": "index", "index_id": index},
        video_segmentation_type="fixed", video_segment_duration=1, processing_model="worker",
    )
    assert (est.estimated_mt, est.sufficient_balance, est.current_balance_mt) == (0.0, True, 0.0)
    assert est.breakdown["videos"] == 1 and est.breakdown["video_seconds"] == pytest.approx(2.0)
    assert est.breakdown["processor"] == "worker"
    assert client.prompt_runs.estimate(prompt_id=prompt.prompt_id, target={"type": "playground"}).breakdown["processor"] == "probe"
    assert [r.run_id for r in client.prompt_runs.list(limit=5)] == before
    assert client.indexes.list_prompt_runs(index).data == []
    # An empty index: nothing to estimate, and a run over it completes at once.
    empty = client.indexes.create(name=unique("empty")).index_id
    assert client.prompt_runs.estimate(prompt_id=prompt.prompt_id, target={"type": "index", "index_id": empty}).breakdown["videos"] == 0
    run = _wait(client, _execute(client, prompt, {"type": "index", "index_id": empty}).run_id)
    assert (run.status, run.total_videos, run.total_segments, run.created_new_segments) == ("completed", 0, 0, False)
    assert worker.calls_for(run_id=run.run_id) == []
    with pytest.raises(ValidationError):
        client.prompt_runs.estimate(prompt_id=prompt.prompt_id, target={"type": "playground"}, processing_model="gpt-17")


# ---------------------------------------------------------------------------------------------
# retries and failures


def test_a_flaky_worker_is_retried_after_a_second_and_every_call_is_recorded(client, worker):
    index = client.indexes.create(name=unique("flaky")).index_id
    vid = _upload(client, index_id=index)
    prompt = _prompt(client, "flaky")
    run = _wait(client, _execute(client, prompt, {"type": "index", "index_id": index}).run_id)
    assert (run.status, run.total_segments, run.completed_segments, run.failed_videos) == ("completed", 2, 2, 0), run
    results = list(client.prompt_runs.list_results(run.run_id, video_id=vid))
    assert [r.metadata["label"] for r in results] == ["0.0-1.0", "1.0-2.0"]

    by_task = worker.by_task(run.run_id)
    assert set(by_task) == {r.segment_id for r in results}
    for task_id, cs in by_task.items():
        assert [(c.attempt, c.answered) for c in cs] == [(1, 500), (2, 200)], task_id
        # backoff 1 s ± 20 %, on a durable timer
        assert 0.75 <= cs[1].received_at - cs[0].received_at <= 4.0, [c.received_at for c in cs]
    _assert_signed_and_read(worker.calls_for(run_id=run.run_id))

    llm = client.prompt_runs.get_llm_calls(run.run_id)
    assert len(llm) == 4 and len({c.llm_call_id for c in llm}) == 4
    assert sorted(c.status for c in llm) == ["failed", "failed", "succeeded", "succeeded"]
    for c in llm:
        assert (c.model, c.purpose, c.video_seconds) == ("worker", "segment_extraction", 1.0)
        assert c.total_tokens == c.input_tokens + c.output_tokens
        if c.status == "succeeded":
            assert (c.input_tokens, c.output_tokens) == (len(prompt.prompt_text), OUTPUT_TOKENS)
        else:  # a 500 reports no usage
            assert (c.input_tokens, c.output_tokens) == (0, 0)
    assert client.prompt_runs.get_failed_segments(run.run_id).failed_segments == 0


def test_answers_that_miss_the_schema_fail_their_segments_and_a_retry_runs_one_again(client, raw, admin_headers, worker):
    index = client.indexes.create(name=unique("invalid")).index_id
    vid = _upload(client, index_id=index)
    # Invalid on the three automatic attempts, valid from the fourth (the manual retry).
    prompt = _prompt(client, "invalid", extra="valid_from_attempt=4")
    run = _execute(client, prompt, {"type": "index", "index_id": index})
    with pytest.raises(ProcessingError):  # every segment failed: the run is `failed`
        _wait(client, run.run_id)
    run = client.prompt_runs.retrieve(run.run_id)
    assert (run.status, run.total_segments, run.completed_segments, run.field_extraction_failures) == ("failed", 2, 0, 2), run
    assert (run.failed_videos, run.completed_videos, run.field_extraction_succeeded) == (1, 0, False)
    assert "schema_mismatch" in run.error_message and "every segment failed" in run.error_message

    manifest = client.prompt_runs.get_failed_segments(run.run_id)
    assert (manifest.run_id, manifest.status, manifest.videos_with_failures, manifest.failed_segments) == (run.run_id, "failed", 1, 2)
    assert (manifest.operation_counts.field_extraction, manifest.operation_counts.processing) == (2, 0)
    (fv,) = manifest.videos
    assert (fv.video_id, fv.failed_segments, fv.operation_counts.field_extraction) == (vid, 2, 2)
    assert [(s.start_time, s.end_time) for s in fv.segments] == [(0.0, 1.0), (1.0, 2.0)]
    for s in fv.segments:
        assert (s.failure_stage, s.failure_code, s.retryable) == ("field_extraction", "schema_mismatch", True), s
        assert s.failed_operations == ["field_extraction"] and "label" in s.failure_message
        assert s.field_extraction_error == s.failure_message
    by_task = worker.by_task(run.run_id)
    assert {t: [c.attempt for c in cs] for t, cs in by_task.items()} == {s.segment_id: [1, 2, 3] for s in fv.segments}
    for cs in by_task.values():
        assert 0.75 <= cs[1].received_at - cs[0].received_at <= 4.0
        assert 3.9 <= cs[2].received_at - cs[1].received_at <= 9.0  # 5 s ± 20 %
    assert [c.status for c in client.prompt_runs.get_llm_calls(run.run_id)] == ["failed"] * 6
    v = client.videos.retrieve(vid)
    assert v.status == "failed"  # every segment failed
    (ps,) = v.processing_status
    assert (ps.status, ps.successful_segments, ps.failed_segments) == ("failed", 0, 2)
    assert [s.segment_status for s in client.videos.list_segments(vid)] == ["failed", "failed"]
    assert list(client.prompt_runs.list_results(run.run_id, video_id=vid)) == []

    # Retry the first segment by hand: attempt 4, which the worker answers right.
    seg = fv.segments[0]
    key = unique("retry")
    retry = client.prompt_runs.retry_segment(run.run_id, vid, seg.segment_id, idempotency_key=key)
    assert (retry.run_id, retry.video_id, retry.segment_id, retry.idempotency_key) == (run.run_id, vid, seg.segment_id, key)
    assert retry.retry_id.startswith("retry_") and retry.status in ("queued", "processing", "completed") and retry.message
    assert_timestamp(retry.created_at)
    # The same key answers the same retry (and runs nothing more).
    assert client.prompt_runs.retry_segment(run.run_id, vid, seg.segment_id, idempotency_key=key).retry_id == retry.retry_id
    status = _poll(
        lambda: client.prompt_runs.get_segment_retry_status(run.run_id, vid, seg.segment_id, retry.retry_id),
        lambda s: s.status not in ("queued", "processing"),
        "segment retry",
    )
    assert (status.status, status.retry_id, status.field_extraction_succeeded, status.error) == ("completed", retry.retry_id, True, None)
    assert_timestamp(status.completed_at)
    assert [c.attempt for c in worker.calls_for(run_id=run.run_id, task_id=seg.segment_id)] == [1, 2, 3, 4]

    # The run is finished again: one segment succeeded, one failed.
    again = _wait(client, run.run_id)
    assert (again.status, again.completed_segments, again.field_extraction_failures, again.partial_videos) == ("completed_with_failures", 1, 1, 1)
    (res,) = client.prompt_runs.list_results(run.run_id, video_id=vid)
    assert (res.segment_id, res.metadata) == (seg.segment_id, {"label": "0.0-1.0", "bytes_read": 1024})
    left = client.prompt_runs.get_failed_segments(run.run_id)
    assert (left.failed_segments, [s.segment_id for s in left.videos[0].segments]) == (1, [fv.segments[1].segment_id])
    assert client.videos.retrieve(vid).status == "processed"
    assert len(client.prompt_runs.get_llm_calls(run.run_id)) == 7

    # Only a failed segment can be retried; an unknown segment or retry is 404.
    with pytest.raises(ConflictError):
        client.prompt_runs.retry_segment(run.run_id, vid, seg.segment_id)
    resp = raw.post(f"/api/v2/prompt-runs/{run.run_id}/videos/{vid}/segments/{seg.segment_id}/retry", headers=admin_headers)
    assert_error_envelope(resp, 409, "invalid_state")
    with pytest.raises(NotFoundError):
        client.prompt_runs.retry_segment(run.run_id, vid, "seg_nope_1")
    with pytest.raises(NotFoundError):
        client.prompt_runs.get_segment_retry_status(run.run_id, vid, seg.segment_id, "retry_01KB0000000000000000000000")
    _assert_signed_and_read(worker.calls_for(run_id=run.run_id))


def test_a_worker_that_fails_hangs_or_answers_too_much_fails_its_run(client, raw, admin_headers, worker):
    index = client.indexes.create(name=unique("failing")).index_id
    vid = _upload(client, index_id=index, name=MOV)  # one 1 s segment
    runs = {
        mode: _execute(client, _prompt(client, mode), {"type": "index", "index_id": index}).run_id
        for mode in ("500", "timeout", "huge")
    }
    # (code, retryable, attempts): retryable failures are tried three times, 1 s then 5 s apart.
    want = {"500": ("processor_error", True, 3), "timeout": ("processor_timeout", True, 3), "huge": ("response_too_large", False, 1)}
    for mode, run_id in runs.items():
        run = _finished(client, run_id)
        code, retryable, attempts = want[mode]
        assert (run.status, run.completed_segments, run.failed_videos, run.total_segments) == ("failed", 0, 1, 1), (mode, run)
        assert code in run.error_message and run.field_extraction_succeeded is False
        assert raw.get(f"/api/v2/prompt-runs/{run_id}", headers=admin_headers).json()["processing_failures"] == 1
        with pytest.raises(ProcessingError):
            _wait(client, run_id)
        manifest = client.prompt_runs.get_failed_segments(run_id)
        assert (manifest.failed_segments, manifest.operation_counts.processing, manifest.operation_counts.field_extraction) == (1, 1, 0)
        (s,) = manifest.videos[0].segments
        assert (s.failure_stage, s.failure_code, s.retryable, s.failed_operations) == ("processing", code, retryable, ["processing"]), (mode, s)
        assert s.failure_message and s.field_extraction_error is None
        calls = worker.calls_for(run_id=run_id)
        assert [c.attempt for c in calls] == list(range(1, attempts + 1)), (mode, [c.attempt for c in calls])
        assert all(c.verified for c in calls)
        if attempts == 3:
            gaps = [b.received_at - a.received_at for a, b in zip(calls, calls[1:])]
            extra = 2.0 if mode == "timeout" else 0.0  # the 2 s timeout before each failure
            assert 0.75 + extra <= gaps[0] <= 4.0 + extra and 3.9 + extra <= gaps[1] <= 9.0 + extra, (mode, gaps)
        llm = client.prompt_runs.get_llm_calls(run_id)
        assert len(llm) == attempts, (mode, llm)
        assert all(c.status == "failed" and c.model == "worker" and c.video_seconds == 1.0 for c in llm)
    assert "500" in client.prompt_runs.get_failed_segments(runs["500"]).videos[0].segments[0].failure_message
    v = client.videos.retrieve(vid)
    assert v.status == "failed"
    # One entry per run, in the order the video joined them (the three were executed at once).
    assert sorted((p.run_id, p.status, p.failed_segments, p.successful_segments) for p in v.processing_status) == sorted(
        (run_id, "failed", 1, 0) for run_id in runs.values()
    )


# ---------------------------------------------------------------------------------------------
# cancel, prompts in use


def test_cancel_stops_a_run_midway_and_a_second_cancel_changes_nothing(client, raw, admin_headers, worker):
    index = client.indexes.create(name=unique("cancel")).index_id
    vids = [_upload(client, index_id=index) for _ in range(6)]  # 12 segments of 0.3 s at 4 at once
    prompt = _prompt(client, "slow")
    run = _execute(client, prompt, {"type": "index", "index_id": index})
    _poll(lambda: worker.calls_for(run_id=run.run_id), bool, "the first call of the run", interval=0.01)
    asked = client.prompt_runs.cancel(run.run_id)
    assert asked.run_id == run.run_id and asked.status in ("processing", "cancelled")
    assert_timestamp(asked.stop_state.requested_at)
    assert asked.stop_state.mode == "drain"
    # Nothing is retried or started once the stop is asked for.
    resp = raw.post(f"/api/v2/prompt-runs/{run.run_id}/cancel", headers=admin_headers)
    assert resp.status_code == 200 and resp.json()["stop_state"]["requested_at"] == asked.stop_state.requested_at

    done = _finished(client, run.run_id)
    assert done.status == "cancelled", done
    assert done.stop_state.requested_at == asked.stop_state.requested_at
    assert_timestamp(done.stop_state.completed_at)
    assert done.total_videos == 6 and 0 < done.completed_segments < done.total_segments <= 12
    assert done.completed_videos + done.partial_videos + done.failed_videos + done.cancelled_videos == 6
    assert done.cancelled_videos >= 1
    # The calls that had started reported; nothing more reaches the worker.
    seen = worker.calls_for(run_id=run.run_id)
    assert done.completed_segments == len([c for c in seen if c.answered == 200]) == len(seen)
    assert 1 <= worker.max_in_flight(seen) <= 4
    time.sleep(0.6)
    assert len(worker.calls_for(run_id=run.run_id)) == len(seen)
    # A second cancel answers the run unchanged.
    assert client.prompt_runs.cancel(run.run_id) == done == client.prompt_runs.retrieve(run.run_id)
    assert client.prompt_runs.wait_for_completion(run.run_id, poll_interval=0.2, timeout=5) == done

    statuses: Dict[str, int] = {}
    for vid in vids:
        segs = list(client.videos.list_segments(vid))
        for s in segs:
            statuses[s.segment_status] = statuses.get(s.segment_status, 0) + 1
        v = client.videos.retrieve(vid)
        (ps,) = v.processing_status
        if ps.status == "cancelled":
            assert v.status == "not_processed", (v.status, ps)  # cancelled before its outcome
        else:
            assert (ps.status, v.status) == ("completed", "processed"), (v.status, ps)
    assert statuses.get("completed", 0) == done.completed_segments
    assert statuses.get("cancelled", 0) == done.total_segments - done.completed_segments
    _assert_signed_and_read(seen)


def test_a_cancel_while_a_segment_waits_for_its_retry_ends_the_run_and_the_timer_changes_nothing(client, raw, admin_headers, worker):
    index = client.indexes.create(name=unique("cancel-wait")).index_id
    vid = _upload(client, index_id=index, name=MOV)
    run = _execute(client, _prompt(client, "500"), {"type": "index", "index_id": index})
    # Attempt 1 fails (500, retryable): the segment waits about 1 s for attempt 2.
    (seg,) = _poll(
        lambda: list(client.videos.list_segments(vid, run_id=run.run_id)),
        lambda segs: [s.segment_status for s in segs] == ["retrying"],
        "the segment waiting for its retry",
        interval=0.02,
    )
    client.prompt_runs.cancel(run.run_id)
    done = _finished(client, run.run_id, timeout=5)
    assert (done.status, done.completed_segments, done.cancelled_videos) == ("cancelled", 0, 1), done
    assert raw.get(f"/api/v2/prompt-runs/{run.run_id}", headers=admin_headers).json()["failed_segments"] == 0
    assert [s.segment_status for s in client.videos.list_segments(vid, run_id=run.run_id)] == ["cancelled"]
    # The retry timer still fires, once, and nothing shown changes; no attempt 2 is made.
    time.sleep(1.6)
    assert client.prompt_runs.retrieve(run.run_id) == done
    assert [c.attempt for c in worker.calls_for(run_id=run.run_id)] == [1]
    assert client.videos.retrieve(vid).status == "not_processed"
    with pytest.raises(ConflictError):  # not failed, and the run is cancelled
        client.prompt_runs.retry_segment(run.run_id, vid, seg.segment_id)


def test_a_prompt_that_a_running_run_uses_is_not_deleted_without_force(client, raw, admin_headers, worker):
    index = client.indexes.create(name=unique("in-use")).index_id
    vids = [_upload(client, index_id=index) for _ in range(3)]  # 6 segments of 0.3 s
    prompt = _prompt(client, "slow")
    run = _execute(client, prompt, {"type": "index", "index_id": index})
    with pytest.raises(ConflictError):
        client.prompts.delete(prompt.prompt_id)
    # While the run works on it, a video is `processing`, and /process refuses it.
    _poll(lambda: client.videos.retrieve(vids[0]).status, lambda s: s == "processing", "video processing", interval=0.01)
    with pytest.raises(ValidationError) as e:
        client.videos.process(vids[0], prompt_id=prompt.prompt_id, segment_duration=1)
    assert e.value.details.get("field") == "video_id"
    resp = raw.delete(f"/api/v2/prompts/{prompt.prompt_id}", headers=admin_headers)
    assert_error_envelope(resp, 409, "invalid_state")
    assert client.prompts.get_usage(prompt.prompt_id).is_in_use
    # With force it goes; the run keeps the prompt as it was executed.
    assert client.prompts.delete(prompt.prompt_id, force=True).message
    with pytest.raises(NotFoundError):
        client.prompts.retrieve(prompt.prompt_id)
    done = _wait(client, run.run_id)
    assert (done.status, done.completed_segments, done.prompt_name) == ("completed", 6, prompt.name)
    # The processor's concurrency (4) bounds the calls in flight, over all its runs.
    assert worker.max_in_flight(worker.calls_for(run_id=run.run_id)) == 4
    assert [r.run_id for r in client.videos.list_prompt_runs(vids[0])] == [run.run_id]
    for vid in vids:
        assert [r.metadata["label"] for r in client.prompt_runs.list_results(run.run_id, video_id=vid)] == ["0.0-1.0", "1.0-2.0"]

    # Once no run uses it, a prompt is deleted without force.
    other = _prompt(client, "valid")
    _wait(client, _execute(client, other, {"type": "videos", "video_ids": vids[:1]}).run_id)
    assert client.prompts.get_usage(other.prompt_id).is_in_use is False
    assert client.prompts.delete(other.prompt_id).message


# Regression tests of server bugs these tests found.


def test_the_processing_activity_ping_keeps_its_connection_usable(spool_server):
    """The SDK pings before every processing call and sends that call on the same pooled
    connection. Here the ping's body comes 0.1 s after its headers (as it may under load)."""
    host, port = spool_server.root_url.rsplit("/", 1)[1].split(":")
    body = b'{"event_id":"e","surface":"sdk","reason":"processing_intent","operation":"process_media"}'
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(
            b"POST /api/v2/auth/processing-activity HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-API-Key: {spool_server.admin_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        time.sleep(0.1)
        s.sendall(body)
        first = _read_response(s)
        assert first.startswith(b"HTTP/1.1 200"), first[:100]
        if b"\r\nconnection: close" in first.lower():
            return  # a server that closes must say so
        s.sendall(f"GET /api/v2/prompts HTTP/1.1\r\nHost: x\r\nX-API-Key: {spool_server.admin_key}\r\n\r\n".encode())
        second = _read_response(s)
    assert second.startswith(b"HTTP/1.1 200"), f"the kept-alive connection gave {second[:100]!r}"


def _read_response(s: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length (b"" when the server closed)."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        length = next(int(l.split(b":", 1)[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return head + b"\r\n\r\n" + rest
    except OSError:
        return data


def test_a_results_page_says_has_more_only_when_another_result_follows(client):
    index = client.indexes.create(name=unique("pages")).index_id
    vid = _upload(client, index_id=index)
    # The segment at 1 s answers too much (not retryable): it fails at once; the first succeeds.
    run = _wait(client, _execute(client, _prompt(client, "huge", extra="only_at=1.0"), {"type": "index", "index_id": index}).run_id)
    assert (run.status, run.completed_segments, run.total_segments) == ("completed_with_failures", 1, 2), run
    page = client.prompt_runs.list_results(run.run_id, video_id=vid, limit=1)
    assert [r.start_time for r in page] == [0.0]
    assert list(page.auto_paging_iter()) == page.data
    nxt = page.next_page()
    assert (page.has_more, page.next_cursor, nxt and nxt.data) == (False, None, None), (
        "the page of the only result says has_more and its next page is empty"
    )


def test_a_video_level_task_asked_again_after_a_segment_retry_is_a_new_attempt(client, worker):
    index = client.indexes.create(name=unique("vl-retry")).index_id
    vid = _upload(client, index_id=index)
    # The segment at 1 s fails on attempt 1 (too large, not retryable), answers on attempt 2.
    prompt = _prompt(client, "huge", video_level=True, video_mode="valid", extra="only_at=1.0 valid_from_attempt=2")
    run = _wait(client, _execute(client, prompt, {"type": "index", "index_id": index}).run_id)
    assert (run.status, run.completed_segments, run.video_level_completed_items, run.partial_videos) == ("completed_with_failures", 1, 1, 1), run
    first = client.prompt_runs.get_video_result(run.run_id, vid)
    assert (first.status, first.metadata["labels"], first.failed_segment_count) == ("completed", ["0.0-1.0"], 1)
    (failed,) = client.prompt_runs.get_failed_segments(run.run_id).videos[0].segments
    assert (failed.failure_code, failed.retryable, failed.start_time) == ("response_too_large", False, 1.0)

    retry = client.prompt_runs.retry_segment(run.run_id, vid, failed.segment_id)
    _poll(
        lambda: client.prompt_runs.get_segment_retry_status(run.run_id, vid, failed.segment_id, retry.retry_id).status,
        lambda s: s not in ("queued", "processing"),
        "segment retry",
    )
    again = _wait(client, run.run_id)
    assert (again.status, again.completed_segments, again.video_level_total_items, again.video_level_completed_items) == ("completed", 2, 1, 1), again
    vr = client.prompt_runs.get_video_result(run.run_id, vid)
    assert (vr.status, vr.metadata["labels"], vr.successful_segment_count, vr.failed_segment_count) == ("completed", ["0.0-1.0", "1.0-2.0"], 2, 0)
    assert [c.attempt for c in worker.calls_for(run_id=run.run_id, task_id=failed.segment_id)] == [1, 2]

    video_calls = worker.calls_for(run_id=run.run_id, task_id=f"{run.run_id}_video_{vid}")
    assert [len(c.body["segments"]) for c in video_calls] == [1, 2]
    llm = client.prompt_runs.get_llm_calls(run.run_id)
    assert len(llm) == 5  # 2 + 1 segment calls, 2 video-level calls
    # A worker tells a repeat by (task_id, attempt) (processors.md): the second video-level
    # request, with other segments, must not look like a repeat of the first; and each
    # processor call is its own llm-calls record.
    ids = [c.llm_call_id for c in llm]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    assert ([c.attempt for c in video_calls], duplicated) == ([1, 2], [])


# ---------------------------------------------------------------------------------------------
# refusals


def test_bad_run_requests_answer_the_error_envelope(client, raw, admin_headers):
    index = client.indexes.create(name=unique("bad-runs")).index_id
    vid = _upload(client, index_id=index, name=MOV)
    prompt = _prompt(client, "valid")
    h = admin_headers
    good = {"prompt_id": prompt.prompt_id, "target": {"type": "index", "index_id": index}}

    # An unknown processor: 422 naming the configured ones.
    with pytest.raises(ValidationError) as e:
        client.prompt_runs.execute(prompt_id=prompt.prompt_id, target=good["target"], processing_model="gemini-2.5-flash")
    assert e.value.status_code == 422 and e.value.details["field"] == "processing_model"
    assert e.value.details["allowed"] == ["probe", "worker"]
    err = assert_error_envelope(raw.post("/api/v2/prompt-runs/execute", json={**good, "processing_model": "nope"}, headers=h), 422, "validation_error")
    assert err["details"]["allowed"] == ["probe", "worker"] and "worker" in err["message"]

    # The SDK refuses `fixed` without a duration before sending; the server does too.
    with pytest.raises(ValueError):
        client.prompt_runs.execute(prompt_id=prompt.prompt_id, target=good["target"], video_segmentation_type="fixed")
    cases = [
        ({**good, "target": {"type": "folder"}}, "target.type"),
        ({**good, "target": {"type": "index"}}, "target.index_id"),
        ({**good, "target": {"type": "videos", "video_ids": []}}, "target.video_ids"),
        ({**good, "video_segmentation_type": "fixed"}, "video_segment_duration"),
        ({**good, "video_segmentation_type": "fixed", "video_segment_duration": 0}, "video_segment_duration"),
        ({**good, "video_segmentation_type": "fixed", "video_segment_duration": 301}, "video_segment_duration"),
        ({**good, "video_segment_duration": 2.5}, "video_segment_duration"),
        ({**good, "video_segmentation_type": "scenes"}, "video_segmentation_type"),
        ({**good, "audio_segmentation_type": "smart"}, "audio_segmentation_type"),
    ]
    for body, field in cases:
        # The estimate checks the settings as execute does, not the bounds of a list of videos.
        paths = ["/api/v2/prompt-runs/execute"] + (["/api/v2/prompt-runs/estimate"] if field != "target.video_ids" else [])
        for path in paths:
            err = assert_error_envelope(raw.post(path, json=body, headers=h), 422, "validation_error")
            assert err["details"].get("field") == field, (path, body, err)
    assert_error_envelope(raw.post("/api/v2/prompt-runs/execute", json={**good, "colour": "red"}, headers=h), 422, "validation_error")
    assert_error_envelope(raw.post("/api/v2/prompt-runs/execute", json={"target": good["target"]}, headers=h), 422, "validation_error")

    # Unknown things are 404.
    nobody = "prompt_01KB0000000000000000000000"
    assert_error_envelope(raw.post("/api/v2/prompt-runs/execute", json={**good, "prompt_id": nobody}, headers=h), 404, "resource_prompt_not_found")
    assert_error_envelope(raw.post("/api/v2/prompt-runs/estimate", json={**good, "prompt_id": nobody}, headers=h), 404, "resource_prompt_not_found")
    assert_error_envelope(raw.post("/api/v2/prompt-runs/execute", json={**good, "prompt_id": "not-a-prompt"}, headers=h), 404)
    with pytest.raises(NotFoundError):
        client.prompt_runs.execute(prompt_id=nobody, target=good["target"])
    no_index = {"type": "index", "index_id": "idx_01KB0000000000000000000000"}
    assert_error_envelope(raw.post("/api/v2/prompt-runs/execute", json={**good, "target": no_index}, headers=h), 404, "resource_index_not_found")
    no_video = {"type": "videos", "video_ids": [vid, "vid_01KB0000000000000000000000"]}
    assert_error_envelope(raw.post("/api/v2/prompt-runs/execute", json={**good, "target": no_video}, headers=h), 404, "resource_video_not_found")
    other = client.indexes.create(name=unique("other")).index_id
    wrong = {"type": "videos", "video_ids": [vid], "index_id": other}
    assert_error_envelope(raw.post("/api/v2/prompt-runs/execute", json={**good, "target": wrong}, headers=h), 422, "video_not_in_index")
    assert client.indexes.list_prompt_runs(index).data == []  # none of these made a run

    no_run = "run_01KB0000000000000000000000"
    for path in ("", "/results?video_id=" + vid, "/failed-segments", "/llm-calls", f"/videos/{vid}/video-result"):
        assert_error_envelope(raw.get(f"/api/v2/prompt-runs/{no_run}{path}", headers=h), 404, "resource_not_found")
    assert_error_envelope(raw.post(f"/api/v2/prompt-runs/{no_run}/cancel", headers=h), 404, "resource_not_found")
    with pytest.raises(NotFoundError):
        client.prompt_runs.retrieve(no_run)
    with pytest.raises(NotFoundError):
        client.prompt_runs.cancel(no_run)

    run = _wait(client, _execute(client, prompt, good["target"]).run_id)
    assert_error_envelope(raw.get(f"/api/v2/prompt-runs/{run.run_id}/results", headers=h), 422, "validation_error")
    assert_error_envelope(raw.get(f"/api/v2/prompt-runs/{run.run_id}/results", params={"video_id": vid, "limit": 0}, headers=h), 422, "validation_error")
    assert_error_envelope(raw.get(f"/api/v2/prompt-runs/{run.run_id}/results", params={"video_id": vid, "cursor": "nope"}, headers=h), 422, "validation_error")
    stranger = _upload(client, index_id=other, name=MOV)
    with pytest.raises(NotFoundError):
        client.prompt_runs.list_results(run.run_id, video_id=stranger)
    assert_error_envelope(raw.get(f"/api/v2/indexes/{index}/prompt-runs", params={"cursor": "nope"}, headers=h), 422, "validation_error")
    assert_error_envelope(raw.post(f"/api/v2/videos/{vid}/process", params={"segment_duration": 0, "prompt_id": prompt.prompt_id}, headers=h), 422, "validation_error")


# ---------------------------------------------------------------------------------------------
# the worker itself


def test_the_worker_refuses_a_request_whose_signature_does_not_verify(worker):
    body = b'{"version":1,"kind":"segment","run_id":"run_forged","task_id":"seg_forged_0","attempt":1}'
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_forged",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    }
    resp = httpx.post(worker.url, content=body, headers=headers, timeout=5)
    assert resp.status_code == 401
    (call,) = worker.calls_for(run_id="run_forged")
    assert call.verified is False and call.answered == 401


def test_every_call_spool_made_to_the_worker_was_signed_and_could_read_its_media(worker):
    # Task calls only (a `define` request, test_workflow.py's, reads no media).
    calls = [c for c in worker.calls if c.run_id != "run_forged" and c.kind != "define"]
    assert calls
    assert all(c.verified for c in calls), [c.task_id for c in calls if not c.verified]
    assert all(c.headers.get("webhook-id", "").startswith("msg_") for c in calls)
    # Every call's media URL read (the playground's image included).
    assert all(c.media_status == 206 and c.bytes_read > 0 for c in calls), [
        (c.task_id, c.media_status, c.media_error) for c in calls if c.media_status != 206
    ]
