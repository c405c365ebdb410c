"""Security and bad input (issue "Security and bad input"): every reproduction of the issue,
against the real server, now seeing the safe behaviour.

1. Storage endpoints and base URLs that object_store would panic on are refused at creation
   (422 naming the field); a panicking handler answers 500 in the envelope and the server
   serves on; a panicking effect ends its job with `internal_error` instead of wedging it.
2. Symbolic links inside a local root never lead out of it (browse and import).
3. The data directory is never a local root, nor inside or around one.
4. Loose validation closed: NUL characters, empty region, huge bucket names, endpoint query
   strings and fragments, unknown credential fields, non-JSON bodies, unknown statuses,
   undecodable path parameters, cursors near u64::MAX, server paths in job errors.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

import conftest
from spool_sdk_helpers import assert_error_envelope, poll, unique
from spool_sdk_helpers import video as real_video

WAIT_S = 30.0


def _local(raw, admin_headers, root: Path, expect: int = 201):
    resp = raw.post(
        "/api/v2/connectors/local",
        json={"name": unique("local"), "root": str(root), "scopes": ["import"]},
        headers=admin_headers,
    )
    assert resp.status_code == expect, resp.text
    return resp


def _index(client) -> str:
    return client.indexes.create(name=unique("bad-input")).index_id


def _s3_body(**over):
    body = {
        "name": unique("s3"),
        "bucket": "spool-bad-input",
        "region": "us-east-1",
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": "not-a-real-secret",
        "scopes": ["import"],
    }
    body.update(over)
    return body


def _wait_job(client, job_id: str, statuses=("completed", "failed", "cancelled")):
    deadline = time.monotonic() + WAIT_S
    while True:
        job = client.import_jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job.status}"
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# 1. endpoints that used to panic inside object_store

PANICKING_ENDPOINTS = [
    "http://127.0.0.1:99999",
    "http://[zz]",
    "http://127.0.0.1:-1",
    "http://",
    "http://:9000",
    "ftp://127.0.0.1:9000",
    "http://user:pw@127.0.0.1:9000",
    "http://127.0.0.1:9000/?x-id=1",
    "http://127.0.0.1:9000/#frag",
    "http://127.0.0.1:0",
    "http://127.0.0.1:9000/\x00",
]


@pytest.mark.parametrize("endpoint", PANICKING_ENDPOINTS)
def test_s3_endpoint_that_object_store_panics_on_is_refused_naming_the_field(raw, admin_headers, endpoint):
    resp = raw.post("/api/v2/connectors/s3", json=_s3_body(endpoint=endpoint), headers=admin_headers)
    err = assert_error_envelope(resp, 422, "validation_error")
    assert err["details"]["field"] == "endpoint", err
    # Nothing half-made: no connector carries this endpoint.
    listed = raw.get("/api/v2/connectors", headers=admin_headers).json()
    assert all(c.get("endpoint") != endpoint for c in listed)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:99999", "https://[zz]", "http://h/?q=1"])
def test_azure_endpoint_is_checked_the_same_way(raw, admin_headers, endpoint):
    resp = raw.post(
        "/api/v2/connectors/azure",
        json={
            "name": unique("az"),
            "storage_account": "devstoreaccount1",
            "container": "videos",
            "account_key": "a2V5",
            "endpoint": endpoint,
        },
        headers=admin_headers,
    )
    err = assert_error_envelope(resp, 422, "validation_error")
    assert err["details"]["field"] == "endpoint", err


@pytest.mark.parametrize("base_url", ["not a url", "http://127.0.0.1:99999", "http://[zz]", 7])
def test_gcs_base_url_in_the_service_account_is_checked(raw, admin_headers, base_url):
    sa = {"gcs_base_url": base_url, "disable_oauth": True, "client_email": "", "private_key": "", "private_key_id": ""}
    import json

    resp = raw.post(
        "/api/v2/connectors/gcs",
        files={"credentials_file": ("sa.json", json.dumps(sa).encode(), "application/json")},
        data={"name": unique("gcs"), "bucket": "spool-bad-input", "scopes": "import"},
        headers={"X-API-Key": admin_headers["X-API-Key"]},
    )
    err = assert_error_envelope(resp, 422, "validation_error")
    assert err["details"]["field"] == "gcs_base_url", err


def test_a_good_endpoint_with_a_path_is_kept_without_trailing_slash(raw, admin_headers):
    resp = raw.post("/api/v2/connectors/s3", json=_s3_body(endpoint="http://127.0.0.1:9/"), headers=admin_headers)
    assert resp.status_code == 201, resp.text
    conn = resp.json()
    # A connection test that cannot connect is success: false with a message, not a panic.
    test = raw.post(f"/api/v2/connectors/{conn['connector_id']}/test", headers=admin_headers)
    assert test.status_code == 200, test.text
    assert test.json()["success"] is False and test.json()["error_message"]


# -- a dedicated server with failpoints: panics in a handler and in an effect executor


def _start_failpoint_server(points: str):
    tmp = Path(tempfile.mkdtemp(prefix="spool-failpoints-"))
    data = tmp / "data"
    data.mkdir()
    root = tmp / "root"
    root.mkdir()
    (root / "a.mp4").write_bytes(real_video("failpoints", name="h264_aac.mp4"))
    port = conftest._free_port()
    key = "sk_test_" + secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in conftest._SERVER_ENV_DROP}
    env.update(
        {
            "SPOOL_API_KEY": key,
            "SPOOL_LOCAL_ROOTS": str(root),
            "SPOOL_FAILPOINTS": points,
            "RUST_BACKTRACE": "0",
        }
    )
    log = tmp / "spool.log"
    fh = open(log, "wb")
    binary = os.environ.get("SPOOL_BIN") or str(conftest.DEFAULT_BIN)
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=fh,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    conftest._wait_healthy(proc, f"{url}/healthz", log)
    return proc, fh, url, key, root, log


def test_a_panicking_handler_answers_500_in_the_envelope_and_a_panicking_effect_fails_its_job():
    proc, fh, url, key, root, log = _start_failpoint_server("connector_test_panic,scan_panic")
    try:
        h = {"X-API-Key": key}
        with httpx.Client(base_url=url, timeout=10) as c:
            conn = c.post(
                "/api/v2/connectors/local", json={"name": "fp", "root": str(root)}, headers=h
            ).json()["connector_id"]
            resp = c.post(f"/api/v2/connectors/{conn}/test", headers=h)
            err = assert_error_envelope(resp, 500, "internal_error")
            assert err["request_id"] == resp.headers["x-request-id"]
            # The server serves on, and the panic is logged with the request id.
            assert c.get("/healthz").status_code == 200
            assert c.get("/api/v2/connectors", headers=h).status_code == 200
            assert err["request_id"] in log.read_text(errors="replace")

            index = c.post("/api/v2/indexes", json={"name": "fp"}, headers=h).json()["index_id"]
            job = c.post(
                "/api/v2/import-jobs", json={"connector_id": conn, "index_id": index}, headers=h
            ).json()
            deadline = time.monotonic() + WAIT_S
            while True:
                j = c.get(f"/api/v2/import-jobs/{job['job_id']}", headers=h).json()
                if j["status"] == "failed":
                    break
                assert time.monotonic() < deadline, f"a panicking scan wedged its job: {j}"
                time.sleep(0.1)
            assert j["error_message"].startswith("internal_error"), j
            assert str(root) not in j["error_message"]
        # SIGTERM drains at once: nothing is left running.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        fh.close()


# ---------------------------------------------------------------------------------------------
# 2. symbolic links out of a local root


def test_symlinks_out_of_a_local_root_are_neither_browsed_nor_imported(raw, admin_headers, client, spool_server):
    root = spool_server.local_root / ("links-" + uuid.uuid4().hex[:8])
    root.mkdir()
    # Real media (Spool probes what it imports): the file inside, and the one a followed
    # directory link would reach, which would import too.
    inside = real_video(root.name, name="h264_aac.mp4")
    (root / "ok.mp4").write_bytes(inside)
    outside_dir = Path(tempfile.mkdtemp(prefix="spool-outside-"))
    (outside_dir / "passwd").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    (outside_dir / "nested").mkdir()
    leak = real_video("leak-" + root.name, name="h264_aac.mp4")
    (outside_dir / "nested" / "leak.mp4").write_bytes(leak)
    os.symlink(outside_dir, root / "etcdir")
    os.symlink(outside_dir / "passwd", root / "passwd.mp4")
    os.symlink(spool_server.data_dir / "master.key", root / "key.mp4")
    os.symlink(root / "ok.mp4", root / "alias.mp4")
    assert (spool_server.data_dir / "master.key").exists()

    conn = _local(raw, admin_headers, root).json()["connector_id"]
    resp = raw.post(f"/api/v2/connectors/{conn}/browse", json={"recursive": True}, headers=admin_headers)
    assert resp.status_code == 200, resp.text
    assert sorted(f["path"] for f in resp.json()) == ["alias.mp4", "ok.mp4"]
    resp = raw.post(
        f"/api/v2/connectors/{conn}/browse", json={"prefix": "etcdir/", "recursive": True}, headers=admin_headers
    )
    assert resp.status_code == 200 and resp.json() == [], resp.text

    index = _index(client)
    job = client.import_jobs.create(connector_id=conn, index_id=index, file_pattern="*")
    job = _wait_job(client, job.job_id)
    assert job.status == "completed", job
    assert job.progress.imported == 2, job
    # A followed link to a non-media file would now fail its file (media_unreadable) rather
    # than import: only the two files inside were picked up at all.
    assert (job.progress.total_files, job.progress.failed, job.progress.skipped) == (2, 0, 0), job
    leaked = {
        hashlib.sha256((outside_dir / "passwd").read_bytes()).hexdigest(),
        hashlib.sha256((spool_server.data_dir / "master.key").read_bytes()).hexdigest(),
        hashlib.sha256(leak).hexdigest(),
    }
    for out in client.import_jobs.iter_outputs(job.job_id):
        video = raw.get(f"/api/v2/videos/{out.video_id}", headers=admin_headers).json()
        assert video["sha256"] not in leaked, video
        assert video["sha256"] == hashlib.sha256(inside).hexdigest()


# ---------------------------------------------------------------------------------------------
# 3. the data directory as a local root


def test_the_data_directory_is_refused_as_inside_or_around_a_local_root(raw, admin_headers, spool_server):
    # conftest allows the session folder, which holds the data directory.
    for root in (spool_server.data_dir, spool_server.data_dir / "uploads", spool_server.data_dir.parent):
        err = assert_error_envelope(_local(raw, admin_headers, root, expect=422), 422, "validation_error")
        assert err["details"]["field"] == "root"
        assert "data directory" in err["message"], err
        assert str(spool_server.data_dir) not in err["message"]
    # A sibling folder of the data directory under the same allowed folder is fine.
    sibling = spool_server.data_dir.parent / ("sibling-" + uuid.uuid4().hex[:8])
    sibling.mkdir()
    _local(raw, admin_headers, sibling)


# ---------------------------------------------------------------------------------------------
# 4. loose validation


@pytest.mark.parametrize("field", ["source_prefix", "file_pattern"])
def test_nul_in_source_prefix_or_file_pattern_is_refused(raw, admin_headers, client, spool_server, field):
    root = spool_server.local_root / ("nul-" + uuid.uuid4().hex[:8])
    root.mkdir()
    conn = _local(raw, admin_headers, root).json()["connector_id"]
    body = {"connector_id": conn, "index_id": _index(client), field: "videos\u0000/*.mp4"}
    err = assert_error_envelope(raw.post("/api/v2/import-jobs", json=body, headers=admin_headers), 422)
    assert err["details"]["field"] == field


def test_empty_region_and_huge_or_odd_bucket_names_are_refused(raw, admin_headers):
    err = assert_error_envelope(
        raw.post("/api/v2/connectors/s3", json=_s3_body(region=""), headers=admin_headers), 422, "validation_error"
    )
    assert err["details"]["field"] == "region"
    for bucket in ["b" * 10_000, "a", "bad bucket", "bucket\u0000x", "-leading"]:
        resp = raw.post("/api/v2/connectors/s3", json=_s3_body(bucket=bucket), headers=admin_headers)
        err = assert_error_envelope(resp, 422, "validation_error")
        assert err["details"]["field"] == "bucket"
        assert len(resp.text) < 2000, "the refusal must not echo a huge input"


def test_patch_with_unknown_credential_fields_is_refused(raw, admin_headers):
    conn = raw.post("/api/v2/connectors/s3", json=_s3_body(), headers=admin_headers).json()
    for creds in ({"foo": "bar"}, {}):
        resp = raw.patch(
            f"/api/v2/connectors/{conn['connector_id']}", json={"credentials": creds}, headers=admin_headers
        )
        assert_error_envelope(resp, 422, "validation_error")
    after = raw.get(f"/api/v2/connectors/{conn['connector_id']}", headers=admin_headers).json()
    assert after["updated_at"] == conn["updated_at"]


def test_a_text_plain_body_is_not_parsed_as_json(raw, admin_headers):
    h = {**admin_headers, "Content-Type": "text/plain"}
    resp = raw.post("/api/v2/indexes", content=b'{"name": "plain"}', headers=h)
    err = assert_error_envelope(resp, 415, "unsupported_media_type")
    assert err["details"]["expected"] == "application/json"
    names = [i["name"] for i in raw.get("/api/v2/indexes", headers=admin_headers).json()]
    assert "plain" not in names


def test_unknown_statuses_are_refused_on_both_job_lists(raw, admin_headers, client, spool_server):
    assert_error_envelope(raw.get("/api/v2/import-jobs?status=bogus", headers=admin_headers), 422, "validation_error")
    root = spool_server.local_root / ("st-" + uuid.uuid4().hex[:8])
    root.mkdir()
    conn = _local(raw, admin_headers, root).json()["connector_id"]
    job = client.import_jobs.create(connector_id=conn, index_id=_index(client))
    err = assert_error_envelope(
        raw.get(f"/api/v2/import-jobs/{job.job_id}/files?status=bogus", headers=admin_headers), 422
    )
    assert err["details"]["field"] == "status" and "failed" in err["details"]["allowed"]
    ok = raw.get(f"/api/v2/import-jobs/{job.job_id}/files?status=failed", headers=admin_headers)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    "path", ["/api/v2/indexes/%ff", "/api/v2/connectors/%ff%fe", "/api/v2/import-jobs/%c3%28", "/api/v2/videos/%ff"]
)
def test_a_path_parameter_that_is_not_utf8_gets_the_envelope(raw, admin_headers, path):
    assert_error_envelope(raw.get(path, headers=admin_headers), 404)


def test_a_cursor_near_u64_max_is_refused_not_wrapped(raw, admin_headers, client, spool_server):
    root = spool_server.local_root / ("cur-" + uuid.uuid4().hex[:8])
    root.mkdir()
    conn = _local(raw, admin_headers, root).json()["connector_id"]
    index = _index(client)
    job = _wait_job(client, client.import_jobs.create(connector_id=conn, index_id=index).job_id)
    for pos in (2**64 - 1, 2**64 - 50, 2**63):
        cursor = base64.urlsafe_b64encode(f"v1:{pos}".encode()).decode().rstrip("=")
        for url in (
            f"/api/v2/import-jobs/{job.job_id}/outputs?cursor={cursor}",
            f"/api/v2/import-jobs/{job.job_id}/files?cursor={cursor}",
            f"/api/v2/indexes/{index}/videos?cursor={cursor}",
        ):
            err = assert_error_envelope(raw.get(url, headers=admin_headers), 422, "validation_error")
            assert err["details"]["field"] == "cursor"


def test_a_failed_job_error_names_no_server_path(raw, admin_headers, client, spool_server):
    root = spool_server.local_root / ("gone-" + uuid.uuid4().hex[:8])
    root.mkdir()
    conn = _local(raw, admin_headers, root).json()["connector_id"]
    root.rmdir()
    job = _wait_job(client, client.import_jobs.create(connector_id=conn, index_id=_index(client)).job_id)
    assert job.status == "failed", job
    assert job.error_message, job
    for secret_path in (str(spool_server.local_root), str(spool_server.data_dir), "/tmp/"):
        assert secret_path not in job.error_message, job.error_message
