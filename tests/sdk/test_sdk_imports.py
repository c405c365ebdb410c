"""Import jobs through the official SDK against s3s-fs (contract §2.3, §2.7, §6.1).

Every job imports from its own s3s-fs bucket into its own index. Objects are written with boto3
or, where many are needed or one must be unreadable, straight into the bucket's folder (s3s-fs
serves `SPOOL_TEST_S3S_ROOT/<bucket>/<key>`). Imported videos are checked against the bytes
that were written: `GET /videos/{id}` carries `size_bytes`, `sha256` and `source` beside the
SDK's `Video` fields.

Spool probes every imported file, so every file meant to import is real media (the helpers'
`video`, `wav`, `image`, `fixture`), and its `media_type` is what the probe finds in it.

A job reported `cancelled` is expected to be final, like any terminal job: no file still
importing, and no counter, output or video added afterwards.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Dict, List, Optional

import pytest
from videovector import ConflictError, NotFoundError, SyncPage, ValidationError, Video

import storage
from spool_sdk_helpers import (
    URL_SAFE_ID,
    assert_error_envelope,
    assert_timestamp,
    fixture,
    image,
    unique,
    video,
    wav,
)

POLL_S = 0.1
WAIT_S = 30.0
TERMINAL = {"completed", "failed", "cancelled"}
JOB_STATUSES = {"pending", "scanning", "importing", *TERMINAL}
MISSING_JOB = "job_01KB0000000000000000000000"


# ---------------------------------------------------------------------------------------------
# helpers


def _body(seed: str, size: int) -> bytes:
    """Deterministic, distinct content of `size` bytes (not media: for files Spool skips)."""
    out = b""
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        out += block
        block = hashlib.sha256(block).digest()
    return out[:size]


def _mp4(seed: str) -> bytes:
    """A real MP4 (H.264 + AAC), distinct per seed: probed as a video."""
    return video(seed, name="h264_aac.mp4")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bucket_dir(bucket: str) -> str:
    return os.path.join(os.environ["SPOOL_TEST_S3S_ROOT"], bucket)


def _write(bucket: str, key: str, data: bytes) -> None:
    """Write an object as a file in the s3s-fs bucket folder."""
    path = os.path.join(_bucket_dir(bucket), key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _connector(client, bucket: str, *, scopes=("import",), import_mode: str = "all") -> str:
    server = storage.s3s()
    conn = client.connectors.create_s3(
        name=unique("imp"),
        bucket=bucket,
        region="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        scopes=list(scopes),
        import_mode=import_mode,
    )
    assert conn.import_mode == import_mode
    return conn.connector_id


def _index(client) -> str:
    return client.indexes.create(name=unique("imports")).index_id


def _wait(client, job_id: str):
    job = client.import_jobs.wait_for_completion(job_id, poll_interval=POLL_S, timeout=WAIT_S)
    assert job.status in TERMINAL
    return job


def _raw_video(raw, admin_headers, video_id: str) -> dict:
    resp = raw.get(f"/api/v2/videos/{video_id}", headers=admin_headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _assert_progress_matches_files(job, files) -> None:
    """The progress counters are the files' outcomes; on a completed job every file has one."""
    p = job.progress
    by_status: Dict[str, int] = {}
    for f in files:
        by_status[f.status] = by_status.get(f.status, 0) + 1
    assert p.total_files == len(files), (p, by_status)
    assert p.imported == by_status.get("imported", 0), (p, by_status)
    assert p.failed == by_status.get("failed", 0), (p, by_status)
    assert p.skipped == by_status.get("skipped", 0), (p, by_status)
    if job.status == "completed":
        assert p.imported + p.failed + p.skipped == p.total_files, p
    else:
        assert p.imported + p.failed + p.skipped <= p.total_files, p


