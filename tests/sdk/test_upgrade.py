"""Upgrade check: every data directory under `fixtures/datadirs/` (written by an earlier build,
see its README) is copied, passes `spool verify` with this build, is served, and reads back
through the official SDK: its index, videos and their media facts, import jobs (the
automation's with `execution` submitted), prompt runs with their results, exports and their
downloads. A server of its own per directory."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from videovector import VideoVector

from conftest import DEFAULT_BIN, _free_port, _log_tail, _stop

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "datadirs"
DIRS = sorted(p for p in FIXTURES.iterdir() if (p / "data" / "spool.redb").is_file())


def _binary() -> Path:
    b = Path(os.environ.get("SPOOL_BIN") or DEFAULT_BIN)
    return b / "spool" if b.is_dir() else b


@pytest.fixture(params=DIRS, ids=[d.name for d in DIRS])
def old_server(request):
    tmp = Path(tempfile.mkdtemp(prefix="spool-upgrade-"))
    data = tmp / "data"
    shutil.copytree(request.param / "data", data)
    # git keeps no file modes: the master key must be readable by its owner only.
    os.chmod(data / "master.key", 0o600)
    verify = subprocess.run([str(_binary()), "verify", "--data-dir", str(data)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    admin = "sk_test_" + secrets.token_hex(24)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_", "VIDEO_VECTOR_"))}
    env.update(SPOOL_API_KEY=admin, RUST_BACKTRACE="1")
    log = open(tmp / "spool.log", "wb")
    proc = subprocess.Popen(
        [str(_binary()), "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, _log_tail(tmp / "spool.log")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, _log_tail(tmp / "spool.log")
            time.sleep(0.05)
        yield VideoVector(api_key=admin, base_url=f"{base}/api/v2", max_retries=0, timeout=10), base, admin, data
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_an_old_data_directory_verifies_serves_and_reads_through_the_sdk(old_server):
    sdk, base, admin, data = old_server
    indexes = sdk.indexes.list()
    demo = [i for i in indexes if i.name == "demo"]
    assert len(demo) == 1, indexes
    index_id = demo[0].index_id
    jobs = sdk.import_jobs.list()
    assert len(jobs) == 2 and all(j.status == "completed" for j in jobs), jobs
    by_files = sorted(jobs, key=lambda j: j.progress.total_files)
    auto_job, first_job = by_files
    assert (first_job.progress.imported, first_job.progress.failed, first_job.progress.skipped) == (12, 1, 2)
    assert (auto_job.progress.imported, auto_job.execution.status) == (2, "submitted")
    assert first_job.execution.status == "not_requested"
    # The search projection is built from the old log at the first start: a finished run reads
    # `completed` once its results are searchable (engine-spec/search.md), a moment later.
    deadline = time.monotonic() + 60
    runs = sdk.prompt_runs.list()
    while not all(r.status == "completed" for r in runs) and time.monotonic() < deadline:
        time.sleep(0.1)
        runs = sdk.prompt_runs.list()
    assert len(runs) == 2 and all(r.status == "completed" for r in runs), runs
    # Each run's results were indexed from the old log: found by a search of the index.
    for r in runs:
        found = sdk.search.filter(
            index_id, conditions=[{"field": "media_type", "operator": "is_not_empty", "type": "string"}],
            run_ids=[r.run_id], page_size=100,
        )
        segments = [h for h in found.results if h.result_type == "segment"]
        assert len(segments) == r.completed_segments > 0, (r, found)
    assert auto_job.execution.run_id in {r.run_id for r in runs}
    auto_run = sdk.prompt_runs.retrieve(auto_job.execution.run_id)
    seen = 0
    for video_id in auto_run.run_context["video_ids"]:
        seen += len(list(sdk.prompt_runs.list_results(auto_run.run_id, video_id=video_id, limit=100).auto_paging_iter()))
    assert seen == auto_run.completed_segments == 3
    videos = httpx.get(f"{base}/api/v2/indexes/{index_id}/videos?limit=100", headers={"X-API-Key": admin}).json()
    items = videos.get("items") or videos.get("data") or videos.get("videos") or []
    assert len(items) == 14, videos
    exports = sdk.exports.list()
    assert len(exports) == 2 and all(e.status == "completed" for e in exports), exports
    # Both went to the connector; the kept artifacts are the recorded size, and a download of a
    # connector export is still refused as it was (409).
    for e in exports:
        assert e.destination_type == "connector"
        assert (data / "exports" / f"{e.export_id}.json").stat().st_size == e.file_size_bytes
    r = httpx.get(f"{base}/api/v2/exports/{exports[0].export_id}/download", headers={"X-API-Key": admin})
    assert r.status_code == 409 and r.json()["error"]["code"], r.text
