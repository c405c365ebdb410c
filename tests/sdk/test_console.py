"""The web console (`/console/`) in a real browser: headless Chromium (Debian's `chromium`)
driven by Playwright, against the session's real server (one node, or any node of a cluster:
the console reads the same HTTP API as any client).

Covered: the key is typed once and kept for the tab; the overview counts real work; a job's
page shows its files and the "Retry failed files" button really re-opens the failed file (its
media fixed meanwhile: it is then imported); its bundle downloads; the time slider shows the
state after each event that the replay route (the code `spool replay` prints with) gives; a run's page shows its timeline (admin key); the
live log shows an event as it commits; a read key sees no action button and its action is
refused by the API; an unknown key is turned away; a webhook's page lists its deliveries and
what each waits on, in words; the lists page on the server with a cursor (every item once, in
order, in any cluster shape) and filter there; an automation's page pauses and resumes it, and
a page changes when its workflow does with the fallback poll turned off (the change feed pushes it). Screenshots of each page are written to
`target/console-screenshots/`. An accessibility check (axe-core, from npm) finds no serious or
critical violation on the overview, the jobs list with its filters and a job's page.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from spool_sdk_helpers import FIXTURES, unique

WAIT_MS = 30_000
SHOTS = REPO_ROOT / "target" / "console-screenshots"
AXE = REPO_ROOT / ".models" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("SPOOL_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (tests/sdk/requirements.txt)", pytrace=False)
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium", pytrace=False)
        pytest.skip("chromium is not installed")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def _open(browser, spool_server, key: str, fragment: str = "", bypass_csp: bool = False, query: str = ""):
    ctx = browser.new_context(bypass_csp=bypass_csp, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    errors: list = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{spool_server.root_url}/console/{query}{fragment}")
    page.fill("#key", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#who:not(:empty)", timeout=WAIT_MS)
    page.errors = errors
    return page


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _axe(page) -> list:
    if not AXE.exists():
        if os.environ.get("CI"):
            pytest.fail("axe-core is not installed: run scripts/test-models.sh", pytrace=False)
        pytest.skip("axe-core is not installed (scripts/test-models.sh)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document)")
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


def _failed_job(client, raw, admin_headers, spool_server):
    """An import job of one file that failed (its bytes are not media), and its file's path."""
    root = Path(spool_server.local_root) / unique("console")
    root.mkdir()
    (root / "clip.mov").write_bytes(b"not a movie at all" * 64)
    r = raw.post("/api/v2/connectors/local", json={"name": unique("console"), "root": str(root), "scopes": ["import"]}, headers=admin_headers)
    assert r.status_code == 201, r.text
    index_id = client.indexes.create(name=unique("console")).index_id
    job = client.import_jobs.create(connector_id=r.json()["connector_id"], index_id=index_id)
    job = client.import_jobs.wait_for_completion(job.job_id, poll_interval=0.1, timeout=60)
    assert job.progress.failed == 1, job
    return job.job_id, root / "clip.mov", index_id


