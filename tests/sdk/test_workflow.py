"""The simplified workflow through the official SDK (contract-search.md §2.12,
/work/notes/issue28-decisions.md "Workflow"): the package's quickstart verbatim (sync and async),
then each step's targets, refusals, paging and idempotency.

The quickstart runs as the METADATA prints it, with three liberties: the file is a real 2 s mp4
copied to `employee-restocking-shelves-near-checkout.mp4` (the title defaults to the file name,
and the built-in `probe` writes the title into every segment's text, so the quickstart's own
query finds the segments lexically), the two waits poll every 0.2 s with a 60 s bound instead of
every 10 s / 5 s forever, and the client is the conftest's (no retries, 204/3xx checked).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import pytest
from videovector import ConflictError, IdempotencyError, NotFoundError, ValidationError

from spool_sdk_helpers import FIXTURES, unique, wav


WAIT_S = 60.0
MP4 = "h264_aac.mp4"  # 2 s: two 1 s segments with fixed 1 s segmentation
MOV = "h264_faststart.mov"  # 1 s: one segment
QUICKSTART_INDEX = "Field Review Clips"
QUICKSTART_INSTRUCTION = "Extract products, sentiment, and visible brand names"
QUICKSTART_QUERY = "employee restocking shelves near checkout"
TEMPLATE_LABEL = "Template, not generated:"
LEXICAL_WARNING = "lexical ranking: no embedder configured"
PROBE_SCHEMA = {
    "type": "object",
    "properties": {"duration_seconds": {"type": "number"}, "media_type": {"type": "string"}},
    "required": ["duration_seconds", "media_type"],
}
FIXED = dict(segmentation_mode="fixed", fixed_segment_duration_seconds=1)
TERMINAL_JOB = {"completed", "failed", "cancelled"}


def _word() -> str:
    return "w" + uuid.uuid4().hex[:12]


def _quickstart_media(tmp_path: Path) -> Path:
    media = tmp_path / "employee-restocking-shelves-near-checkout.mp4"
    shutil.copyfile(FIXTURES / MP4, media)
    return media


def _assert_template(definition) -> None:
    assert definition.description.startswith(TEMPLATE_LABEL), definition.description
    props = definition.json_schema["properties"]
    assert props["summary"]["type"] == "string", props
    assert props["keywords"]["type"] == "array" and props["keywords"]["items"]["type"] == "string", props
    assert definition.name and definition.prompt_text


def _check_quickstart(client, media: Path, readiness, upload, parts, prompt, run, results, printed: str) -> None:
    """What each quickstart step did, read back with the sync client."""
    assert isinstance(readiness, dict), readiness
    # 1. upload: an import job of kind upload into the index named, found or created once.
    assert upload.source_kind == "upload" and upload.job_id
    named = [i for i in client.indexes.list() if i.name == QUICKSTART_INDEX]
    assert len(named) == 1, f"find-or-create made {len(named)} indexes named {QUICKSTART_INDEX!r}"
    assert upload.target_index_id == named[0].index_id
    # 2./3. the job completed; one part (Spool does not split), titled after the file.
    job = client.import_jobs.retrieve(upload.job_id)
    assert (job.status, job.progress.imported, job.progress.failed) == ("completed", 1, 0), job
    (part,) = parts
    assert (part.part_index, part.part_count, part.file_name) == (0, 1, media.name), part
    assert printed.splitlines()[0] == f"1 1 {part.video_id}", printed
    video = client.videos.retrieve(part.video_id)
    assert video.title == media.name
    assert part.video_id in [v.video_id for v in client.indexes.list_videos(upload.target_index_id, limit=100).auto_paging_iter()]
    # 4. define: a saved prompt, labelled as a template.
    assert prompt.saved is True and prompt.prompt_id and prompt.prompt is not None
    assert prompt.prompt.prompt_id == prompt.prompt_id
    _assert_template(prompt.definition)
    stored = client.prompts.retrieve(prompt.prompt_id)
    assert stored == prompt.prompt
    assert (stored.json_schema, stored.prompt_text) == (prompt.definition.json_schema, prompt.definition.prompt_text)
    # 5. process: one run of that prompt over the job's outputs.
    run_id = run.run.run_id
    assert run.prompt_created_inline is False and run.prompt.prompt_id == prompt.prompt_id
    assert run.run.prompt_id == prompt.prompt_id and run.status_url == f"/api/v2/prompt-runs/{run_id}"
    # 6. searchable: completed, over the one video.
    done = client.prompt_runs.retrieve(run_id)
    assert done.status == "completed", done
    assert (done.total_videos, done.completed_videos) == (1, 1)
    segments = list(client.prompt_runs.list_results(run_id, video_id=part.video_id, limit=100).auto_paging_iter())
    assert segments
    # 7. search: lexical ranking, said so; every segment of the run holds the query's words.
    resp = results.response
    assert resp.mode == "vector" and resp.result_level == "segment"
    assert any(LEXICAL_WARNING in w for w in resp.warnings), resp.warnings
    assert resp.pagination.limit == 10 and resp.pagination.count == len(resp.data)
    assert not resp.pagination.has_more and resp.pagination.next_cursor is None and not resp.pagination.truncated
    assert resp.pagination.result_window == 100
    assert resp.scope.get("prompt_run_ids") == [run_id], resp.scope
    assert resp.coverage.get("runs_pending") in (0, []), resp.coverage
    assert resp.coverage.get("runs_searched") in (1, [run_id]), resp.coverage
    assert sorted(h.segment_id for h in resp.data) == sorted(s.segment_id for s in segments)
    for h in resp.data:
        assert (h.run_id, h.video_id, h.result_id) == (run_id, part.video_id, f"{run_id}:{h.segment_id}")
        assert isinstance(h.similarity_score, float) and h.similarity_score > 0
        assert "employee" in h.text_content.lower() and "checkout" in h.text_content.lower()
    for h, line in zip(resp.data, printed.splitlines()[1:]):
        assert line == f"{h.video_id} {h.start_time} {h.similarity_score}"


def test_the_quickstart_runs_verbatim(make_client, tmp_path, capsys):
    media = _quickstart_media(tmp_path)
    parts = []
    # -- the quickstart (METADATA), verbatim but for the file, the polls and the client --
    with make_client() as client:
        readiness = client.authenticate()
        upload = client.workflow.upload(
            file=str(media),
            index_name="Field Review Clips",
        )

        client.import_jobs.wait_for_completion(upload.job_id, poll_interval=0.2, timeout=WAIT_S)
        for part in client.import_jobs.iter_outputs(upload.job_id):
            print(part.part_index + 1, part.part_count, part.video_id)
            parts.append(part)

        prompt = client.workflow.define(
            "Extract products, sentiment, and visible brand names"
        )
        run = client.workflow.process(
            prompt_id=prompt.prompt_id,
            import_job_id=upload.job_id,
        )
        client.workflow.wait_until_searchable(run.run.run_id, poll_interval=0.2, timeout=WAIT_S)

        results = client.workflow.search(
            query="employee restocking shelves near checkout",
            prompt_run_ids=[run.run.run_id],
            limit=10,
        )

        for result in results:
            print(result.video_id, result.start_time, result.similarity_score)
        # -- end of the quickstart --
        printed = capsys.readouterr().out
        assert len(results) >= 1, "the quickstart's search found nothing"
        _check_quickstart(client, media, readiness, upload, parts, prompt, run, results, printed)


def test_the_async_quickstart_runs_verbatim(client, make_async_client, tmp_path, capsys):
    media = _quickstart_media(tmp_path)

    async def quickstart():
        parts = []
        async with await make_async_client() as client:
            readiness = await client.authenticate()
            upload = await client.workflow.upload(
                file=str(media),
                index_name="Field Review Clips",
            )

            await client.import_jobs.wait_for_completion(upload.job_id, poll_interval=0.2, timeout=WAIT_S)
            async for part in client.import_jobs.iter_outputs(upload.job_id):
                print(part.part_index + 1, part.part_count, part.video_id)
                parts.append(part)

            prompt = await client.workflow.define(
                "Extract products, sentiment, and visible brand names"
            )
            run = await client.workflow.process(
                prompt_id=prompt.prompt_id,
                import_job_id=upload.job_id,
            )
            await client.workflow.wait_until_searchable(run.run.run_id, poll_interval=0.2, timeout=WAIT_S)

            results = await client.workflow.search(
                query="employee restocking shelves near checkout",
                prompt_run_ids=[run.run.run_id],
                limit=10,
            )

            for result in results:
                print(result.video_id, result.start_time, result.similarity_score)
            # The async page: next_page is awaited, and there is none.
            assert await results.next_page() is None
            collected = [h async for h in results.auto_paging_iter()]
            assert [h.result_id for h in collected] == [h.result_id for h in results.data]
            return readiness, upload, parts, prompt, run, results

    readiness, upload, parts, prompt, run, results = asyncio.run(quickstart())
    printed = capsys.readouterr().out
    assert len(results) >= 1, "the quickstart's search found nothing"
    _check_quickstart(client, media, readiness, upload, parts, prompt, run, results, printed)


# ---------------------------------------------------------------------------------------------
# helpers for the steps


def _upload(client, name: str, *, title: Optional[str] = None, index_name: Optional[str] = None, index_id: Optional[str] = None):
    job = client.workflow.upload(FIXTURES / name, title=title, index_name=index_name, index_id=index_id)
    assert job.source_kind == "upload"
    job = client.import_jobs.wait_for_completion(job.job_id, poll_interval=0.1, timeout=WAIT_S)
    assert (job.status, job.progress.imported, job.progress.failed) == ("completed", 1, 0), job
    (out,) = list(client.import_jobs.iter_outputs(job.job_id))
    return job, out.video_id


def _probe_prompt(client):
    return client.prompts.create(name=unique("wf-probe"), prompt_text="Describe the media of each segment.", json_schema=PROBE_SCHEMA)


def _pair(client):
    """An index (made by name through upload) holding the mp4 and the mov, titled with words
    of their own."""
    name = unique("wf-pair")
    w1, w2 = _word(), _word()
    job_a, vid_a = _upload(client, MP4, title=f"alpha {w1}", index_name=name)
    job_b, vid_b = _upload(client, MOV, title=f"bravo {w2}", index_name=name)
    assert job_a.target_index_id and job_b.target_index_id == job_a.target_index_id, "index_name found its index again"
    return name, job_a.target_index_id, vid_a, vid_b, w1, w2


def _searchable(client, run_id: str):
    done = client.workflow.wait_until_searchable(run_id, poll_interval=0.2, timeout=WAIT_S)
    assert done.status == "completed", done
    return done


# ---------------------------------------------------------------------------------------------
# upload, define


def test_upload_targets_an_index_by_id_or_name_or_the_playground(client):
    name = unique("wf-up")
    job, vid = _upload(client, MOV, index_name=name)
    index_id = job.target_index_id
    assert [i.index_id for i in client.indexes.list() if i.name == name] == [index_id]
    assert client.videos.retrieve(vid).title == MOV  # the title defaults to the file name
    again, vid2 = _upload(client, MP4, index_id=index_id, index_name=name, title="both agree")
    assert again.target_index_id == index_id and client.videos.retrieve(vid2).title == "both agree"
    by_id, _ = _upload(client, MOV, index_id=index_id)
    assert by_id.target_index_id == index_id
    listed = {v.video_id for v in client.indexes.list_videos(index_id, limit=100).auto_paging_iter()}
    assert {vid, vid2} <= listed and len(listed) == 3
    with pytest.raises(ValidationError):
        client.workflow.upload(FIXTURES / MOV, index_id=index_id, index_name=unique("wf-other"))
    assert [i.index_id for i in client.indexes.list() if i.name == name] == [index_id]
    play, pvid = _upload(client, MOV, title=unique("wf-play"))
    assert play.target_index_id is None
    assert pvid in {v.video_id for v in client.videos.list_playground(limit=100).auto_paging_iter()}


def test_define_answers_a_labelled_template_saved_or_not(client):
    instruction = "Find the forklifts and the people near them in each clip"
    before = client.prompts.list().total_count
    unsaved = client.workflow.define(instruction, save=False)
    assert (unsaved.prompt_id, unsaved.saved, unsaved.prompt) == (None, False, None)
    _assert_template(unsaved.definition)
    assert client.prompts.list().total_count == before, "save=False stored a prompt"

    saved = client.workflow.define(instruction)
    assert saved.saved is True and saved.prompt_id and saved.prompt.prompt_id == saved.prompt_id
    _assert_template(saved.definition)
    assert client.prompts.retrieve(saved.prompt_id) == saved.prompt
    assert saved.prompt.json_schema == saved.definition.json_schema
    assert saved.prompt.description == saved.definition.description
    assert client.prompts.list().total_count == before + 1

    for blank in ("", "   ", "\n\t"):
        with pytest.raises(ValidationError) as e:
            client.workflow.define(blank)
        assert e.value.status_code == 422
        with pytest.raises(ValidationError):
            client.workflow.define(blank, save=False)
    assert client.prompts.list().total_count == before + 1


# ---------------------------------------------------------------------------------------------
# process


def test_process_takes_an_instruction_video_ids_an_index_id_or_name(client):
    name, index_id, vid_a, vid_b, _, _ = _pair(client)
    prompt = _probe_prompt(client)

    inline = client.workflow.process(prompt_instruction="Describe the products on the shelves", video_ids=vid_a)
    assert inline.prompt_created_inline is True
    _assert_template(inline.prompt)
    assert client.prompts.retrieve(inline.prompt.prompt_id) == inline.prompt
    assert inline.run.prompt_id == inline.prompt.prompt_id
    assert inline.status_url == f"/api/v2/prompt-runs/{inline.run.run_id}"
    assert inline.run.run_context["type"] == "videos" and inline.run.run_context["video_ids"] == [vid_a]
    done = _searchable(client, inline.run.run_id)
    assert (done.total_videos, done.completed_videos) == (1, 1)

    one = client.workflow.process(prompt_id=prompt.prompt_id, video_ids=vid_a, **FIXED)
    assert one.prompt_created_inline is False and one.prompt == client.prompts.retrieve(prompt.prompt_id)
    assert (one.run.video_segmentation_type, one.run.video_segment_duration) == ("fixed", 1)
    assert one.run.run_context["video_ids"] == [vid_a]
    done = _searchable(client, one.run.run_id)
    assert (done.total_videos, done.total_segments, done.completed_segments) == (1, 2, 2)

    two = client.workflow.process(prompt_id=prompt.prompt_id, video_ids=[vid_a, vid_b], **FIXED)
    assert two.run.run_context["video_ids"] == [vid_a, vid_b]
    done = _searchable(client, two.run.run_id)
    assert (done.total_videos, done.total_segments) == (2, 3)

    for target in ({"index_name": name}, {"index_id": index_id}):
        r = client.workflow.process(prompt_id=prompt.prompt_id, **target, **FIXED)
        assert r.run.run_context.get("type") == "index" and r.run.run_context.get("index_id") == index_id, r.run.run_context
        done = _searchable(client, r.run.run_id)
        assert (done.total_videos, done.total_segments) == (2, 3)
        assert {x.run_id for x in client.indexes.list_prompt_runs(index_id)} >= {r.run.run_id}


def test_process_refuses_no_target_an_unknown_prompt_and_what_it_cannot_do(client):
    _, index_id, vid_a, _, _, _ = _pair(client)
    prompt = _probe_prompt(client)
    runs_before = [r.run_id for r in client.videos.list_prompt_runs(vid_a)]
    with pytest.raises(ValidationError) as e:
        client.workflow.process(prompt_id=prompt.prompt_id)
    assert (e.value.status_code, e.value.error_code) == (422, "target_required"), repr(e.value)
    with pytest.raises(NotFoundError):
        client.workflow.process(prompt_id="prompt_01KB0000000000000000000000", video_ids=vid_a)
    for flag in ("create_image_embeddings", "advanced_transcription"):
        with pytest.raises(ValidationError) as e:
            client.workflow.process(prompt_id=prompt.prompt_id, video_ids=vid_a, **{flag: True})
        assert e.value.status_code == 422, repr(e.value)
    with pytest.raises(ValidationError):
        client.workflow.process(prompt_instruction="   x   ", index_id=index_id, create_image_embeddings=True)
    assert [r.run_id for r in client.videos.list_prompt_runs(vid_a)] == runs_before, "a refused process started a run"
    # Saying "no" to what it cannot do is fine.
    ok = client.workflow.process(prompt_id=prompt.prompt_id, video_ids=vid_a, create_image_embeddings=False, advanced_transcription=False)
    _searchable(client, ok.run.run_id)


def test_process_refuses_an_import_job_that_is_not_completed(client, raw, admin_headers, spool_server):
    root = spool_server.local_root / unique("wf-many")
    root.mkdir()
    for i in range(300):
        (root / f"{i:03}.wav").write_bytes(wav(f"{root.name}{i}", 2048))
    resp = raw.post(
        "/api/v2/connectors/local", json={"name": unique("local"), "root": str(root), "scopes": ["import"]}, headers=admin_headers
    )
    assert resp.status_code == 201, resp.text
    index_id = client.indexes.create(name=unique("wf-job")).index_id
    prompt = _probe_prompt(client)

    job = client.import_jobs.create(connector_id=resp.json()["connector_id"], index_id=index_id)
    # Still going (300 files): not completed.
    with pytest.raises(ConflictError) as e:
        client.workflow.process(prompt_id=prompt.prompt_id, import_job_id=job.job_id)
    assert (e.value.status_code, e.value.error_code) == (409, "import_job_not_completed"), repr(e.value)
    client.import_jobs.cancel(job.job_id)
    deadline = time.monotonic() + WAIT_S
    while (j := client.import_jobs.retrieve(job.job_id)).status not in TERMINAL_JOB:
        assert time.monotonic() < deadline, j
        time.sleep(0.05)
    assert j.status == "cancelled", "the job finished before it was cancelled; nothing was tested"
    with pytest.raises(ConflictError) as e:
        client.workflow.process(prompt_id=prompt.prompt_id, import_job_id=job.job_id)
    assert e.value.error_code == "import_job_not_completed"
    with pytest.raises(NotFoundError):
        client.workflow.process(prompt_id=prompt.prompt_id, import_job_id="job_01KB0000000000000000000000")
    assert list(client.indexes.list_prompt_runs(index_id)) == []


def test_process_with_the_same_idempotency_key_answers_the_same_run(client):
    _, _, vid_a, vid_b, _, _ = _pair(client)
    prompt = _probe_prompt(client)
    key = unique("wf-process")
    first = client.workflow.process(prompt_id=prompt.prompt_id, video_ids=vid_a, idempotency_key=key)
    again = client.workflow.process(prompt_id=prompt.prompt_id, video_ids=vid_a, idempotency_key=key)
    assert again.run.run_id == first.run.run_id and again.prompt.prompt_id == first.prompt.prompt_id
    assert again.status_url == first.status_url
    with pytest.raises((ConflictError, IdempotencyError)):
        client.workflow.process(prompt_id=prompt.prompt_id, video_ids=vid_b, idempotency_key=key)
    other = client.workflow.process(prompt_id=prompt.prompt_id, video_ids=vid_a)  # a key of the SDK's own
    assert other.run.run_id != first.run.run_id
    _searchable(client, first.run.run_id)
    _searchable(client, other.run.run_id)
    assert sorted(r.run_id for r in client.videos.list_prompt_runs(vid_a)) == sorted([first.run.run_id, other.run.run_id])
    assert [r.run_id for r in client.videos.list_prompt_runs(vid_b)] == []
    # An inline prompt is made once too.
    ikey = unique("wf-inline")
    a = client.workflow.process(prompt_instruction="Describe the shelves", video_ids=vid_b, idempotency_key=ikey)
    b = client.workflow.process(prompt_instruction="Describe the shelves", video_ids=vid_b, idempotency_key=ikey)
    assert (b.run.run_id, b.prompt.prompt_id) == (a.run.run_id, a.prompt.prompt_id)


# ---------------------------------------------------------------------------------------------
# search


def _cond(field: str, op: str, value: Any, type_: str) -> dict:
    return {"field": field, "operator": op, "value": value, "type": type_}


def test_workflow_search_pages_a_snapshot_and_filters_by_conditions(client, raw, admin_headers):
    name, index_id, vid_a, vid_b, w1, w2 = _pair(client)
    prompt = _probe_prompt(client)
    run = client.workflow.process(prompt_id=prompt.prompt_id, index_name=name, **FIXED)
    run_id = run.run.run_id
    _searchable(client, run_id)
    query = f"{w1} {w2}"

    whole = client.workflow.search(query=query, prompt_run_ids=[run_id], limit=50)
    order = [h.result_id for h in whole]
    assert len(order) == 3 and len(set(order)) == 3
    assert sorted(h.video_id for h in whole) == sorted([vid_a, vid_a, vid_b])
    assert whole.response.mode == "vector" and whole.response.pagination.count == 3 and not whole.has_more

    # limit=1: three pages of one; the walk yields the snapshot once, in its order.
    page = client.workflow.search(query=query, prompt_run_ids=[run_id], limit=1)
    assert len(page) == 1 and page.has_more and page.next_cursor
    assert (page.response.pagination.limit, page.response.pagination.count) == (1, 1)
    walk = [h.result_id for h in page.auto_paging_iter()]
    assert sorted(walk) == sorted(order), (walk, order)  # (equal scores may rank in either order)
    second = page.next_page()
    assert second is not None and [h.result_id for h in second] == walk[1:2] and second.has_more
    third = second.next_page()
    assert [h.result_id for h in third] == walk[2:] and not third.has_more and third.next_cursor is None
    assert third.next_page() is None
    # The cursor reads the same page of the same snapshot again, through search(cursor=…).
    for _ in range(2):
        reused = client.workflow.search(cursor=page.next_cursor)
        assert [h.result_id for h in reused] == walk[1:2] and reused.next_cursor == second.next_cursor
        assert reused.response.mode == "vector"
    for bad in ("nope", "AAAA", "c_" + "0" * 26):
        with pytest.raises((NotFoundError, ValidationError)):
            client.workflow.search(cursor=bad)

    # Scope by index, index name, one video (a str) or a list.
    assert sorted(h.result_id for h in client.workflow.search(query=query, index_id=index_id, limit=50)) == sorted(order)
    by_name = client.workflow.search(query=query, index_name=name, limit=50)
    assert sorted(h.result_id for h in by_name) == sorted(order)
    assert [h.video_id for h in client.workflow.search(query=query, video_ids=vid_b, limit=50)] == [vid_b]
    assert sorted(h.video_id for h in client.workflow.search(query=query, video_ids=[vid_a], limit=50)) == [vid_a, vid_a]
    scoped = client.workflow.search(query=query, prompt_run_ids=run_id, limit=50)  # a str
    assert scoped.response.scope.get("prompt_run_ids") == [run_id]

    # Conditions: mode "condition", no score.
    videos = [_cond("media_type", "equals", "video", "string")]
    cond = client.workflow.search(filters=videos, prompt_run_ids=[run_id], limit=50)
    assert cond.response.mode == "condition"
    assert not any(LEXICAL_WARNING in w for w in cond.response.warnings)
    assert sorted(h.video_id for h in cond) == sorted([vid_a, vid_a, vid_b])
    assert all(h.similarity_score is None and h.matched_field_paths == ["media_type"] for h in cond)
    late = client.workflow.search(filters=[_cond("start_time", "greater_than", 0.5, "number")], prompt_run_ids=[run_id])
    assert [(h.video_id, h.start_time) for h in late] == [(vid_a, 1.0)]
    both = client.workflow.search(
        filters=[_cond("start_time", "less_than", 0.5, "number"), _cond("duration_seconds", "equals", 1.0, "number")],
        prompt_run_ids=[run_id],
    )
    assert sorted(h.video_id for h in both) == sorted([vid_a, vid_b])
    paged = client.workflow.search(filters=videos, prompt_run_ids=[run_id], limit=1)
    walked = [h.result_id for h in paged.auto_paging_iter()]
    assert len(walked) == 3 and set(walked) == {h.result_id for h in cond}
    # The SDK does not check workflow filters: the server does (2.11's rules).
    for bad in (
        [_cond("media_type", "resembles", "video", "string")],
        [_cond("media_type", "equals", "video", "colour")],
        [{"field": "media_type", "operator": "equals", "type": "string"}],
        [{"field": "", "operator": "is_empty", "type": "string"}],
    ):
        with pytest.raises(ValidationError):
            client.workflow.search(filters=bad, prompt_run_ids=[run_id])

    # What the SDK would refuse itself, sent raw: limit out of 1..=50, both or neither of query/filters.
    url = "/api/v2/workflow/search"
    for body in (
        {"query": query, "limit": 51, "result_level": "segment"},
        {"query": query, "limit": 0, "result_level": "segment"},
        {"query": query, "filters": videos, "limit": 10, "result_level": "segment"},
        {"limit": 10, "result_level": "segment"},
        {"query": "   ", "limit": 10, "result_level": "segment"},
        {"query": query, "limit": 10, "result_level": "frame"},
    ):
        r = raw.post(url, json=body, headers=admin_headers)
        assert r.status_code == 422, (body, r.status_code, r.text[:300])
    assert raw.get("/api/v2/workflow/search/page", params={"cursor": "nope"}, headers=admin_headers).status_code in (404, 422)


def test_async_workflow_steps_and_paging(client, make_async_client):
    name, index_id, vid_a, vid_b, w1, w2 = _pair(client)
    prompt = _probe_prompt(client)

    async def main():
        async with await make_async_client() as ac:
            with pytest.raises(ValidationError):
                await ac.workflow.define("")
            unsaved = await ac.workflow.define("Count the carts", save=False)
            assert unsaved.prompt_id is None and unsaved.definition.description.startswith(TEMPLATE_LABEL)
            with pytest.raises(ValidationError) as e:
                await ac.workflow.process(prompt_id=prompt.prompt_id)
            assert e.value.error_code == "target_required"
            key = unique("wf-async")
            run = await ac.workflow.process(prompt_id=prompt.prompt_id, index_id=index_id, idempotency_key=key, **FIXED)
            again = await ac.workflow.process(prompt_id=prompt.prompt_id, index_id=index_id, idempotency_key=key, **FIXED)
            assert again.run.run_id == run.run.run_id
            done = await ac.workflow.wait_until_searchable(run.run.run_id, poll_interval=0.2, timeout=WAIT_S)
            assert done.status == "completed"
            page = await ac.workflow.search(query=f"{w1} {w2}", prompt_run_ids=[run.run.run_id], limit=1)
            assert len(page) == 1 and page.has_more
            walked = [h.result_id async for h in page.auto_paging_iter()]
            nxt = await page.next_page()
            reused = await ac.workflow.search(cursor=page.next_cursor)
            assert [h.result_id for h in reused.data] == [h.result_id for h in nxt.data] == walked[1:2]
            with pytest.raises((NotFoundError, ValidationError)):
                await ac.workflow.search(cursor="nope")
            return run.run.run_id, walked

    run_id, walked = asyncio.run(main())
    assert len(walked) == 3 and len(set(walked)) == 3
    sync = client.workflow.search(query=f"{w1} {w2}", prompt_run_ids=[run_id], limit=50)
    assert sorted(h.result_id for h in sync) == sorted(walked)


def test_define_asks_the_processor_that_writes_definitions(worker):
    """`processors.define` names the worker: `define` sends it a signed `kind: "define"`
    request and saves what it wrote (no template label); a worker failure is a 502 (retried by
    the SDK with the same key), a schema that is not one is refused, nothing is saved then."""
    from prompt_worker import PROCESSOR_NAME
    from test_usage_rate_limits import LimitedServer
    from videovector import ExternalServiceError

    config = (
        "[processors]\n"
        'default = "probe"\n'
        f'define = "{PROCESSOR_NAME}"\n\n'
        f"[processors.{PROCESSOR_NAME}]\n"
        'kind = "http"\n'
        f'url = "{worker.url}"\n'
        f'secret = "{worker.secret}"\n'
        'timeout = "10s"\n'
    )
    # The real time: the worker checks the signature's timestamp.
    server = LimitedServer(env={"SPOOL_TEST_CLOCK_MS": str(int(time.time() * 1000))}, config=config)
    try:
        server.start()
        c = server.sdk()
        instruction = "list the products on the shelves " + uuid.uuid4().hex[:8]
        d = c.workflow.define(instruction)
        assert d.saved and d.prompt_id and d.prompt is not None
        assert d.definition.name.startswith("Defined: list the products")
        assert "Template" not in d.definition.description
        assert d.definition.json_schema["properties"]["products"]["type"] == "array"
        stored = c.prompts.retrieve(d.prompt_id)
        assert (stored.name, stored.prompt_text, stored.json_schema) == (
            d.definition.name, d.definition.prompt_text, d.definition.json_schema,
        )
        (call,) = [x for x in worker.calls if x.body and x.body.get("kind") == "define" and x.body.get("instruction") == instruction]
        assert call.verified, "the define request is signed like a task"
        # Not saved: the same definition, no prompt.
        unsaved = c.workflow.define(instruction, save=False)
        assert (unsaved.saved, unsaved.prompt_id) == (False, None)
        before = {p.prompt_id for p in c.prompts.list().prompts}
        with pytest.raises(ExternalServiceError):
            c.workflow.define("fail please mode=500")
        with pytest.raises(ExternalServiceError):
            c.workflow.define("an unusable schema mode=invalid")
        assert {p.prompt_id for p in c.prompts.list().prompts} == before
    finally:
        server.close()


def test_a_cursor_with_a_huge_offset_is_answered_not_a_crash(client, raw, admin_headers):
    """A regression: an offset near u64::MAX in a crafted cursor overflowed (a panic)."""
    import base64

    index = client.indexes.create(name=unique("wf-cursor")).index_id
    vids = []
    for _ in range(2):
        job = client.workflow.upload(file=FIXTURES / "h264_aac.mp4", index_id=index)
        job = client.import_jobs.wait_for_completion(job.job_id, poll_interval=0.1, timeout=60)
        vids += [o.video_id for o in job.outputs.items]
    prompt = client.prompts.create(
        name=unique("wf-cursor"),
        prompt_text="Describe the media of each segment.",
        json_schema={"type": "object", "properties": {"media_type": {"type": "string"}}},
    )
    run = client.workflow.process(prompt_id=prompt.prompt_id, index_id=index)
    client.workflow.wait_until_searchable(run.run.run_id, poll_interval=0.2, timeout=60)
    page = client.workflow.search(filters=[{"field": "media_type", "operator": "is_not_empty", "type": "string"}], index_id=index, limit=1)
    assert page.response.pagination.has_more and page.response.pagination.next_cursor
    raw_cursor = page.response.pagination.next_cursor
    key = base64.urlsafe_b64decode(raw_cursor + "=" * (-len(raw_cursor) % 4)).decode()
    snap = key.split(":")[1]
    crafted = base64.urlsafe_b64encode(f"v1:{snap}:18446744073709551615:10".encode()).decode().rstrip("=")
    r = raw.get("/api/v2/workflow/search/page", params={"cursor": crafted}, headers=admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [] and r.json()["pagination"]["has_more"] is False
