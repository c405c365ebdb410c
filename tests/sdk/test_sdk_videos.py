"""Videos through the official SDK (contract §2.7): deletion (draining → deleting → deleted, the
media-store object removed), batch status, segments and playground pages (segments empty until prompt
runs exist)."""

from __future__ import annotations

import time
import uuid

import pytest
from videovector import NotFoundError

from spool_sdk_helpers import assert_error_envelope, unique, video

WAIT_S = 30.0


def _imported_videos(client, raw, admin_headers, spool_server, n: int):
    root = spool_server.local_root / ("vids-" + uuid.uuid4().hex[:8])
    root.mkdir()
    for i in range(n):
        (root / f"clip{i}.mp4").write_bytes(video(f"{root.name}-{i}", name="h264_aac.mp4"))
    conn = raw.post(
        "/api/v2/connectors/local", json={"name": unique("vids"), "root": str(root)}, headers=admin_headers
    ).json()["connector_id"]
    index = client.indexes.create(name=unique("vids")).index_id
    job = client.import_jobs.create(connector_id=conn, index_id=index)
    deadline = time.monotonic() + WAIT_S
    while client.import_jobs.retrieve(job.job_id).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return index, [o.video_id for o in client.import_jobs.iter_outputs(job.job_id)]


def test_a_deleted_video_goes_draining_deleting_deleted_and_its_media_is_removed(client, raw, admin_headers, spool_server):
    index, (vid, other) = _imported_videos(client, raw, admin_headers, spool_server, 2)
    media = spool_server.media_files(f"{vid}*")
    assert len(media) == 1
    first = client.videos.delete(vid)
    assert first.video_id == vid and first.status in ("draining", "deleting", "deleted")
    again = client.videos.delete(vid)
    assert again.deletion_id == first.deletion_id, "a repeated DELETE resumes the same deletion"
    deadline = time.monotonic() + WAIT_S
    while client.videos.get_deletion(vid).status != "deleted":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not media[0].exists(), "the media-store object outlived its video"
    with pytest.raises(NotFoundError):
        client.videos.retrieve(vid)
    listed = [v.video_id for v in client.indexes.list_videos(index)]
    assert listed == [other]
    assert client.videos.retrieve(other).video_id == other


def test_batch_status_segments_and_playground(client, raw, admin_headers, spool_server):
    _, (vid,) = _imported_videos(client, raw, admin_headers, spool_server, 1)
    statuses = client.videos.batch_status([vid, "vid_01KB0000000000000000000000"])
    assert [(s.video_id, s.status) for s in statuses] == [(vid, "not_processed")]
    assert list(client.videos.list_segments(vid)) == []
    # An indexed video is never in the playground (test_sdk_media.py uploads one that is).
    assert vid not in [v.video_id for v in client.videos.list_playground()]
    with pytest.raises(NotFoundError):
        client.videos.list_segments("vid_01KB0000000000000000000000")
    resp = raw.get(f"/api/v2/videos/{vid}/segments?limit=1000", headers=admin_headers)
    assert_error_envelope(resp, 422, "validation_error")