def test_the_overview_counts_real_work_and_a_job_page_retries_a_failed_file(browser, client, raw, admin_headers, spool_server):
    job_id, path, index_id = _failed_job(client, raw, admin_headers, spool_server)
    # The page forbids any script but its own; the accessibility check is injected past that.
    csp = raw.get("/console/").headers["content-security-policy"]
    assert "default-src 'self'" in csp, csp
    page = _open(browser, spool_server, spool_server.admin_key, bypass_csp=True)
    page.wait_for_selector("h1:has-text('Overview')")
    cards = page.inner_text(".cards")
    assert "Import jobs" in cards and ("failed" in cards or "completed" in cards), cards
    page.wait_for_selector(f"a[href='#/jobs/{job_id}']", timeout=WAIT_MS)  # in the latest failures
    _shot(page, "overview")
    assert _axe(page) == []

    # The jobs list, filtered by the job's index, links to it.
    page.goto(f"{spool_server.root_url}/console/?poll=500#/jobs?index_id={index_id}")
    page.wait_for_selector(f"a[href='#/jobs/{job_id}']", timeout=WAIT_MS)
    assert page.locator("tbody tr").count() == 1
    # What a person types in a filter survives the page's refreshes (every 0.5 s here).
    page.fill("#f-connector_id", "conn_typed")
    page.wait_for_timeout(2500)
    assert page.input_value("#f-connector_id") == "conn_typed"
    _shot(page, "import-jobs")
    assert _axe(page) == []
    page.goto(f"{spool_server.root_url}/console/#/jobs/{job_id}")
    page.wait_for_selector(f"h1:has-text('{job_id}')", timeout=WAIT_MS)
    assert "clip.mov" in page.inner_text("main")
    assert not any(w in page.inner_text("main") for w in ("null", "undefined", "[object"))
    page.wait_for_selector("svg.timeline", timeout=WAIT_MS)
    _shot(page, "import-job")
    assert _axe(page) == []
    # The file is fixed; the button re-opens it and it is imported.
    shutil.copyfile(FIXTURES / "h264_faststart.mov", path)
    page.click("button:has-text('Retry failed files')")
    page.wait_for_function(
        "() => document.querySelector('main').innerText.includes('1 imported')", timeout=WAIT_MS
    )
    assert client.import_jobs.retrieve(job_id).progress.imported == 1
    # The attempts as bars: the failed one (its reason as its title) and the one that imported.
    page.wait_for_selector("rect.bar-ok", timeout=WAIT_MS)
    assert "not a readable media file" in page.inner_html("rect.bar-failed")

    # Its bundle downloads; time travel shows its state after each event, as `spool replay`
    # prints it (the admin route folds with the same code).
    page.wait_for_selector("button:has-text('Download its bundle')", timeout=WAIT_MS)
    with page.expect_download(timeout=WAIT_MS) as download:
        page.click("button:has-text('Download its bundle')")
    assert download.value.suggested_filename == f"{job_id}.bundle"
    page.click("a:has-text('Time travel')")
    page.wait_for_selector("#travel", timeout=WAIT_MS)
    replay = raw.get(f"/api/v2/admin/replay/{job_id}", headers=admin_headers).json()["steps"]
    assert page.inner_text("#travel-state").strip() == replay[-1]["state"].strip()
    assert "status: completed" in replay[-1]["state"] and "imported: 1" in replay[-1]["state"]
    page.fill("#travel", "0")
    page.dispatch_event("#travel", "input")
    assert page.inner_text("#travel-state").strip() == replay[0]["state"].strip()
    assert "ImportJobCreated" in replay[0]["state"] and "status: pending" in replay[0]["state"]
    assert page.inner_text("#travel-at").startswith(f"Event 1 of {len(replay)}")
    _shot(page, "time-travel")
    assert page.errors == []


def test_lists_a_run_and_its_timeline_and_the_live_log_shows_an_event_as_it_commits(browser, client, spool_server):
    index_id = client.indexes.create(name=unique("console-run")).index_id
    title = unique("console")
    job = client.videos.upload(file=FIXTURES / "h264_faststart.mov", title=title, index_id=index_id)
    client.import_jobs.wait_for_completion(job.job_id, poll_interval=0.1, timeout=60)
    prompt = client.prompts.create(name=unique("console"), prompt_text="Describe the media of each segment.", json_schema={"type": "object"})
    run = client.prompt_runs.execute(prompt_id=prompt.prompt_id, target={"type": "index", "index_id": index_id}, video_segmentation_type="fixed", video_segment_duration=1)
    client.workflow.wait_until_searchable(run.run_id, poll_interval=0.1, timeout=60)

    page = _open(browser, spool_server, spool_server.admin_key, "#/runs")
    page.wait_for_selector(f"a[href='#/runs/{run.run_id}']", timeout=WAIT_MS)
    _shot(page, "prompt-runs")
    page.click(f"a[href='#/runs/{run.run_id}']")
    page.wait_for_selector("svg.timeline", timeout=WAIT_MS)
    assert "PromptRunCreated" in page.inner_text("details")  or page.locator("svg.timeline text", has_text="PromptRunCreated").count() == 1
    _shot(page, "prompt-run")

    # Search finds the run's result; its media plays from the hit's range, through a signed URL.
    page.goto(f"{spool_server.root_url}/console/#/search?index={index_id}&q={title}")
    page.wait_for_selector("button:has-text('Play')", timeout=WAIT_MS)
    page.click("button:has-text('Play')")
    media = page.wait_for_selector("video.hit-media", timeout=WAIT_MS)
    assert "/media/" in media.get_attribute("src") and "#t=0" in media.get_attribute("src")
    _shot(page, "search")

    page.goto(f"{spool_server.root_url}/console/#/log")
    page.wait_for_selector("#log-lines", timeout=WAIT_MS)
    page.wait_for_timeout(500)
    # An API key's events are the catalog's (the log a node's tail reads in any cluster shape).
    created = client.api_keys.create(name=unique("live"), scopes=["read"])
    page.wait_for_function(
        f"() => document.querySelector('#log-lines').innerText.includes('{created.key_id} ApiKeyCreated')", timeout=WAIT_MS
    )
    _shot(page, "live-log")
    assert page.errors == []


