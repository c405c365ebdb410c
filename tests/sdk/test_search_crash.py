"""A crash between a run's completion and its indexing loses nothing (engine-spec/search.md).

The server runs with the debug failpoint `search_stall`: its search follower reads nothing, so a
run that finished stays unindexed and reads `processing` (completed means searchable). The
server is then killed with SIGKILL and started again on the same data directory without the
failpoint: the follower goes on from the position its index recorded, the run reads
`completed`, every result is found, and `spool verify` finds the index equal to the log.
"""

from __future__ import annotations

import signal
import subprocess

from videovector import VideoVector

from spool_sdk_helpers import FIXTURES, poll, unique
from test_usage_rate_limits import LimitedServer


PROBE_SCHEMA = {
    "type": "object",
    "properties": {"duration_seconds": {"type": "number"}, "media_type": {"type": "string"}},
    "required": ["duration_seconds", "media_type"],
}
WAIT_S = 60.0


def test_a_run_finished_but_not_indexed_when_killed_is_searchable_after_restart():
    server = LimitedServer(env={"SPOOL_FAILPOINTS": "search_stall"})
    try:
        server.start()
        client: VideoVector = server.sdk()
        index = client.indexes.create(name=unique("crash")).index_id
        title = "crashword" + unique("t").replace("-", "").replace("_", "")[-8:]
        job = client.videos.upload(file=FIXTURES / "h264_aac.mp4", title=title, index_id=index)
        job = client.import_jobs.wait_for_completion(job.job_id, poll_interval=0.1, timeout=WAIT_S)
        assert job.status == "completed", job
        prompt = client.prompts.create(name=unique("crash"), prompt_text="Describe the media of each segment.", json_schema=PROBE_SCHEMA)
        run = client.prompt_runs.execute(
            prompt_id=prompt.prompt_id,
            target={"type": "index", "index_id": index},
            video_segmentation_type="fixed",
            video_segment_duration=1,
        )
        # Every segment answered, the run finished in the log: still `processing`, since the
        # search projection has not indexed it.
        done = poll(
            lambda: client.prompt_runs.retrieve(run.run_id),
            lambda r: r.completed_segments == 2 and r.total_segments == 2,
            "the run's segments",
        )
        (video_id,) = [o.video_id for o in job.outputs.items]
        words = client.prompt_runs.list_results(run.run_id, video_id=video_id, limit=100).data
        assert len(words) == 2
        assert done.status == "processing", done
        assert client.search.text(index, query=title) == []
        # SIGKILL: no drain, no flush.
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
        server.env = {}
        server.start()
        client = server.sdk()
        searchable = client.workflow.wait_until_searchable(run.run_id, poll_interval=0.2, timeout=WAIT_S)
        assert searchable.status == "completed", searchable
        hits = client.search.text(index, query=title, top_k=10)
        assert sorted(h.segment_id for h in hits) == sorted(r.segment_id for r in words)
        assert all(h.run_id == run.run_id for h in hits)
    finally:
        server.close()
    out = subprocess.run(
        [str(server.binary), "verify", "--data-dir", str(server.tmp / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "search index: agrees with the log" in out.stdout, out.stdout
