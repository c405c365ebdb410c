"""Media through the official SDK (contract §2.7, §7.1): uploads (streamed, bounded, nothing
half-stored), registration of a connector's object, the probe's facts of every fixture checked
against ffprobe, long media as parts, signed media URLs with ranges, batch reads."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from videovector import NotFoundError, ValidationError

from spool_sdk_helpers import FIXTURES, assert_error_envelope, fixture, unique, video, wav

WAIT_S = 30.0
# conftest starts the server with this bound (SPOOL_UPLOAD_MAX_BYTES).
UPLOAD_MAX = 8 * 1024 * 1024


def _wait_job(client, job_id: str):
    deadline = time.monotonic() + WAIT_S
    while True:
        job = client.import_jobs.retrieve(job_id)
        if job.status in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def _ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def _uploads_left(spool_server) -> list:
    # Every node's staged uploads (a partitioned cluster stages them per partition, in
    # `uploads/p<N>/`, on the node holding the partition).
    left = []
    for data in spool_server.data_dirs:
        d = data / "uploads"
        if d.exists():
            left += [str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()]
    return sorted(left)


def _jobs_total(raw, admin_headers) -> str:
    """The newest job's id (list is newest first): unchanged means no job was made."""
    jobs = raw.get("/api/v2/import-jobs", params={"limit": 1}, headers=admin_headers).json()
    return jobs[0]["job_id"] if jobs else ""


MEDIA = {
    "h264_aac.mp4": "video",
    "h264_faststart.mov": "video",
    "vp9_opus.webm": "video",
    "vp8_live.webm": "video",
    "mpeg4_flac.mkv": "video",
    "vorbis.ogg": "audio",
    "tone.mp3": "audio",
    "tone.wav": "audio",
    "tone.flac": "audio",
    "still.jpg": "image",
    "still.png": "image",
}


def test_uploads_of_every_fixture_become_videos_with_the_facts_ffprobe_reports(client, raw, admin_headers):
    index = client.indexes.create(name=unique("media")).index_id
    for name, kind in MEDIA.items():
        path = FIXTURES / name
        job = client.videos.upload(file=path, title=f"fixture {name}", index_id=index)
        assert job.source_kind == "upload" and job.connector_id is None and job.target_index_id == index
        job = _wait_job(client, job.job_id)
        assert (job.status, job.progress.imported, job.progress.failed) == ("completed", 1, 0), (name, job)
        assert job.progress.bytes_transferred == path.stat().st_size
        (out,) = job.outputs.items
        v = raw.get(f"/api/v2/videos/{out.video_id}", headers=admin_headers).json()
        assert v["title"] == f"fixture {name}" and v["media_type"] == kind, (name, v)
        assert client.videos.retrieve(out.video_id).media_type == kind
        oracle = _ffprobe(path)
        media = v["media"]
        want_duration = oracle["format"].get("duration")
        if kind == "image":
            assert media["duration_seconds"] is None and out.source_end_seconds == 0.0
        elif want_duration is not None:
            assert abs(media["duration_seconds"] - float(want_duration)) <= max(0.05, 0.02 * float(want_duration)), name
            assert abs(out.source_end_seconds - media["duration_seconds"]) < 1e-6 and out.source_start_seconds == 0.0
        else:
            # vp8_live.webm: no duration in its header; the probe reads the last cluster.
            assert 1.9 <= media["duration_seconds"] <= 2.2, (name, media)
        theirs = [s for s in oracle["streams"] if s["codec_type"] in ("video", "audio")]
        # A still's picture is an image, as its video's media type is (ffprobe calls it a
        # video stream: a regression, the demo's table read `video mjpeg` for a JPEG).
        want = [("image" if kind == "image" else s["codec_type"], s["codec_name"]) for s in theirs]
        assert [(s["kind"], s["codec"]) for s in media["streams"]] == want, name
        for ours, t in zip(media["streams"], theirs):
            if t["codec_type"] == "video":
                assert (ours["width"], ours["height"]) == (t["width"], t["height"]), name
            else:
                assert (ours["sample_rate"], ours["channels"]) == (int(t["sample_rate"]), t["channels"]), name