def _assert_imported_video(raw, admin_headers, client, out, *, key: str, data: bytes, media_type: str,
                           connector_id: str, index_id: str) -> None:
    assert out.status == "ready"
    assert out.file_name == key
    assert out.title == key.rsplit("/", 1)[-1]
    assert (out.part_index, out.part_count) == (0, 1)
    assert URL_SAFE_ID.match(out.video_id), out.video_id
    v = _raw_video(raw, admin_headers, out.video_id)
    assert v["video_id"] == out.video_id
    assert v["title"] == key.rsplit("/", 1)[-1]
    assert v["media_type"] == media_type
    assert v["size_bytes"] == len(data)
    assert v["sha256"] == _sha(data)
    assert v["index_id"] == index_id
    assert v["source"]["connector_id"] == connector_id
    assert v["source"]["path"] == key
    # s3s-fs lists objects without an ETag, so the listing gives Spool none to record.
    assert "etag" in v["source"] and (v["source"]["etag"] is None or isinstance(v["source"]["etag"], str))
    # The SDK's own model accepts it too.
    sdk = client.videos.retrieve(out.video_id)
    assert isinstance(sdk, Video)
    assert (sdk.video_id, sdk.title, sdk.media_type) == (out.video_id, v["title"], media_type)
    assert_timestamp(sdk.created_at)


# ---------------------------------------------------------------------------------------------
# 1. a full import: outputs, files, progress, videos


# key -> (media_type the probe finds, or None for a skipped file; the bytes written)
IMPORT_FILES = {
    "in/clip.mp4": ("video", _mp4("in/clip.mp4")),
    "in/Song.MP3": ("audio", fixture("tone.mp3")),
    "in/sub/deeper/pic.png": ("image", image("in/sub/deeper/pic.png")),
    "in/sub/movie.MKV": ("video", fixture("mpeg4_flac.mkv")),
    "in/notes.txt": (None, _body("in/notes.txt", 12)),
    "in/empty.mov": (None, b""),
}


def test_import_outputs_files_progress_and_videos(client, raw, admin_headers):
    server = storage.s3s()
    bucket = server.make_bucket()
    payloads = {k: data for k, (_, data) in IMPORT_FILES.items()}
    for key, data in payloads.items():
        server.put(bucket, key, data)
    server.put(bucket, "elsewhere/outside.mp4", _mp4("not under the prefix"))
    conn_id = _connector(client, bucket)
    index_id = _index(client)

    created = client.import_jobs.create(connector_id=conn_id, index_id=index_id, source_prefix="in/")
    assert URL_SAFE_ID.match(created.job_id), created.job_id
    assert created.status in JOB_STATUSES
    assert (created.connector_id, created.target_index_id) == (conn_id, index_id)
    assert (created.source_prefix, created.file_pattern, created.recursive) == ("in/", "*", True)
    assert created.source_kind == "connector"
    assert_timestamp(created.created_at)

    job = _wait(client, created.job_id)
    assert job.status == "completed", job
    assert job.error_message is None
    assert_timestamp(job.completed_at)
    media = {k: v for k, v in IMPORT_FILES.items() if v[0] is not None}
    assert job.progress.total_files == len(IMPORT_FILES)
    assert (job.progress.imported, job.progress.failed, job.progress.skipped) == (len(media), 0, 2)
    assert job.progress.bytes_transferred == sum(len(payloads[k]) for k in media)
    assert job.progress.current_file is None

    outputs = list(client.import_jobs.iter_outputs(job.job_id))
    assert sorted(o.file_name for o in outputs) == sorted(media)
    assert len({o.video_id for o in outputs}) == len(outputs)
    assert sorted(job.video_ids) == sorted(o.video_id for o in outputs)
    assert job.outputs.total == len(outputs)
    for out in outputs:
        _assert_imported_video(
            raw, admin_headers, client, out,
            key=out.file_name, data=payloads[out.file_name], media_type=media[out.file_name][0],
            connector_id=conn_id, index_id=index_id,
        )

    files = list(client.import_jobs.iter_files(job.job_id))
    assert sorted(f.file_name for f in files) == sorted(IMPORT_FILES)
    assert len({f.file_id for f in files}) == len(files)
    by_name = {f.file_name: f for f in files}
    for key in media:
        assert by_name[key].status == "imported", by_name[key]
        assert by_name[key].skip_reason is None and by_name[key].failure is None
    assert by_name["in/notes.txt"].status == "skipped"
    assert by_name["in/notes.txt"].skip_reason == "unsupported_format"
    assert by_name["in/empty.mov"].status == "skipped"
    assert by_name["in/empty.mov"].skip_reason == "empty_object"
    assert list(client.import_jobs.iter_files(job.job_id, failed_only=True)) == []
    assert job.failed_files == []
    _assert_progress_matches_files(job, files)

    # Every imported video is in the index.
    listed = {v.video_id for v in client.indexes.list_videos(index_id, limit=100).auto_paging_iter()}
    assert listed == {o.video_id for o in outputs}


