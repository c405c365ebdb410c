"""The import automation's watch, driven by the engine's controllable clock (never by sleeping
for a timer): a server of its own runs on `SPOOL_TEST_CLOCK_MS` (debug builds) with a 30 s watch
interval, and the tests move its clock with `POST /api/v2/admin/test-clock/advance`. Objects are
put into the real S3 server (s3s-fs) with boto3; the SDK reads the import jobs and prompt runs.

Covered: objects found → debounce → exactly one import job over exactly the found objects → a
prompt run with the preset (`execution` pending → submitted) → the export automation writes one
export into the destination bucket; more objects during the debounce window extend it; pause
holds everything and resume picks up what arrived meanwhile; a changed object (new etag) is
imported again under `all` and skipped under `new_only`; a SIGKILL between arming and firing
loses nothing and duplicates nothing; an object deleted and put back unchanged is found again
(the manifest forgets what a whole listing did not list); a failing listing waits twice as long
each time in a row, across a SIGKILL, and the interval again once one succeeds; the watch finds,
forgets and imports objects in GCS (fake-gcs-server) and Azure Blob (azurite) as in S3."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from videovector import VideoVector

from conftest import DEFAULT_BIN, _free_port, _log_tail, _stop
from spool_sdk_helpers import unique, wav
import storage
from storage import s3s

START_MS = 1_780_000_000_000
MINUTE = 60_000
SCHEMA = {"type": "object", "properties": {"duration_seconds": {"type": "number"}}, "required": ["duration_seconds"]}


@dataclass
class ClockServer:
    """A `spool serve` on a test clock; `restart(kill=True)` SIGKILLs it and starts it again on the
    same data directory, with its clock where it was."""

    binary: Path
    tmp: Path
    admin: str
    master: str
    port: int
    now_ms: int = START_MS
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_", "VIDEO_VECTOR_"))}
        env.update(
            SPOOL_API_KEY=self.admin,
            SPOOL_MASTER_KEY=self.master,
            SPOOL_TEST_CLOCK_MS=str(self.now_ms),
            SPOOL_AUTOMATION_WATCH_INTERVAL="30s",
            AWS_ENDPOINT_URL=os.environ["SPOOL_TEST_S3S_ENDPOINT"],
            AZURE_STORAGE_USE_EMULATOR="true",
            AZURITE_BLOB_STORAGE_URL=os.environ["SPOOL_TEST_AZURITE_URL"],
            RUST_BACKTRACE="1",
        )
        log = open(self.tmp / "spool.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--data-dir", str(self.tmp / "data"), "--listen", f"127.0.0.1:{self.port}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, _log_tail(self.tmp / "spool.log")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, _log_tail(self.tmp / "spool.log")
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def call(self, method: str, path: str, body=None) -> httpx.Response:
        return httpx.request(
            method, f"{self.base}/api/v2{path}", json=body, timeout=10,
            headers={"X-API-Key": self.admin, "Accept": "application/json"},
        )

    def advance(self, ms: int) -> None:
        r = self.call("POST", "/admin/test-clock/advance", {"ms": ms})
        assert r.status_code == 200, r.text
        self.now_ms = r.json()["now_ms"]

    def sdk(self) -> VideoVector:
        return VideoVector(api_key=self.admin, base_url=f"{self.base}/api/v2", max_retries=0, timeout=10)


@pytest.fixture
def server():
    binary = Path(os.environ.get("SPOOL_BIN") or DEFAULT_BIN)
    if binary.is_dir():
        binary = binary / "spool"
    tmp = Path(tempfile.mkdtemp(prefix="spool-watch-"))
    s = ClockServer(
        binary=binary, tmp=tmp, admin="sk_test_" + secrets.token_hex(24),
        master=base64.b64encode(os.urandom(32)).decode(), port=_free_port(),
    )
    s.start()
    try:
        yield s
    finally:
        if s.proc is not None:
            _stop(s.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def until(fetch, done, what, timeout=30.0):
    """Poll the server's state (real time only waits for work in flight, never for a timer)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fetch()
        if done(v):
            return v
        assert time.monotonic() < deadline, f"{what}: {v}"
        time.sleep(0.05)


