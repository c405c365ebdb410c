"""A small external worker that plays a model for Spool's `http` processor (tests only).

Spool POSTs one signed JSON request per task (a segment, or a video-level answer) to the
processor's `url`:

    {version: 1, kind: "segment"|"video", run_id, task_id, attempt (1-based),
     prompt {prompt_id, name, text, json_schema},
     video {video_id, title, media_type, facts},
     segment {segment_id, start_time, end_time} | null,        # null for kind "video"
     segments [{segment_id, start_time, end_time, metadata, metadata_text}] | null,
     media_url, media_url_expires_at}

with the Standard Webhooks headers `webhook-id`, `webhook-timestamp`, `webhook-signature` made
with the processor's secret. The worker verifies them with the `standardwebhooks` library (401
when they do not verify), reads the first KiB of `media_url` (a ranged GET, so every answer
proves the signed URL serves the stored bytes) and answers 200
`{"metadata": {...}, "metadata_text": "...", "usage": {"input_tokens", "output_tokens"}}`.

What it answers is chosen by tokens in `prompt.text`:

| token | answer |
|---|---|
| `mode=valid` (or no token) | `{"label": "<start>-<end>", "bytes_read": N}` |
| `mode=invalid` | metadata without `label` (violates the test schema) |
| `mode=500` | 500, always |
| `mode=flaky` | 500 on attempt 1, valid afterwards |
| `mode=timeout` | sleeps `TIMEOUT_SLEEP_S` (longer than the configured timeout), then valid |
| `mode=slow` | sleeps `SLOW_SLEEP_S`, then valid |
| `mode=typed` | a valid answer with typed fields too: `ordinal` (int), `midpoint` (float), `first` (bool), `tags` (array), `note`, `scene.kind`, `nothing` ([]), `maybe` (null), `extra` (after the first second) |
| `kind: "define"` requests | a prompt definition for the instruction (`name` "Defined: …", `description`, `prompt_text`, a schema of `summary` and `products`); `mode=500` in the instruction: 500; `mode=invalid`: a schema that is not one |
| `mode=caption` | `{"caption": <the video's title>}`, `metadata_text` the title (semantic search tests: the title says what the clip shows); with `image_embedding: true` in the request and `image_vectors` set on the worker, also `image_vector`: `image_vectors(title)` |
| `mode=huge` | a valid answer padded past `HUGE_BYTES` (larger than the configured bound) |
| `valid_from_attempt=K` | with any mode: attempts >= K answer valid instead |
| `only_at=S` | the mode applies only to the segment starting at S seconds; every other task (the video-level one included) answers valid |

Video-level requests (kind "video", whose `prompt.text` is the video-level instructions) follow
the same tokens; their valid answer is
`{"segment_count": len(segments), "labels": [each segment's label], "bytes_read": N}`
(`mode=invalid` drops `labels`). Usage is always `input_tokens = len(prompt.text)`,
`output_tokens = OUTPUT_TOKENS`.

Every request is recorded (parsed body, headers, whether the signature verified, the media
read, what was answered) in a thread-safe list: `worker.calls` is a snapshot of it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# How conftest.py configures the session server's processor for this worker.
PROCESSOR_NAME = "worker"
PROCESSOR_TIMEOUT_S = 2.0
PROCESSOR_CONCURRENCY = 4
PROCESSOR_RESPONSE_MAX_BYTES = 65536

TIMEOUT_SLEEP_S = 3.0
SLOW_SLEEP_S = 0.3
HUGE_BYTES = 100_000
OUTPUT_TOKENS = 7
MEDIA_RANGE = "bytes=0-1023"
MEDIA_READ_TIMEOUT_S = 10.0

_MODE = re.compile(r"\bmode=([A-Za-z0-9_]+)")
_VALID_FROM = re.compile(r"\bvalid_from_attempt=(\d+)")
_ONLY_AT = re.compile(r"\bonly_at=([0-9.]+)")


def mode_of(text: str) -> str:
    m = _MODE.search(text or "")
    return m.group(1) if m else "valid"


def _fmt(t: Any) -> str:
    return f"{float(t)}" if isinstance(t, (int, float)) else str(t)


def label_of(segment: Optional[dict]) -> str:
    """The label a valid segment answer carries: `<start_time>-<end_time>` as Python prints
    the floats (`0.0-1.0`)."""
    seg = segment or {}
    return f"{_fmt(seg.get('start_time'))}-{_fmt(seg.get('end_time'))}"


@dataclass
class Call:
    """One request the worker received."""

    received_at: float  # time.monotonic()
    path: str
    headers: Dict[str, str]
    raw: bytes
    verified: bool
    body: Optional[dict]
    mode: str = ""
    media_status: Optional[int] = None
    media_content_range: Optional[str] = None
    bytes_read: int = 0
    media_error: Optional[str] = None
    answered: Optional[int] = None  # the status the worker answered (None: not yet)
    answered_at: Optional[float] = None  # time.monotonic() when it answered
    answer: Optional[dict] = None

    # Shortcuts into the body.
    @property
    def run_id(self) -> Optional[str]:
        return (self.body or {}).get("run_id")

    @property
    def task_id(self) -> Optional[str]:
        return (self.body or {}).get("task_id")

    @property
    def attempt(self) -> Optional[int]:
        return (self.body or {}).get("attempt")

    @property
    def kind(self) -> Optional[str]:
        return (self.body or {}).get("kind")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, worker: "PromptWorker"):
        super().__init__(addr, handler)
        self.worker = worker


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.worker._handle(self)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(405, {"error": "POST only"})

    def _reply(self, status: int, payload: Any) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            # Spool gave up waiting (mode=timeout) or refused a huge answer.
            pass
        self.close_connection = True


@dataclass
class PromptWorker:
    secret: str
    host: str = "127.0.0.1"
    port: int = 0
    _calls: List[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: Optional[_Server] = None
    _thread: Optional[threading.Thread] = None
    # `mode=caption`: the segment image's vector for a caption (the semantic tests' stand-in
    # for an image model, embed_worker.py), given when the request asks for one.
    image_vectors: Optional[Callable[[str], List[float]]] = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def calls(self) -> List[Call]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._calls)

    def calls_for(self, run_id: Optional[str] = None, task_id: Optional[str] = None) -> List[Call]:
        return [
            c
            for c in self.calls
            if (run_id is None or c.run_id == run_id) and (task_id is None or c.task_id == task_id)
        ]

    @staticmethod
    def max_in_flight(calls: List[Call]) -> int:
        """The most of these calls the worker was answering at once."""
        edges = []
        for c in calls:
            edges.append((c.received_at, 1))
            edges.append((c.answered_at if c.answered_at is not None else float("inf"), -1))
        most = now = 0
        for _, d in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
            now += d
            most = max(most, now)
        return most

    def by_task(self, run_id: str) -> Dict[str, List[Call]]:
        """The run's calls grouped by task_id, each list in arrival order."""
        out: Dict[str, List[Call]] = {}
        for c in self.calls_for(run_id=run_id):
            out.setdefault(c.task_id or "", []).append(c)
        return out

    def start(self) -> "PromptWorker":
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="prompt-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -----------------------------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        verified = True
        try:
            Webhook(self.secret).verify(raw, headers)
        except WebhookVerificationError:
            verified = False
        except Exception:  # a malformed header or secret: not verified either
            verified = False
        try:
            body = json.loads(raw.decode()) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = None
        call = Call(
            received_at=time.monotonic(), path=h.path, headers=headers, raw=raw, verified=verified, body=body
        )
        with self._lock:
            self._calls.append(call)
        if not verified:
            call.answered, call.answered_at = 401, time.monotonic()
            h._reply(401, {"error": "signature did not verify"})
            return
        if not isinstance(body, dict):
            call.answered, call.answered_at = 400, time.monotonic()
            h._reply(400, {"error": "not a JSON object"})
            return

        if body.get("kind") == "define":
            # `workflow.define` through `processors.define`: a definition written for the
            # instruction (`mode=500` in it: 500; `mode=invalid`: a schema that is not one).
            instruction = str(body.get("instruction") or "")
            dmode = mode_of(instruction)
            call.mode = dmode
            if dmode == "500":
                call.answered, call.answered_at = 500, time.monotonic()
                h._reply(500, {"error": "the model fell over"})
                return
            words = " ".join(instruction.split()[:6])
            definition: Dict[str, Any] = {
                "name": f"Defined: {words}"[:100],
                "description": f"Written by the test worker for: {instruction}"[:500],
                "prompt_text": f"For each segment, {instruction}. Answer with a summary and the products seen.",
                "json_schema": {
                    "type": "object",
                    "properties": {
                        "summary": {"type": "string"},
                        "products": {"type": "array", "items": {"type": "string"}},
                    },
                },
            }
            if dmode == "invalid":
                definition["json_schema"] = {"type": 12}
            call.answer = definition
            call.answered, call.answered_at = 200, time.monotonic()
            h._reply(200, definition)
            return

        prompt = body.get("prompt") or {}
        text = prompt.get("text") or ""
        mode = mode_of(text)
        call.mode = mode
        attempt = body.get("attempt") or 0
        vf = _VALID_FROM.search(text)
        if vf and isinstance(attempt, int) and attempt >= int(vf.group(1)):
            mode = "valid"
        only = _ONLY_AT.search(text)
        if only:
            seg = body.get("segment") or {}
            if body.get("kind") != "segment" or float(seg.get("start_time", -1)) != float(only.group(1)):
                mode = "valid"

        self._read_media(call, body.get("media_url"))

        if mode == "500" or (mode == "flaky" and attempt == 1):
            call.answered, call.answered_at = 500, time.monotonic()
            h._reply(500, {"error": f"the model fell over (mode={mode}, attempt {attempt})"})
            return
        if mode == "timeout":
            time.sleep(TIMEOUT_SLEEP_S)
        elif mode == "slow":
            time.sleep(SLOW_SLEEP_S)

        if body.get("kind") == "video":
            segs = body.get("segments") or []
            metadata: Dict[str, Any] = {
                "segment_count": len(segs),
                "labels": [(s.get("metadata") or {}).get("label") for s in segs],
                "bytes_read": call.bytes_read,
            }
            metadata_text = f"{len(segs)} segments: " + ", ".join(str(x) for x in metadata["labels"])
            if mode == "invalid":
                metadata.pop("labels")
        else:
            label = label_of(body.get("segment"))
            metadata = {"label": label, "bytes_read": call.bytes_read}
            metadata_text = f"segment {label}"
            if mode == "invalid":
                metadata.pop("label")
            elif mode == "caption":
                title = str((body.get("video") or {}).get("title") or "")
                metadata = {"label": label, "caption": title}
                metadata_text = title
            elif mode == "typed":
                # Typed fields for filter search: integers, numbers, booleans, arrays, nested.
                seg = body.get("segment") or {}
                start, end = float(seg.get("start_time") or 0), float(seg.get("end_time") or 0)
                i = int(start)
                metadata.update({
                    "ordinal": i,
                    "midpoint": (start + end) / 2,
                    "first": i == 0,
                    "tags": ["Clip"] + [f"Part-{k}" for k in range(1, i + 1)],
                    "note": "" if i == 0 else f"Tail {label}",
                    "scene": {"kind": "Opening" if i == 0 else "Closing"},
                    "nothing": [],
                    "maybe": None,
                    **({"extra": "late"} if i > 0 else {}),
                })
        answer: Dict[str, Any] = {
            "metadata": metadata,
            "metadata_text": metadata_text,
            "usage": {"input_tokens": len(text), "output_tokens": OUTPUT_TOKENS},
        }
        if mode == "huge":
            answer["metadata"]["padding"] = "x" * HUGE_BYTES
        if mode == "caption" and body.get("image_embedding") and self.image_vectors is not None:
            answer["image_vector"] = self.image_vectors(metadata_text)
        call.answer = answer
        call.answered, call.answered_at = 200, time.monotonic()
        h._reply(200, answer)

    @staticmethod
    def _read_media(call: Call, url: Optional[str]) -> None:
        if not url:
            call.media_error = "no media_url"
            return
        req = urllib.request.Request(url, headers={"Range": MEDIA_RANGE})
        try:
            with urllib.request.urlopen(req, timeout=MEDIA_READ_TIMEOUT_S) as resp:
                data = resp.read()
                call.media_status = resp.status
                call.media_content_range = resp.headers.get("Content-Range")
                call.bytes_read = len(data)
        except urllib.error.HTTPError as exc:
            call.media_status = exc.code
            call.media_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            call.media_error = repr(exc)


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def start_worker(secret: Optional[str] = None, host: str = "127.0.0.1", port: int = 0) -> PromptWorker:
    """Start a worker on a free loopback port (or `port`); returns it running."""
    return PromptWorker(secret=secret or new_secret(), host=host, port=port).start()