def test_pattern_and_non_recursive_scan(client):
    server = storage.s3s()
    bucket = server.make_bucket()
    for key, data in (
        ("top/a.mp4", _mp4("top/a.mp4")),
        ("top/b.jpg", fixture("still.jpg")),
        ("top/nested/c.mp4", _mp4("top/nested/c.mp4")),
    ):
        server.put(bucket, key, data)
    conn_id = _connector(client, bucket)
    index_id = _index(client)
    job = client.import_jobs.create(
        connector_id=conn_id, index_id=index_id, source_prefix="top/", file_pattern="*.mp4", recursive=False
    )
    job = _wait(client, job.job_id)
    assert job.status == "completed"
    assert [f.file_name for f in client.import_jobs.iter_files(job.job_id)] == ["top/a.mp4"]
    assert [o.file_name for o in client.import_jobs.iter_outputs(job.job_id)] == ["top/a.mp4"]
    assert (job.progress.total_files, job.progress.imported) == (1, 1)


# ---------------------------------------------------------------------------------------------
# 2. new_only


def test_new_only_connector_skips_already_imported_files(client, raw, admin_headers):
    server = storage.s3s()
    bucket = server.make_bucket()
    first = {"n/a.mp4": _mp4("na"), "n/b.wav": wav("nb", 200)}
    for key, data in first.items():
        server.put(bucket, key, data)
    conn_id = _connector(client, bucket, import_mode="new_only")
    index_id = _index(client)

    job1 = _wait(client, client.import_jobs.create(connector_id=conn_id, index_id=index_id).job_id)
    assert job1.status == "completed"
    assert (job1.progress.imported, job1.progress.skipped) == (2, 0)
    first_ids = {o.file_name: o.video_id for o in client.import_jobs.iter_outputs(job1.job_id)}
    assert set(first_ids) == set(first)

    added = _mp4("nc")
    server.put(bucket, "n/c.mp4", added)
    job2 = _wait(client, client.import_jobs.create(connector_id=conn_id, index_id=index_id).job_id)
    assert job2.job_id != job1.job_id
    assert job2.status == "completed"
    assert (job2.progress.total_files, job2.progress.imported, job2.progress.skipped, job2.progress.failed) == (3, 1, 2, 0)
    files = {f.file_name: f for f in client.import_jobs.iter_files(job2.job_id)}
    for key in first:
        assert files[key].status == "skipped" and files[key].skip_reason == "already_imported", files[key]
    assert files["n/c.mp4"].status == "imported"
    outputs = list(client.import_jobs.iter_outputs(job2.job_id))
    assert [o.file_name for o in outputs] == ["n/c.mp4"]
    assert outputs[0].video_id not in first_ids.values()
    _assert_imported_video(raw, admin_headers, client, outputs[0], key="n/c.mp4", data=added,
                           media_type="video", connector_id=conn_id, index_id=index_id)

    # A changed object (new content, new etag) is new again; the unchanged ones stay skipped.
    # (Another size too, as before: the MOV fixture under the same .mp4 name, still a video.)
    changed = video("na-v2")
    assert len(changed) != len(first["n/a.mp4"])
    server.put(bucket, "n/a.mp4", changed)
    job3 = _wait(client, client.import_jobs.create(connector_id=conn_id, index_id=index_id).job_id)
    assert (job3.progress.imported, job3.progress.skipped) == (1, 2), job3.progress
    [out3] = list(client.import_jobs.iter_outputs(job3.job_id))
    _assert_imported_video(raw, admin_headers, client, out3, key="n/a.mp4", data=changed,
                           media_type="video", connector_id=conn_id, index_id=index_id)

    # The same objects into another index are new there.
    other = _index(client)
    job4 = _wait(client, client.import_jobs.create(connector_id=conn_id, index_id=other).job_id)
    assert (job4.progress.imported, job4.progress.skipped) == (3, 0)

    # Four distinct videos in the first index (a, b, c, changed a), none imported twice.
    listed = [v.video_id for v in client.indexes.list_videos(index_id, limit=100).auto_paging_iter()]
    assert len(listed) == len(set(listed)) == 4


