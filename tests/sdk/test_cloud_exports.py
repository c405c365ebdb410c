"""Resumable multipart exports to GCS (fake-gcs-server behind tests/storage/gcs_xml_adapter.py,
which now speaks the XML multipart API object_store uses) and to Azure Blob (azurite, block
blobs), as `crates/spool/tests/export_crash.rs` does for S3 against s3s-fs: a server of its own
(a debug build: each part's record waits 150 ms, `SPOOL_FAILPOINTS=export_part_slow`) with small parts
(`SPOOL_EXPORT_PART_BYTES`: neither service has S3's 5 MiB minimum here) exports an index to the
connector and is SIGKILLed three times while parts go up, then started again on the same data
directory. At the end: the export completed, its upload was started once and each part was
recorded once (it resumed from the last recorded part), and the object in the bucket is
byte-identical to the artifact the server kept, with the export's SHA-256."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

import storage
from conftest import DEFAULT_BIN, _free_port, _log_tail, _stop
from spool_sdk_helpers import unique, wav

PART_BYTES = 1024
VIDEOS = 8


class Server:
    def __init__(self, tmp: Path):
        binary = Path(os.environ.get("SPOOL_BIN") or DEFAULT_BIN)
        self.binary = binary / "spool" if binary.is_dir() else binary
        self.tmp = tmp
        self.admin = "sk_test_" + secrets.token_hex(24)
        self.master = base64.b64encode(os.urandom(32)).decode()
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_", "VIDEO_VECTOR_"))}
        env.update(
            SPOOL_API_KEY=self.admin,
            SPOOL_MASTER_KEY=self.master,
            SPOOL_EXPORT_PART_BYTES=str(PART_BYTES),
            SPOOL_FAILPOINTS="export_part_slow",
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

    def call(self, method: str, path: str, body=None, **kw) -> httpx.Response:
        return httpx.request(
            method, f"{self.base}/api/v2{path}", json=body, timeout=30,
            headers={"X-API-Key": self.admin, "Accept": "application/json"}, **kw,
        )

    def log(self, kind: str, stream: str) -> list:
        out = subprocess.run(
            [str(self.binary), "log", "show", "--json", "--kind", kind, "--stream", stream, "--data-dir", str(self.tmp / "data")],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture
def server():
    tmp = Path(tempfile.mkdtemp(prefix="spool-cloud-export-"))
    s = Server(tmp)
    s.start()
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            _stop(s.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _connector(s: Server, provider: str):
    if provider == "azure":
        srv = storage.azurite()
        bucket = srv.make_bucket("exports")
        r = s.call("POST", "/connectors/azure", {
            "name": unique("azure-dest"), "storage_account": srv.account, "container": bucket,
            "tenant_id": "00000000-0000-0000-0000-000000000000", "client_id": "11111111-1111-1111-1111-111111111111",
            "client_secret": "unused-in-emulator-mode", "scopes": ["export"], "export_base_path": "exports/spool",
        })
    else:
        srv = storage.gcs()
        bucket = srv.make_bucket("exports")
        r = httpx.post(
            f"{s.base}/api/v2/connectors/gcs", timeout=30, headers={"X-API-Key": s.admin},
            data={"name": unique("gcs-dest"), "bucket": bucket, "gcp_project_id": "spool-test", "scopes": ["export"],
                  "export_base_path": "exports/spool"},
            files={"credentials_file": ("service-account.json", srv.credentials(), "application/json")},
        )
    assert r.status_code == 201, r.text
    return srv, bucket, r.json()["connector_id"]


@pytest.mark.parametrize("provider", ["gcs", "azure"])
def test_a_multipart_export_resumes_from_its_last_recorded_part_after_sigkill(server, provider):
    s = server
    srv, bucket, conn = _connector(s, provider)
    index = s.call("POST", "/indexes", {"name": unique("cloud-export")}).json()["index_id"]
    for i in range(VIDEOS):
        r = httpx.post(
            f"{s.base}/api/v2/videos/upload", timeout=30, headers={"X-API-Key": s.admin},
            data={"index_id": index, "title": f"clip {i} " + "x" * 200},
            files={"file": (f"clip{i}.wav", io.BytesIO(wav(f"{provider}-{i}", 4044)), "audio/wav")},
        )
        assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while True:
        videos = s.call("GET", f"/indexes/{index}/videos?limit=100").json()
        if len(videos.get("data") or videos.get("items") or []) == VIDEOS:
            break
        assert time.monotonic() < deadline, videos
        time.sleep(0.05)
    r = s.call("POST", f"/exports/index/{index}", {"destination_connector_id": conn, "destination_subpath": "nightly"})
    assert r.status_code == 202, r.text
    export_id = r.json()["export_id"]

    # Killed between parts (never during the final complete), started again each time.
    thresholds = [1, 2, 3]
    kills = 0
    while True:
        assert time.monotonic() < deadline, "the export did not finish"
        e = s.call("GET", f"/exports/{export_id}").json()
        if e["status"] in ("completed", "failed"):
            break
        parts = e.get("parts_written") or 0
        if kills < len(thresholds) and parts >= thresholds[kills]:
            s.kill()
            kills += 1
            s.start()
        else:
            time.sleep(0.005)
    assert e["status"] == "completed", (kills, e)
    assert kills == len(thresholds), f"the export finished before every kill: {e}"
    size = e["file_size_bytes"]
    parts_total = -(-size // PART_BYTES)
    assert parts_total > len(thresholds) + 1, f"only {size} bytes"
    assert e["parts_written"] == parts_total, e

    # The object is the kept artifact, byte for byte, with the export's SHA-256.
    key = f"exports/spool/nightly/{export_id}.json"
    body = srv.get(bucket, key)
    assert len(body) == size and hashlib.sha256(body).hexdigest() == e["sha256"], (len(body), size)
    assert body == (s.tmp / "data" / "exports" / f"{export_id}.json").read_bytes(), "the object differs from the kept artifact"
    assert len(json.loads(body)["videos"]) == VIDEOS

    # It resumed: one upload, each part recorded once.
    _stop(s.proc)
    assert len(s.log("ExportUploadStarted", export_id)) == 1, "the upload started again instead of resuming"
    assert len(s.log("ExportPartWritten", export_id)) == parts_total
