// The Spool console: one page, its views chosen by the URL's fragment (`#/jobs/job_…`), each
// a link that can be shared. It reads the same HTTP API as any client, with the key typed once
// and kept for the tab (sessionStorage). Text from the server is only ever set as text (never
// parsed as HTML).
"use strict";

const KEY = "spool.console.key";
const REFRESH_MS = 2000;
let scope = null; // "read" | "write" | "admin", from the overview
let refreshTimer = null;
let tailAbort = null;

// ---- helpers ---------------------------------------------------------------------------

const spanText = (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || "";
  }
}

async function api(path, opts = {}) {
  const headers = { "X-API-Key": sessionStorage.getItem(KEY) || "", Accept: "application/json" };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`/api/v2${path}`, {
    method: opts.method || "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

const may = (needed) => {
  const order = { read: 0, write: 1, admin: 2 };
  return scope !== null && order[scope] >= order[needed];
};

function statusCell(s) {
  return h("span", { class: `status-${s}` }, s || "");
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function table(columns, rows) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([label]) => h("th", { scope: "col" }, label)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row)))))));
}

function waitingWords(w) {
  if (!w) return "not waiting (ended, or moving)";
  const parts = [`waiting on ${String(w.reason).replaceAll("_", " ")}`];
  if (w.detail && typeof w.detail === "object") {
    const d = Object.entries(w.detail).filter(([, v]) => v !== null && v !== undefined && v !== "");
    if (d.length) parts.push(`(${d.map(([k, v]) => `${k.replaceAll("_", " ")}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ")})`);
  } else if (w.detail) {
    parts.push(`(${w.detail})`);
  }
  if (w.since) parts.push(`since ${when(w.since)}`);
  if (w.until) parts.push(`until ${when(w.until)}`);
  return parts.join(" ");
}

function actionButton(label, needed, run) {
  if (!may(needed)) return null;
  return h("button", {
    type: "button",
    onclick: async (e) => {
      e.target.disabled = true;
      try { await run(); note(`${label}: done`); } catch (err) { note(`${label}: ${err.message}`, true); }
      e.target.disabled = false;
      route();
    },
  }, label);
}

function note(text, bad) {
  const el = document.getElementById("notice");
  if (el) { el.textContent = text; el.className = bad ? "bad" : "muted"; }
}

// The page of navigation `nav` draws only while it is still the current one.
function showFor(nav, ...children) {
  if (nav === navigation) show(...children);
}

function show(...children) {
  const view = document.getElementById("view");
  // (`replaceChildren` would write a null as the text "null".)
  view.replaceChildren(h("p", { id: "notice", role: "status", class: "muted" }), ...children.filter((c) => c !== null && c !== undefined));
}

// A page is live: it is drawn again when an event of its streams commits (the change feed,
// `GET /console/changes`, pushes each event's header), and, as a fallback, every POLL_MS
// (`/console/?poll=0` turns that off, `?poll=N` sets it). Never while the person types in or
// chooses from one of its fields (a redraw would take what they typed away): the redraw
// waits until they leave it.
const POLL_MS = (() => {
  const p = new URLSearchParams(location.search).get("poll");
  return p === null || p === "" || isNaN(Number(p)) ? REFRESH_MS * 5 : Number(p);
})();
let feedAbort = null;
let redrawTimer = null;
// Counted up by each navigation: a page whose first read ends after the person moved on
// neither draws nor follows anything (it would take the new page's place).
let navigation = 0;

function busy() {
  return document.activeElement && document.activeElement.closest("#view input, #view select, #view textarea");
}

function live(fn, streams, nav) {
  if (nav !== undefined && nav !== navigation) return;
  clearInterval(refreshTimer);
  clearTimeout(redrawTimer);
  if (feedAbort) { feedAbort.abort(); feedAbort = null; }
  let running = false;
  const redraw = () => {
    clearTimeout(redrawTimer);
    redrawTimer = setTimeout(async () => {
      if (document.hidden || busy() || running) { redraw(); return; }
      running = true;
      try { await fn(); } catch (_) { /* the next change or poll tries again */ }
      running = false;
    }, 250);
  };
  if (POLL_MS > 0) refreshTimer = setInterval(() => { if (!document.hidden && !busy()) redraw(); }, POLL_MS);
  if (streams) follow(streams, redraw);
}

// The change feed of these stream prefixes: `changed()` at each event; opened again 2 s after
// it ends (a restart, a cluster's holder moving), until the page changes.
async function follow(streams, changed) {
  const abort = new AbortController();
  feedAbort = abort;
  const q = streams.length ? `?streams=${encodeURIComponent(streams.join(","))}` : "";
  while (!abort.signal.aborted) {
    try {
      const r = await fetch(`/api/v2/console/changes${q}`, { headers: { "X-API-Key": sessionStorage.getItem(KEY) || "" }, signal: abort.signal });
      // Refused (the key): give up. Not ready, moving, busy: opened again below.
      if (r.status === 401 || r.status === 403 || r.status === 404 || r.status === 422) return;
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      document.body.dataset.feed = "open";
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i, any = false;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          if (buf.slice(0, i).includes("data:")) any = true;
          buf = buf.slice(i + 2);
        }
        if (any) changed();
      }
    } catch (_) { /* cut: opened again below */ }
    document.body.dataset.feed = "closed";
    if (!abort.signal.aborted) await new Promise((res) => setTimeout(res, 2000));
  }
}