def setup(s: ClockServer, import_mode: str, export: bool = False):
    storage = s3s()
    bucket = storage.make_bucket("watch")
    index = s.call("POST", "/indexes", {"name": unique("watched")}).json()["index_id"]
    r = s.call("POST", "/connectors/s3", {
        "name": unique("bucket"), "bucket": bucket, "region": "us-east-1",
        "aws_access_key_id": storage.access_key, "aws_secret_access_key": storage.secret_key,
        "scopes": ["import", "export"], "import_mode": import_mode, "export_base_path": "exports",
    })
    assert r.status_code == 201, r.text
    conn = r.json()["connector_id"]
    r = s.call("POST", "/prompts", {"name": unique("facts"), "prompt_text": "Report the media facts.", "json_schema": SCHEMA})
    assert r.status_code in (200, 201), r.text
    prompt = r.json()["prompt_id"]
    if export:
        r = s.call("PUT", f"/indexes/{index}/automations/export",
                   {"destination_connector_id": conn, "destination_subpath": "auto"})
        assert r.status_code == 200, r.text
    return storage, bucket, index, conn, prompt


def save_watch(s: ClockServer, index: str, conn: str, prompt: str, **extra) -> dict:
    body = {
        "connector_id": conn, "source_prefix": "incoming/", "file_pattern": "*.wav", "recursive": True,
        "debounce_interval": "5m",
        "prompt_preset": {"prompt_id": prompt, "video_segmentation_type": "fixed", "video_segment_duration": 1,
                          "audio_segmentation_type": "fixed", "audio_segment_duration": 1, "processing_model": "probe"},
        **extra,
    }
    r = s.call("PUT", f"/indexes/{index}/automations/import", body)
    assert r.status_code == 200, r.text
    return r.json()


def watch(s: ClockServer, index: str) -> dict:
    r = s.call("GET", f"/indexes/{index}/automations/import")
    assert r.status_code == 200, r.text
    return r.json()


def listed_now(s: ClockServer, index: str) -> dict:
    """Wait until the listing due at the clock's time has ended."""
    return until(lambda: watch(s, index), lambda a: a["waiting_for"] != "listing", "the listing")


def jobs_of(s: ClockServer, conn: str) -> list:
    r = s.call("GET", "/import-jobs?limit=100")
    assert r.status_code == 200, r.text
    return [j for j in r.json() if j.get("connector_id") == conn]