def test_an_upload_larger_than_the_bound_is_413_and_nothing_is_stored(client, raw, admin_headers, spool_server, tmp_path):
    index = client.indexes.create(name=unique("big")).index_id
    before = _jobs_total(raw, admin_headers)
    big = tmp_path / "big.wav"
    big.write_bytes(wav("big", UPLOAD_MAX + 1024))
    # Declared too large: refused before the body is read.
    with pytest.raises(Exception) as e:
        client.videos.upload(file=big, title="too big", index_id=index)
    assert getattr(e.value, "status_code", None) == 413 or "413" in str(e.value)
    # Streamed without a length (chunked): refused once the bound is passed.
    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nstreamed\r\n"
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        data = big.read_bytes()
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]
        yield b"\r\n--b--\r\n"
    resp = raw.post(
        "/api/v2/videos/upload",
        content=chunks(),
        headers={**admin_headers, "Content-Type": "multipart/form-data; boundary=b"},
    )
    body = assert_error_envelope(resp, 413, "payload_too_large")
    assert body["details"]["max_bytes"] == UPLOAD_MAX
    assert _jobs_total(raw, admin_headers) == before
    assert _uploads_left(spool_server) == []


def test_an_upload_cut_off_mid_stream_leaves_nothing(client, raw, admin_headers, spool_server):
    index = client.indexes.create(name=unique("cut")).index_id
    before = _jobs_total(raw, admin_headers)
    url = urlsplit(spool_server.root_url)
    head = (
        b"--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\ncut\r\n"
        b"--b\r\nContent-Disposition: form-data; name=\"index_id\"\r\n\r\n" + index.encode() + b"\r\n"
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.wav\"\r\n\r\n"
    )
    payload = wav("cut", 200_000)
    declared = len(head) + len(payload) + len(b"\r\n--b--\r\n")
    with socket.create_connection((url.hostname, url.port)) as s:
        s.sendall(
            b"POST /api/v2/videos/upload HTTP/1.1\r\nHost: x\r\n"
            + f"X-API-Key: {spool_server.admin_key}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {declared}\r\n\r\n".encode()
            + head
            + payload[:100_000]
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while _uploads_left(spool_server):
        assert time.monotonic() < deadline, _uploads_left(spool_server)
        time.sleep(0.05)
    assert _jobs_total(raw, admin_headers) == before
    # The server is fine and the next upload works.
    job = _wait_job(client, client.videos.upload(file=FIXTURES / "tone.wav", title="after", index_id=index).job_id)
    assert job.progress.imported == 1


def test_an_upload_that_stops_sending_is_answered_408_and_leaves_nothing(client, raw, admin_headers, spool_server):
    # conftest sets SPOOL_UPLOAD_IDLE_TIMEOUT=2s.
    before = _jobs_total(raw, admin_headers)
    url = urlsplit(spool_server.root_url)
    head = (
        b"--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nstalled\r\n"
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"stall.wav\"\r\n\r\n"
    )
    payload = wav("stall", 100_000)
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(
            b"POST /api/v2/videos/upload HTTP/1.1\r\nHost: x\r\n"
            + f"X-API-Key: {spool_server.admin_key}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {len(head) + len(payload) + 10}\r\n\r\n".encode()
            + head
            + payload[:50_000]
        )
        # Then nothing: the server answers on its own, the connection still open.
        answer = b""
        while b"upload_incomplete" not in answer:
            chunk = s.recv(4096)
            assert chunk, f"the server closed without the error body: {answer[:300]!r}"
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert _uploads_left(spool_server) == []
    assert _jobs_total(raw, admin_headers) == before


def test_bad_uploads_get_clear_errors_and_unreadable_media_fails_its_file(client, raw, admin_headers, spool_server, tmp_path):
    index = client.indexes.create(name=unique("bad")).index_id
    h = admin_headers
    files = {"file": ("a.wav", wav("a"), "audio/wav")}
    assert_error_envelope(raw.post("/api/v2/videos/upload", files=files, headers=h), 422, "validation_error")
    missing = raw.post("/api/v2/videos/upload", files=files, data={"title": "t", "index_id": "idx_01KB0000000000000000000000"}, headers=h)
    assert_error_envelope(missing, 404, "resource_index_not_found")
    txt = raw.post("/api/v2/videos/upload", files={"file": ("notes.txt", b"hello", "text/plain")}, data={"title": "t", "index_id": index}, headers=h)
    assert_error_envelope(txt, 422, "unsupported_format")
    empty = raw.post("/api/v2/videos/upload", files={"file": ("e.mp4", b"", "video/mp4")}, data={"title": "t", "index_id": index}, headers=h)
    assert_error_envelope(empty, 422, "empty_file")
    no_file = raw.post("/api/v2/videos/upload", data={"title": "t"}, headers=h)
    assert no_file.status_code in (415, 422), no_file.text
    long_title = raw.post("/api/v2/videos/upload", files=files, data={"title": "x" * 256, "index_id": index}, headers=h)
    assert_error_envelope(long_title, 422)
    notes = tmp_path / "x.txt"
    notes.write_bytes(b"x")
    with pytest.raises(ValidationError):
        client.videos.upload(file=notes, title="t", index_id=index)
    assert _uploads_left(spool_server) == []
    # Corrupt media is received, then fails its file with media_unreadable; nothing is kept.
    stored_before = sorted(spool_server.media_files("*.*"))
    job = _wait_job(client, client.videos.upload(file=FIXTURES / "corrupt.mp4", title="corrupt", index_id=index).job_id)
    assert (job.status, job.progress.imported, job.progress.failed) == ("completed", 0, 1)
    (failed,) = job.failed_files
    assert failed["failure"]["code"] == "media_unreadable", failed
    assert sorted(spool_server.media_files("*.*")) == stored_before
    assert _uploads_left(spool_server) == []
    # An upload job cannot be retried: its bytes are gone.
    assert_error_envelope(raw.post(f"/api/v2/import-jobs/{job.job_id}/retry", headers=h), 409)


def test_an_upload_without_an_index_is_a_playground_video(client, raw, admin_headers):
    job = client.videos.upload(file=FIXTURES / "still.png", title=unique("play"))
    assert job.target_index_id is None
    job = _wait_job(client, job.job_id)
    vid = job.outputs.items[0].video_id
    listed = [v.video_id for v in client.videos.list_playground()]
    assert vid in listed
    v = raw.get(f"/api/v2/videos/{vid}", headers=admin_headers).json()
    assert v["index_id"] is None and v["media_type"] == "image"
    # Regression: a playground video can be deleted (its deletion used to look for an index).
    assert client.videos.delete(vid).video_id == vid
    deadline = time.monotonic() + WAIT_S
    while client.videos.get_deletion(vid).status != "deleted":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert vid not in [v.video_id for v in client.videos.list_playground()]


def test_a_repeated_upload_with_the_same_idempotency_key_answers_the_first_job(client, spool_server):
    index = client.indexes.create(name=unique("idem")).index_id
    key = "upload-" + uuid.uuid4().hex
    first = client.videos.upload(file=FIXTURES / "tone.flac", title="once", index_id=index, idempotency_key=key)
    again = client.videos.upload(file=FIXTURES / "tone.flac", title="once", index_id=index, idempotency_key=key)
    assert again.job_id == first.job_id
    _wait_job(client, first.job_id)
    assert len(list(client.indexes.list_videos(index))) == 1
    assert _uploads_left(spool_server) == []


def test_registering_an_object_of_a_connector_imports_it_as_a_video(client, raw, admin_headers, spool_server):
    root = spool_server.local_root / ("reg-" + uuid.uuid4().hex[:8])
    (root / "in").mkdir(parents=True)
    (root / "in" / "clip.mov").write_bytes(video("registered"))
    conn = raw.post("/api/v2/connectors/local", json={"name": unique("reg"), "root": str(root)}, headers=admin_headers).json()["connector_id"]
    index = client.indexes.create(name=unique("reg")).index_id
    job = client.videos.create(title="Registered clip", video_uri="in/clip.mov", index_id=index, source_connector_id=conn)
    assert job.source_kind == "uri" and job.connector_id == conn
    job = _wait_job(client, job.job_id)
    assert (job.status, job.progress.imported) == ("completed", 1), job
    v = client.videos.retrieve(job.outputs.items[0].video_id)
    assert v.title == "Registered clip" and v.media_type == "video"
    # A missing object fails the job with a reason; bad URIs and a missing connector are 4xx.
    gone = _wait_job(client, client.videos.create(title="gone", video_uri="in/nope.mp4", index_id=index, source_connector_id=conn).job_id)
    assert gone.status == "failed" and "does not exist" in (gone.error_message or "")
    bad = raw.post("/api/v2/videos", json={"title": "t", "video_uri": "in/../../etc/passwd.mp4", "index_id": index, "source_connector_id": conn}, headers=admin_headers)
    assert_error_envelope(bad, 422, "validation_error")
    wrong_scheme = raw.post("/api/v2/videos", json={"title": "t", "video_uri": "gs://b/in/clip.mov", "index_id": index, "source_connector_id": conn}, headers=admin_headers)
    assert_error_envelope(wrong_scheme, 422, "validation_error")
    no_conn = raw.post("/api/v2/videos", json={"title": "t", "video_uri": "gs://b/x.mp4", "index_id": index}, headers=admin_headers)
    assert_error_envelope(no_conn, 422, "source_connector_required")
    with pytest.raises(NotFoundError):
        client.videos.create(title="t", video_uri="in/clip.mov", index_id="idx_01KB0000000000000000000000", source_connector_id=conn)


def test_media_longer_than_forty_minutes_becomes_parts_and_the_object_goes_with_the_last_part(client, raw, admin_headers, spool_server, tmp_path):
    long = tmp_path / "long.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=32x32:r=1", "-t", "2520",
         "-c:v", "libx264", "-preset", "ultrafast", str(long)],
        check=True,
    )
    index = client.indexes.create(name=unique("long")).index_id
    job = _wait_job(client, client.videos.upload(file=long, title="Long", index_id=index).job_id)
    p = job.progress
    assert (p.imported, p.parts_total, p.parts_completed, p.parts_failed) == (1, 2, 2, 0), p
    outs = sorted(job.outputs.items, key=lambda o: o.part_index)
    assert [(o.part_index, o.part_count) for o in outs] == [(0, 2), (1, 2)]
    assert (outs[0].source_start_seconds, outs[0].source_end_seconds) == (0.0, 2400.0)
    assert outs[1].source_start_seconds == 2400.0 and abs(outs[1].source_end_seconds - 2520.0) < 0.5
    assert outs[0].video_id != outs[1].video_id and len(set(job.video_ids)) == 2
    first = raw.get(f"/api/v2/videos/{outs[0].video_id}", headers=admin_headers).json()
    assert first["part"]["part_count"] == 2 and first["title"] == "Long (part 1 of 2)"
    assert first["video_uri"] == raw.get(f"/api/v2/videos/{outs[1].video_id}", headers=admin_headers).json()["video_uri"]
    stored = [q for q in spool_server.media_files("*.mp4") if outs[0].video_id in q.name]
    assert len(stored) == 1
    for o, kept in ((outs[0], True), (outs[1], False)):
        client.videos.delete(o.video_id)
        deadline = time.monotonic() + WAIT_S
        while client.videos.get_deletion(o.video_id).status != "deleted":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert stored[0].exists() == kept, "parts share one object: it goes with the last live part"


