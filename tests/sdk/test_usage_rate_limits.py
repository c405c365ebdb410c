"""Usage and rate limits through the official SDK (contract-search.md §2.13, §2.14;
/work/notes/issue28-decisions.md "Usage", "Rate limits").

Usage is read on the session server: its shapes, calendar-month (UTC) periods, the metric types,
and counters that move after a run on the `worker` processor (which reports its tokens);
`/usage/details` is refused with `usage_details_unavailable`.

Rate limits: the session server has none (`categories: {}`). Servers of the tests' own run with
limits (`SPOOL_RATE_LIMITS`, or the config file's `[rate_limits]`) on the controllable clock
(`SPOOL_TEST_CLOCK_MS`, debug builds), started 15 s into a minute and 10 min into an hour, so
every `Retry-After` and `reset_at` is known exactly; the clock moves with
`POST /admin/test-clock/advance`, never by sleeping. Windows are fixed and aligned to the clock
(a minute is `now_ms // 60_000`); a refused request is not counted; every answered request
(a 404 or 422 too) is; the status and refresh routes are not.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional

import httpx
import pytest
from videovector import NotFoundError, RateLimitError, ValidationError, VideoVector

from conftest import (
    CLIENT_TIMEOUT_S,
    DEFAULT_BIN,
    _assert_no_204_or_3xx,
    _attach_recorder,
    _free_port,
    _log_tail,
    _stop,
    _wait_healthy,
)
from prompt_worker import OUTPUT_TOKENS, PROCESSOR_NAME
from spool_sdk_helpers import FIXTURES, assert_error_envelope, unique


WAIT_S = 60.0
MP4 = "h264_aac.mp4"  # 2 s: two 1 s segments
MP4_BYTES = (FIXTURES / MP4).stat().st_size

# The metric types (decisions, "Usage") and the units the contract names for them.
METRIC_TYPES = {
    "video_minutes_probed", "video_minutes_processed", "segments_processed", "processor_calls",
    "processor_calls_without_token_usage", "input_tokens", "output_tokens", "videos_uploaded",
    "storage_bytes", "searches",
}
UNITS = {
    "video_minutes_processed": "minutes", "segments_processed": "segments", "processor_calls": "calls",
    "input_tokens": "tokens", "output_tokens": "tokens", "searches": "requests", "videos_uploaded": "videos",
    "storage_bytes": "bytes",
}
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "bytes_read": {"type": "integer"}},
    "required": ["label", "bytes_read"],
}

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
HOUR0_MS = 1_780_000_000_000 // HOUR_MS * HOUR_MS
START_MS = HOUR0_MS + 10 * MINUTE_MS + 15_000  # 10 min 15 s into an hour
NOW_S = START_MS // 1000
MINUTE_END_S = (START_MS // MINUTE_MS + 1) * 60  # 45 s later
HOUR_END_S = HOUR0_MS // 1000 + 3600
UNKNOWN_INDEX = "idx_01KB0000000000000000000000"


# ---------------------------------------------------------------------------------------------
# usage


def _month_bounds(now: datetime):
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _ts(s: str) -> datetime:
    d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    assert d.tzinfo is not None, s
    return d.astimezone(timezone.utc)


def _assert_month(period_start: str, period_end: str) -> None:
    """The current calendar month, UTC."""
    start, next_month = _month_bounds(datetime.now(timezone.utc))
    assert _ts(period_start) == start, period_start
    end = _ts(period_end)
    assert datetime.now(timezone.utc) < end <= next_month, period_end


def _assert_current(u, types: set) -> None:
    assert isinstance(u.user_id, str) and u.user_id
    _assert_month(u.period_start, u.period_end)
    assert set(u.metrics) <= types, set(u.metrics) - types
    assert all(v >= 0 for v in u.metrics.values()), u.metrics
    m = u.metrics
    assert u.totals.total_tokens == round(m.get("input_tokens", 0) + m.get("output_tokens", 0)), (u.totals, m)
    assert u.totals.total_searches == round(m.get("searches", 0)), (u.totals, m)
    if u.totals.total_videos_uploaded is not None:
        assert u.totals.total_videos_uploaded == round(m.get("videos_uploaded", 0))
    assert m.get("processor_calls_without_token_usage", 0) <= m.get("processor_calls", 0)


def _worker_run(client) -> tuple:
    """A 2-segment run on the worker; returns (run, prompt text)."""
    index = client.indexes.create(name=unique("usage")).index_id
    job = client.videos.upload(file=FIXTURES / MP4, title=unique("usage"), index_id=index)
    job = client.import_jobs.wait_for_completion(job.job_id, poll_interval=0.1, timeout=WAIT_S)
    assert (job.status, job.progress.imported) == ("completed", 1), job
    text = "Label each segment of the clip. mode=valid"
    prompt = client.prompts.create(name=unique("usage"), prompt_text=text, json_schema=SCHEMA)
    run = client.prompt_runs.execute(
        prompt_id=prompt.prompt_id, target={"type": "index", "index_id": index},
        video_segmentation_type="fixed", video_segment_duration=1, processing_model=PROCESSOR_NAME,
    )
    done = client.workflow.wait_until_searchable(run.run_id, poll_interval=0.2, timeout=WAIT_S)
    assert (done.status, done.total_segments) == ("completed", 2), done
    return done, text


def test_usage_metric_types_name_every_metric(client):
    types = client.usage.get_metric_types()
    names = [t.type for t in types]
    assert len(names) == len(set(names)), names
    assert set(names) == METRIC_TYPES
    for t in types:
        assert t.description.strip() and t.unit.strip(), t
        if t.type in UNITS:
            assert t.unit == UNITS[t.type], t


def test_usage_counters_move_after_a_run(client, worker):
    types = {t.type for t in client.usage.get_metric_types()}
    before = client.usage.get_current()
    _assert_current(before, types)

    run, text = _worker_run(client)
    calls = [c for c in worker.calls_for(run_id=run.run_id) if c.answered == 200]
    assert len(calls) == 2

    after = client.usage.get_current()
    _assert_current(after, types)
    assert after.metrics["segments_processed"] > 0 and after.metrics["processor_calls"] > 0

    def d(k: str) -> float:
        return after.metrics.get(k, 0) - before.metrics.get(k, 0)

    assert d("segments_processed") >= 2
    assert d("processor_calls") >= 2
    assert d("input_tokens") >= 2 * len(text)
    assert d("output_tokens") >= 2 * OUTPUT_TOKENS
    assert after.totals.total_tokens - before.totals.total_tokens >= 2 * (len(text) + OUTPUT_TOKENS)
    assert d("videos_uploaded") >= 1
    assert d("storage_bytes") >= MP4_BYTES
    assert d("video_minutes_processed") >= 2 / 60 - 1e-6
    # Every counter only grows within a month.
    assert all(after.metrics.get(k, 0) >= v for k, v in before.metrics.items()), (before.metrics, after.metrics)

    # The run's processor is named in model_usage, if the server fills it.
    if after.model_usage:
        assert PROCESSOR_NAME in after.model_usage, after.model_usage

    # Breakdown: the same month, the same metric names, nothing less than a moment ago.
    b = client.usage.get_breakdown()
    assert (b.user_id, b.period_start, b.period_end) == (after.user_id, after.period_start, after.period_end)
    assert set(b.breakdown) <= types
    for k, v in after.metrics.items():
        assert b.breakdown.get(k, 0) >= v, (k, b.breakdown, after.metrics)
    assert b.totals.total_tokens >= after.totals.total_tokens

    # History: months, newest included, each once.
    h = client.usage.get_history()
    assert h.user_id == after.user_id
    assert 1 <= len(h.periods) <= 12
    assert len({p.summary_id for p in h.periods}) == len(h.periods)
    (cur,) = [p for p in h.periods if p.period_start == after.period_start]
    assert cur.period_end == after.period_end
    assert set(cur.metrics) <= types
    for k, v in after.metrics.items():
        assert cur.metrics.get(k, 0) >= v, (k, cur.metrics, after.metrics)
    assert all(isinstance(v, int) for v in cur.totals.values()), cur.totals
    for p in h.periods:
        s, e = _ts(p.period_start), _ts(p.period_end)
        assert s.day == 1 and (s.hour, s.minute, s.second) == (0, 0, 0) and s < e <= _month_bounds(s)[1], p
    one = client.usage.get_history(limit=1)
    assert len(one.periods) == 1
    # A year with nothing in it: no period, or only zeros.
    old = client.usage.get_history(
        start_date=datetime(2001, 1, 1, tzinfo=timezone.utc), end_date=datetime(2001, 12, 31, tzinfo=timezone.utc)
    )
    assert all(v == 0 for p in old.periods for v in p.metrics.values()), old


def test_usage_details_are_refused_as_unavailable(client, raw, admin_headers):
    for kwargs in ({}, {"metric_type": "segments_processed", "limit": 5}):
        with pytest.raises(ValidationError) as e:
            client.usage.get_details(**kwargs)
        assert (e.value.status_code, e.value.error_code) == (422, "usage_details_unavailable"), repr(e.value)
    assert_error_envelope(raw.get("/api/v2/usage/details", headers=admin_headers), 422, "usage_details_unavailable")
    assert raw.get("/api/v2/usage", headers={"Accept": "application/json"}).status_code == 401


def test_async_usage_reads_alike(client, make_async_client):
    types = {t.type for t in client.usage.get_metric_types()}

    async def main():
        async with await make_async_client() as ac:
            cur = await ac.usage.get_current()
            _assert_current(cur, types)
            assert {t.type for t in await ac.usage.get_metric_types()} == types
            h = await ac.usage.get_history(limit=3)
            assert 1 <= len(h.periods) <= 3
            b = await ac.usage.get_breakdown()
            assert b.period_start == cur.period_start
            with pytest.raises(ValidationError) as e:
                await ac.usage.get_details()
            assert e.value.error_code == "usage_details_unavailable"
            st = await ac.rate_limits.get_status()
            assert (st.plan_id, st.categories) == ("self-hosted", {})
            assert await ac.rate_limits.refresh() == st

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# rate limits: none on the session server


def test_the_session_server_limits_nothing(client, make_client, raw):
    st = client.rate_limits.get_status()
    assert (st.user_id, st.plan_id, st.categories) == ("env-admin", "self-hosted", {})
    assert client.rate_limits.refresh() == st
    key = client.api_keys.create(name=unique("rl-none"), scopes=["read"])
    reader = make_client(api_key=key.key)
    mine = reader.rate_limits.get_status()
    assert (mine.user_id, mine.plan_id, mine.categories) == (key.key_id, "self-hosted", {})
    assert raw.get("/api/v2/rate-limit/status").status_code == 401


# ---------------------------------------------------------------------------------------------
# rate limits: servers of the tests' own


class LimitedServer:
    """`spool serve` on the test clock (START_MS) with `env` and an optional config file."""

    def __init__(self, env: Dict[str, str], config: Optional[str] = None) -> None:
        binary = Path(os.environ.get("SPOOL_BIN") or DEFAULT_BIN)
        self.binary = binary / "spool" if binary.is_dir() else binary
        self.tmp = Path(tempfile.mkdtemp(prefix="spool-ratelimit-"))
        self.log_path = self.tmp / "spool.log"
        self.admin = "sk_test_" + secrets.token_hex(24)
        self.config_path: Optional[Path] = None
        if config is not None:
            self.config_path = self.tmp / "spool.toml"
            self.config_path.write_text(config)
        self.port = _free_port()
        self.seen: list = []
        self._clients: List[VideoVector] = []
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=CLIENT_TIMEOUT_S, follow_redirects=False)
        _attach_recorder(self.http, self.seen)
        self.env = env
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        server_env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_", "VIDEO_VECTOR_"))}
        server_env.update(SPOOL_API_KEY=self.admin, SPOOL_TEST_CLOCK_MS=str(START_MS), RUST_BACKTRACE="1")
        server_env.update(self.env)
        args = [str(self.binary), "serve", "--data-dir", str(self.tmp / "data"), "--listen", f"127.0.0.1:{self.port}"]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, env=server_env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.tmp))
        _wait_healthy(self.proc, f"http://127.0.0.1:{self.port}/healthz", self.log_path)

    def sdk(self, api_key: Optional[str] = None) -> VideoVector:
        c = VideoVector(api_key=api_key or self.admin, base_url=f"http://127.0.0.1:{self.port}/api/v2", timeout=CLIENT_TIMEOUT_S, max_retries=0)
        _attach_recorder(c._http._client, self.seen)
        self._clients.append(c)
        return c

    @property
    def headers(self) -> dict:
        return {"X-API-Key": self.admin, "Accept": "application/json"}

    def advance(self, ms: int) -> int:
        r = self.http.post("/api/v2/admin/test-clock/advance", json={"ms": ms}, headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()["now_ms"]

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self.http.close()
        if self.proc is not None:
            _stop(self.proc)


@pytest.fixture
def limited():
    """Factory: `limited(env={...}, config="...")` starts a server with limits; all are stopped
    after the test (their log tails printed, shown for a failed test)."""
    made: List[LimitedServer] = []

    def make(env: Optional[Dict[str, str]] = None, config: Optional[str] = None) -> LimitedServer:
        s = LimitedServer(env or {}, config)
        made.append(s)
        s.start()
        return s

    yield make
    for s in made:
        s.close()
        print(f"--- rate-limited server log tail ({s.tmp}) ---\n{_log_tail(s.log_path)[-3000:]}")
        if not os.environ.get("SPOOL_SDK_KEEP_TMP"):
            shutil.rmtree(s.tmp, ignore_errors=True)
    for s in made:
        _assert_no_204_or_3xx(s.seen)


def _cat(st, name: str) -> tuple:
    c = st.categories[name]
    return (c.minute_used, c.minute_limit, c.minute_remaining, c.hour_used, c.hour_limit, c.hour_remaining, c.reset_at)


def test_searches_past_the_minute_limit_are_refused_until_the_minute_turns(limited):
    s = limited(env={"SPOOL_RATE_LIMITS": "search=3/minute,default=1000/minute"})
    c = s.sdk()
    st = c.rate_limits.get_status()
    assert (st.user_id, st.plan_id, set(st.categories)) == ("env-admin", "self-hosted", {"search", "default"})
    # Only a minute limit: the hour's is the cap it implies (× 60).
    assert _cat(st, "search") == (0, 3, 3, 0, 180, 180, MINUTE_END_S)
    assert _cat(st, "default") == (0, 1000, 1000, 0, 60000, 60000, MINUTE_END_S)

    index = c.indexes.create(name=unique("rl")).index_id  # default: 1
    for n in (1, 2, 3):
        assert c.search.text(index, query="anything") == []
        assert _cat(c.rate_limits.get_status(), "search") == (n, 3, 3 - n, n, 180, 180 - n, MINUTE_END_S)

    with pytest.raises(RateLimitError) as e:
        c.search.text(index, query="anything")
    assert (e.value.status_code, e.value.error_code) == (429, "rate_limit_exceeded"), repr(e.value)
    assert e.value.retry_after == MINUTE_END_S - NOW_S == 45
    r = s.http.post(f"/api/v2/indexes/{index}/search", json={"query": "anything", "top_k": 5}, headers=s.headers)
    assert_error_envelope(r, 429, "rate_limit_exceeded")
    assert r.headers.get("Retry-After") == "45", dict(r.headers)
    # Refused from its head, its body unread: the connection closes, and the answer says so (a
    # regression: a client that sent its next request on it as it closed read "Request failed.").
    assert r.headers.get("Connection") == "close", dict(r.headers)
    # Every search route counts in `search`.
    filters = [{"field": "x", "operator": "is_empty", "type": "string"}]
    for call in (
        lambda: c.search.filter(index, conditions=filters),
        lambda: c.search.filter_playground(conditions=filters),
        lambda: c.search.multimodal(index, text_query="anything"),
        lambda: c.search.image(index, image_data="aGk="),
        lambda: c.search.multi_run(query="anything", index_id=index),
        lambda: c.search.playground(query="anything"),
        lambda: c.workflow.search(query="anything", index_id=index),
    ):
        with pytest.raises(RateLimitError) as e:
            call()
        assert e.value.retry_after == 45
    assert s.http.get("/api/v2/workflow/search/page", params={"cursor": "x"}, headers=s.headers).status_code == 429

    # Other requests count in `default`; refused ones count nowhere; status and refresh are free.
    assert c.indexes.retrieve(index).index_id == index  # default: 2
    st = c.rate_limits.get_status()
    assert _cat(st, "search") == (3, 3, 0, 3, 180, 177, MINUTE_END_S)
    assert _cat(st, "default") == (2, 1000, 998, 2, 60000, 59998, MINUTE_END_S)
    assert c.rate_limits.refresh() == st
    assert c.rate_limits.get_status() == st

    # The minute turns (the advance itself is a `default` request of the old minute).
    assert s.advance(MINUTE_MS) == START_MS + MINUTE_MS
    st = c.rate_limits.get_status()
    assert _cat(st, "search") == (0, 3, 3, 3, 180, 177, MINUTE_END_S + 60)
    assert _cat(st, "default") == (0, 1000, 1000, 3, 60000, 59997, MINUTE_END_S + 60)
    assert c.search.text(index, query="anything") == []
    # A 404 and a 422 are answers: they count.
    with pytest.raises(NotFoundError):
        c.search.text(UNKNOWN_INDEX, query="anything")
    with pytest.raises(ValidationError):
        c.search.text(index, query="")
    assert _cat(c.rate_limits.get_status(), "search") == (3, 3, 0, 6, 180, 174, MINUTE_END_S + 60)
    with pytest.raises(RateLimitError) as e:
        c.search.text(index, query="anything")
    assert e.value.retry_after == 45
    assert c.rate_limits.refresh() == c.rate_limits.get_status()


def test_each_key_has_its_own_counters(limited):
    s = limited(env={"SPOOL_RATE_LIMITS": "search=3/minute,default=1000/minute"})
    admin = s.sdk()
    index = admin.indexes.create(name=unique("rl-keys")).index_id  # admin default: 1
    key = admin.api_keys.create(name=unique("rl-key"), scopes=["admin"])  # admin default: 2
    other = s.sdk(api_key=key.key)
    for _ in range(3):
        admin.search.text(index, query="x")
    with pytest.raises(RateLimitError):
        admin.search.text(index, query="x")
    for _ in range(3):
        assert other.search.text(index, query="x") == []
    with pytest.raises(RateLimitError):
        other.search.text(index, query="x")
    mine = other.rate_limits.get_status()
    assert (mine.user_id, mine.plan_id) == (key.key_id, "self-hosted")
    assert _cat(mine, "search") == (3, 3, 0, 3, 180, 177, MINUTE_END_S)
    assert _cat(mine, "default") == (0, 1000, 1000, 0, 60000, 60000, MINUTE_END_S)
    theirs = admin.rate_limits.get_status()
    assert theirs.user_id == "env-admin"
    assert _cat(theirs, "search")[:2] == (3, 3) and _cat(theirs, "default")[0] == 2


def test_the_config_file_sets_limits_and_a_used_up_hour_binds(limited):
    s = limited(config='[rate_limits]\nsearch = ["2/minute", "5/hour"]\n')
    c = s.sdk()
    st = c.rate_limits.get_status()
    assert set(st.categories) == {"search"}  # no `default`: other requests are not limited
    assert _cat(st, "search") == (0, 2, 2, 0, 5, 5, MINUTE_END_S)
    index = c.indexes.create(name=unique("rl-hour")).index_id
    for minute in range(2):
        for _ in range(2):
            c.search.text(index, query="x")
        with pytest.raises(RateLimitError) as e:
            c.search.text(index, query="x")
        assert e.value.retry_after == 45
        s.advance(MINUTE_MS)
    c.search.text(index, query="x")  # the hour's fifth
    st = c.rate_limits.get_status()
    now_s = NOW_S + 120
    # The hour window binds now: reset_at is its end, and Retry-After runs to it.
    assert _cat(st, "search") == (1, 2, 1, 5, 5, 0, HOUR_END_S)
    r = s.http.post(f"/api/v2/indexes/{index}/search", json={"query": "x", "top_k": 5}, headers=s.headers)
    assert_error_envelope(r, 429, "rate_limit_exceeded")
    assert r.headers.get("Retry-After") == str(HOUR_END_S - now_s), dict(r.headers)
    with pytest.raises(RateLimitError) as e:
        c.search.text(index, query="x")
    assert e.value.retry_after == min(HOUR_END_S - now_s, 300)  # the SDK clamps to max_retry_delay
    for _ in range(5):
        c.indexes.retrieve(index)  # not limited
    s.advance(HOUR_END_S * 1000 - (START_MS + 2 * MINUTE_MS))  # to the next hour
    assert _cat(c.rate_limits.get_status(), "search") == (0, 2, 2, 0, 5, 5, HOUR_END_S + 60)
    assert c.search.text(index, query="x") == []


def test_the_environment_wins_over_the_config_file(limited):
    s = limited(env={"SPOOL_RATE_LIMITS": "search=7/minute"}, config='[rate_limits]\nsearch = "2/minute"\ndefault = "9/minute"\n')
    st = s.sdk().rate_limits.get_status()
    assert set(st.categories) == {"search"}
    assert _cat(st, "search") == (0, 7, 7, 0, 420, 420, MINUTE_END_S)


def test_refresh_rereads_the_config_file_and_keeps_the_counts(limited):
    s = limited(config='[rate_limits]\nsearch = "2/minute"\n')
    c = s.sdk()
    index = c.indexes.create(name=unique("rl-refresh")).index_id
    c.search.text(index, query="x")
    c.search.text(index, query="x")
    with pytest.raises(RateLimitError):
        c.search.text(index, query="x")
    assert s.config_path is not None
    s.config_path.write_text('[rate_limits]\nsearch = "4/minute"\ndefault = "100/minute"\n')
    st = c.rate_limits.refresh()
    assert set(st.categories) == {"search", "default"}
    assert _cat(st, "search") == (2, 4, 2, 2, 240, 238, MINUTE_END_S)
    assert c.rate_limits.get_status() == st
    c.search.text(index, query="x")
    c.search.text(index, query="x")
    with pytest.raises(RateLimitError):
        c.search.text(index, query="x")