def test_found_objects_debounce_into_one_import_then_a_run_and_an_export(server):
    s = server
    storage, bucket, index, conn, prompt = setup(s, "all", export=True)
    storage.put(bucket, "incoming/a.wav", wav("a"))
    storage.put(bucket, "incoming/deep/b.wav", wav("b"))
    storage.put(bucket, "incoming/notes.txt", b"not media")  # outside the pattern
    a = save_watch(s, index, conn, prompt)
    assert a["watching"] is True and a["last_import_job_id"] is None
    # Saving lists at once: two objects found, the import due one debounce interval later.
    a = until(lambda: watch(s, index), lambda a: a["found_objects"] == 2 and a["waiting_for"] == "debounce",
              "the first listing")
    t0 = s.now_ms
    assert a["next_due_at"] is not None and a["last_listed_at"] is not None
    # The clock stands still: nothing is imported, however long we wait in real time.
    time.sleep(0.3)
    assert jobs_of(s, conn) == [] and watch(s, index)["last_import_job_id"] is None

    # 4 minutes on: listed again (nothing new); a third object arrives and the next listing
    # finds it, which moves the import to 5 minutes after that listing.
    s.advance(4 * MINUTE)
    listed_now(s, index)
    storage.put(bucket, "incoming/c.wav", wav("c"))
    s.advance(30_000)
    a = until(lambda: watch(s, index), lambda a: a["found_objects"] == 3, "the third object found")
    # Past the first debounce's end (t0 + 5m): it was extended, nothing is imported yet.
    s.advance(MINUTE)
    listed_now(s, index)
    assert s.now_ms > t0 + 5 * MINUTE
    assert jobs_of(s, conn) == [], "the debounce was not extended by the third object"
    s.advance(4 * MINUTE)

    a = until(lambda: watch(s, index), lambda a: a["last_import_job_id"], "the import")
    job_id = a["last_import_job_id"]
    sdk = s.sdk()
    job = until(lambda: sdk.import_jobs.retrieve(job_id), lambda j: j.status == "completed", "the job")
    assert job.source_kind == "connector" and job.progress.total_files == 3 and job.progress.imported == 3
    files = s.call("GET", f"/import-jobs/{job_id}/files?limit=100").json()["items"]
    assert sorted(f["file_name"] for f in files) == ["incoming/a.wav", "incoming/c.wav", "incoming/deep/b.wav"]
    # When the job ended, the preset's run started on its videos: execution pending → submitted.
    job = until(lambda: sdk.import_jobs.retrieve(job_id), lambda j: j.execution.status == "submitted", "the run")
    run = sdk.prompt_runs.wait_for_completion(job.execution.run_id, poll_interval=0.05, timeout=30)
    assert run.status == "completed"
    raw_run = s.call("GET", f"/prompt-runs/{run.run_id}").json()
    assert raw_run["total_audios"] == 3 and raw_run["executed_by"] == f"automation:{a['automation_id']}", raw_run
    # …and the export automation exported that run into the bucket, once.
    e = until(lambda: s.call("GET", f"/indexes/{index}/automations/export").json(),
              lambda e: e["last_export_id"], "the export")
    export = sdk.exports.wait_for_completion(e["last_export_id"], poll_interval=0.05, timeout=30)
    assert export.export_params["prompt_run_ids"] == [run.run_id]
    key = f"exports/auto/{export.export_id}.json"
    until(lambda: storage.keys(bucket), lambda keys: key in keys, "the exported object")
    body = json.loads(storage.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert len(body["videos"]) == 3

    # Nothing more arrives: later listings import nothing again.
    for _ in range(3):
        s.advance(6 * MINUTE)
        listed_now(s, index)
    assert len(jobs_of(s, conn)) == 1
    a = watch(s, index)
    assert (a["found_objects"], a["manifest_objects"], a["waiting_for"]) == (0, 3, "next_listing")


def test_pause_holds_everything_and_resume_picks_up_what_arrived(server):
    s = server
    storage, bucket, index, conn, prompt = setup(s, "all")
    storage.put(bucket, "incoming/one.wav", wav("one"))
    save_watch(s, index, conn, prompt)
    until(lambda: watch(s, index), lambda a: a["found_objects"] == 1, "the first listing")
    r = s.call("POST", f"/indexes/{index}/automations/import/pause")
    assert r.status_code == 200 and r.json()["paused"] is True
    a = watch(s, index)
    assert (a["waiting_for"], a["next_due_at"], a["watching"]) == ("resume", None, False)
    listed_at = a["last_listed_at"]
    storage.put(bucket, "incoming/two.wav", wav("two"))
    s.advance(60 * MINUTE)
    time.sleep(0.3)
    a = watch(s, index)
    assert a["last_listed_at"] == listed_at, "a paused automation listed"
    assert a["last_import_job_id"] is None and jobs_of(s, conn) == []
    # Resumed: it lists at once, finds what arrived, and imports both after the debounce.
    r = s.call("POST", f"/indexes/{index}/automations/import/resume")
    assert r.status_code == 200 and r.json()["paused"] is False
    a = until(lambda: watch(s, index), lambda a: a["found_objects"] == 2 and a["waiting_for"] == "debounce",
              "the listing after resume")
    s.advance(5 * MINUTE)
    a = until(lambda: watch(s, index), lambda a: a["last_import_job_id"], "the import")
    job = until(lambda: s.sdk().import_jobs.retrieve(a["last_import_job_id"]),
                lambda j: j.status == "completed", "the job")
    assert job.progress.total_files == 2 and job.progress.imported == 2


@pytest.mark.parametrize("mode,imported,skipped", [("all", 1, 0), ("new_only", 0, 1)])
def test_a_changed_object_is_imported_again_under_all_and_skipped_under_new_only(server, mode, imported, skipped):
    s = server
    storage, bucket, index, conn, prompt = setup(s, mode)
    storage.put(bucket, "incoming/clip.wav", wav("first version"))
    save_watch(s, index, conn, prompt)
    until(lambda: watch(s, index), lambda a: a["found_objects"] == 1, "the first listing")
    s.advance(5 * MINUTE)
    first = until(lambda: watch(s, index), lambda a: a["last_import_job_id"], "the first import")["last_import_job_id"]
    until(lambda: s.sdk().import_jobs.retrieve(first), lambda j: j.execution.status == "submitted", "the first run")
    # A new version of the same object: another etag, so the next listing finds it.
    storage.put(bucket, "incoming/clip.wav", wav("second version, longer", 4000))
    s.advance(30_000)
    until(lambda: watch(s, index), lambda a: a["found_objects"] == 1, "the changed object found")
    s.advance(5 * MINUTE)
    second = until(lambda: watch(s, index), lambda a: a["last_import_job_id"] != first, "the second import")
    job = until(lambda: s.sdk().import_jobs.retrieve(second["last_import_job_id"]),
                lambda j: j.status == "completed", "the second job")
    assert (job.progress.total_files, job.progress.imported, job.progress.skipped) == (1, imported, skipped)
    job = until(lambda: s.sdk().import_jobs.retrieve(second["last_import_job_id"]),
                lambda j: j.execution.status != "pending", "the second execution")
    if mode == "new_only":
        # Nothing imported: no run can start, and the execution says why.
        assert (job.execution.status, job.execution.error_code) == ("blocked", "no_videos_imported")
        files = s.call("GET", f"/import-jobs/{job.job_id}/files?limit=10").json()["items"]
        assert files[0]["skip_reason"] == "already_imported"
    else:
        assert job.execution.status == "submitted" and job.execution.run_id


def test_a_sigkill_between_arming_and_firing_loses_nothing_and_duplicates_nothing(server):
    s = server
    storage, bucket, index, conn, prompt = setup(s, "all")
    for name in ("x", "y"):
        storage.put(bucket, f"incoming/{name}.wav", wav(name))
    save_watch(s, index, conn, prompt)
    armed = until(lambda: watch(s, index), lambda a: a["waiting_for"] == "debounce", "the debounce armed")
    # Killed with the debounce armed; started again 10 minutes later on its clock.
    s.kill()
    s.now_ms += 10 * MINUTE
    s.start()
    a = until(lambda: watch(s, index), lambda a: a["last_import_job_id"], "the import after the restart")
    assert a["next_due_at"] != armed["next_due_at"]
    job = until(lambda: s.sdk().import_jobs.retrieve(a["last_import_job_id"]),
                lambda j: j.execution.status == "submitted", "the run")
    assert job.progress.total_files == 2 and job.progress.imported == 2
    # Killed again while the run may still go: after the restart, still one job, one run.
    s.kill()
    s.start()
    s.sdk().prompt_runs.wait_for_completion(job.execution.run_id, poll_interval=0.05, timeout=30)
    for _ in range(2):
        s.advance(6 * MINUTE)
        listed_now(s, index)
    assert len(jobs_of(s, conn)) == 1
    runs = s.call("GET", f"/indexes/{index}/prompt-runs?limit=100").json()["data"]
    assert len(runs) == 1, runs


def test_the_clock_route_is_refused_on_the_wall_clock(client, raw, admin_headers):
    r = raw.post("/api/v2/admin/test-clock/advance", json={"ms": 1000}, headers=admin_headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text


def test_a_drop_of_more_files_than_a_request_may_list_still_gets_one_run(server):
    """A run's `videos` target in a request holds at most 1,000 ids; an automation's job is not
    bound by it (1,050 files here), and the run's `run_context` lists the first 1,000 with
    `video_count`."""
    from concurrent.futures import ThreadPoolExecutor

    s = server
    storage, bucket, index, conn, prompt = setup(s, "all")
    client = storage.client()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=bucket, Key=f"incoming/many/{i:04}.wav", Body=wav(f"many {i}")),
                      range(1050)))
    save_watch(s, index, conn, prompt)
    until(lambda: watch(s, index), lambda a: a["found_objects"] == 1050 and a["waiting_for"] == "debounce",
          "the listing", timeout=60)
    s.advance(5 * MINUTE)
    a = until(lambda: watch(s, index), lambda a: a["last_import_job_id"], "the import")
    sdk = s.sdk()
    job = until(lambda: sdk.import_jobs.retrieve(a["last_import_job_id"]), lambda j: j.execution.status != "pending",
                "the run", timeout=120)
    assert job.progress.imported == 1050 and job.execution.status == "submitted", job.execution
    run = sdk.prompt_runs.wait_for_completion(job.execution.run_id, poll_interval=0.1, timeout=120)
    assert run.status == "completed" and run.total_audios == 1050
    ctx = run.run_context
    assert (ctx["type"], ctx["video_count"], len(ctx["video_ids"])) == ("videos", 1050, 1000)