def test_a_read_key_sees_no_action_and_cannot_act_and_an_unknown_key_is_turned_away(browser, client, raw, admin_headers, spool_server):
    job_id, _, _ = _failed_job(client, raw, admin_headers, spool_server)
    reader = client.api_keys.create(name=unique("console-reader"), scopes=["read"])
    page = _open(browser, spool_server, reader.key, f"#/jobs/{job_id}")
    page.wait_for_selector(f"h1:has-text('{job_id}')", timeout=WAIT_MS)
    assert page.inner_text("#who") == "read key"
    assert page.locator(".actions button").count() == 0
    assert "needs an admin key" in page.inner_text("main")
    _shot(page, "import-job-read-key")
    r = raw.post(f"/api/v2/import-jobs/{job_id}/retry", json={}, headers={"X-API-Key": reader.key})
    assert r.status_code == 403, r.text

    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(f"{spool_server.root_url}/console/")
    page.fill("#key", "sk_not_a_key_of_this_server_0000000000")
    page.click("#key-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#key-error').innerText.includes('not accepted')", timeout=WAIT_MS)
    assert page.is_visible("#key-form")


def test_a_webhook_page_lists_its_deliveries_and_what_they_wait_on(browser, client, spool_server):
    import socket

    # A receiver that is not there: its deliveries fail and wait for their retry.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    wh = client.webhooks.create(name=unique("console-wh"), url=f"http://127.0.0.1:{port}/hook", events=["import_job.completed"])
    index_id = client.indexes.create(name=unique("console-wh")).index_id
    job = client.videos.upload(file=FIXTURES / "h264_faststart.mov", title=unique("console-wh"), index_id=index_id)
    client.import_jobs.wait_for_completion(job.job_id, poll_interval=0.1, timeout=60)

    page = _open(browser, spool_server, spool_server.admin_key, "#/webhooks")
    page.wait_for_selector(f"a[href='#/webhooks/{wh.webhook_id}']", timeout=WAIT_MS)
    page.click(f"a[href='#/webhooks/{wh.webhook_id}']")
    page.wait_for_function(
        "() => document.querySelector('main').innerText.includes('import_job.completed')", timeout=WAIT_MS
    )
    text = page.inner_text("main")
    assert "Deliveries" in text and "Retry failed deliveries" in text, text
    # What it waits on, in words (a regression: its detail, an object, read "[object Object]").
    assert "waiting on" in text, text
    assert "null" not in text and "undefined" not in text and "[object" not in text, text
    _shot(page, "webhook")
    assert page.errors == []


