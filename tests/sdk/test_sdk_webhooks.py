"""Webhooks through the official SDK (contract §2.5, §4): a real receiver on loopback verifies
every delivery twice, with the PyPI `standardwebhooks` library and with the `sha256=` scheme.

conftest starts the server with SPOOL_WEBHOOK_ALLOW_HOSTS=127.0.0.1 and a retry schedule of
0s,1s,1s,1s (four attempts), so retries come after about a second.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

import pytest
import standardwebhooks
from videovector import ConflictError, NotFoundError, ValidationError

from spool_sdk_helpers import assert_error_envelope, unique, video

WAIT_S = 30.0

EVENTS = [
    "media.created", "media.processing.started", "media.processing.completed", "media.processing.failed",
    "prompt_run.started", "prompt_run.completed", "prompt_run.failed", "prompt_run.cancelled",
    "prompt_run.partial_completed", "prompt_run.progress", "export.ready", "export.failed",
    "import_job.started", "import_job.completed", "import_job.failed", "import_job.partial_completed",
    "import_job.progress",
]


class Receiver:
    """A webhook receiver: records each request; answers from a script of statuses (then 200)."""

    def __init__(self) -> None:
        self.requests: List[Tuple[Dict[str, str], bytes]] = []
        self.script: List[Tuple[int, Dict[str, str]]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status, headers = outer.script.pop(0) if outer.script else (200, {})
                if "X-Test-Sleep" in headers:
                    # Answer after the server's timeout (conftest: 2 s): the attempt times out.
                    time.sleep(float(headers.pop("X-Test-Sleep")))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> List[dict]:
        with self.lock:
            return [json.loads(b) for _, b in self.requests]

    def wait(self, n: int, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.requests) < n:
            assert time.monotonic() < deadline, f"{what}: {len(self.requests)} of {n} requests arrived"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def verify(secret: str, headers: Dict[str, str], body: bytes) -> dict:
    """Both schemes: Standard Webhooks (the library) and sha256=<hex HMAC of the whole secret>."""
    std = standardwebhooks.Webhook(secret)
    payload = std.verify(body, {k: headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-webhook-signature"], expected)
    assert headers["x-delivery-id"] == headers["webhook-id"] == headers["idempotency-key"]
    return payload


def _import(client, raw, admin_headers, spool_server, index_id: str, n: int) -> str:
    root = spool_server.local_root / ("hooks-" + uuid.uuid4().hex[:8])
    root.mkdir()
    for i in range(n):
        (root / f"clip{i}.mp4").write_bytes(video(f"{root.name}-{i}", name="h264_aac.mp4"))
    conn = raw.post(
        "/api/v2/connectors/local", json={"name": unique("hooks"), "root": str(root)}, headers=admin_headers
    ).json()["connector_id"]
    job = client.import_jobs.create(connector_id=conn, index_id=index_id)
    deadline = time.monotonic() + WAIT_S
    while client.import_jobs.retrieve(job.job_id).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return job.job_id


def _deliveries(client, webhook_id: str, done) -> list:
    deadline = time.monotonic() + WAIT_S
    while True:
        ds = client.webhooks.list_deliveries(webhook_id, limit=100)
        if done(ds):
            return ds
        assert time.monotonic() < deadline, f"deliveries: {[(d.event_type, d.status, d.attempts) for d in ds]}"
        time.sleep(0.1)


def test_events_are_listed_publicly(client, raw):
    assert client.webhooks.list_events() == EVENTS
    resp = raw.get("/api/v2/webhooks/events")
    assert resp.status_code == 200 and resp.json() == EVENTS


def test_create_shows_the_secret_once_and_refuses_unknown_events_and_private_targets(client, raw, admin_headers, receiver):
    wh = client.webhooks.create(name=unique("wh"), url=receiver.url, events=["import_job.completed"])
    assert wh.secret.startswith("whsec_")
    again = raw.get(f"/api/v2/webhooks/{wh.webhook_id}", headers=admin_headers).json()
    assert "secret" not in again and again["status"] == "active"
    assert wh.webhook_id in [w.webhook_id for w in client.webhooks.list()]
    with pytest.raises(ValidationError):
        client.webhooks.create(name=unique("wh"), url=receiver.url, events=["import_job.exploded"])
    resp = raw.post(
        "/api/v2/webhooks", json={"name": "x", "url": receiver.url, "events": ["nope"]}, headers=admin_headers
    )
    err = assert_error_envelope(resp, 422, "validation_error")
    assert err["details"]["allowed"] == EVENTS
    for url in ["https://10.0.0.1/hook", "https://169.254.169.254/latest", "http://hooks.example.com/x", "https://[::1]/x"]:
        resp = raw.post("/api/v2/webhooks", json={"name": "x", "url": url, "events": EVENTS[:1]}, headers=admin_headers)
        err = assert_error_envelope(resp, 422, "validation_error")
        assert err["details"]["field"] == "url", (url, err)


def test_import_events_reach_subscribed_webhooks_signed_both_ways(client, raw, admin_headers, spool_server, receiver):
    index = client.indexes.create(name=unique("hooked")).index_id
    other_index = client.indexes.create(name=unique("other")).index_id
    wh = client.webhooks.create(
        name=unique("wh"), url=receiver.url, events=["media.created", "import_job.completed"], index_ids=[index],
        metadata={"team": "media"},
    )
    other = Receiver()
    try:
        unsubscribed = client.webhooks.create(name=unique("wh"), url=other.url, events=["prompt_run.completed"])
        elsewhere = client.webhooks.create(name=unique("wh"), url=other.url, events=["media.created"], index_ids=[other_index])
        _import(client, raw, admin_headers, spool_server, index, 2)
        receiver.wait(3, "deliveries of the import")
        time.sleep(0.5)
        assert other.requests == [], "an unsubscribed or other-index webhook got a delivery"
        assert client.webhooks.list_deliveries(unsubscribed.webhook_id) == []
        assert client.webhooks.list_deliveries(elsewhere.webhook_id) == []
    finally:
        other.close()
    payloads = [verify(wh.secret, h, b) for h, b in receiver.requests]
    kinds = sorted(p["event"] for p in payloads)
    assert kinds == ["import_job.completed", "media.created", "media.created"], kinds
    seqs = [p["sequence"] for p in payloads]
    assert sorted(seqs) == [1, 2, 3]
    for p in payloads:
        assert p["webhook_id"] == wh.webhook_id and p["index_id"] == index
        assert p["metadata"] == {"team": "media"} and p["api_version"] and p["created_at"]
        # `data` is the resource as the API shows it when the event happened.
        if p["event"] == "import_job.completed":
            assert p["data"]["status"] == "completed" and p["data"]["progress"]["imported"] == 2
            assert p["data"] == {**p["data"], "job_id": p["data"]["job_id"]}
        else:
            video = raw.get(f"/api/v2/videos/{p['data']['video_id']}", headers=admin_headers).json()
            assert p["data"]["sha256"] == video["sha256"] and p["data"]["index_id"] == index
    ds = _deliveries(client, wh.webhook_id, lambda ds: len(ds) == 3 and all(d.status == "delivered" for d in ds))
    one = client.webhooks.get_delivery(ds[0].delivery_id)
    assert one.payload["delivery_id"] == one.delivery_id and one.response_status_code == 200


def test_a_failing_receiver_is_retried_on_the_schedule_until_it_answers(client, raw, admin_headers, spool_server, receiver):
    receiver.script = [(500, {}), (200, {"X-Test-Sleep": "3"}), (429, {"Retry-After": "1"}), (200, {})]
    index = client.indexes.create(name=unique("retry")).index_id
    wh = client.webhooks.create(name=unique("wh"), url=receiver.url, events=["import_job.completed"], index_ids=[index])
    _import(client, raw, admin_headers, spool_server, index, 1)
    # 500, then a timeout (the server waits 2 s), then 429 with Retry-After, then 200.
    ds = _deliveries(client, wh.webhook_id, lambda ds: len(ds) == 1 and ds[0].status == "delivered")
    assert ds[0].attempts == 4 and ds[0].response_status_code == 200
    assert [verify(wh.secret, h, b)["delivery_id"] for h, b in receiver.requests] == [ds[0].delivery_id] * 4
    # A delivered delivery cannot be retried.
    with pytest.raises(ConflictError):
        client.webhooks.retry_delivery(ds[0].delivery_id)


def test_pause_holds_deliveries_and_resume_sends_them_in_order_test_endpoint_sends_anyway(
    client, raw, admin_headers, spool_server, receiver
):
    index = client.indexes.create(name=unique("pause")).index_id
    wh = client.webhooks.create(name=unique("wh"), url=receiver.url, events=["media.created"], index_ids=[index])
    assert client.webhooks.update(wh.webhook_id, status="paused").status == "paused"
    _import(client, raw, admin_headers, spool_server, index, 3)
    time.sleep(0.5)
    assert receiver.requests == []
    assert all(d.status == "pending" for d in client.webhooks.list_deliveries(wh.webhook_id))
    # Each held delivery says why it is not moving: the webhook is paused (debugging.md).
    held = [d.delivery_id for d in client.webhooks.list_deliveries(wh.webhook_id)]
    for d in held:
        w = raw.get(f"/api/v2/webhooks/deliveries/{d}", headers=admin_headers).json()["waiting_on"]
        assert w["reason"] == "webhook_paused" and w["detail"]["webhook_id"] == wh.webhook_id, w
    metrics = raw.get("/metrics").text
    assert 'spool_waiting{kind="delivery",reason="webhook_paused"}' in metrics, metrics
    test = client.webhooks.test(wh.webhook_id)
    assert test.success is True and test.status_code == 200
    assert verify(wh.secret, *receiver.requests[0])["event"] == "webhook.test"
    client.webhooks.update(wh.webhook_id, status="active")
    receiver.wait(4, "held deliveries after resume")
    seqs = [verify(wh.secret, h, b)["sequence"] for h, b in receiver.requests[1:]]
    assert seqs == [1, 2, 3], "held deliveries did not go out in order"


def test_rotation_switches_sha256_at_once_and_keeps_the_old_standard_signature_for_the_grace(
    client, raw, admin_headers, spool_server, receiver
):
    index = client.indexes.create(name=unique("rotate")).index_id
    wh = client.webhooks.create(name=unique("wh"), url=receiver.url, events=["media.created"], index_ids=[index])
    rotated = client.webhooks.rotate_secret(wh.webhook_id)
    assert rotated.new_secret.startswith("whsec_") and rotated.new_secret != wh.secret
    _import(client, raw, admin_headers, spool_server, index, 1)
    receiver.wait(1, "a delivery after rotation")
    headers, body = receiver.requests[0]
    verify(rotated.new_secret, headers, body)
    # The old secret still verifies the standard header during the grace period (24 h default).
    standardwebhooks.Webhook(wh.secret).verify(
        body, {k: headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    )
    assert len(headers["webhook-signature"].split(" ")) == 2


def test_a_failed_delivery_is_retried_by_hand_and_delete_forgets_the_webhook(client, raw, admin_headers, spool_server, receiver):
    receiver.script = [(500, {})] * 4
    index = client.indexes.create(name=unique("manual")).index_id
    wh = client.webhooks.create(name=unique("wh"), url=receiver.url, events=["import_job.completed"], index_ids=[index])
    _import(client, raw, admin_headers, spool_server, index, 1)
    ds = _deliveries(client, wh.webhook_id, lambda ds: len(ds) == 1 and ds[0].status == "failed")
    assert ds[0].attempts == 4 and ds[0].response_status_code == 500
    again = client.webhooks.retry_delivery(ds[0].delivery_id)
    assert again.status in ("pending", "delivered")
    _deliveries(client, wh.webhook_id, lambda ds: ds[0].status == "delivered")
    assert len(receiver.requests) == 5
    assert client.webhooks.list_deliveries(wh.webhook_id, status="delivered")[0].attempts == 5
    client.webhooks.delete(wh.webhook_id)
    with pytest.raises(NotFoundError):
        client.webhooks.retrieve(wh.webhook_id)


def test_bulk_retry_of_failed_deliveries_runs_as_a_job_from_the_api_and_the_cli(
    client, raw, admin_headers, spool_server, receiver
):
    import subprocess

    import conftest

    receiver.script = [(500, {})] * 12  # three deliveries, four attempts each
    index = client.indexes.create(name=unique("bulk")).index_id
    wh = client.webhooks.create(name=unique("wh"), url=receiver.url, events=["media.created"], index_ids=[index])
    _import(client, raw, admin_headers, spool_server, index, 3)
    _deliveries(client, wh.webhook_id, lambda ds: len(ds) == 3 and all(d.status == "failed" for d in ds))
    resp = raw.post(
        f"/api/v2/webhooks/{wh.webhook_id}/deliveries/retry", json={"status": "bogus"}, headers=admin_headers
    )
    assert_error_envelope(resp, 422, "validation_error")
    binary = os.environ.get("SPOOL_BIN") or str(conftest.DEFAULT_BIN)
    out = subprocess.run(
        [binary, "webhooks", "retry", wh.webhook_id, "--status", "failed", "--server", spool_server.root_url],
        env={**os.environ, "SPOOL_API_KEY": spool_server.admin_key},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["webhook_id"] == wh.webhook_id
    ds = _deliveries(client, wh.webhook_id, lambda ds: all(d.status == "delivered" for d in ds))
    assert all(d.attempts == 5 for d in ds)
    view = raw.get(f"/api/v2/webhooks/{wh.webhook_id}", headers=admin_headers).json()
    assert view["bulk_retry"] == {"status": "finished", "retried": 3}


def _walk_deliveries(raw, admin_headers, webhook_id: str, limit: int, status: str = "") -> list:
    """Every delivery of a webhook, page by page from each page's `X-Next-Cursor`."""
    out, before = [], ""
    for _ in range(1000):
        q = f"limit={limit}" + (f"&status={status}" if status else "") + (f"&before={before}" if before else "")
        r = raw.get(f"/api/v2/webhooks/{webhook_id}/deliveries?{q}", headers=admin_headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page) <= limit
        out.extend(page)
        before = r.headers.get("x-next-cursor", "")
        if not before:
            return out
    raise AssertionError("the cursor never ended")