def test_objects_arriving_faster_than_the_debounce_still_import_after_the_maximum_wait(server):
    """A 5-minute debounce that every new object re-arms waits at most 4 intervals (20 minutes)
    from the first object: a bucket written to every 4 minutes still imports."""
    s = server
    storage, bucket, index, conn, prompt = setup(s, "all")
    storage.put(bucket, "incoming/first.wav", wav("first"))
    save_watch(s, index, conn, prompt)
    until(lambda: watch(s, index), lambda a: a["found_objects"] == 1 and a["waiting_for"] == "debounce",
          "the first object found")
    t0 = s.now_ms
    n = 1
    for _ in range(4):
        # A new object every 4 minutes, each found by the next listing (every 30 s): each
        # re-arms the debounce 5 minutes on.
        s.advance(4 * MINUTE - 30_000)
        listed_now(s, index)
        storage.put(bucket, f"incoming/more{n}.wav", wav(f"more{n}"))
        n += 1
        s.advance(30_000)
        until(lambda: watch(s, index), lambda a: a["found_objects"] == n, "the new object found")
        assert jobs_of(s, conn) == [], "imported before the maximum wait"
    # 16 minutes after the first object, the last one a moment ago: without the maximum wait the
    # import would be at 21 minutes; it is at 20.
    s.advance(3 * MINUTE + 30_000)
    listed_now(s, index)
    assert jobs_of(s, conn) == [], "imported before the maximum wait"
    s.advance(20 * MINUTE - (s.now_ms - t0) + 1_000)
    a = until(lambda: watch(s, index), lambda a: a["last_import_job_id"], "the import at the maximum wait")
    assert s.now_ms - t0 < 21 * MINUTE
    job = until(lambda: s.sdk().import_jobs.retrieve(a["last_import_job_id"]),
                lambda j: j.status == "completed", "the job")
    assert job.progress.total_files == n == 5, (job.progress, n)


