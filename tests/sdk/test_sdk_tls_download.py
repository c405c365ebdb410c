"""`spool serve` speaking https itself (SPOOL_TLS_CERT / SPOOL_TLS_KEY) with an https public
URL: the SDK, pointed at `https://127.0.0.1:…/api/v2` with a self-signed CA trusted, mints a
download URL (`v1.<payload>.<mac>` token, contract §1.9) and the URL downloads the export
without a key; a changed or foreign token is refused. A server of its own (not the session one)."""

from __future__ import annotations

import hashlib
import io
import ssl
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from videovector import VideoVector

from conftest import DEFAULT_BIN, _free_port, _log_tail, _stop


def _cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE",
        ],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server():
    binary = Path(os.environ.get("SPOOL_BIN") or DEFAULT_BIN)
    if binary.is_dir():
        binary = binary / "spool"
    tmp = Path(tempfile.mkdtemp(prefix="spool-tls-"))
    cert, key = _cert(tmp)
    port = _free_port()
    base = f"https://127.0.0.1:{port}"
    admin = "sk_test_" + secrets.token_hex(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
    env.update(
        SPOOL_API_KEY=admin, SPOOL_TLS_CERT=str(cert), SPOOL_TLS_KEY=str(key), SPOOL_PUBLIC_URL=base,
        SPOOL_MASTER_KEY=__import__("base64").b64encode(os.urandom(32)).decode(),
    )
    log = open(tmp / "spool.log", "wb")
    proc = subprocess.Popen(
        [str(binary), "serve", "--data-dir", str(tmp / "data"), "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, _log_tail(tmp / "spool.log")
            try:
                ctx = ssl.create_default_context(cafile=str(cert))
                if httpx.get(f"{base}/healthz", verify=ctx, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, _log_tail(tmp / "spool.log")
            time.sleep(0.1)
        yield base, admin, cert
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_sdk_over_https_downloads_through_a_minted_url_without_a_key(tls_server, monkeypatch):
    base, admin, cert = tls_server
    # The SDK's httpx client trusts the self-signed CA through the standard variable.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    client = VideoVector(api_key=admin, base_url=f"{base}/api/v2", max_retries=0)
    ctx = ssl.create_default_context(cafile=str(cert))
    index = client.indexes.create(name="tls").index_id
    created = client.exports.create_index_export(index)
    done = client.exports.wait_for_completion(created.export_id, poll_interval=0.1, timeout=30)
    assert (done.status, done.queue_status, done.destination_type) == ("completed", "succeeded", "download")
    buf = io.BytesIO()
    n = client.exports.download(created.export_id, buf)
    body = buf.getvalue()
    assert n == len(body) == done.file_size_bytes
    raw = httpx.get(f"{base}/api/v2/exports/{created.export_id}", headers={"X-API-Key": admin}, verify=ctx).json()
    assert hashlib.sha256(body).hexdigest() == raw["sha256"]

    url = client.exports.download_url(created.export_id)
    assert url is not None and url.startswith(f"{base}/api/v2/exports/{created.export_id}/download?token=v1.")
    # The minted URL is a bearer capability: no key needed.
    r = httpx.get(url, verify=ctx)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert int(r.headers["content-length"]) == len(body) and r.content == body

    token = parse_qs(urlsplit(url).query)["token"][0]
    path = urlsplit(url).path
    for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "v1.e30.AAAA", ""):
        r = httpx.get(f"{base}{path}", params={"token": bad} if bad else None, verify=ctx)
        assert r.status_code == 401, (bad, r.status_code, r.text)
        assert "error" in r.json()
    # A token opens only its own export.
    other = client.exports.create_index_export(index).export_id
    client.exports.wait_for_completion(other, poll_interval=0.1, timeout=30)
    r = httpx.get(f"{base}/api/v2/exports/{other}/download", params={"token": token}, verify=ctx)
    assert r.status_code == 401


def test_a_download_url_stops_opening_when_the_key_that_minted_it_is_revoked(tls_server, monkeypatch):
    base, admin, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    ctx = ssl.create_default_context(cafile=str(cert))
    root = VideoVector(api_key=admin, base_url=f"{base}/api/v2", max_retries=0)
    key = root.api_keys.create(name="reader", scopes=["read", "write"])
    client = VideoVector(api_key=key.key, base_url=f"{base}/api/v2", max_retries=0)
    index = client.indexes.create(name="revoked").index_id
    created = client.exports.create_index_export(index)
    client.exports.wait_for_completion(created.export_id, poll_interval=0.1, timeout=30)
    url = client.exports.download_url(created.export_id)
    assert url is not None
    assert httpx.get(url, verify=ctx).status_code == 200
    # Another key's URL still opens; this key's does not once it is revoked.
    admin_url = root.exports.download_url(created.export_id)
    root.api_keys.revoke(key.key_id)
    r = httpx.get(url, verify=ctx)
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.json()["error"]["code"] == "download_token_invalid"
    assert httpx.get(admin_url, verify=ctx).status_code == 200