def test_new_only_as_a_job_override(client, raw, admin_headers):
    server = storage.s3s()
    bucket = server.make_bucket()
    server.put(bucket, "o/a.mp4", _mp4("oa"))
    conn_id = _connector(client, bucket, import_mode="all")
    index_id = _index(client)
    job1 = _wait(client, client.import_jobs.create(connector_id=conn_id, index_id=index_id).job_id)
    assert job1.progress.imported == 1
    server.put(bucket, "o/b.mp4", _mp4("ob"))

    # The SDK's create sends no import_mode; the override goes over raw HTTP.
    body = {"connector_id": conn_id, "index_id": index_id, "source_prefix": "", "file_pattern": "*",
            "recursive": True, "import_mode": "new_only"}
    resp = raw.post("/api/v2/import-jobs", json=body, headers=admin_headers)
    assert resp.status_code == 202, resp.text
    job2 = _wait(client, resp.json()["job_id"])
    assert (job2.progress.total_files, job2.progress.imported, job2.progress.skipped) == (2, 1, 1)
    files = {f.file_name: f for f in client.import_jobs.iter_files(job2.job_id)}
    assert files["o/a.mp4"].skip_reason == "already_imported"
    assert files["o/b.mp4"].status == "imported"

    # Without the override the connector's mode (all) applies: everything again.
    job3 = _wait(client, client.import_jobs.create(connector_id=conn_id, index_id=index_id).job_id)
    assert (job3.progress.imported, job3.progress.skipped) == (2, 0)

    bad = dict(body, import_mode="sometimes")
    assert_error_envelope(raw.post("/api/v2/import-jobs", json=bad, headers=admin_headers), 422, "validation_error")


# ---------------------------------------------------------------------------------------------
# 3. failed files and retry