def test_deliveries_page_with_a_cursor_and_a_status_reads_its_own_set(client, raw, admin_headers, spool_server, receiver):
    index = client.indexes.create(name=unique("paged")).index_id
    wh = client.webhooks.create(name=unique("wh"), url=receiver.url, events=["media.created"], index_ids=[index])
    _import(client, raw, admin_headers, spool_server, index, 6)
    _deliveries(client, wh.webhook_id, lambda ds: len(ds) == 6 and all(d.status == "delivered" for d in ds))
    # Paused: what happens meanwhile is held, pending.
    client.webhooks.update(wh.webhook_id, status="paused")
    _import(client, raw, admin_headers, spool_server, index, 5)
    everything = _deliveries(client, wh.webhook_id, lambda ds: len(ds) == 11)
    newest_first = [d.delivery_id for d in everything]
    # Pages of 4: each delivery once, in the SDK list's order (newest first).
    walked = _walk_deliveries(raw, admin_headers, wh.webhook_id, 4)
    assert [d["delivery_id"] for d in walked] == newest_first
    # A status reads its own set, paged the same way.
    pending = _walk_deliveries(raw, admin_headers, wh.webhook_id, 2, "pending")
    assert [d["delivery_id"] for d in pending] == [d.delivery_id for d in everything if d.status == "pending"]
    assert len(pending) == 5 and all(d["status"] == "pending" for d in pending)
    delivered = _walk_deliveries(raw, admin_headers, wh.webhook_id, 4, "delivered")
    assert [d["delivery_id"] for d in delivered] == [d.delivery_id for d in everything if d.status == "delivered"]
    assert _walk_deliveries(raw, admin_headers, wh.webhook_id, 3, "failed") == []
    # The SDK's default page is still the whole first page, without a cursor.
    assert [d.delivery_id for d in client.webhooks.list_deliveries(wh.webhook_id)] == newest_first
    r = raw.get(f"/api/v2/webhooks/{wh.webhook_id}/deliveries?before=garbage", headers=admin_headers)
    assert r.status_code == 422 and "before" in r.text, r.text