// ---- timeline --------------------------------------------------------------------------

// The events of one stream as marks over time: one row per kind, failures in red.
function timeline(events) {
  if (!events.length) return h("p", { class: "muted" }, "No events.");
  const t = events.map((e) => Date.parse(e.at));
  const t0 = Math.min(...t), t1 = Math.max(...t), span = Math.max(1, t1 - t0);
  const kinds = [...new Set(events.map((e) => e.kind))];
  const rowH = 18, left = 190, width = 900, height = kinds.length * rowH + 24;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${left + width + 10} ${height}`);
  svg.setAttribute("class", "timeline");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Timeline of ${events.length} events over ${(span / 1000).toFixed(1)} s`);
  const add = (name, attrs, text) => {
    const el = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el);
    return el;
  };
  kinds.forEach((k, i) => add("text", { x: 4, y: 14 + i * rowH }, k));
  events.forEach((e, i) => {
    const x = left + ((t[i] - t0) / span) * width;
    const row = kinds.indexOf(e.kind);
    const failed = /Failed|Disabled/.test(e.kind);
    const mark = add("rect", { x: x.toFixed(1), y: 4 + row * rowH, width: 3, height: rowH - 6, fill: failed ? "#b42318" : "#0a58ca" });
    const title = document.createElementNS(ns, "title");
    title.textContent = `#${e.seq} ${e.kind} at ${e.at}`;
    mark.append(title);
  });
  add("text", { x: left, y: height - 4 }, when(new Date(t0).toISOString()));
  add("text", { x: left + width - 120, y: height - 4 }, `+${spanText(span)}`);
  return svg;
}

// The attempts in a stream's events as bars over time, one row per file or task: from its
// start to its outcome (blue: succeeded, red: failed, with the reason as the bar's title; amber:
// still running), and a retry's wait for its timer as a grey bar.
const STARTS = { ImportFileStarted: "file", PromptTaskStarted: "task" };
const ENDS = {
  ImportFileImported: ["file", "ok"], ImportFileFailed: ["file", "failed"], ImportFileRetryScheduled: ["file", "failed"],
  PromptTaskSucceeded: ["task", "ok"], PromptTaskFailed: ["task", "failed"],
};
const ATTEMPT_ROWS_MAX = 100;

function attempts(events) {
  const open = new Map(), rows = new Map(), bars = [];
  const keyOf = (kind, body) => (kind === "file" ? `file ${body.file_id}` : `task ${JSON.stringify(body.task).replace(/[{}"]/g, "").replace(":", " ")}`);
  for (const e of events) {
    const [name, body] = Object.entries(e.event || {})[0] || [];
    if (!name || typeof body !== "object") continue;
    const t = Date.parse(e.at);
    if (STARTS[name]) {
      const key = keyOf(STARTS[name], body);
      if (!rows.has(key)) rows.set(key, rows.size);
      open.set(key, { key, start: t, attempt: body.attempt });
    } else if (ENDS[name]) {
      const [kind, outcome] = ENDS[name];
      const key = keyOf(kind, body);
      const started = open.get(key);
      if (!rows.has(key)) rows.set(key, rows.size);
      const failure = body.failure || {};
      bars.push({ key, start: started ? started.start : t, end: t, outcome, why: failure.message || failure.code || "" });
      open.delete(key);
      const due = body.due_ms || body.retry_due_ms;
      if (due) bars.push({ key, start: t, end: due, outcome: "timer", why: `retry at ${new Date(due).toISOString()}` });
    }
  }
  const last = events.length ? Date.parse(events[events.length - 1].at) : 0;
  for (const o of open.values()) bars.push({ key: o.key, start: o.start, end: last, outcome: "running", why: `attempt ${o.attempt}` });
  return { rows, bars };
}

