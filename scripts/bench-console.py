#!/usr/bin/env python3
"""Page-open times of the web console in a real browser, on big work (by hand, not in CI).

    .venv/bin/python scripts/bench-console.py [--files 100000] [--loads 10] [--spool target/release/spool]

Starts `spool serve` on embedded defaults in a temporary folder, imports `--files` copies of
`fixtures/media/tiny.png` (1,000 a folder) from a local connector in one import job, then opens
console pages in headless Chromium (Debian's `chromium`, driven by Playwright) `--loads` times
each, as a shared link is opened (from `about:blank`: the page, its script, the key's scope, the
page's reads), timing each from the navigation to the page drawn (its table or timeline on
screen):

- the overview;
- the jobs list;
- the big job's page (its counts, its timeline of its first 1,000 events, its first 100 files);
- the same job's page, failed files only (an empty table: the cost of the page itself).

The baseline, measured in the same run: the API reads each page makes, fetched by this script
with no browser. Prints a table, the ratio of each page to its reads, and one JSON line.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "fixtures" / "media" / "tiny.png"
CHROMIUM = os.environ.get("SPOOL_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(base: str, key: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}/api/v2{path}", data=data, method=method)
    req.add_header("X-API-Key", key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--loads", type=int, default=10)
    ap.add_argument("--hold", type=int, default=0, help="keep the server up this many seconds after (to profile it)")
    ap.add_argument("--spool", default=str(REPO / "target" / "release" / "spool"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="spool-bench-console-"))
    src = work / "src"
    # Hard links to one file where the file system allows (ext4 stops at 65,000 links to one
    # file: then a new source, a copy, to link to).
    source = work / "tiny-0.png"
    shutil.copyfile(TINY, source)
    for i in range(args.files):
        d = src / f"d{i // 1000:04}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        try:
            os.link(source, d / f"clip{i:07}.png")
        except OSError as e:
            if e.errno != errno.EMLINK:
                raise
            source = work / f"tiny-{i}.png"
            shutil.copyfile(TINY, source)
            os.link(source, d / f"clip{i:07}.png")
    key = "sk_bench_" + secrets.token_hex(16)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, SPOOL_API_KEY=key, SPOOL_LOCAL_ROOTS=str(src), RUST_LOG="warn")
    log = open(work / "spool.log", "w")
    proc = subprocess.Popen(
        [args.spool, "serve", "--data-dir", str(work / "data"), "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        conn = call(base, key, "POST", "/connectors/local", {"name": "bench", "root": str(src), "scopes": ["import"]})
        index = call(base, key, "POST", "/indexes", {"name": "bench-console"})["index_id"]
        t0 = time.monotonic()
        job = call(base, key, "POST", "/import-jobs", {"connector_id": conn["connector_id"], "index_id": index, "file_pattern": "*.png"})
        job_id = job["job_id"]
        while True:
            j = call(base, key, "GET", f"/import-jobs/{job_id}")
            if j["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(1)
        took = time.monotonic() - t0
        print(f"imported {j['progress']['imported']} of {args.files} files in {took:.1f} s ({args.files / took:.0f} files/s)", flush=True)

        pages = {
            "overview": ("#/", "h1:has-text('Overview')", ["/console/overview"]),
            "jobs_list": ("#/jobs", "tbody tr", ["/console/lists/import-jobs?limit=50"]),
            "job_page": (f"#/jobs/{job_id}", "svg.timeline", [f"/import-jobs/{job_id}", f"/import-jobs/{job_id}/files?limit=100", f"/admin/streams/{job_id}?limit=1000&brief=true"]),
            "job_failed_files": (f"#/jobs/{job_id}?failed=1", "svg.timeline", [f"/import-jobs/{job_id}", f"/import-jobs/{job_id}/files?limit=100&failed_only=true", f"/admin/streams/{job_id}?limit=1000&brief=true"]),
        }
        api_ms: dict[str, list[float]] = {k: [] for k in pages}
        read_ms: dict[str, list[float]] = {}
        for name, (_, _, reads) in pages.items():
            for _ in range(args.loads):
                t = time.perf_counter()
                for path in reads:
                    r = time.perf_counter()
                    call(base, key, "GET", path)
                    read_ms.setdefault(path, []).append((time.perf_counter() - r) * 1000)
                api_ms[name].append((time.perf_counter() - t) * 1000)
        for path, ms in read_ms.items():
            print(f"  GET {path}: p50 {statistics.median(ms):.1f} ms", flush=True)

        browser_ms: dict[str, list[float]] = {k: [] for k in pages}
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
            ctx = b.new_context(viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            page.goto(f"{base}/console/?poll=0")
            page.evaluate(f"sessionStorage.setItem('spool.console.key', {json.dumps(key)})")
            for name, (frag, ready, _) in pages.items():
                for _ in range(args.loads):
                    page.goto("about:blank")
                    t = time.perf_counter()
                    page.goto(f"{base}/console/?poll=0{frag}")
                    page.wait_for_selector(ready, timeout=60_000)
                    browser_ms[name].append((time.perf_counter() - t) * 1000)
            b.close()
        if args.hold:
            print(f"holding the server for {args.hold} s: {base} key {key} job {job_id}", flush=True)
            time.sleep(args.hold)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)

    out: dict[str, object] = {"bench": "console", "files": args.files, "loads": args.loads}
    print(f"{'page':<18} {'browser p50':>12} {'p99':>9} {'API reads p50':>14} {'p99':>9} {'ratio p50':>10}")
    for name in pages:
        bp50, bp99 = statistics.median(browser_ms[name]), pct(browser_ms[name], 99)
        ap50, ap99 = statistics.median(api_ms[name]), pct(api_ms[name], 99)
        print(f"{name:<18} {bp50:>10.1f}ms {bp99:>7.1f}ms {ap50:>12.1f}ms {ap99:>7.1f}ms {bp50 / max(ap50, 0.001):>10.2f}")
        out[f"{name}_browser_p50_ms"] = round(bp50, 1)
        out[f"{name}_browser_p99_ms"] = round(bp99, 1)
        out[f"{name}_api_p50_ms"] = round(ap50, 1)
        out[f"{name}_under_1s"] = bp99 < 1000
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
