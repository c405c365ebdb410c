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


def poll(fetch: Callable[[], T], done: Callable[[T], bool], what: str) -> T:
    """Call fetch until done(result) or POLL_TIMEOUT_S passes; return the last result."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    last = fetch()
    while not done(last):
        assert time.monotonic() < deadline, f"{what}: not reached within {POLL_TIMEOUT_S} s; last={last!r}"
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