function attemptBars(events) {
  const { rows, bars } = attempts(events);
  if (!bars.length) return null;
  const shown = [...rows.keys()].slice(0, ATTEMPT_ROWS_MAX);
  const t0 = Math.min(...bars.map((b) => b.start)), t1 = Math.max(...bars.map((b) => b.end));
  const span = Math.max(1, t1 - t0);
  const rowH = 14, left = 130, width = 900, height = shown.length * rowH + 22;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${left + width + 10} ${height}`);
  svg.setAttribute("class", "timeline attempts");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${bars.length} attempts and waits of ${rows.size} items over ${(span / 1000).toFixed(1)} s`);
  const add = (name, attrs, text) => {
    const el = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el);
    return el;
  };
  const colour = { ok: "#0a58ca", failed: "#b42318", running: "#8a5a00", timer: "#8c959f" };
  shown.forEach((k, i) => add("text", { x: 4, y: 11 + i * rowH }, k));
  for (const b of bars) {
    const row = shown.indexOf(b.key);
    if (row < 0) continue;
    const x = left + ((b.start - t0) / span) * width;
    const w = Math.max(2, ((b.end - b.start) / span) * width);
    const bar = add("rect", { x: x.toFixed(1), y: 2 + row * rowH, width: w.toFixed(1), height: rowH - 4, fill: colour[b.outcome], class: `bar-${b.outcome}` });
    const title = document.createElementNS(ns, "title");
    title.textContent = `${b.key}: ${b.outcome}${b.why ? ` (${b.why})` : ""}, ${((b.end - b.start) / 1000).toFixed(2)} s`;
    bar.append(title);
  }
  add("text", { x: left, y: height - 4 }, rows.size > shown.length ? `the first ${shown.length} of ${rows.size} items` : `${rows.size} items`);
  add("text", { x: left + width - 120, y: height - 4 }, `+${spanText(span)}`);
  return svg;
}

async function timelineSection(stream) {
  if (!may("admin")) return h("p", { class: "muted" }, "The timeline reads the log: it needs an admin key.");
  const page = await api(`/admin/streams/${encodeURIComponent(stream)}?limit=1000&brief=true`);
  return h("div", {}, attemptBars(page.events || []), timeline(page.events || []),
    h("p", {}, h("a", { href: `#/replay/${stream}` }, "Time travel: its state after each event"), " · ",
      h("button", { type: "button", class: "secondary", onclick: () => downloadBundle(stream) }, "Download its bundle")),
    h("details", {}, h("summary", {}, `Events (${(page.events || []).length})`),
      table([["#", (e) => e.seq], ["at", (e) => when(e.at)], ["kind", (e) => e.kind]], page.events || [])));
}

// The workflow's bundle (`spool bundle`), fetched with the key and saved as a file.
async function downloadBundle(id) {
  const r = await fetch(`/api/v2/admin/bundles/${encodeURIComponent(id)}`, { headers: { "X-API-Key": sessionStorage.getItem(KEY) || "" } });
  if (!r.ok) { note(`bundle: HTTP ${r.status}`, true); return; }
  const url = URL.createObjectURL(await r.blob());
  const a = h("a", { href: url, download: `${id}.bundle` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Time travel: the state after each of the stream's events, as `spool replay` prints it.
async function replayView(stream, params) {
  const nav = navigation;
  clearInterval(refreshTimer);
  if (!may("admin")) {
    showFor(nav, h("h1", {}, "Time travel"), h("p", { class: "muted" }, "Time travel reads the log: it needs an admin key."));
    return;
  }
  const r = await api(`/admin/replay/${encodeURIComponent(stream)}`);
  const steps = r.steps;
  const wanted = Number(params.get("seq"));
  let at = Math.max(0, steps.findIndex((s) => s.seq === wanted));
  if (!params.get("seq")) at = steps.length - 1;
  const state = h("pre", { id: "travel-state", tabindex: "0" });
  const label = h("p", { id: "travel-at", "aria-live": "polite" });
  const draw = (i) => {
    const s = steps[i];
    label.textContent = `Event ${i + 1} of ${steps.length}: #${s.seq} ${s.kind} at ${when(s.at)}`;
    state.textContent = s.state;
  };
  const slider = h("input", { id: "travel", type: "range", min: 0, max: steps.length - 1, value: at, oninput: (e) => draw(Number(e.target.value)) });
  showFor(nav, h("h1", {}, `Time travel: ${stream}`),
    h("p", { class: "muted" }, "The state after each event, folded from the log as `spool replay` folds it.", r.truncated ? " (The first 1,000 events.)" : ""),
    h("label", { for: "travel" }, "Event"), slider, label, state);
  draw(at);
}

// ---- views -----------------------------------------------------------------------------

function countsCard(title, counts, link) {
  const entries = Object.entries(counts || {});
  return h("section", { class: "card" }, h("h2", {}, link ? h("a", { href: link }, title) : title),
    entries.length ? h("ul", {}, entries.map(([s, n]) => h("li", {}, statusCell(s), `: ${n}`))) : h("p", { class: "muted" }, "none"));
}

const failureLink = (f) => ({ import_job: `#/jobs/${f.id}`, prompt_run: `#/runs/${f.id}`, export: `#/exports/${f.id}` })[f.kind];

async function overview() {
  const nav = navigation;
  const draw = async () => {
    const o = await api("/console/overview");
    scope = o.scope;
    showFor(nav, h("h1", {}, "Overview"),
      h("div", { class: "cards" },
        countsCard("Import jobs", o.import_jobs, "#/jobs"),
        countsCard("Prompt runs", o.prompt_runs, "#/runs"),
        countsCard("Exports", o.exports, "#/exports"),
        countsCard("Webhooks", o.webhooks, "#/webhooks"),
        countsCard("Deliveries", o.deliveries),
        countsCard("Automations", o.automations, "#/automations")),
      h("h2", {}, "What unfinished work waits on"),
      o.waiting.length ? table([["kind", (w) => w.kind], ["waiting on", (w) => w.reason.replaceAll("_", " ")], ["how many", (w) => w.count]], o.waiting)
        : h("p", { class: "muted" }, "Nothing waits."),
      h("h2", {}, "Latest failures"),
      o.failures.length ? table([["what", (f) => h("a", { href: failureLink(f) }, `${f.kind.replace("_", " ")} ${f.id}`)], ["when", (f) => when(f.at)], ["why", (f) => f.message || ""]], o.failures)
        : h("p", { class: "muted" }, "No failures."));
  };
  await draw();
  live(draw, [], nav);
}

function pager(cursor, go) {
  return h("div", { class: "pager" }, cursor ? h("button", { type: "button", class: "secondary", onclick: () => go(cursor) }, "Next page") : null);
}

// A list's filters: each a query parameter of the page's link, sent to the API
// (`GET /console/lists/…`), which filters and pages on the server.
function filters(base, params, fields) {
  return h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(e.target)) if (v) q.set(k, v);
    location.hash = `${base}${q.toString() ? `?${q}` : ""}`;
  } }, fields.map(([name, label, options]) => [
    h("label", { for: `f-${name}` }, label),
    options
      ? h("select", { id: `f-${name}`, name }, options.map((o) => h("option", { value: o, selected: o === (params.get(name) || "") }, o || "any")))
      : h("input", { id: `f-${name}`, name, value: params.get(name) || "", type: name === "since" || name === "until" ? "datetime-local" : "text" }),
  ]), h("button", { type: "submit" }, "Filter"));
}