def test_failed_file_is_listed_and_retry_imports_it(client, raw, admin_headers):
    server = storage.s3s()
    bucket = server.make_bucket()
    good = _mp4("good")
    server.put(bucket, "v/good.mp4", good)
    broken = os.path.join(_bucket_dir(bucket), "v", "broken.mp4")
    # Lists with a size (of the link) but every GET fails NoSuchKey.
    os.symlink("/nonexistent-" + unique("target"), broken)
    conn_id = _connector(client, bucket)
    index_id = _index(client)

    job = _wait(client, client.import_jobs.create(connector_id=conn_id, index_id=index_id).job_id)
    # A failed file does not fail the job.
    assert job.status == "completed", job
    assert job.error_message is None
    assert (job.progress.total_files, job.progress.imported, job.progress.failed, job.progress.skipped) == (2, 1, 1, 0)
    assert [f["file_name"] for f in job.failed_files] == ["v/broken.mp4"]
    assert job.failed_files_next_cursor is None
    assert job.failed_files[0]["failure"]["code"] == "source_object_missing"

    failed = list(client.import_jobs.iter_files(job.job_id, failed_only=True))
    assert [f.file_name for f in failed] == ["v/broken.mp4"]
    f = failed[0]
    assert f.status == "failed"
    assert f.skip_reason is None
    assert f.failure is not None
    assert f.failure["code"] == "source_object_missing"
    assert isinstance(f.failure["message"], str) and f.failure["message"]
    assert isinstance(f.failure["retryable"], bool)
    assert [o.file_name for o in client.import_jobs.iter_outputs(job.job_id)] == ["v/good.mp4"]
    _assert_progress_matches_files(job, list(client.import_jobs.iter_files(job.job_id)))

    # Fix the object, then retry: only the failed file is re-opened.
    os.unlink(broken)
    fixed = _mp4("fixed")
    server.put(bucket, "v/broken.mp4", fixed)
    retried = client.import_jobs.retry(job.job_id)
    assert retried.job_id == job.job_id
    assert retried.status in ("importing", "completed"), retried.status
    if retried.status == "importing":
        assert retried.completed_at is None
    again = _wait(client, job.job_id)
    assert again.status == "completed", again
    assert (again.progress.total_files, again.progress.imported, again.progress.failed) == (2, 2, 0)
    assert again.failed_files == []
    assert list(client.import_jobs.iter_files(job.job_id, failed_only=True)) == []
    outputs = {o.file_name: o for o in client.import_jobs.iter_outputs(job.job_id)}
    assert set(outputs) == {"v/good.mp4", "v/broken.mp4"}
    # The good file was not imported a second time.
    assert outputs["v/good.mp4"].video_id in job.video_ids
    _assert_imported_video(raw, admin_headers, client, outputs["v/broken.mp4"], key="v/broken.mp4", data=fixed,
                           media_type="video", connector_id=conn_id, index_id=index_id)
    _assert_progress_matches_files(again, list(client.import_jobs.iter_files(job.job_id)))
    listed = {v.video_id for v in client.indexes.list_videos(index_id, limit=100).auto_paging_iter()}
    assert listed == {o.video_id for o in outputs.values()}

    # Nothing left to retry now.
    with pytest.raises(ConflictError) as info:
        client.import_jobs.retry(job.job_id)
    assert info.value.status_code == 409 and info.value.error_code == "invalid_state"


def _media_store(spool_server) -> set:
    # Every node's: the node holding an index's partition keeps its media.
    out = set()
    for data in spool_server.data_dirs:
        media = data / "media"
        if media.exists():
            out |= {p for p in media.rglob("*") if p.is_file()}
    return out


def test_unreadable_media_fails_its_file_with_media_unreadable_and_keeps_nothing(
    client, raw, admin_headers, spool_server
):
    root = spool_server.local_root / unique("unreadable")
    root.mkdir()
    real = _mp4(root.name)
    (root / "real.mp4").write_bytes(real)
    (root / "corrupt.mp4").write_bytes(fixture("corrupt.mp4"))
    resp = raw.post(
        "/api/v2/connectors/local",
        json={"name": unique("local"), "root": str(root), "scopes": ["import"]},
        headers=admin_headers,
    )
    assert resp.status_code == 201, resp.text
    conn_id = resp.json()["connector_id"]
    index_id = _index(client)
    # Tests run one at a time: whatever the media store gains meanwhile is this job's.
    before = _media_store(spool_server)

    job = _wait(client, client.import_jobs.create(connector_id=conn_id, index_id=index_id).job_id)
    # A failed file does not fail the job.
    assert job.status == "completed", job
    assert job.error_message is None
    assert (job.progress.total_files, job.progress.imported, job.progress.failed, job.progress.skipped) == (2, 1, 1, 0)
    assert [f["file_name"] for f in job.failed_files] == ["corrupt.mp4"]
    assert job.failed_files[0]["failure"]["code"] == "media_unreadable"

    failed = list(client.import_jobs.iter_files(job.job_id, failed_only=True))
    assert [f.file_name for f in failed] == ["corrupt.mp4"]
    f = failed[0]
    assert f.status == "failed" and f.skip_reason is None
    assert f.failure is not None and f.failure["code"] == "media_unreadable", f.failure
    assert isinstance(f.failure["message"], str) and f.failure["message"]
    assert isinstance(f.failure["retryable"], bool)
    files = {f.file_name: f for f in client.import_jobs.iter_files(job.job_id)}
    assert set(files) == {"real.mp4", "corrupt.mp4"}
    assert files["real.mp4"].status == "imported", files["real.mp4"]
    _assert_progress_matches_files(job, list(files.values()))

    outputs = list(client.import_jobs.iter_outputs(job.job_id))
    assert [o.file_name for o in outputs] == ["real.mp4"]
    _assert_imported_video(raw, admin_headers, client, outputs[0], key="real.mp4", data=real,
                           media_type="video", connector_id=conn_id, index_id=index_id)
    listed = [v.video_id for v in client.indexes.list_videos(index_id, limit=100).auto_paging_iter()]
    assert listed == [outputs[0].video_id]

    # The media store holds exactly one file from this job: the real file's, with its bytes.
    added = sorted(_media_store(spool_server) - before)
    assert len(added) == 1, f"media store gained {added}"
    assert added[0].name.split(".")[0] == outputs[0].video_id, added
    assert added[0].read_bytes() == real


