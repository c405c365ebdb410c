"""Why is it not moving: an export to a storage server that is not there (a closed loopback
port) waits on `storage_unreachable` with the error and the retry's time, in the Export JSON
(`waiting_on`), in `/metrics` (`spool_waiting`), and from `spool why` against the running
server and offline from its data directory. A server of its own on the test clock, so the retry
waits as long as the test looks."""

from __future__ import annotations

import os
import socket
import subprocess

import httpx

from spool_sdk_helpers import unique
from test_automation_watch import server, until  # noqa: F401  (the clock server fixture)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_export_to_a_closed_port_waits_on_storage_unreachable_with_its_error(server):  # noqa: F811
    s = server
    index = s.call("POST", "/indexes", {"name": unique("why")}).json()["index_id"]
    r = s.call("POST", "/connectors/s3", {
        "name": unique("nowhere"), "bucket": "nowhere", "region": "us-east-1",
        "endpoint": f"http://127.0.0.1:{_closed_port()}",
        "aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": "secret-not-used",
        "scopes": ["export"], "export_base_path": "out",
    })
    assert r.status_code == 201, r.text
    conn = r.json()["connector_id"]
    r = s.call("POST", f"/exports/index/{index}", {"destination_connector_id": conn})
    assert r.status_code in (200, 201, 202), r.text
    export_id = r.json()["export_id"]
    e = until(lambda: s.call("GET", f"/exports/{export_id}").json(),
              lambda e: (e.get("waiting_on") or {}).get("reason") == "storage_unreachable", "the first failure")
    w = e["waiting_on"]
    assert w["since"] and w["until"] and w["detail"]["last_error"], w
    assert e["status"] in ("pending", "processing"), e
    metrics = httpx.get(f"{s.base}/metrics").text
    assert 'spool_waiting{kind="export",reason="storage_unreachable"} 1' in metrics, metrics

    binary = str(s.binary)
    env = {**os.environ, "SPOOL_API_KEY": s.admin}
    out = subprocess.run([binary, "why", export_id, "--server", s.base], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert f"{export_id} (export, " in out.stdout and "waiting on storage_unreachable since " in out.stdout, out.stdout
    assert "last_error" in out.stdout

    # Offline, from the data directory once the server is stopped: the same answer.
    s.kill()
    out = subprocess.run([binary, "why", export_id, "--data-dir", str(s.tmp / "data")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "waiting on storage_unreachable since " in out.stdout, out.stdout
    # An id that names nothing is a clear error.
    out = subprocess.run([binary, "why", "exp_01JD0000000000000000000000", "--data-dir", str(s.tmp / "data")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "no import job, prompt run, export, delivery or automation" in out.stderr, out.stderr
    s.start()


def _closed_port_connector(s, scopes):
    r = s.call("POST", "/connectors/s3", {
        "name": unique("nowhere"), "bucket": "nowhere", "region": "us-east-1",
        "endpoint": f"http://127.0.0.1:{_closed_port()}",
        "aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": "secret-not-used",
        "scopes": scopes,
    })
    assert r.status_code == 201, r.text
    return r.json()["connector_id"]


def test_an_import_job_listing_a_closed_port_waits_on_storage_unreachable_then_fails_after_its_retries(server):  # noqa: F811
    s = server
    index = s.call("POST", "/indexes", {"name": unique("why")}).json()["index_id"]
    conn = _closed_port_connector(s, ["import"])
    r = s.call("POST", "/import-jobs", {"connector_id": conn, "index_id": index, "source_prefix": "incoming/"})
    assert r.status_code in (200, 201, 202), r.text
    job_id = r.json()["job_id"]

    def reason(j):
        return (j.get("waiting_on") or {}).get("reason")

    j = until(lambda: s.call("GET", f"/import-jobs/{job_id}").json(),
              lambda j: reason(j) == "storage_unreachable", "the first failed listing")
    w = j["waiting_on"]
    assert j["status"] in ("pending", "scanning"), j
    assert w["since"] and w["until"] and w["detail"]["listing_attempts"] == 1, w
    assert w["detail"]["last_error"]["code"] == "listing_failed", w
    assert "listing the source failed" in w["detail"]["last_error"]["message"], w
    assert "secret-not-used" not in str(j)
    metrics = httpx.get(f"{s.base}/metrics").text
    assert 'spool_waiting{kind="import_job",reason="storage_unreachable"} 1' in metrics, metrics
    env = {**os.environ, "SPOOL_API_KEY": s.admin}
    out = subprocess.run([str(s.binary), "why", job_id, "--server", s.base], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert f"{job_id} (import_job, " in out.stdout and "waiting on storage_unreachable since " in out.stdout, out.stdout

    # The clock has not moved: the job waits on its durable timer, it does not spin or fail.
    until(lambda: s.call("GET", f"/import-jobs/{job_id}").json(),
          lambda j: reason(j) == "storage_unreachable" and j["waiting_on"]["detail"]["listing_attempts"] == 1,
          "still the first attempt")
    # Survives a SIGKILL: the retry comes back from the log.
    s.kill()
    s.start()
    j = s.call("GET", f"/import-jobs/{job_id}").json()
    assert reason(j) == "storage_unreachable" and j["waiting_on"]["until"] == w["until"], j
    # Each retry lists again (the attempts grow); the fifth failure fails the job with its error.
    seen = 1
    for _ in range(10):
        s.advance(90_000)
        j = until(lambda: s.call("GET", f"/import-jobs/{job_id}").json(),
                  lambda j: j["status"] == "failed" or j["waiting_on"]["detail"]["listing_attempts"] > seen,
                  "the next listing")
        if j["status"] == "failed":
            break
        seen = j["waiting_on"]["detail"]["listing_attempts"]
    assert j["status"] == "failed" and seen == 4, (seen, j)
    assert "listing attempt 5 of 5" in (j.get("error_message") or ""), j
    assert "waiting_on" not in j or j["waiting_on"] is None, j


def test_a_cancel_while_a_listing_waits_for_its_retry_ends_the_job_cancelled(server):  # noqa: F811
    s = server
    index = s.call("POST", "/indexes", {"name": unique("why")}).json()["index_id"]
    conn = _closed_port_connector(s, ["import"])
    job_id = s.call("POST", "/import-jobs", {"connector_id": conn, "index_id": index}).json()["job_id"]
    until(lambda: s.call("GET", f"/import-jobs/{job_id}").json(),
          lambda j: (j.get("waiting_on") or {}).get("reason") == "storage_unreachable", "the first failed listing")
    r = s.call("POST", f"/import-jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    j = until(lambda: s.call("GET", f"/import-jobs/{job_id}").json(), lambda j: j["status"] == "cancelled", "cancelled")
    # The retry timer still fires once (and changes nothing).
    s.advance(90_000)
    assert s.call("GET", f"/import-jobs/{job_id}").json()["status"] == "cancelled"


def test_a_registered_video_on_a_closed_port_waits_on_storage_unreachable_not_failed(server):  # noqa: F811
    s = server
    index = s.call("POST", "/indexes", {"name": unique("why")}).json()["index_id"]
    conn = _closed_port_connector(s, ["import"])
    r = s.call("POST", "/videos", {"title": "far away", "video_uri": "s3://nowhere/clips/a.wav",
                                    "index_id": index, "source_connector_id": conn})
    assert r.status_code in (200, 201, 202), r.text
    job = r.json()
    assert job["source_kind"] == "uri", job
    j = until(lambda: s.call("GET", f"/import-jobs/{job['job_id']}").json(),
              lambda j: (j.get("waiting_on") or {}).get("reason") == "storage_unreachable", "the failed lookup")
    assert j["status"] not in ("failed", "completed"), j
    assert "looking up the object failed" in j["waiting_on"]["detail"]["last_error"]["message"], j