// One page of a list, its filters from the page's link, from the cursor `before`.
async function listPage(kind, params, names) {
  const q = new URLSearchParams({ limit: params.get("limit") || "50" });
  for (const n of names) {
    const v = params.get(n);
    if (v) q.set(n, n === "since" || n === "until" ? new Date(v).toISOString() : v);
  }
  if (params.get("before")) q.set("before", params.get("before"));
  return api(`/console/lists/${kind}?${q}`);
}

// The links under a list: back to its newest page, and on to the older items.
function pageLinks(base, params, next) {
  const link = (before) => {
    const q = new URLSearchParams(params);
    q.delete("before");
    if (before) q.set("before", before);
    return `${base}${q.toString() ? `?${q}` : ""}`;
  };
  return h("p", { class: "pager" },
    params.get("before") ? h("a", { href: link(null), id: "newest-page" }, "Newest") : null,
    params.get("before") && next ? " · " : null,
    next ? h("a", { href: link(next), id: "older-page" }, "Older") : null);
}

const TIME_FILTERS = [["since", "Created since"], ["until", "Created until"]];

async function jobsList(params) {
  const nav = navigation;
  const draw = async () => {
    const page = await listPage("import-jobs", params, ["status", "index_id", "connector_id", "since", "until"]);
    showFor(nav, h("h1", {}, "Import jobs"),
      filters("#/jobs", params, [["status", "Status", ["", "pending", "scanning", "importing", "completed", "failed", "cancelled"]], ["index_id", "Index"], ["connector_id", "Connector"], ...TIME_FILTERS]),
      page.items.length ? table([["job", (j) => h("a", { href: `#/jobs/${j.job_id}` }, j.job_id)], ["status", (j) => statusCell(j.status)],
        ["progress", (j) => `${j.progress.imported} imported, ${j.progress.failed} failed, ${j.progress.skipped} skipped of ${j.progress.total_files ?? "?"}`],
        ["index", (j) => j.target_index_id || "playground"], ["connector", (j) => j.connector_id || "upload"], ["created", (j) => when(j.created_at)]], page.items)
        : h("p", { class: "muted" }, "No import jobs here."),
      pageLinks("#/jobs", params, page.next_cursor));
  };
  await draw();
  live(draw, ["job_"], nav);
}