# ---------------------------------------------------------------------------------------------
# 4. cancel


def _many(bucket: str, n: int, prefix: str = "many") -> Dict[str, bytes]:
    """n distinct real WAVs of 2048 bytes each."""
    payloads = {f"{prefix}/{i:03}.wav": wav(f"{bucket}{i}", 2048) for i in range(n)}
    for key, data in payloads.items():
        _write(bucket, key, data)
    return payloads


def _assert_cancelled_job_is_final(client, raw, admin_headers, job) -> None:
    """A job reported `cancelled` is terminal: nothing still importing, nothing changes later,
    and cancelling it again answers the same job with 200."""
    files = list(client.import_jobs.iter_files(job.job_id))
    still = [f.file_name for f in files if f.status == "importing"]
    time.sleep(0.3)
    later = client.import_jobs.retrieve(job.job_id)
    assert later.status == "cancelled"
    assert (later.progress, later.outputs.total) == (job.progress, job.outputs.total), (
        f"the job changed after it was reported cancelled: imported {job.progress.imported} -> "
        f"{later.progress.imported}, outputs {job.outputs.total} -> {later.outputs.total}, "
        f"current_file {job.progress.current_file!r} -> {later.progress.current_file!r}; "
        f"files still importing when it was cancelled: {still}"
    )
    assert not still, f"a cancelled job still has files importing: {still}"
    assert job.progress.current_file is None
    _assert_progress_matches_files(later, files)
    resp = raw.post(f"/api/v2/import-jobs/{job.job_id}/cancel", headers=admin_headers)
    assert resp.status_code == 200, resp.text
    assert client.import_jobs.cancel(job.job_id).model_dump() == later.model_dump()


def test_cancel_right_away(client, raw, admin_headers):
    bucket = storage.s3s().make_bucket()
    n = 300
    _many(bucket, n)
    conn_id = _connector(client, bucket)
    index_id = _index(client)

    created = client.import_jobs.create(connector_id=conn_id, index_id=index_id)
    cancelled = client.import_jobs.cancel(created.job_id)
    assert cancelled.job_id == created.job_id
    assert cancelled.status in JOB_STATUSES - {"completed", "failed"}, cancelled.status
    job = _wait(client, created.job_id)
    assert job.status == "cancelled", job
    assert job.error_message is None
    assert_timestamp(job.completed_at)
    p = job.progress
    assert p.total_files <= n
    assert p.imported < n, "the job finished before it was cancelled; nothing was tested"
    assert p.imported + p.failed + p.skipped <= p.total_files
    _assert_cancelled_job_is_final(client, raw, admin_headers, job)