def test_an_object_deleted_and_put_back_unchanged_is_found_again(server):
    s = server
    storage, bucket, index, conn, prompt = setup(s, "all")
    body = wav("kept")
    storage.put(bucket, "incoming/kept.wav", body)
    storage.put(bucket, "incoming/other.wav", wav("other"))
    save_watch(s, index, conn, prompt)
    until(lambda: watch(s, index), lambda a: a["found_objects"] == 2, "the first listing")
    s.advance(5 * MINUTE)
    first = until(lambda: watch(s, index), lambda a: a["last_import_job_id"], "the first import")["last_import_job_id"]
    until(lambda: s.sdk().import_jobs.retrieve(first), lambda j: j.status == "completed", "the first job")
    # Deleted: the next whole listing forgets it (the other object stays known).
    storage.client().delete_object(Bucket=bucket, Key="incoming/kept.wav")
    s.advance(MINUTE)
    a = until(lambda: watch(s, index), lambda a: a["manifest_objects"] == 1, "the deleted object forgotten")
    assert a["found_objects"] == 0 and a["last_error"] is None
    # Put back with the same bytes (the same etag and size): found again, and imported.
    storage.put(bucket, "incoming/kept.wav", body)
    s.advance(MINUTE)
    until(lambda: watch(s, index), lambda a: a["found_objects"] == 1 and a["manifest_objects"] == 2, "found again")
    s.advance(5 * MINUTE)
    second = until(lambda: watch(s, index), lambda a: a["last_import_job_id"] != first, "the second import")
    job = until(lambda: s.sdk().import_jobs.retrieve(second["last_import_job_id"]), lambda j: j.status == "completed", "the job")
    files = s.call("GET", f"/import-jobs/{job.job_id}/files?limit=10").json()["items"]
    assert [f["file_name"] for f in files] == ["incoming/kept.wav"]