async function job(id, params) {
  const nav = navigation;
  const cursor = params.get("cursor") || "";
  const failedOnly = params.get("failed") === "1";
  const draw = async () => {
    const j = await api(`/import-jobs/${encodeURIComponent(id)}`);
    const q = new URLSearchParams({ limit: "100" });
    if (cursor) q.set("cursor", cursor);
    if (failedOnly) q.set("failed_only", "true");
    const files = await api(`/import-jobs/${encodeURIComponent(id)}/files?${q}`);
    const items = files.items || files.data || [];
    const next = files.next_cursor || (files.pagination && files.pagination.next_cursor);
    showFor(nav, h("h1", {}, `Import job ${j.job_id}`),
      h("p", {}, "Status: ", statusCell(j.status), ` — ${j.progress.imported} imported, ${j.progress.failed} failed, ${j.progress.skipped} skipped`),
      h("p", { class: "muted" }, waitingWords(j.waiting_on)),
      j.error_message ? h("p", { class: "bad" }, j.error_message) : null,
      h("div", { class: "actions" },
        j.status === "failed" || j.progress.failed > 0 ? actionButton("Retry failed files", "write", () => api(`/import-jobs/${id}/retry`, { method: "POST", body: {} })) : null,
        ["pending", "scanning", "importing"].includes(j.status) ? actionButton("Cancel", "write", () => api(`/import-jobs/${id}/cancel`, { method: "POST" })) : null),
      h("h2", {}, "Timeline"), await timelineSection(id),
      h("h2", {}, failedOnly ? "Failed files" : "Files"),
      h("p", {}, h("a", { href: `#/jobs/${id}${failedOnly ? "" : "?failed=1"}` }, failedOnly ? "show every file" : "show failed files only")),
      table([["file", (f) => f.file_name || f.file_id || ""], ["status", (f) => statusCell(f.status)],
        ["parts", (f) => (f.part_count ? `${f.parts_completed} of ${f.part_count}` : "")], ["why", (f) => (f.failure && (f.failure.message || f.failure.code)) || f.error || f.skip_reason || ""]], items),
      pager(next, (c) => { location.hash = `#/jobs/${id}?cursor=${encodeURIComponent(c)}${failedOnly ? "&failed=1" : ""}`; }));
  };
  await draw();
  live(draw, [id], nav);
}

async function runsList(params) {
  const nav = navigation;
  const draw = async () => {
    const page = await listPage("prompt-runs", params, ["status", "index_id", "since", "until"]);
    showFor(nav, h("h1", {}, "Prompt runs"),
      filters("#/runs", params, [["status", "Status", ["", "pending", "processing", "completed", "completed_with_failures", "failed", "cancelled"]], ["index_id", "Index"], ...TIME_FILTERS]),
      page.items.length ? table([["run", (r) => h("a", { href: `#/runs/${r.run_id}` }, r.run_id)], ["status", (r) => statusCell(r.status)],
        ["prompt", (r) => r.prompt_name || r.prompt_id],
        ["segments", (r) => `${r.completed_segments} of ${r.total_segments}, ${r.failed_segments} failed`],
        ["index", (r) => r.index_id || ""], ["created", (r) => when(r.created_at)]], page.items)
        : h("p", { class: "muted" }, "No prompt runs here."),
      pageLinks("#/runs", params, page.next_cursor));
  };
  await draw();
  live(draw, ["run_"], nav);
}

async function run(id) {
  const nav = navigation;
  const draw = async () => {
    const r = await api(`/prompt-runs/${encodeURIComponent(id)}`);
    const failed = await api(`/prompt-runs/${encodeURIComponent(id)}/failed-segments`).catch(() => ({ videos: [] }));
    const rows = (failed.videos || []).flatMap((v) => (v.segments || []).map((seg) => ({ ...seg, video_id: v.video_id })));
    showFor(nav, h("h1", {}, `Prompt run ${r.run_id}`),
      h("p", {}, "Status: ", statusCell(r.status), ` — ${r.completed_segments ?? 0} of ${r.total_segments ?? 0} segments completed`),
      h("p", { class: "muted" }, waitingWords(r.waiting_on)),
      r.error_message ? h("p", { class: "bad" }, r.error_message) : null,
      h("div", { class: "actions" },
        ["pending", "processing"].includes(r.status) ? actionButton("Cancel", "write", () => api(`/prompt-runs/${id}/cancel`, { method: "POST", body: {} })) : null),
      h("h2", {}, "Timeline"), await timelineSection(id),
      h("h2", {}, "Failed segments"),
      rows.length ? table([["segment", (s) => s.segment_id], ["video", (s) => s.video_id], ["why", (s) => s.failure_message || s.failure_code || ""],
        ["", (s) => actionButton("Retry", "write", () => api(`/prompt-runs/${id}/videos/${s.video_id}/segments/${s.segment_id}/retry`, { method: "POST", body: {} }))]], rows)
        : h("p", { class: "muted" }, "None."));
  };
  await draw();
  live(draw, [id], nav);
}