def test_cancel_mid_import_keeps_what_was_imported(client, raw, admin_headers):
    bucket = storage.s3s().make_bucket()
    n = 300
    payloads = _many(bucket, n)
    conn_id = _connector(client, bucket)
    index_id = _index(client)

    created = client.import_jobs.create(connector_id=conn_id, index_id=index_id)
    deadline = time.monotonic() + WAIT_S
    while client.import_jobs.retrieve(created.job_id).progress.imported < 1:
        assert time.monotonic() < deadline, "no file was imported"
        time.sleep(0.01)
    cancelled = client.import_jobs.cancel(created.job_id)
    assert cancelled.status in ("importing", "cancelled"), cancelled.status
    job = _wait(client, created.job_id)
    assert job.status == "cancelled", job
    _assert_cancelled_job_is_final(client, raw, admin_headers, job)
    assert_timestamp(job.completed_at)
    p = job.progress
    assert p.total_files == n
    assert 1 <= p.imported < n, p
    assert (p.failed, p.skipped) == (0, 0)
    assert p.bytes_transferred == 2048 * p.imported

    # Files already imported are kept: their videos resolve, with the right bytes, in the index.
    outputs = list(client.import_jobs.iter_outputs(job.job_id))
    assert len(outputs) == job.outputs.total
    for out in outputs:
        v = _raw_video(raw, admin_headers, out.video_id)
        assert v["sha256"] == _sha(payloads[out.file_name]), out
    listed = {v.video_id for v in client.indexes.list_videos(index_id, limit=100).auto_paging_iter()}
    assert listed == {o.video_id for o in outputs}
    assert len(outputs) == p.imported, (len(outputs), p)

    # Files past the first page are listed too, each once.
    files = list(client.import_jobs.iter_files(job.job_id))
    assert len(files) == n and len({f.file_id for f in files}) == n
    assert {f.file_name for f in files} == set(payloads)


def test_cancel_of_a_completed_job_returns_it_unchanged(client):
    server = storage.s3s()
    bucket = server.make_bucket()
    server.put(bucket, "c/one.mp4", _mp4("c1"))
    job = _wait(client, client.import_jobs.create(connector_id=_connector(client, bucket), index_id=_index(client)).job_id)
    assert job.status == "completed"
    after = client.import_jobs.cancel(job.job_id)
    assert after.model_dump() == job.model_dump()


# ---------------------------------------------------------------------------------------------
# 5. list_videos paging


def test_list_videos_pages_one_at_a_time(client):
    server = storage.s3s()
    bucket = server.make_bucket()
    for i in range(3):
        server.put(bucket, f"p/{i}.mp4", _mp4(f"p{i}"))
    index_id = _index(client)
    job = _wait(client, client.import_jobs.create(connector_id=_connector(client, bucket), index_id=index_id).job_id)
    assert job.progress.imported == 3
    expected = set(job.video_ids)
    assert len(expected) == 3

    page: Optional[SyncPage] = client.indexes.list_videos(index_id, limit=1)
    seen: List[str] = []
    pages = 0
    while page is not None:
        pages += 1
        assert pages <= 4, "list_videos does not stop"
        assert len(page.data) == 1, page.data
        seen.extend(v.video_id for v in page.data)
        if len(seen) < 3:
            assert page.has_more and page.next_cursor, (pages, page.has_more, page.next_cursor)
        page = page.next_page()
    assert pages == 3
    assert len(seen) == 3 and set(seen) == expected

    auto = [v.video_id for v in client.indexes.list_videos(index_id, limit=1).auto_paging_iter()]
    assert auto == seen
    assert [v.video_id for v in client.indexes.list_videos(index_id, limit=2)] == seen[:2]
    for v in client.indexes.list_videos(index_id, limit=100):
        assert isinstance(v, Video) and v.media_type == "video"


# ---------------------------------------------------------------------------------------------
# 6. scope and unknown references


