"""Hardening: regression tests of hostile inputs, slow or greedy peers, and keys and signals
that must end what they started. Each test is named after what broke and asserts what a user
sees (an answer, a status, the process still answering, its peak memory).

Most tests run a `spool serve` of their own (`OwnServer`, below): they restart it on its data
directory, send it SIGTERM, start it with other settings, read its peak RSS (`VmHWM` in
/proc/<pid>/status, which a shared server's earlier tests would have raised) or run the offline
tools on its data directory once it is stopped. A watchdog SIGKILLs such a server whose RSS or
log (spool.redb) grows past a bound far above what any test allows (so a regression fails its test and
does not take the machine down). The rest use the session server of conftest.py.

Everything talks to 127.0.0.1 only, and every wait is bounded.

The "50 webhooks on `media.created` and an upload of 224 parts" decision (22,951 events in one
append, then a loop at every restart) is reached here with the bound lowered
(`SPOOL_TEST_DECISION_EVENTS_MAX`, debug builds) rather than a 42-hour upload.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional
from urllib.parse import urlsplit

import httpx
import pytest
from videovector import ValidationError, VideoVector

from conftest import DEFAULT_BIN, _free_port, _log_tail
from spool_sdk_helpers import FIXTURES, assert_error_envelope, poll, unique, wav
from test_sdk_tls_download import tls_server  # noqa: F401  (the https server fixture)

HOSTILE = FIXTURES / "hostile"
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
MiB = 1024 * 1024

START_TIMEOUT_S = 60.0  # an own server answers /healthz within this
STOP_TIMEOUT_S = 20.0  # …and exits within this after SIGTERM
WAIT_S = 60.0  # jobs, runs and deliveries end within this
CLIENT_TIMEOUT_S = 10.0  # every HTTP call (also: "quickly" for a refusal)
PEAK_RSS_MAX_MB = 300  # what the greedy-peer tests allow the server
# The watchdog's bounds: far above the tests' own, only there to keep the machine alive.
WATCHDOG_RSS_MAX_MB = 1536
WATCHDOG_REDB_MAX_BYTES = 512 * MiB


# ---------------------------------------------------------------------------------------------
# a `spool serve` of the test's own


def _binary() -> Path:
    binary = Path(os.environ.get("SPOOL_BIN") or DEFAULT_BIN)
    return binary / "spool" if binary.is_dir() else binary


def _proc_status_kb(pid: int, field: str) -> Optional[int]:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class OwnServer:
    """`spool serve` on a fresh data directory and a free loopback port, with `env` added to a
    clean environment (no ambient SPOOL_/VIDEO_VECTOR_ variables) and an optional config file.
    `stop()` sends SIGTERM; `start()` again runs it on the same data directory."""

    def __init__(self, tmp: Path, env: Optional[Dict[str, str]] = None, config: Optional[str] = None) -> None:
        self.binary = _binary()
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.log_path = tmp / "spool.log"
        self.admin = "sk_test_" + secrets.token_hex(24)
        self.env = dict(env or {})
        self.config_path: Optional[Path] = None
        if config is not None:
            self.config_path = tmp / "spool.toml"
            self.config_path.write_text(config)
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.watchdog_reason: Optional[str] = None
        self._watch_stop = threading.Event()
        self._watch: Optional[threading.Thread] = None
        self._clients: List[VideoVector] = []

    # --- where it is

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.root}/api/v2"

    @property
    def redb(self) -> Path:
        return self.data_dir / "spool.redb"

    def server_env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_", "VIDEO_VECTOR_"))}
        env.update(SPOOL_API_KEY=self.admin, RUST_BACKTRACE="1")
        env.update(self.env)
        return env

    # --- life

    def start(self) -> None:
        assert self.binary.is_file(), f"spool binary not found at {self.binary} (set SPOOL_BIN)"
        self.port = _free_port()
        args = [str(self.binary), "serve", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}"]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, env=self.server_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.tmp)
            )
        self._start_watchdog()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, f"spool exited with {self.proc.returncode} at start:\n{self.log_tail()}"
            try:
                if httpx.get(f"{self.root}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no /healthz within {START_TIMEOUT_S} s:\n{self.log_tail()}"
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> Optional[int]:
        """SIGTERM, then wait `timeout` s: the exit code, or None when it had to be SIGKILLed."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        self._watch_stop.set()
        if proc.poll() is not None:
            return proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            return None

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()
        self.stop(timeout=10)

    def _start_watchdog(self) -> None:
        self._watch_stop = threading.Event()
        proc, stop = self.proc, self._watch_stop

        def watch() -> None:
            while not stop.is_set() and proc.poll() is None:
                rss = _proc_status_kb(proc.pid, "VmRSS") or 0
                try:
                    size = self.redb.stat().st_size
                except OSError:
                    size = 0
                why = None
                if rss > WATCHDOG_RSS_MAX_MB * 1024:
                    why = f"RSS {rss // 1024} MB > {WATCHDOG_RSS_MAX_MB} MB"
                elif size > WATCHDOG_REDB_MAX_BYTES:
                    why = f"spool.redb {size // MiB} MB > {WATCHDOG_REDB_MAX_BYTES // MiB} MB"
                if why:
                    self.watchdog_reason = why
                    proc.kill()
                    return
                stop.wait(0.05)

        self._watch = threading.Thread(target=watch, name="spool-watchdog", daemon=True)
        self._watch.start()

    # --- looking at it

    def log_tail(self) -> str:
        return _log_tail(self.log_path)

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def peak_rss_mb(self) -> float:
        hwm = _proc_status_kb(self.pid(), "VmHWM")
        assert hwm is not None, f"the server is gone ({self.watchdog_reason or 'exited'}):\n{self.log_tail()}"
        return hwm / 1024

    def assert_alive(self) -> None:
        assert self.watchdog_reason is None, f"the watchdog killed the server: {self.watchdog_reason}"
        assert self.proc is not None and self.proc.poll() is None, (
            f"the server exited with {self.proc and self.proc.returncode}:\n{self.log_tail()}"
        )
        r = httpx.get(f"{self.root}/healthz", timeout=CLIENT_TIMEOUT_S)
        assert r.status_code == 200, (r.status_code, r.text[:300])

    @contextlib.contextmanager
    def watched(self, what: str) -> Iterator[None]:
        """Re-raise a failure inside as "the server died" when it did (a connection error then
        says less than the watchdog's reason or the exit code)."""
        try:
            yield
        except Exception as exc:
            died = self.watchdog_reason or (
                self.proc is not None and self.proc.poll() is not None and f"exit code {self.proc.returncode}"
            )
            if died:
                raise AssertionError(f"{what}: the server died ({died}); the call saw {exc!r}") from exc
            raise

    def sdk(self, api_key: Optional[str] = None) -> VideoVector:
        c = VideoVector(api_key=api_key or self.admin, base_url=self.api, timeout=CLIENT_TIMEOUT_S, max_retries=0)
        self._clients.append(c)
        return c

    def call(self, method: str, path: str, body=None, key: Optional[str] = None, **kw) -> httpx.Response:
        return httpx.request(
            method, f"{self.api}{path}", json=body, timeout=CLIENT_TIMEOUT_S,
            headers={"X-API-Key": key or self.admin, "Accept": "application/json"}, **kw,
        )

    def run_tool(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """An offline tool on this server's data directory (the server must be stopped)."""
        return subprocess.run(
            [str(self.binary), *args], env=self.server_env(), capture_output=True, timeout=timeout, cwd=str(self.tmp)
        )


@pytest.fixture
def own_server() -> Iterator[Callable[..., OwnServer]]:
    """Factory: `own_server(env={...}, config="...")` starts a server of the test's own; every
    one is stopped (and its folder removed) after the test; their log tails are printed (shown
    for a failed test)."""
    made: List[OwnServer] = []

    def make(env: Optional[Dict[str, str]] = None, config: Optional[str] = None) -> OwnServer:
        s = OwnServer(Path(tempfile.mkdtemp(prefix="spool-hardening-")), env, config)
        made.append(s)
        s.start()
        return s

    yield make
    for s in made:
        s.close()
        print(f"--- own server log tail ({s.tmp}) ---\n{s.log_tail()[-3000:]}")
        if s.watchdog_reason:
            print(f"the watchdog killed it: {s.watchdog_reason}")
        if not os.environ.get("SPOOL_SDK_KEEP_TMP"):
            shutil.rmtree(s.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# shared helpers: keys, jobs, raw sockets


def _key(admin: VideoVector, *scopes: str):
    return admin.api_keys.create(name=unique("hardening"), scopes=list(scopes))


def _wait_job(client: VideoVector, job_id: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        job = client.import_jobs.retrieve(job_id)
        if job.status in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"import job not finished within {timeout} s: {job!r}"
        time.sleep(0.1)


def _until(fetch, done, what: str, timeout: float = WAIT_S):
    """`spool_sdk_helpers.poll` with this file's longer bound (own servers under load)."""
    return poll(fetch, done, what, timeout=timeout)


def _host_port(root_url: str):
    u = urlsplit(root_url)
    return u.hostname, u.port


def _half_request(root_url: str) -> socket.socket:
    """A connection that sent part of a request's headers, and nothing more."""
    s = socket.create_connection(_host_port(root_url), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    return s


def _closed_within(s: socket.socket, seconds: float) -> bool:
    """Whether the peer closes `s` within `seconds` (whatever it sends before: an error
    response is fine, the close is what counts)."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([s], [], [], min(left, 0.5))
        if ready:
            try:
                if not s.recv(65536):
                    return True
            except OSError:  # reset: closed too
                return True


class SseTail:
    """`GET /api/v2/admin/log/tail` on a raw socket (so a stream that never ends costs a bounded
    wait, not a hung reader): `ended_within(s)` is whether the server ends the stream, by closing
    the connection or by ending the chunked body."""

    def __init__(self, root_url: str, key: str) -> None:
        self.sock = socket.create_connection(_host_port(root_url), timeout=CLIENT_TIMEOUT_S)
        self.sock.sendall(
            b"GET /api/v2/admin/log/tail HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
            + f"X-API-Key: {key}\r\nConnection: close\r\n\r\n".encode()
        )
        self.data = b""
        while b"\r\n\r\n" not in self.data:
            chunk = self.sock.recv(65536)
            assert chunk, f"the tail closed before its headers: {self.data!r}"
            self.data += chunk
        head = self.data.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 200"), head[:300]
        assert b"text/event-stream" in head.lower(), head[:300]

    def ended_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            if self.data.endswith(b"\r\n0\r\n\r\n"):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.sock], [], [], min(left, 0.25))
            if ready:
                try:
                    chunk = self.sock.recv(65536)
                except OSError:
                    return True
                if not chunk:
                    return True
                self.data += chunk

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# 1. media whose header claims an absurd duration


HUGE_DURATION_FILES = [
    "mvhd_huge.mp4",
    "duration_huge.webm",
    "total_samples_huge.flac",
    "xing_huge.mp3",
    "granule_huge.ogg",
    "mdhd_huge.mov",
    "stts_overflow.mp4",  # may also import as a short video
]


@pytest.mark.parametrize("name", HUGE_DURATION_FILES)
def test_upload_of_media_claiming_an_absurd_duration_fails_its_file_and_the_server_lives(own_server, name):
    s = own_server()
    admin = s.sdk()
    writer = s.sdk(_key(admin, "write").key)
    index = writer.indexes.create(name=unique("hostile")).index_id
    before = s.redb.stat().st_size

    with s.watched(f"uploading {name}"):
        job = _wait_job(writer, writer.videos.upload(file=HOSTILE / name, title=unique(name), index_id=index).job_id)
    s.assert_alive()
    videos = [v.video_id for v in writer.indexes.list_videos(index)]
    if name == "stts_overflow.mp4" and job.progress.imported == 1:
        # Read as what its samples hold: a short video, not 4.6e7 years of it.
        (vid,) = videos
        media = s.call("GET", f"/videos/{vid}").json()["media"]
        assert media["duration_seconds"] is not None and media["duration_seconds"] < 60, media
    else:
        assert (job.status, job.progress.imported, job.progress.failed) in {
            ("completed", 0, 1), ("failed", 0, 1)
        }, job
        (failed,) = job.failed_files
        assert failed["failure"]["code"] == "media_unreadable", failed
        assert job.outputs.items == [] and videos == [], (job.outputs, videos)
    grown = s.redb.stat().st_size - before
    assert grown < 1_000_000, f"spool.redb grew by {grown} bytes for one {name}"

    # A clean stop, and the data directory opens again.
    rc = s.stop()
    assert rc is not None, f"spool did not exit within {STOP_TIMEOUT_S} s of SIGTERM"
    s.start()
    s.assert_alive()
    again = s.sdk().import_jobs.retrieve(job.job_id)
    assert (again.status, again.progress.imported, again.progress.failed) == (
        job.status, job.progress.imported, job.progress.failed
    )


# ---------------------------------------------------------------------------------------------
# 1b. poison decisions: one that panics, one past the bound on events per decision


def test_a_decision_that_panics_fails_its_own_request_and_the_server_decides_the_rest(own_server):
    s = own_server(env={"SPOOL_FAILPOINTS": "decide_panic"})
    admin = s.sdk()
    results: Dict[str, object] = {}

    def create(name: str) -> None:
        results[name] = s.call("POST", "/indexes", {"name": name})

    names = ["spool-failpoint-decide-panic"] + [unique("beside") for _ in range(8)]
    threads = [threading.Thread(target=create, args=(n,)) for n in names]
    with s.watched("creating indexes beside a panicking decision"):
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=WAIT_S)
    poisoned = results[names[0]]
    body = assert_error_envelope(poisoned, 500, "internal_error")
    assert "could not decide" in body["message"], poisoned.text
    for n in names[1:]:
        assert results[n].status_code == 201, (n, results[n].text)
    listed = {i.name for i in admin.indexes.list()}
    assert set(names[1:]) <= listed and names[0] not in listed
    s.assert_alive()
    # Writes go on after it, and a restart finds nothing of it to decide again.
    assert s.call("POST", "/indexes", {"name": unique("after")}).status_code == 201
    assert s.stop() == 0
    s.start()
    s.assert_alive()
    assert names[0] not in {i.name for i in s.sdk().indexes.list()}


def _admin_log_len(s: "OwnServer") -> int:
    n, frm = 0, 1
    while True:
        page = s.call("GET", f"/admin/log?from={frm}&limit=1000").json()
        n += len(page["events"])
        if not page["events"] or page.get("next_from") is None:
            return n
        frm = page["next_from"]


def test_a_decision_past_the_bound_on_events_fails_its_file_once_and_not_at_every_restart(own_server):
    # 12 webhooks on media.created: an upload's import decision would write its own 4-5 events
    # and 12 deliveries, past a bound of 10 (5,000 in a release: 50 webhooks and a file of 224
    # parts made 22,951 events in one append, which the log refused three times a second for ever).
    s = own_server(env={"SPOOL_TEST_DECISION_EVENTS_MAX": "10", "SPOOL_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"})
    admin = s.sdk()
    closed = f"http://127.0.0.1:{_free_port()}/hook"
    for _ in range(12):
        admin.webhooks.create(name=unique("many"), url=closed, events=["media.created"])
    index = admin.indexes.create(name=unique("bound")).index_id
    with s.watched("an upload whose decision passes the bound"):
        job = _wait_job(admin, admin.videos.upload(file=FIXTURES / "tone.wav", title=unique("b"), index_id=index).job_id)
    assert (job.status, job.progress.imported, job.progress.failed) in {("failed", 0, 1), ("completed", 0, 1)}, job
    (failed,) = job.failed_files
    assert failed["failure"]["code"] == "decision_too_large", failed
    assert "at most 10" in failed["failure"]["message"], failed
    assert list(admin.indexes.list_videos(index)) == []
    s.assert_alive()
    # Recorded once: the log does not grow while nothing happens, nor across a restart.
    settled = _admin_log_len(s)
    time.sleep(1.0)
    assert _admin_log_len(s) == settled, "the failed decision is being retried"
    assert s.stop() == 0
    s.start()
    s.assert_alive()
    time.sleep(1.0)
    assert _admin_log_len(s) == settled, "a restart decided the poisoned outcome again"
    again = s.sdk().import_jobs.retrieve(job.job_id)
    assert again.status == job.status


# ---------------------------------------------------------------------------------------------
# 2. a JSON Schema whose $refs expand exponentially


def _schema_bomb(levels: int = 25) -> dict:
    """Each level is anyOf two refs to the one below: 2^levels paths to the leaf."""
    defs: dict = {"l0": {"type": "string"}}
    for i in range(1, levels + 1):
        defs[f"l{i}"] = {"anyOf": [{"$ref": f"#/$defs/l{i - 1}"}, {"$ref": f"#/$defs/l{i - 1}"}]}
    return {"$defs": defs, "type": "object", "properties": {"a": {"$ref": f"#/$defs/l{levels}"}}}


def _assert_refused_schema(call: Callable[[], object], what: str) -> None:
    t0 = time.monotonic()
    try:
        got = call()
    except ValidationError as err:
        took = time.monotonic() - t0
        assert (err.status_code, err.error_code) == (422, "validation_error"), (what, repr(err), err.details)
        assert re.search(r"budget|reference|\$ref", err.message, re.I), (what, err.message)
        assert took < CLIENT_TIMEOUT_S, f"{what}: refused after {took:.1f} s"
    else:
        pytest.fail(f"{what}: answered {str(got)[:500]}, not 422", pytrace=False)


def test_a_schema_whose_refs_expand_exponentially_is_refused_422_within_a_memory_budget(own_server):
    s = own_server()
    admin = s.sdk()
    read_key = _key(admin, "read").key
    reader = s.sdk(read_key)
    writer = s.sdk(_key(admin, "write").key)
    bomb = _schema_bomb(25)

    # A sample that fails every branch, so a validator that walks the tree walks all of it.
    with s.watched("test-schema with the bomb"):
        _assert_refused_schema(lambda: reader.prompts.test_schema(json_schema=bomb, sample_data={"a": 1}), "test-schema")
        resp = s.call("POST", "/prompts/test-schema", {"json_schema": bomb, "sample_data": {"a": "x"}}, key=read_key)
        assert_error_envelope(resp, 422, "validation_error")
    with s.watched("creating a prompt with the bomb"):
        _assert_refused_schema(
            lambda: writer.prompts.create(name=unique("bomb"), prompt_text="Describe the clip, please.", json_schema=bomb),
            "prompt create",
        )
    s.assert_alive()
    peak = s.peak_rss_mb()
    assert peak < PEAK_RSS_MAX_MB, f"peak RSS {peak:.0f} MB"

    # A small schema with a $ref into its own $defs still works.
    legit = {
        "$defs": {"label": {"type": "string"}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/label"}},
        "required": ["a"],
    }
    ok = reader.prompts.test_schema(json_schema=legit, sample_data={"a": "x"})
    assert ok.valid is True, ok
    bad = reader.prompts.test_schema(json_schema=legit, sample_data={"a": 1})
    assert bad.valid is False, bad
    prompt = writer.prompts.create(name=unique("legit"), prompt_text="Describe the clip, please.", json_schema=legit)
    assert prompt.json_schema == legit


# ---------------------------------------------------------------------------------------------
# 3. a webhook receiver that answers with a body that never ends


class HugeAnswerServer:
    """Answers every POST with `status` and a declared body of `body_bytes`, streamed a MiB at a
    time until the client hangs up (what a bounded reader must do). Counts the requests."""

    CHUNK = b"x" * MiB

    def __init__(self, status: int, body_bytes: int, path: str) -> None:
        self.requests = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer.lock:
                    outer.requests += 1
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(body_bytes))
                    self.end_headers()
                    for _ in range(body_bytes // len(outer.CHUNK)):
                        self.wfile.write(outer.CHUNK)
                except OSError:
                    pass  # the client hung up: what it should do
                self.close_connection = True

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_webhook_receiver_answering_a_gigabyte_body_costs_a_bounded_excerpt_and_memory(own_server):
    s = own_server(env={
        "SPOOL_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "SPOOL_WEBHOOK_RETRY_SCHEDULE": "0s",  # one attempt each: failed after it
        "SPOOL_WEBHOOK_TIMEOUT": "5s",
    })
    admin = s.sdk()
    receiver = HugeAnswerServer(500, 1 << 30, "/hook")  # 1 GiB answers
    try:
        index = admin.indexes.create(name=unique("greedy")).index_id
        hooks = [
            admin.webhooks.create(
                name=unique("greedy"), url=receiver.url, events=["media.created", "import_job.completed"]
            ).webhook_id
            for _ in range(3)
        ]
        # Several at once: the test endpoint of every webhook (not recorded), and an upload
        # whose two events each go to all three (recorded).
        errors: List[BaseException] = []

        def test_call(wh: str) -> None:
            try:
                s.sdk().webhooks.test(wh)
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=test_call, args=(wh,)) for wh in hooks]
        with s.watched("test calls and an upload against the greedy receiver"):
            for t in threads:
                t.start()
            job = admin.videos.upload(file=FIXTURES / "tone.wav", title=unique("greedy"), index_id=index)
            for t in threads:
                t.join(timeout=WAIT_S)
            assert not any(t.is_alive() for t in threads), "a webhook test call did not come back"
            s.assert_alive()
            assert not errors, errors
            _wait_job(admin, job.job_id)
            deliveries = _until(
                lambda: [d for wh in hooks for d in admin.webhooks.list_deliveries(wh, limit=100)],
                lambda ds: len(ds) == 6 and all(d.status in ("failed", "delivered") and d.attempts >= 1 for d in ds),
                "six recorded deliveries",
            )
        s.assert_alive()
        peak = s.peak_rss_mb()
        assert peak < PEAK_RSS_MAX_MB, f"peak RSS {peak:.0f} MB after {receiver.requests} greedy answers"
        for d in deliveries:
            one = admin.webhooks.get_delivery(d.delivery_id)
            body = (one.response_body or "").encode()
            assert len(body) <= 4096, f"{d.delivery_id}: a {len(body)}-byte response body excerpt"
            assert one.response_status_code == 500, (one.response_status_code, one.error_message)
    finally:
        receiver.close()


# ---------------------------------------------------------------------------------------------
# 4. clients that never finish their headers


def test_a_connection_that_never_finishes_its_headers_is_closed_and_200_of_them_starve_nobody(own_server):
    s = own_server(env={"SPOOL_HEADER_READ_TIMEOUT": "1s"})
    one = _half_request(s.root)
    try:
        assert _closed_within(one, 10), "a connection with half its headers was still open after 10 s"
    finally:
        one.close()

    many: List[socket.socket] = []
    try:
        for _ in range(200):
            many.append(_half_request(s.root))
        # Meanwhile, a normal request is answered.
        r = httpx.get(f"{s.root}/healthz", timeout=5)
        assert r.status_code == 200
        deadline = time.monotonic() + 15
        open_ = list(many)
        while open_ and time.monotonic() < deadline:
            ready, _, _ = select.select(open_, [], [], 0.5)
            for sock in ready:
                try:
                    gone = not sock.recv(65536)
                except OSError:
                    gone = True
                if gone:
                    open_.remove(sock)
        assert not open_, f"{len(open_)} of 200 half-open connections still open after 15 s"
        s.assert_alive()
    finally:
        for sock in many:
            sock.close()


# ---------------------------------------------------------------------------------------------
# 5. SIGTERM while clients hold connections


def test_sigterm_while_a_log_tail_and_a_half_sent_request_are_open_exits_0_and_keeps_the_data(own_server):
    s = own_server()
    index = s.sdk().indexes.create(name=unique("kept")).index_id  # acknowledged: durable
    tail = SseTail(s.root, s.admin)
    half = _half_request(s.root)
    try:
        assert s.proc is not None
        proc = s.proc
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t0
        assert rc == 0, f"after SIGTERM: exit code {rc} (None: still running after 20 s), {took:.1f} s:\n{s.log_tail()}"
    finally:
        tail.close()
        half.close()
        s.stop(timeout=5)
    s.start()
    again = s.sdk().indexes.retrieve(index)
    assert again.index_id == index


# ---------------------------------------------------------------------------------------------
# 6. a key's end ends what it opened


@pytest.mark.parametrize("how", ["revoke", "delete"])
def test_a_log_tail_ends_when_the_admin_key_that_opened_it_is_revoked_or_deleted(client, spool_server, how):
    key = client.api_keys.create(name=unique(f"tail-{how}"), scopes=["admin"])
    tail = SseTail(spool_server.root_url, key.key)
    try:
        assert not tail.ended_within(0.5), "the tail ended before anything happened"
        getattr(client.api_keys, how)(key.key_id)
        assert tail.ended_within(10), f"the log tail still streams 10 s after its key was {how}d"
    finally:
        tail.close()


def test_a_download_url_stops_opening_when_the_key_that_minted_it_is_rotated(tls_server, monkeypatch):  # noqa: F811
    base, admin, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    ctx = ssl.create_default_context(cafile=str(cert))
    root = VideoVector(api_key=admin, base_url=f"{base}/api/v2", max_retries=0, timeout=CLIENT_TIMEOUT_S)
    key = root.api_keys.create(name=unique("rotated"), scopes=["read", "write"])
    client = VideoVector(api_key=key.key, base_url=f"{base}/api/v2", max_retries=0, timeout=CLIENT_TIMEOUT_S)
    try:
        index = client.indexes.create(name=unique("rotated")).index_id
        export = client.exports.create_index_export(index).export_id
        client.exports.wait_for_completion(export, poll_interval=0.1, timeout=30)
        url = client.exports.download_url(export)
        assert url is not None and httpx.get(url, verify=ctx, timeout=CLIENT_TIMEOUT_S).status_code == 200

        rotated = root.api_keys.rotate(key.key_id)
        r = httpx.get(url, verify=ctx, timeout=CLIENT_TIMEOUT_S)
        assert r.status_code == 401, ("a URL minted by the key before its rotation still opens", r.status_code)
        assert r.json()["error"]["code"] == "download_token_invalid", r.text
        # The rotated key mints URLs that open.
        fresh = VideoVector(api_key=rotated.key, base_url=f"{base}/api/v2", max_retries=0, timeout=CLIENT_TIMEOUT_S)
        try:
            new_url = fresh.exports.download_url(export)
            assert new_url is not None and httpx.get(new_url, verify=ctx, timeout=CLIENT_TIMEOUT_S).status_code == 200
        finally:
            fresh.close()
    finally:
        client.close()
        root.close()


# ---------------------------------------------------------------------------------------------
# 7, 8. multipart uploads with hostile parts (the session server)


def test_upload_with_a_252_character_file_name_is_422_not_500(client, raw, admin_headers):
    index = client.indexes.create(name=unique("long-name")).index_id
    name = "a." + "m" * 250
    resp = raw.post(
        "/api/v2/videos/upload",
        files={"file": (name, wav("long-name"), "audio/wav")},
        data={"title": "a long file name", "index_id": index},
        headers=admin_headers,
    )
    assert_error_envelope(resp, 422)
    assert raw.get("/healthz").status_code == 200


def test_upload_whose_title_part_is_10_mb_is_refused_without_reading_it_all(spool_server):
    """The title part's first 2 MiB are sent (chunked, so no declared length refuses it first),
    then nothing: the server must answer from what it has, not wait for the rest (conftest's
    SPOOL_UPLOAD_IDLE_TIMEOUT=2s would answer 408 to one that waits)."""
    head = (
        b"POST /api/v2/videos/upload HTTP/1.1\r\nHost: x\r\n"
        + f"X-API-Key: {spool_server.admin_key}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
    )

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    answer = b""
    with socket.create_connection(_host_port(spool_server.root_url), timeout=CLIENT_TIMEOUT_S) as s:

        def read_some(wait: float) -> bool:
            """Read what has come; False once the server closed."""
            nonlocal answer
            ready, _, _ = select.select([s], [], [], wait)
            if not ready:
                return True
            try:
                got = s.recv(65536)
            except OSError:
                return False
            answer += got
            return bool(got)

        try:
            s.sendall(head + chunk(b'--b\r\nContent-Disposition: form-data; name="title"\r\n\r\n'))
            for _ in range(32):  # 2 MiB in 64 KiB pieces, reading the answer as soon as it comes
                if answer or not read_some(0):
                    break
                s.sendall(chunk(b"t" * (64 * 1024)))
        except OSError:
            pass  # the server answered and closed while we were sending: fine
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline and read_some(0.25):
            pass
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else answer[:60]
    assert status in (b"413", b"422"), f"a 10 MB title part was answered {answer[:300]!r}"


# ---------------------------------------------------------------------------------------------
# 9. a processor whose error answer never ends


def test_a_processor_error_answer_of_64_mib_fails_the_segment_response_too_large(own_server):
    bomb = HugeAnswerServer(500, 64 * MiB, "/")  # a processor's 64 MiB error answer
    try:
        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        s = own_server(config=(
            '[processors]\ndefault = "probe"\n\n'
            f'[processors.bomb]\nkind = "http"\nurl = "{bomb.url}"\nsecret = "{secret}"\n'
            'timeout = "10s"\nconcurrency = 2\nresponse_max_bytes = 65536\n'
        ))
        admin = s.sdk()
        index = admin.indexes.create(name=unique("bomb")).index_id
        job = _wait_job(admin, admin.videos.upload(file=FIXTURES / "h264_aac.mp4", title="bomb", index_id=index).job_id)
        assert job.progress.imported == 1, job
        prompt = admin.prompts.create(
            name=unique("bomb"), prompt_text="Label each segment of the clip.",
            json_schema={"type": "object", "properties": {"label": {"type": "string"}}},
        )
        run = admin.prompt_runs.execute(
            prompt_id=prompt.prompt_id, target={"type": "index", "index_id": index},
            video_segmentation_type="fixed", video_segment_duration=1, processing_model="bomb",
        )
        run = _until(
            lambda: admin.prompt_runs.retrieve(run.run_id),
            lambda r: r.status in ("completed", "completed_with_failures", "failed", "cancelled"),
            "the run's end",
        )
        assert bomb.requests >= 1
        manifest = admin.prompt_runs.get_failed_segments(run.run_id)
        codes = [seg.failure_code for v in manifest.videos for seg in v.segments]
        assert codes and set(codes) == {"response_too_large"}, (run.status, codes)
        s.assert_alive()
    finally:
        bomb.close()


# ---------------------------------------------------------------------------------------------
# 10. webhook targets that are IP literals outside the public unicast ranges


NON_PUBLIC_TARGETS = [
    "https://[::127.0.0.1]/h",  # IPv4-compatible loopback
    "https://[::ffff:0:127.0.0.1]/h",  # IPv4-translated loopback
    "https://[64:ff9b::7f00:1]/h",  # NAT64 of 127.0.0.1
    "https://[2002:7f00:1::]/h",  # 6to4 of 127.0.0.1
    "https://[fec0::1]/h",  # site-local
    "https://198.18.0.1/h",  # benchmarking
    "https://192.0.0.8/h",  # IETF protocol assignments
    "https://240.0.0.1/h",  # reserved
    "https://[::ffff:127.0.0.1]/h",  # IPv4-mapped loopback
    "https://[fe80::1]/h",  # link-local
    "https://100.64.0.1/h",  # CGNAT
    "https://[2001:db8::1]/h",  # documentation
    "https://[100::1]/h",  # discard-only
]


def test_webhook_urls_naming_non_public_addresses_in_any_spelling_are_refused_422(own_server):
    s = own_server()  # no SPOOL_WEBHOOK_ALLOW_HOSTS
    accepted, wrong = [], []
    for url in NON_PUBLIC_TARGETS:
        r = s.call("POST", "/webhooks", {"name": unique("private"), "url": url, "events": ["export.failed"]})
        if r.status_code in (200, 201):
            accepted.append(url)
            s.call("DELETE", f"/webhooks/{r.json()['webhook_id']}")
            continue
        try:
            err = assert_error_envelope(r, 422, "validation_error")
            assert err["details"].get("field") == "url", err
        except AssertionError as exc:
            wrong.append((url, str(exc)[:200]))
    assert not accepted and not wrong, f"accepted: {accepted}; answered otherwise: {wrong}"
    s.assert_alive()


# ---------------------------------------------------------------------------------------------
# 11. offline tools


def _assert_no_panic(what: str, out: subprocess.CompletedProcess) -> None:
    err = out.stderr.decode(errors="replace") if isinstance(out.stderr, bytes) else out.stderr
    assert "panicked" not in err, f"{what} panicked:\n{err[-2000:]}"


def _assert_bundle_leaves_out(s: OwnServer, subject: str, secrets_: List[str], tmp: Path) -> None:
    """`spool bundle <subject>` writes no stream of keys or webhooks and no sealed or hashed
    secret: it refuses with a message, or writes a bundle without them."""
    out_path = tmp / f"{subject}.bundle"
    out = s.run_tool("bundle", subject, "--data-dir", str(s.data_dir), "--out", str(out_path))
    _assert_no_panic(f"spool bundle {subject}", out)
    if out.returncode != 0:
        assert out.stderr.strip(), f"spool bundle {subject} failed without a message"
    if not out_path.exists():
        assert out.returncode != 0, f"spool bundle {subject} said it succeeded but wrote nothing"
        return
    text = out_path.read_text(errors="replace")
    lines = text.splitlines()
    header = json.loads(lines[0])
    records = "\n".join(lines[1:]).lower()
    assert not [st for st in header.get("streams", []) if st.startswith(("key_", "wh_"))], header
    for needle in ["sealed.v1", *secrets_]:
        assert needle not in text, f"the bundle of {subject} holds {needle[:12]}…"
        assert needle.encode().hex() not in records, f"the bundle of {subject} holds {needle[:12]}… (hex)"
    replay = s.run_tool("replay", "--bundle", str(out_path))
    _assert_no_panic(f"spool replay --bundle {subject}.bundle", replay)
    shown = replay.stdout.decode(errors="replace")
    for kind in ("ApiKeyCreated", "ApiKeyRotated", "WebhookCreated", "WebhookSecretRotated"):
        assert kind not in shown, f"the bundle of {subject} holds a {kind} event"


def _first_line_then_hang_up(args: List[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
    """`ARGS | head -1` with a one-page pipe: read one line, close the pipe, let the writer
    find out. (A shell pipe buffers 64 KiB, so a short output would never notice.)"""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=w, stderr=err)
        os.close(w)
        line = b""
        try:
            while not line.endswith(b"\n"):
                got = os.read(r, 1)
                if not got:
                    break
                line += got
        finally:
            os.close(r)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(timeout=10)
        err.seek(0)
        return subprocess.CompletedProcess(args, rc, line, err.read())


def _stopped_server_with_a_key_a_webhook_and_a_job(own_server, tmp_path: Path):
    """A server that made a read key, a webhook and an import job of 8 files, then stopped
    (offline tools refuse a data directory a server holds)."""
    root = tmp_path / "root"
    root.mkdir()
    for i in range(8):
        (root / f"clip{i}.wav").write_bytes(wav(f"offline-{i}"))
    s = own_server(env={"SPOOL_WEBHOOK_ALLOW_HOSTS": "127.0.0.1", "SPOOL_LOCAL_ROOTS": str(root)})
    admin = s.sdk()
    key = _key(admin, "read")
    hook = admin.webhooks.create(
        name=unique("offline"), url=f"http://127.0.0.1:{_free_port()}/h", events=["export.failed"]
    )
    index = admin.indexes.create(name=unique("offline")).index_id
    conn = s.call("POST", "/connectors/local", {"name": unique("offline"), "root": str(root)})
    assert conn.status_code == 201, conn.text
    job = _wait_job(admin, admin.import_jobs.create(connector_id=conn.json()["connector_id"], index_id=index).job_id)
    assert job.progress.imported == 8, job
    assert s.stop() == 0
    return s, key, hook, job


def test_bundles_of_a_key_or_a_webhook_leave_their_streams_and_secrets_out(own_server, tmp_path):
    s, key, hook, _ = _stopped_server_with_a_key_a_webhook_and_a_job(own_server, tmp_path)
    key_hash = hashlib.sha256(key.key.encode()).hexdigest()
    _assert_bundle_leaves_out(s, key.key_id, [key.key, key_hash], tmp_path)
    _assert_bundle_leaves_out(s, hook.webhook_id, [hook.secret], tmp_path)


def test_replay_of_a_bundle_into_a_pipe_closed_after_one_line_exits_without_a_panic(own_server, tmp_path):
    s, _, _, job = _stopped_server_with_a_key_a_webhook_and_a_job(own_server, tmp_path)
    bundle = tmp_path / "job.bundle"
    out = s.run_tool("bundle", job.job_id, "--data-dir", str(s.data_dir), "--out", str(bundle))
    assert out.returncode == 0, out.stderr
    full = s.run_tool("replay", "--bundle", str(bundle))
    # Well past the one-page pipe: the writer must meet the closed pipe.
    assert full.returncode == 0 and len(full.stdout) > 3 * 4096, (full.returncode, len(full.stdout))
    piped = _first_line_then_hang_up([str(s.binary), "replay", "--bundle", str(bundle)], s.server_env())
    assert piped.stdout == full.stdout.split(b"\n", 1)[0] + b"\n", piped.stdout[:300]
    _assert_no_panic("spool replay --bundle F | head -1", piped)


def test_verify_of_a_zero_byte_log_fails_with_a_message_and_leaves_it_zero_bytes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "spool.redb").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_", "VIDEO_VECTOR_"))}
    out = subprocess.run(
        [str(_binary()), "verify", "--data-dir", str(data)], env=env, capture_output=True, timeout=60, cwd=str(tmp_path)
    )
    _assert_no_panic("spool verify on a 0-byte spool.redb", out)
    assert out.returncode != 0, f"spool verify exited 0 on a 0-byte log: {out.stdout[-300:]!r}"
    assert (out.stderr + out.stdout).strip(), "spool verify failed without a message"
    assert (data / "spool.redb").stat().st_size == 0, "spool verify wrote into the empty log"


def test_a_signed_media_url_stops_reading_when_the_key_that_minted_it_is_rotated_or_revoked(own_server):
    s = own_server()
    admin = s.sdk()
    index = admin.indexes.create(name=unique("signed")).index_id
    job = _wait_job(admin, admin.videos.upload(file=FIXTURES / "tone.wav", title=unique("s"), index_id=index).job_id)
    vid = job.outputs.items[0].video_id
    uri = admin.videos.retrieve(vid).video_uri

    def minted_by(how: str):
        made = _key(admin, "read")
        reader = s.sdk(made.key)
        url = reader.videos.get_signed_url(uri).signed_url
        path = urlsplit(url).path + "?" + urlsplit(url).query
        assert httpx.get(f"{s.root}{path}", timeout=CLIENT_TIMEOUT_S).status_code == 200
        # The key's id is in the URL, its hash in the signature: dropping the id opens nothing.
        stripped = re.sub(r"&kid=[^&]*", "", path)
        assert httpx.get(f"{s.root}{stripped}", timeout=CLIENT_TIMEOUT_S).status_code == 403
        getattr(admin.api_keys, how)(made.key_id)
        return path

    for how in ("rotate", "revoke", "delete"):
        path = minted_by(how)
        r = httpx.get(f"{s.root}{path}", timeout=CLIENT_TIMEOUT_S)
        assert r.status_code == 403, (how, r.status_code, r.text[:200])
        assert r.json()["error"]["code"] == "signature_invalid", (how, r.text[:200])