async function exportsList(params) {
  const nav = navigation;
  const draw = async () => {
    const page = await listPage("exports", params, ["status", "index_id", "since", "until"]);
    showFor(nav, h("h1", {}, "Exports"),
      filters("#/exports", params, [["status", "Status", ["", "pending", "processing", "completed", "failed"]], ["index_id", "Index"], ...TIME_FILTERS]),
      page.items.length ? table([["export", (e) => h("a", { href: `#/exports/${e.export_id}` }, e.export_id)], ["status", (e) => statusCell(e.status)],
        ["index", (e) => e.index_id || "prompt runs"], ["why", (e) => e.error_message || ""], ["created", (e) => when(e.created_at)]], page.items)
        : h("p", { class: "muted" }, "No exports here."),
      pageLinks("#/exports", params, page.next_cursor));
  };
  await draw();
  live(draw, ["exp_"], nav);
}

async function exportView(id) {
  const nav = navigation;
  const draw = async () => {
    const e = await api(`/exports/${encodeURIComponent(id)}`);
    showFor(nav, h("h1", {}, `Export ${e.export_id}`),
      h("p", {}, "Status: ", statusCell(e.status)),
      h("p", { class: "muted" }, waitingWords(e.waiting_on)),
      e.error_message ? h("p", { class: "bad" }, e.error_message) : null,
      h("h2", {}, "Timeline"), await timelineSection(id));
  };
  await draw();
  live(draw, [id], nav);
}

async function webhooksList() {
  const nav = navigation;
  const draw = async () => {
    const hooks = await api("/webhooks");
    const list = Array.isArray(hooks) ? hooks : hooks.data || [];
    showFor(nav, h("h1", {}, "Webhooks"),
      table([["webhook", (w) => h("a", { href: `#/webhooks/${w.webhook_id || w.id}` }, w.name || w.webhook_id || w.id)], ["status", (w) => statusCell(w.status)],
        ["url", (w) => h("code", {}, w.url)]], list));
  };
  await draw();
  live(draw, ["wh_"], nav);
}

async function webhook(id) {
  const nav = navigation;
  const draw = async () => {
    const w = await api(`/webhooks/${encodeURIComponent(id)}`);
    const d = await api(`/webhooks/${encodeURIComponent(id)}/deliveries?limit=100`);
    const list = Array.isArray(d) ? d : d.data || d.deliveries || [];
    showFor(nav, h("h1", {}, `Webhook ${w.name || id}`),
      h("p", {}, "Status: ", statusCell(w.status), " ", h("code", {}, w.url)),
      h("div", { class: "actions" },
        actionButton("Retry failed deliveries", "write", () => api(`/webhooks/${id}/deliveries/retry`, { method: "POST", body: { status: "failed" } }))),
      h("h2", {}, "Deliveries"),
      table([["delivery", (x) => x.delivery_id || x.id], ["event", (x) => x.event_type || ""], ["status", (x) => statusCell(x.status)],
        ["attempts", (x) => x.attempt_count ?? x.attempts ?? ""], ["waiting", (x) => (x.waiting_on ? waitingWords(x.waiting_on) : "")],
        ["", (x) => x.status === "failed" ? actionButton("Retry", "write", () => api(`/webhooks/deliveries/${x.delivery_id || x.id}/retry`, { method: "POST" })) : null]], list));
  };
  await draw();
  live(draw, [id], nav);
}

const automationLink = (a) => `#/automations/${a.index_id}/${a.type}`;

function automationState(a) {
  return a.paused ? "paused" : a.enabled === false ? "disabled" : "active";
}

async function automationsList(params) {
  const nav = navigation;
  const draw = async () => {
    const page = await listPage("automations", params, ["status", "index_id"]);
    showFor(nav, h("h1", {}, "Automations"),
      filters("#/automations", params, [["status", "Kind or state", ["", "import", "export", "active", "paused"]], ["index_id", "Index"]]),
      page.items.length ? table([["automation", (a) => h("a", { href: automationLink(a) }, `${a.type} of ${a.index_id}`)], ["state", (a) => statusCell(automationState(a))],
        ["waiting", (a) => waitingWords(a.waiting_on)], ["last error", (a) => a.last_error || ""], ["created", (a) => when(a.created_at)]], page.items)
        : h("p", { class: "muted" }, "No automations here."),
      pageLinks("#/automations", params, page.next_cursor));
  };
  await draw();
  live(draw, ["auto_"], nav);
}