def test_export_only_connector_is_refused(client, raw, admin_headers):
    bucket = storage.s3s().make_bucket()
    conn_id = _connector(client, bucket, scopes=("export",))
    index_id = _index(client)
    with pytest.raises(ValidationError) as info:
        client.import_jobs.create(connector_id=conn_id, index_id=index_id)
    assert info.value.status_code == 422
    assert info.value.error_code == "connector_scope_missing"
    body = {"connector_id": conn_id, "index_id": index_id, "source_prefix": "", "file_pattern": "*", "recursive": True}
    assert_error_envelope(raw.post("/api/v2/import-jobs", json=body, headers=admin_headers), 422, "connector_scope_missing")
    assert conn_id not in {j.connector_id for j in client.import_jobs.list()}


def test_unknown_connector_or_index_is_not_found(client):
    bucket = storage.s3s().make_bucket()
    conn_id = _connector(client, bucket)
    index_id = _index(client)
    with pytest.raises(NotFoundError):
        client.import_jobs.create(connector_id="conn_01KB0000000000000000000000", index_id=index_id)
    with pytest.raises(NotFoundError):
        client.import_jobs.create(connector_id=conn_id, index_id="idx_01KB0000000000000000000000")


# ---------------------------------------------------------------------------------------------
# 7. state errors and listing


def test_retry_of_a_running_or_clean_job_conflicts(client):
    bucket = storage.s3s().make_bucket()
    n = 150
    _many(bucket, n, prefix="r")
    conn_id = _connector(client, bucket)
    index_id = _index(client)
    job = client.import_jobs.create(connector_id=conn_id, index_id=index_id)
    running = client.import_jobs.retrieve(job.job_id)
    assert running.status not in TERMINAL, f"the job finished too early to be retried while running: {running.status}"
    with pytest.raises(ConflictError) as info:
        client.import_jobs.retry(job.job_id)
    assert info.value.status_code == 409 and info.value.error_code == "invalid_state"

    done = _wait(client, job.job_id)
    assert done.status == "completed"
    assert (done.progress.imported, done.progress.failed) == (n, 0)
    with pytest.raises(ConflictError) as info:
        client.import_jobs.retry(done.job_id)
    assert info.value.error_code == "invalid_state"
    # Neither refused retry touched the job.
    assert client.import_jobs.retrieve(done.job_id).model_dump() == done.model_dump()

    # More than one page of outputs: the job embeds the first page, iter_outputs walks them all.
    assert done.outputs.total == n
    assert len(done.outputs.items) == len(done.video_ids) == 100
    assert done.outputs.next_cursor is not None
    outputs = list(client.import_jobs.iter_outputs(done.job_id))
    assert len(outputs) == n and len({o.video_id for o in outputs}) == n
    assert [o.video_id for o in outputs[:100]] == done.video_ids
    assert sorted(o.file_name for o in outputs) == [f"r/{i:03}.wav" for i in range(n)]


def test_unknown_job_is_not_found(client):
    jobs = client.import_jobs
    for call in (
        lambda: jobs.retrieve(MISSING_JOB),
        lambda: jobs.cancel(MISSING_JOB),
        lambda: jobs.retry(MISSING_JOB),
        lambda: jobs.outputs(MISSING_JOB),
        lambda: jobs.files(MISSING_JOB),
    ):
        with pytest.raises(NotFoundError):
            call()
    with pytest.raises(NotFoundError):
        jobs.retrieve("not-a-job-id")


def test_list_filters_by_status(client):
    server = storage.s3s()
    bucket = server.make_bucket()
    server.put(bucket, "l/a.mp4", _mp4("la"))
    job = _wait(client, client.import_jobs.create(connector_id=_connector(client, bucket), index_id=_index(client)).job_id)
    assert job.status == "completed"
    everything = client.import_jobs.list()
    assert job.job_id in [j.job_id for j in everything]
    completed = client.import_jobs.list(status="completed")
    assert job.job_id in [j.job_id for j in completed]
    assert all(j.status == "completed" for j in completed), [j.status for j in completed]
    cancelled = client.import_jobs.list(status="cancelled")
    assert job.job_id not in [j.job_id for j in cancelled]
    assert all(j.status == "cancelled" for j in cancelled)