def test_a_failing_listing_backs_off_durably_and_recovers(server):
    s = server
    storage, bucket, index, conn, prompt = setup(s, "all")
    save_watch(s, index, conn, prompt)
    a = listed_now(s, index)
    assert a["last_error"] is None and a["listing_failures"] == 0

    def gap(a) -> int:
        from datetime import datetime
        due = datetime.fromisoformat(a["next_due_at"].replace("Z", "+00:00"))
        listed = datetime.fromisoformat(a["last_listed_at"].replace("Z", "+00:00"))
        return round((due - listed).total_seconds() * 1000)

    assert gap(a) == 30_000
    # The bucket is gone (s3s-fs keeps a bucket as a folder): each listing fails, and each
    # waits twice as long as the one before.
    shutil.move(str(Path(os.environ["SPOOL_TEST_S3S_ROOT"]) / bucket), str(s.tmp / "bucket-away"))
    wait = 30_000
    for failures in (1, 2):
        listed = a["last_listed_at"]
        s.advance(wait)
        a = until(lambda: watch(s, index), lambda x: x["last_listed_at"] != listed and x["waiting_for"] != "listing", f"failed listing {failures}")
        assert a["last_error"] and a["listing_failures"] == failures, a
        wait = 30_000 * 2**failures
        assert gap(a) == wait, (failures, a)
    # Recorded: a SIGKILL and a restart keep the longer wait.
    due = a["next_due_at"]
    s.kill()
    s.start()
    a = watch(s, index)
    assert a["next_due_at"] == due and a["listing_failures"] == 2, a
    s.advance(wait - 1000)
    time.sleep(0.3)
    assert watch(s, index)["last_listed_at"] == a["last_listed_at"], "listed before its backed-off due time"
    listed = a["last_listed_at"]
    s.advance(1000)
    a = until(lambda: watch(s, index), lambda x: x["last_listed_at"] != listed and x["waiting_for"] != "listing", "the listing after the restart")
    assert a["listing_failures"] == 3 and gap(a) == 30_000 * 8, a
    wait = 30_000 * 8
    # The bucket is back: the next listing succeeds and the interval is 30 s again.
    shutil.move(str(s.tmp / "bucket-away"), str(Path(os.environ["SPOOL_TEST_S3S_ROOT"]) / bucket))
    listed = a["last_listed_at"]
    s.advance(wait)
    a = until(lambda: watch(s, index), lambda a: a["last_listed_at"] != listed and a["waiting_for"] != "listing", "the listing after recovery")
    assert a["last_error"] is None and a["listing_failures"] == 0 and gap(a) == 30_000, a


