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
