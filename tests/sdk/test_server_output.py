"""The server's own output: one line when a workflow ends (with its id and the reason), and no
colour codes when its output is a file (issue 29, item 5). Every node's log counts: in a
cluster the node holding the workflow's partition tells it."""

from __future__ import annotations

import time

from spool_sdk_helpers import FIXTURES, unique

WAIT_S = 60.0


def _logs(spool_server) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(spool_server.log_path.parent.glob("spool*.log")))


def _wait_for_line(spool_server, line: str) -> str:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        text = _logs(spool_server)
        if line in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"no line {line!r} in the server's output")


def test_the_server_says_when_an_import_and_a_run_end_and_never_writes_colour_codes_to_a_file(client, spool_server):
    index_id = client.indexes.create(name=unique("output")).index_id
    job = client.videos.upload(file=FIXTURES / "h264_faststart.mov", title=unique("output"), index_id=index_id)
    job = client.import_jobs.wait_for_completion(job.job_id, poll_interval=0.1, timeout=WAIT_S)
    assert job.status == "completed"
    _wait_for_line(spool_server, f"import job {job.job_id} completed: 1 of 1 files imported, 0 failed, 0 skipped")

    prompt = client.prompts.create(
        name=unique("output"),
        prompt_text="Describe the media of each segment.",
        json_schema={"type": "object", "properties": {"duration_seconds": {"type": "number"}}, "required": ["duration_seconds"]},
    )
    run = client.prompt_runs.execute(prompt_id=prompt.prompt_id, target={"type": "index", "index_id": index_id}, video_segmentation_type="fixed", video_segment_duration=1)
    client.prompt_runs.wait_for_completion(run.run_id, poll_interval=0.1, timeout=WAIT_S)
    text = _wait_for_line(spool_server, f"prompt run {run.run_id} completed: 1 of 1 segments, 0 failed")
    assert "\x1b[" not in text, "colour codes in a log file"