// One automation (an index's import watch or its export on completion): its settings, what it
// waits on, the work it started, its timeline, and pause/resume.
async function automation(index, type) {
  const nav = navigation;
  const path = `/indexes/${encodeURIComponent(index)}/automations/${encodeURIComponent(type)}`;
  let streams = ["auto_"];
  const draw = async () => {
    const a = await api(path);
    streams = [a.automation_id];
    const last = a.type === "import"
      ? (a.last_import_job_id ? h("a", { href: `#/jobs/${a.last_import_job_id}` }, a.last_import_job_id) : "none yet")
      : (a.last_export_id ? h("a", { href: `#/exports/${a.last_export_id}` }, a.last_export_id) : "none yet");
    const settings = a.type === "import"
      ? [["watches", `${a.connector_id} ${a.source_prefix || "/"} (${a.file_pattern}${a.recursive ? ", recursive" : ""})`],
         ["prompt", a.prompt_preset && a.prompt_preset.prompt_id], ["debounce", a.debounce_interval],
         ["objects known", `${a.manifest_objects}, ${a.found_objects} found since the last import`], ["last listed", when(a.last_listed_at) || "never"]]
      : [["exports to", `${a.destination_connector_id} ${a.destination_subpath || ""}`], ["runs exported", a.exported_runs],
         ["runs waiting", (a.pending_run_ids || []).length]];
    showFor(nav, h("h1", {}, `Automation: ${a.type} of ${a.index_id}`),
      h("p", {}, "State: ", statusCell(automationState(a)), a.paused_at ? ` since ${when(a.paused_at)}` : ""),
      h("p", { class: "muted" }, waitingWords(a.waiting_on), a.next_due_at ? ` — next due ${when(a.next_due_at)}` : ""),
      a.last_error ? h("p", { class: "bad" }, a.last_error) : null,
      h("div", { class: "actions" },
        a.paused ? actionButton("Resume", "write", () => api(`${path}/resume`, { method: "POST" }))
          : actionButton("Pause", "write", () => api(`${path}/pause`, { method: "POST" }))),
      table([["", (r) => r[0]], ["", (r) => r[1]]], [...settings, ["last work", last], ["last triggered", when(a.last_triggered_at) || "never"]]),
      h("h2", {}, "Timeline"), await timelineSection(a.automation_id));
  };
  await draw();
  live(draw, streams, nav);
}

// A hit's media, in place of its button: the stored file through a signed URL (the server's
// own, so the page's policy allows it), a video or audio from the hit's time range.
async function play(button, hit) {
  try {
    const video = await api(`/videos/${encodeURIComponent(hit.video_id)}`);
    const signed = await api("/videos/signed-url", { method: "POST", body: { gcs_uri: video.video_uri } });
    const range = hit.segment_id ? `#t=${hit.start_time},${hit.end_time}` : "";
    const label = `${hit.video_name || hit.video_id}${hit.segment_id ? `, ${hit.start_time}–${hit.end_time} s` : ""}`;
    const el = hit.media_type === "image"
      ? h("img", { src: signed.signed_url, alt: label, class: "hit-media", width: 320 })
      : h(hit.media_type === "audio" ? "audio" : "video", { src: `${signed.signed_url}${range}`, controls: true, preload: "metadata", class: "hit-media", width: 320, "aria-label": label });
    button.replaceWith(el);
  } catch (err) {
    note(`play: ${err.message}`, true);
  }
}

async function search(params) {
  const nav = navigation;
  const indexes = await api("/indexes?limit=100");
  const list = Array.isArray(indexes) ? indexes : indexes.data || [];
  const index = params.get("index") || (list[0] && list[0].index_id) || "";
  const query = params.get("q") || "";
  const form = h("form", { onsubmit: (e) => { e.preventDefault(); const f = new FormData(e.target); location.hash = `#/search?index=${encodeURIComponent(f.get("index"))}&q=${encodeURIComponent(f.get("q"))}`; } },
    h("label", { for: "search-index" }, "Index"),
    h("select", { id: "search-index", name: "index" }, list.map((i) => h("option", { value: i.index_id, selected: i.index_id === index }, i.name || i.index_id))),
    h("label", { for: "search-q" }, "Query"), h("input", { id: "search-q", name: "q", value: query, required: true }),
    h("button", { type: "submit" }, "Search"));
  let results = null;
  if (index && query) {
    const hits = await api(`/indexes/${encodeURIComponent(index)}/search`, { method: "POST", body: { query, top_k: 30 } });
    results = hits.length
      ? table([["video", (r) => r.video_name || r.video_id], ["segment", (r) => (r.segment_id ? `${r.start_time}–${r.end_time} s` : "whole video")],
          ["result", (r) => r.content_preview || ""], ["score", (r) => (r.similarity_score ?? 0).toFixed(3)], ["run", (r) => h("a", { href: `#/runs/${r.run_id}` }, r.run_id)],
          ["", (r) => h("button", { type: "button", class: "secondary", onclick: (e) => play(e.target, r) }, r.media_type === "image" ? "Show" : "Play")]], hits)
      : h("p", { class: "muted" }, "No results.");
  }
  clearInterval(refreshTimer);
  showFor(nav, h("h1", {}, "Search results"), form, results);
}