def test_a_signed_url_reads_the_stored_media_with_ranges_and_nothing_else(client, raw, admin_headers):
    index = client.indexes.create(name=unique("sign")).index_id
    data = fixture("h264_aac.mp4")
    job = _wait_job(client, client.videos.upload(file=FIXTURES / "h264_aac.mp4", title="signed", index_id=index).job_id)
    v = client.videos.retrieve(job.outputs.items[0].video_id)
    signed = client.videos.get_signed_url(v.video_uri)
    assert signed.expires_at
    u = urlsplit(signed.signed_url)
    path = u.path + "?" + u.query
    whole = raw.get(path)
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    part = raw.get(path, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = raw.get(path, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert raw.get(path, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    tampered = path.replace("sig=", "sig=0")
    assert_error_envelope(raw.get(tampered), 403, "signature_invalid")
    other = u.path.replace(".mp4", ".mov") + "?" + u.query
    assert_error_envelope(raw.get(other), 403, "signature_invalid")
    unknown = raw.post("/api/v2/videos/signed-url", json={"gcs_uri": "spool://media/videos/zz/vid_01KB0000000000000000000000.mp4"}, headers=admin_headers)
    assert_error_envelope(unknown, 404, "resource_not_found")
    foreign = raw.post("/api/v2/videos/signed-url", json={"gcs_uri": "gs://bucket/a.mp4"}, headers=admin_headers)
    assert_error_envelope(foreign, 422, "validation_error")
    # Regression: a URL minted before its video was deleted reads nothing afterwards.
    client.videos.delete(v.video_id)
    assert_error_envelope(raw.get(path), 404, "not_found")


def test_batch_retrieve_and_batch_segments(client, raw, admin_headers):
    index = client.indexes.create(name=unique("batch")).index_id
    job = _wait_job(client, client.videos.upload(file=FIXTURES / "tone.mp3", title="batch", index_id=index).job_id)
    vid = job.outputs.items[0].video_id
    missing = "vid_01KB0000000000000000000000"
    details = client.videos.batch_retrieve([vid, missing])
    assert [d.video_id for d in details] == [vid] and details[0].gif_data is None
    segs = client.videos.batch_segments([vid, missing])
    assert [(s.video_id, s.segments) for s in segs] == [(vid, [])]
    assert_error_envelope(raw.post("/api/v2/videos/batch", json={"video_ids": []}, headers=admin_headers), 422)
    too_many = raw.post("/api/v2/videos/batch/segments", json={"video_ids": [vid] * 51}, headers=admin_headers)
    assert_error_envelope(too_many, 422)