@pytest.mark.parametrize("provider", ["gcs", "azure"])
def test_the_watch_finds_and_imports_objects_in_gcs_and_azure(server, provider):
    s = server
    if provider == "azure":
        srv = storage.azurite()
        bucket = srv.make_bucket("watch")
        r = s.call("POST", "/connectors/azure", {
            "name": unique("azure-watch"), "storage_account": srv.account, "container": bucket,
            "tenant_id": "00000000-0000-0000-0000-000000000000", "client_id": "11111111-1111-1111-1111-111111111111",
            "client_secret": "unused-in-emulator-mode", "scopes": ["import"],
        })
    else:
        srv = storage.gcs()
        bucket = srv.make_bucket("watch")
        r = httpx.post(
            f"{s.base}/api/v2/connectors/gcs", timeout=30, headers={"X-API-Key": s.admin},
            data={"name": unique("gcs-watch"), "bucket": bucket, "gcp_project_id": "spool-test", "scopes": ["import"]},
            files={"credentials_file": ("service-account.json", srv.credentials(), "application/json")},
        )
    assert r.status_code == 201, r.text
    conn = r.json()["connector_id"]
    index = s.call("POST", "/indexes", {"name": unique("watched")}).json()["index_id"]
    r = s.call("POST", "/prompts", {"name": unique("facts"), "prompt_text": "Report the media facts.", "json_schema": SCHEMA})
    prompt = r.json()["prompt_id"]
    srv.put(bucket, "incoming/a.wav", wav("a"))
    srv.put(bucket, "incoming/deep/b.wav", wav("b"))
    srv.put(bucket, "incoming/notes.txt", b"not media")
    save_watch(s, index, conn, prompt)
    a = until(lambda: watch(s, index), lambda a: a["found_objects"] == 2 and a["waiting_for"] == "debounce", "the first listing")
    assert a["last_error"] is None, a
    s.advance(5 * MINUTE)
    a = until(lambda: watch(s, index), lambda a: a["last_import_job_id"], "the import")
    job = until(lambda: s.sdk().import_jobs.retrieve(a["last_import_job_id"]), lambda j: j.status == "completed", "the job")
    assert (job.progress.total_files, job.progress.imported) == (2, 2), job
    files = s.call("GET", f"/import-jobs/{job.job_id}/files?limit=10").json()["items"]
    assert sorted(f["file_name"] for f in files) == ["incoming/a.wav", "incoming/deep/b.wav"]
    # A third object: the next listing finds it alone.
    srv.put(bucket, "incoming/c.wav", wav("c"))
    s.advance(MINUTE)
    a = until(lambda: watch(s, index), lambda a: a["found_objects"] == 1 and a["manifest_objects"] == 3, "the third object")
    s.advance(5 * MINUTE)
    second = until(lambda: watch(s, index), lambda x: x["last_import_job_id"] != job.job_id, "the second import")
    job = until(lambda: s.sdk().import_jobs.retrieve(second["last_import_job_id"]), lambda j: j.status == "completed", "the second job")
    assert (job.progress.total_files, job.progress.imported) == (1, 1), job


def test_a_listing_that_lists_nothing_forgets_nothing(server):
    """A missing prefix folder or an unmounted share lists empty without an error: forgetting
    the manifest then would import every object again when it is back (review)."""
    s = server
    storage, bucket, index, conn, prompt = setup(s, "all")
    storage.put(bucket, "incoming/a.wav", wav("a"))
    storage.put(bucket, "incoming/b.wav", wav("b"))
    save_watch(s, index, conn, prompt)
    until(lambda: watch(s, index), lambda a: a["manifest_objects"] == 2, "the first listing")
    for key in ("incoming/a.wav", "incoming/b.wav"):
        storage.client().delete_object(Bucket=bucket, Key=key)
    listed = watch(s, index)["last_listed_at"]
    s.advance(MINUTE)
    a = until(lambda: watch(s, index), lambda x: x["last_listed_at"] != listed and x["waiting_for"] != "listing", "the empty listing")
    assert a["manifest_objects"] == 2 and a["last_error"] is None, a