async function logView(params) {
  const nav = navigation;
  if (!may("admin")) {
    showFor(nav, h("h1", {}, "Live log"), h("p", { class: "muted" }, "The live log needs an admin key."));
    return;
  }
  clearInterval(refreshTimer);
  const streamFilter = params.get("stream") || "", kindFilter = params.get("kind") || "";
  const lines = h("div", { id: "log-lines", "aria-live": "polite" });
  const form = h("form", { onsubmit: (e) => { e.preventDefault(); const f = new FormData(e.target); location.hash = `#/log?stream=${encodeURIComponent(f.get("stream"))}&kind=${encodeURIComponent(f.get("kind"))}`; } },
    h("label", { for: "log-stream" }, "Stream starts with"), h("input", { id: "log-stream", name: "stream", value: streamFilter }),
    h("label", { for: "log-kind" }, "Kind"), h("input", { id: "log-kind", name: "kind", value: kindFilter }),
    h("button", { type: "submit" }, "Filter"));
  showFor(nav, h("h1", {}, "Live log"), h("p", { class: "muted" }, "Events as they commit."), form, lines);
  tailAbort = new AbortController();
  const r = await fetch("/api/v2/admin/log/tail", { headers: { "X-API-Key": sessionStorage.getItem(KEY) || "" }, signal: tailAbort.signal });
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
      const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
      if (!data) continue;
      const e = JSON.parse(data);
      if (streamFilter && !e.stream.startsWith(streamFilter)) continue;
      if (kindFilter && e.kind !== kindFilter) continue;
      lines.append(h("div", { class: "log-line" }, `${e.partition !== undefined ? `p${e.partition} ` : ""}#${e.seq} ${e.at} ${e.stream} ${e.kind}`));
    }
  }
}

// ---- the router ------------------------------------------------------------------------

const ROUTES = [
  [/^#?\/?$/, () => overview()],
  [/^#\/jobs$/, (m, p) => jobsList(p)],
  [/^#\/jobs\/([^/?]+)$/, (m, p) => job(m[1], p)],
  [/^#\/runs$/, (m, p) => runsList(p)],
  [/^#\/runs\/([^/?]+)$/, (m) => run(m[1])],
  [/^#\/exports$/, (m, p) => exportsList(p)],
  [/^#\/exports\/([^/?]+)$/, (m) => exportView(m[1])],
  [/^#\/automations$/, (m, p) => automationsList(p)],
  [/^#\/automations\/([^/?]+)\/(import|export)$/, (m) => automation(m[1], m[2])],
  [/^#\/webhooks$/, () => webhooksList()],
  [/^#\/webhooks\/([^/?]+)$/, (m) => webhook(m[1])],
  [/^#\/search$/, (m, p) => search(p)],
  [/^#\/log$/, (m, p) => logView(p)],
  [/^#\/replay\/([^/?]+)$/, (m, p) => replayView(m[1], p)],
];

async function route() {
  navigation += 1;
  clearInterval(refreshTimer);
  clearTimeout(redrawTimer);
  if (feedAbort) { feedAbort.abort(); feedAbort = null; }
  if (tailAbort) { tailAbort.abort(); tailAbort = null; }
  const form = document.getElementById("key-form");
  if (!sessionStorage.getItem(KEY)) {
    form.hidden = false;
    document.getElementById("view").replaceChildren();
    document.getElementById("forget").hidden = true;
    return;
  }
  form.hidden = true;
  document.getElementById("forget").hidden = false;
  if (scope === null) {
    try {
      scope = (await api("/console/overview")).scope;
    } catch (err) {
      if (err.status === 401) {
        sessionStorage.removeItem(KEY);
        document.getElementById("key-error").textContent = "That key is not accepted here.";
        return route();
      }
      show(h("p", { class: "bad" }, err.message));
      return;
    }
  }
  document.getElementById("who").textContent = `${scope} key`;
  const [path, query] = location.hash.split("?");
  const params = new URLSearchParams(query || "");
  for (const [re, view] of ROUTES) {
    const m = (path || "#/").match(re);
    if (m) {
      try { await view(m, params); } catch (err) { if (err.name !== "AbortError") show(h("p", { class: "bad" }, err.message)); }
      return;
    }
  }
  show(h("h1", {}, "Not found"), h("p", {}, "No such page of the console."));
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = document.getElementById("key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    document.getElementById("key").value = "";
    document.getElementById("key-error").textContent = "";
    scope = null;
    route();
  });
  document.getElementById("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); scope = null; document.getElementById("who").textContent = ""; route(); });
  window.addEventListener("hashchange", route);
  route();
});
