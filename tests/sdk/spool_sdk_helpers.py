"""Small helpers shared by the SDK end-to-end tests (no fixtures here; see conftest.py)."""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime
from typing import Any, Callable, Optional, TypeVar

import httpx

# Path parameters are put into URLs unencoded by the SDK (contract §1.1).
URL_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
SNAKE_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
ENVELOPE_KEYS = {"code", "message", "details", "request_id"}

POLL_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.1

T = TypeVar("T")


def unique(prefix: str) -> str:
    """A name no other test (or earlier run against the same server) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def assert_timestamp(value: Optional[str]) -> None:
    """RFC 3339 with an offset (contract §2: timestamps are strings, UTC recommended)."""
    assert isinstance(value, str) and value, f"timestamp missing: {value!r}"
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"timestamp without offset: {value!r}"


def poll(fetch: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = POLL_TIMEOUT_S) -> T:
    """Call fetch until done(result) or `timeout` s pass; return the last result."""
    deadline = time.monotonic() + timeout
    last = fetch()
    while not done(last):
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout} s; last={last!r}"
        time.sleep(POLL_INTERVAL_S)
        last = fetch()
    return last


def assert_error_envelope(
    resp: httpx.Response, status: int, code: Optional[str] = None
) -> dict[str, Any]:
    """The response is `status` with exactly {"error": {code, message, details, request_id}}."""
    assert resp.status_code == status, (
        f"{resp.request.method} {resp.request.url}: expected {status}, got {resp.status_code}: "
        f"{resp.text[:500]!r}"
    )
    media = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    assert media == "application/json", f"error content-type {media!r}: {resp.text[:300]!r}"
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"not an error envelope: {body!r}"
    err = body["error"]
    assert isinstance(err, dict), f"error must be an object: {body!r}"
    assert set(err) == ENVELOPE_KEYS, f"error keys {sorted(err)} != {sorted(ENVELOPE_KEYS)}"
    assert isinstance(err["code"], str) and SNAKE_CODE.match(err["code"]), err
    assert isinstance(err["message"], str) and err["message"].strip(), err
    assert isinstance(err["details"], dict), err
    assert isinstance(err["request_id"], str) and err["request_id"], err
    if code is not None:
        assert err["code"] == code, f"expected code {code!r}, got {err['code']!r}: {err!r}"
    return err


# ---------------------------------------------------------------------------------------------
# real media of any size: Spool probes every imported file and fails unreadable ones
# (`media_unreadable`), so tests that need distinct content of a given size build real files.

import hashlib as _hashlib
import struct as _struct
from pathlib import Path as _Path

FIXTURES = _Path(__file__).resolve().parent.parent.parent / "fixtures" / "media"


def _fill(seed: str, size: int) -> bytes:
    """Deterministic bytes: a SHA-256 chain for small sizes; large sizes repeat a 64 KiB
    block of it (linear time)."""
    blocks = []
    block = _hashlib.sha256(seed.encode()).digest()
    for _ in range(min(size, 1 << 16) // 32 + 1):
        blocks.append(block)
        block = _hashlib.sha256(block).digest()
    unit = b"".join(blocks)
    return (unit * (size // len(unit) + 1))[:size]


def wav(seed: str, size: int = 1044) -> bytes:
    """A real WAV (8 kHz mono 8-bit PCM) of exactly `size` bytes (at least 45) whose samples
    come from `seed`: distinct content, `(size - 44) / 8000` seconds of audio."""
    n = max(size - 44, 1)
    header = b"RIFF" + _struct.pack("<I", 36 + n) + b"WAVEfmt " + _struct.pack("<IHHIIHH", 16, 1, 1, 8000, 8000, 1, 8)
    return header + b"data" + _struct.pack("<I", n) + _fill(seed, n)


def video(seed: str = "", name: str = "h264_faststart.mov") -> bytes:
    """A real video fixture (H.264 + AAC, 1 s) made distinct by a trailing ISO-BMFF `free` box
    holding `seed`: a valid file that ffprobe and Spool read the same."""
    data = (FIXTURES / name).read_bytes()
    if not seed:
        return data
    payload = _fill(seed, 32)
    return data + _struct.pack(">I", 8 + len(payload)) + b"free" + payload


def image(seed: str = "") -> bytes:
    """A real PNG (32x24), made distinct by bytes after its IEND chunk (readers stop there)."""
    data = (FIXTURES / "still.png").read_bytes()
    return data + _fill(seed, 16) if seed else data


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()