def _walk(raw, headers, kind: str, query: str, limit: int) -> list:
    """Every item of a console list, page by page from its cursors."""
    items, before, pages = [], "", 0
    while True:
        r = raw.get(f"/api/v2/console/lists/{kind}?limit={limit}&{query}&before={before}", headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        pages += 1
        assert pages < 10_000
        if not page["next_cursor"]:
            return items
        before = page["next_cursor"]


def test_the_lists_page_on_the_server_with_a_cursor_and_filter_there(client, raw, admin_headers):
    index_id = client.indexes.create(name=unique("console-list")).index_id
    jobs = []
    for i in range(3):
        job = client.videos.upload(file=FIXTURES / "h264_faststart.mov", title=unique(f"console-list-{i}"), index_id=index_id)
        jobs.append(job.job_id)
    for j in jobs:
        client.import_jobs.wait_for_completion(j, poll_interval=0.1, timeout=60)
    # One index's jobs, a page of one at a time: each once, newest first.
    mine = _walk(raw, admin_headers, "import-jobs", f"index_id={index_id}", 1)
    assert [j["job_id"] for j in mine] == sorted(jobs, key=lambda j: next(x["created_at"] for x in mine if x["job_id"] == j) + j, reverse=True)
    assert sorted(j["job_id"] for j in mine) == sorted(jobs)
    assert all(j["status"] == "completed" and j["progress"]["imported"] == 1 for j in mine), mine
    # Filtered on the server: none of them failed; none was made after now.
    assert _walk(raw, admin_headers, "import-jobs", f"index_id={index_id}&status=failed", 5) == []
    assert _walk(raw, admin_headers, "import-jobs", f"index_id={index_id}&since=2999-01-01T00:00:00Z", 5) == []
    assert len(_walk(raw, admin_headers, "import-jobs", f"index_id={index_id}&until=2999-01-01T00:00:00Z", 2)) == 3
    # Every job, in pages of 7 (in a cluster, every partition's merged): the API's list, in
    # its order.
    every = [j["job_id"] for j in _walk(raw, admin_headers, "import-jobs", "", 7)]
    assert len(every) == len(set(every))
    listed = [j["job_id"] for j in raw.get("/api/v2/import-jobs?limit=1000", headers=admin_headers).json()]
    assert every[: len(listed)] == listed[: len(every)]
    runs = [r["run_id"] for r in _walk(raw, admin_headers, "prompt-runs", "", 3)]
    assert runs[:200] == [r["run_id"] for r in raw.get("/api/v2/prompt-runs?limit=200", headers=admin_headers).json()][: len(runs)]
    exports = [e["export_id"] for e in _walk(raw, admin_headers, "exports", "", 3)]
    assert exports[:100] == [e["export_id"] for e in raw.get("/api/v2/exports?limit=100", headers=admin_headers).json()][: len(exports)]
    # What a list refuses, in the contract's envelope.
    for path, status, field in [
        ("/api/v2/console/lists/import-jobs?before=garbage", 422, "before"),
        ("/api/v2/console/lists/import-jobs?status=weekly", 422, "status"),
        ("/api/v2/console/lists/import-jobs?since=yesterday", 422, "since"),
        ("/api/v2/console/lists/import-jobs?limit=201", 422, "limit"),
        ("/api/v2/console/lists/everything", 404, None),
    ]:
        r = raw.get(path, headers=admin_headers)
        assert r.status_code == status, (path, r.text)
        assert r.json()["error"]["request_id"], r.text
        if field:
            assert field in r.text, r.text


def _import_automation(client, raw, admin_headers, spool_server):
    root = Path(spool_server.local_root) / unique("console-auto")
    root.mkdir()
    r = raw.post("/api/v2/connectors/local", json={"name": unique("console-auto"), "root": str(root), "scopes": ["import"]}, headers=admin_headers)
    assert r.status_code == 201, r.text
    index_id = client.indexes.create(name=unique("console-auto")).index_id
    prompt = client.prompts.create(name=unique("console-auto"), prompt_text="Describe the media of each segment.", json_schema={"type": "object"})
    body = {
        "enabled": True, "paused": False, "connector_id": r.json()["connector_id"], "source_prefix": "incoming/",
        "file_pattern": "*.mov", "recursive": True, "debounce_interval": "10m", "prompt_preset": {"prompt_id": prompt.prompt_id},
    }
    r = raw.put(f"/api/v2/indexes/{index_id}/automations/import", json=body, headers=admin_headers)
    assert r.status_code == 200, r.text
    return index_id


def test_an_automation_page_pauses_and_resumes_it_and_changes_as_it_does(browser, client, raw, admin_headers, spool_server):
    index_id = _import_automation(client, raw, admin_headers, spool_server)
    url = f"/api/v2/indexes/{index_id}/automations/import"
    # The fallback poll off: what changes the page now is the change feed alone.
    page = _open(browser, spool_server, spool_server.admin_key, f"#/automations?index_id={index_id}", bypass_csp=True, query="?poll=0")
    link = f"a[href='#/automations/{index_id}/import']"
    page.wait_for_selector(link, timeout=WAIT_MS)
    assert page.locator("tbody tr").count() == 1
    _shot(page, "automations")
    page.click(link)
    page.wait_for_selector("h1:has-text('Automation: import')", timeout=WAIT_MS)
    page.wait_for_selector("body[data-feed=open]", timeout=WAIT_MS)
    text = page.inner_text("main")
    assert "State: active" in text and "incoming/" in text, text
    assert not any(w in text for w in ("null", "undefined", "[object")), text
    assert _axe(page) == []
    page.click("button:has-text('Pause')")
    page.wait_for_function("() => document.querySelector('main').innerText.includes('State: paused')", timeout=WAIT_MS)
    assert raw.get(url, headers=admin_headers).json()["paused"] is True
    # Resumed elsewhere (the API): the page shows it without being reloaded or polled.
    page.wait_for_selector("button:has-text('Resume')", timeout=WAIT_MS)
    r = raw.post(f"{url}/resume", headers=admin_headers)
    assert r.status_code == 200 and r.json()["paused"] is False, r.text
    page.wait_for_function("() => document.querySelector('main').innerText.includes('State: active')", timeout=WAIT_MS)
    page.wait_for_selector("button:has-text('Pause')", timeout=WAIT_MS)
    page.wait_for_selector("svg.timeline", timeout=WAIT_MS)
    _shot(page, "automation")
    assert page.errors == []

    reader = client.api_keys.create(name=unique("console-auto-reader"), scopes=["read"])
    page = _open(browser, spool_server, reader.key, f"#/automations/{index_id}/import")
    page.wait_for_selector("h1:has-text('Automation: import')", timeout=WAIT_MS)
    assert page.locator(".actions button").count() == 0
    r = raw.post(f"{url}/pause", headers={"X-API-Key": reader.key})
    assert r.status_code == 403, r.text


def test_the_change_feed_tells_a_read_key_nothing_of_api_keys(client, raw, admin_headers, spool_server):
    """A regression (review): a read key heard every `key_…` stream's events (API keys are an
    admin's to list)."""
    import threading

    import httpx

    reader = client.api_keys.create(name=unique("feed-reader"), scopes=["read"])
    lines: list = []

    def listen(key: str, into: list) -> None:
        try:
            # Only these streams' events: nothing else shares their 250 ms windows.
            url = f"{spool_server.root_url}/api/v2/console/changes?streams=key_,idx_"
            with httpx.stream("GET", url, headers={"X-API-Key": key}, timeout=6) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        into.append(json.loads(line[5:]))
        except httpx.ReadTimeout:
            pass

    admin_lines: list = []
    threads = [threading.Thread(target=listen, args=(reader.key, lines)), threading.Thread(target=listen, args=(spool_server.admin_key, admin_lines))]
    for t in threads:
        t.start()
    time.sleep(1.0)
    made = client.api_keys.create(name=unique("feed-made"), scopes=["read"])
    time.sleep(1.0)
    index_id = client.indexes.create(name=unique("feed")).index_id
    for t in threads:
        t.join()
    streams = {e["stream"] for e in lines}
    assert index_id in streams, lines
    assert not any(s.startswith("key_") for s in streams), lines
    assert made.key_id in {e["stream"] for e in admin_lines}, admin_lines


def test_a_timeline_reads_a_big_scan_page_brief(client, raw, admin_headers, spool_server):
    """A regression (bench): a 100,000-file job's page read its first 1,000 events whole, 6 MB,
    nearly all of it its scan pages' lists of discovered files; the timeline asks for them brief
    (each list cut to its first 10, the event marked `cut`)."""
    root = Path(spool_server.local_root) / unique("brief")
    root.mkdir()
    for i in range(25):
        shutil.copyfile(FIXTURES / "tiny.png", root / f"still{i:02}.png")
    r = raw.post("/api/v2/connectors/local", json={"name": unique("brief"), "root": str(root), "scopes": ["import"]}, headers=admin_headers)
    assert r.status_code == 201, r.text
    index_id = client.indexes.create(name=unique("brief")).index_id
    job = client.import_jobs.create(connector_id=r.json()["connector_id"], index_id=index_id, file_pattern="*.png")
    client.import_jobs.wait_for_completion(job.job_id, poll_interval=0.1, timeout=60)

    def discovered(query: str) -> list:
        r = raw.get(f"/api/v2/admin/streams/{job.job_id}?limit=1000{query}", headers=admin_headers)
        assert r.status_code == 200, r.text
        return [e for e in r.json()["events"] if e["kind"] == "ImportFilesDiscovered"]

    whole, brief = discovered(""), discovered("&brief=true")
    assert len(whole) == len(brief) >= 1
    lists = lambda events: [v for e in events for v in e["event"]["ImportFilesDiscovered"].values() if isinstance(v, list)]
    assert sum(len(v) for v in lists(whole)) == 25 and not any("cut" in e for e in whole)
    assert all(len(v) <= 10 for v in lists(brief)) and any(e.get("cut") is True for e in brief), brief
    # Every other event reads the same either way.
    others = lambda q: [e for e in raw.get(f"/api/v2/admin/streams/{job.job_id}?limit=1000{q}", headers=admin_headers).json()["events"] if e["kind"] != "ImportFilesDiscovered"]
    assert others("") == others("&brief=true")
