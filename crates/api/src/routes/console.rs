//! The web console (`engine-spec/console.md`): a page and its script, embedded in the binary and
//! served at `/console/` (no key: the page asks for one and sends it with each API call, as
//! any client does), and the one route it needs that the API had not: the overview's counts.

use super::json;
use crate::body::Query;
use crate::{ApiError, AppState, Principal};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use spool_model::Scope as KeyScope;
use std::collections::BTreeMap;

use super::ops_prelude::*;

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// Failures the overview lists at most (the newest).
pub const OVERVIEW_FAILURES_MAX: usize = 10;
/// Completed import jobs the overview looks at for failed files (the newest).
const OVERVIEW_COMPLETED_SCAN: usize = 100;

pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(get "/console/overview" overview, "getConsoleOverview", "console", Local("Object")),
        op!(get "/console/lists/{kind}" list, "listConsoleItems", "console", Local("Object"),
            query = &[q("status", QKind::Str), q("index_id", QKind::Str), q("connector_id", QKind::Str), q("since", QKind::Str), q("until", QKind::Str), q("before", QKind::Str), q("limit", QKind::Int(1, 200))]),
        op!(get "/console/changes" changes, "tailConsoleChanges", "console", Events, query = &[q("streams", QKind::Str)]),
    ]
}

/// Headers of every console file: nothing from elsewhere runs in it.
fn page(ctype: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, ctype),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /console/` (and `/console`): the page.
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/{file}`: its script and style sheet; anything else is the page (its links
/// are `#/…` fragments, but a path under `/console/` still opens the console).
pub async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "console.js" => page("text/javascript; charset=utf-8", CONSOLE_JS),
        "console.css" => page("text/css; charset=utf-8", CONSOLE_CSS),
        _ => page("text/html; charset=utf-8", INDEX_HTML),
    }
}

fn counts<'a>(statuses: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, u64> {
    let mut out = BTreeMap::new();
    for s in statuses {
        *out.entry(s).or_insert(0) += 1;
    }
    out
}

/// `GET /console/overview`: the caller's scope (what the page may offer), counts by status of import jobs, prompt runs, exports, webhooks,
/// deliveries and automations, what the unfinished work waits on (the `spool_waiting` gauges),
/// and the newest failures. Import jobs are counted from their status sets (O(statuses)); the
/// others by a walk of what the state holds of them.
pub async fn overview(State(app): State<AppState>, who: Principal) -> Result<Response, ApiError> {
    who.require(KeyScope::Read)?;
    use spool_core::machines::import_job::JobStatus;
    let waiting: Vec<Value> = app
        .rt
        .waiting_gauges()
        .into_iter()
        .map(|((kind, reason), n)| json!({ "kind": kind, "reason": reason, "count": n }))
        .collect();
    let v = app.rt.read(|st| {
        let jobs: BTreeMap<&str, u64> = [
            JobStatus::Pending,
            JobStatus::Scanning,
            JobStatus::Importing,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .map(|s| (s.as_str(), u64::try_from(st.imports_by_status.count(s)).unwrap_or(u64::MAX)))
        .filter(|(_, n)| *n > 0)
        .collect();
        let runs = counts(st.prompt_runs.values().map(|r| r.status.as_str()));
        let exports = counts(st.exports.values().map(|e| e.status.as_str()));
        let webhooks = counts(st.webhooks.values().map(|w| w.status.as_str()));
        let deliveries = counts(st.deliveries.values().map(|d| d.status.as_str()));
        let automations =
            counts(st.automations.values().map(|a| if a.paused_at_ms.is_some() { "paused" } else { "active" }));
        // The newest failures: failed jobs from their status set, failed runs and exports.
        let mut failures: Vec<(u64, Value)> = Vec::new();
        // Jobs that failed, and the newest completed ones with failed files.
        let failed_jobs = st.imports_by_status.iter(JobStatus::Failed).rev().take(OVERVIEW_FAILURES_MAX);
        let partial_jobs = st.imports_by_status.iter(JobStatus::Completed).rev().take(OVERVIEW_COMPLETED_SCAN);
        for (_, id) in failed_jobs.chain(partial_jobs) {
            if let Some(j) = st.imports.get(&id).filter(|j| j.status == JobStatus::Failed || j.failed > 0) {
                let message = j.error.clone().unwrap_or_else(|| format!("{} of its files failed", j.failed));
                failures.push((
                    j.updated_at_ms,
                    json!({ "kind": "import_job", "id": id.to_string(), "message": message, "at": spool_model::time::rfc3339_ms(j.updated_at_ms) }),
                ));
            }
        }
        for r in st.prompt_runs.values().filter(|r| r.status.as_str() == "failed" || r.failed_segments > 0) {
            let message = r.error.clone().unwrap_or_else(|| format!("{} of its segments failed", r.failed_segments));
            failures.push((
                r.updated_at_ms,
                json!({ "kind": "prompt_run", "id": r.run_id.to_string(), "message": message, "at": spool_model::time::rfc3339_ms(r.updated_at_ms) }),
            ));
        }
        for e in st.exports.values().filter(|e| e.status.as_str() == "failed") {
            failures.push((
                e.updated_at_ms,
                json!({ "kind": "export", "id": e.export_id.to_string(), "message": e.error, "at": spool_model::time::rfc3339_ms(e.updated_at_ms) }),
            ));
        }
        failures.sort_by_key(|f| std::cmp::Reverse(f.0));
        failures.truncate(OVERVIEW_FAILURES_MAX);
        json!({
            "scope": who.scope.as_str(),
            "import_jobs": jobs,
            "prompt_runs": runs,
            "exports": exports,
            "webhooks": webhooks,
            "deliveries": deliveries,
            "automations": automations,
            "waiting": waiting,
            "failures": failures.into_iter().map(|f| f.1).collect::<Vec<_>>(),
        })
    });
    Ok(json(StatusCode::OK, &v))
}

/// Items a console list answers at most per page.
pub const LIST_LIMIT_MAX: u64 = 200;
/// Keys a console list reads at most per page: a filter that matches few items answers a short
/// page (perhaps empty) with a cursor, never a walk of everything.
pub const LIST_SCAN_MAX: usize = 5_000;

/// A list's order key as its cursor: the creation time zero-padded (so that keys compare as
/// text, as a node merging partitions' pages compares them), a dot, and the id.
fn key_text(ms: u64, id: &impl std::fmt::Display) -> String {
    format!("{ms:020}.{id}")
}

fn parse_key<I: std::str::FromStr>(raw: &str) -> Result<(u64, I), ApiError> {
    let bad = || ApiError::validation("before", "must be a cursor from an earlier page (`next_cursor`)");
    let (ms, id) = raw.split_once('.').ok_or_else(bad)?;
    Ok((ms.parse::<u64>().map_err(|_| bad())?, id.parse::<I>().map_err(|_| bad())?))
}

fn time_param(q: &Query, name: &str) -> Result<Option<u64>, ApiError> {
    match q.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => spool_model::time::parse_rfc3339_ms(v).map(Some).ok_or_else(|| {
            ApiError::validation(
                name,
                format!("must be an RFC 3339 time (got {:?})", v.chars().take(40).collect::<String>()),
            )
        }),
    }
}

/// One page of a list: `keys` newest first (already below the cursor and the `until` bound),
/// read until `limit` items are kept, a key older than `since`, or [`LIST_SCAN_MAX`] keys.
/// The cursor is the last key read when the page stopped early, none at the list's end.
fn page_of<I: Copy + std::fmt::Display>(
    keys: impl Iterator<Item = (u64, I)>,
    since_ms: u64,
    limit: usize,
    mut row: impl FnMut(I) -> Option<Value>,
) -> Value {
    let mut items = Vec::new();
    let mut next = None;
    for (scanned, (ms, id)) in keys.enumerate() {
        if ms < since_ms {
            break;
        }
        if let Some(mut v) = row(id) {
            v["cursor"] = json!(key_text(ms, &id));
            items.push(v);
            if items.len() >= limit {
                next = Some(key_text(ms, &id));
                break;
            }
        }
        if scanned + 1 >= LIST_SCAN_MAX {
            next = Some(key_text(ms, &id));
            break;
        }
    }
    json!({ "items": items, "next_cursor": next })
}

/// `GET /console/lists/{kind}` (`import-jobs`, `prompt-runs`, `exports`, `automations`): one
/// page of a list, newest first, filtered by `status`, `index_id`, `connector_id` (jobs),
/// `since` and `until` (RFC 3339, of the creation time), from the cursor `before` (a page's
/// `next_cursor`). Each item is a short row with its own `cursor`. O(log n + the keys read),
/// at most [`LIST_SCAN_MAX`] keys; a cluster's node merges its partitions' pages.
pub async fn list(
    State(app): State<AppState>,
    who: Principal,
    crate::body::PathParam(kind): crate::body::PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    use spool_core::machines::import_job::JobStatus;
    use spool_model::{AutomationId, ExportId, ImportJobId, PromptRunId};
    who.require(KeyScope::Read)?;
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 50, 1, LIST_LIMIT_MAX)?);
    let since = time_param(&q, "since")?.unwrap_or(0);
    let until = time_param(&q, "until")?;
    let status = q.get("status").filter(|s| !s.is_empty()).map(str::to_ascii_lowercase);
    let index = q.get("index_id").filter(|s| !s.is_empty()).map(str::to_string);
    let connector = q.get("connector_id").filter(|s| !s.is_empty()).map(str::to_string);
    let before = q.get("before").filter(|s| !s.is_empty());
    let nil = ulid::Ulid::nil();
    // The exclusive upper key: the cursor, else just past `until`, else past everything.
    macro_rules! upper {
        ($id:ident) => {
            match before {
                Some(raw) => parse_key::<$id>(raw)?,
                None => (until.map_or(u64::MAX, |u| u.saturating_add(1)), $id::from_ulid(nil)),
            }
        };
    }
    let index_ok = |i: Option<String>| index.as_deref().is_none_or(|want| i.as_deref() == Some(want));
    let v = match kind.as_str() {
        "import-jobs" => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
                    ApiError::validation("status", format!("unknown status {s:?}")).details(json!({
                        "field": "status",
                        "allowed": ["pending", "scanning", "importing", "completed", "failed", "cancelled"],
                    }))
                })?),
            };
            let upper = upper!(ImportJobId);
            app.rt.read(|st| {
                let keys: Box<dyn Iterator<Item = (u64, ImportJobId)>> = match status {
                    Some(s) => Box::new(st.imports_by_status.before(s, upper)),
                    None => Box::new(st.imports_by_created.range(..upper).rev().copied()),
                };
                page_of(keys, since, limit, |id| {
                    let j = st.imports.get(&id)?;
                    let idx = (j.index_id != spool_core::machines::import_job::PLAYGROUND).then(|| j.index_id.to_string());
                    let conn = (j.source_kind() != "upload").then(|| j.connector_id.to_string());
                    if !index_ok(idx.clone()) || connector.as_ref().is_some_and(|c| conn.as_ref() != Some(c)) {
                        return None;
                    }
                    Some(json!({
                        "job_id": id.to_string(),
                        "status": j.status.as_str(),
                        "target_index_id": idx,
                        "connector_id": conn,
                        "created_at": spool_model::time::rfc3339_ms(j.created_at_ms),
                        "progress": { "total_files": j.file_count, "imported": j.imported, "failed": j.failed, "skipped": j.skipped },
                    }))
                })
            })
        }
        "prompt-runs" => {
            let upper = upper!(PromptRunId);
            app.rt.read(|st| {
                page_of(st.runs_by_created.range(..upper).rev().copied(), since, limit, |id| {
                    let r = st.prompt_runs.get(&id)?;
                    if status.as_deref().is_some_and(|s| s != r.status.as_str())
                        || !index_ok(r.index_id().map(|i| i.to_string()))
                    {
                        return None;
                    }
                    Some(json!({
                        "run_id": id.to_string(),
                        "status": r.status.as_str(),
                        "prompt_id": r.prompt_id.to_string(),
                        "prompt_name": r.prompt.name,
                        "index_id": r.index_id().map(|i| i.to_string()),
                        "completed_segments": r.completed_segments,
                        "failed_segments": r.failed_segments,
                        "total_segments": r.segments.len(),
                        "created_at": spool_model::time::rfc3339_ms(r.created_at_ms),
                    }))
                })
            })
        }
        "exports" => {
            let upper = upper!(ExportId);
            app.rt.read(|st| {
                page_of(st.exports_by_created.range(..upper).rev().copied(), since, limit, |id| {
                    let e = st.exports.get(&id)?;
                    if status.as_deref().is_some_and(|s| s != e.status.as_str())
                        || !index_ok(e.index_id.map(|i| i.to_string()))
                    {
                        return None;
                    }
                    Some(json!({
                        "export_id": id.to_string(),
                        "status": e.status.as_str(),
                        "index_id": e.index_id.map(|i| i.to_string()),
                        "error_message": e.error,
                        "created_at": spool_model::time::rfc3339_ms(e.created_at_ms),
                    }))
                })
            })
        }
        "automations" => {
            // Keyed by id (a ULID: its creation time first), the time part zero.
            let upper = match before {
                Some(raw) => parse_key::<AutomationId>(raw)?.1,
                None => AutomationId::from_ulid(ulid::Ulid::from_parts(
                    until.map_or((1 << 48) - 1, |u| u.saturating_add(1).min((1 << 48) - 1)),
                    0,
                )),
            };
            app.rt.read(|st| {
                let keys = st.automations.range(..upper).rev().map(|(id, _)| (0, *id));
                page_of(keys, 0, limit, |id| {
                    let a = st.automations.get(&id)?;
                    let state = if a.paused_at_ms.is_some() { "paused" } else { "active" };
                    if status.as_deref().is_some_and(|s| s != state && s != a.kind().as_str())
                        || !index_ok(Some(a.index_id.to_string()))
                        || a.created_at_ms < since
                    {
                        return None;
                    }
                    Some(spool_core::machines::automation::view::automation(st, a))
                })
            })
        }
        _ => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such console list").details(json!({
                "kind": kind.chars().take(40).collect::<String>(),
                "allowed": ["import-jobs", "prompt-runs", "exports", "automations"],
            })));
        }
    };
    Ok(json(StatusCode::OK, &v))
}

/// A change feed sends at most one line per gap (the last of those in between).
pub const CHANGES_GAP: std::time::Duration = std::time::Duration::from_millis(250);
/// Stream prefixes a change feed may name at most.
pub const CHANGES_STREAMS_MAX: usize = 16;

/// `GET /console/changes?streams=job_,run_01…` (read scope): server-sent events, one per event
/// as it commits, of its header only (`seq`, `stream`, `kind`, `at`: no payload), of the
/// streams starting with one of `streams` (comma-separated, at most [`CHANGES_STREAMS_MAX`];
/// none: every stream; `key_…` streams only for an admin key, as API keys are listed), at most
/// one per [`CHANGES_GAP`] (the last of a burst is sent). The console reads a page again when its streams change. It ends when
/// the key that opened it stops being valid, as the admin tail does.
pub async fn changes(State(app): State<AppState>, who: Principal, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    who.require(KeyScope::Read)?;
    let q = Query::parse(q.as_deref())?;
    let prefixes: Vec<String> = q
        .get("streams")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if prefixes.len() > CHANGES_STREAMS_MAX || prefixes.iter().any(|p| p.len() > 64) {
        return Err(ApiError::validation(
            "streams",
            format!("at most {CHANGES_STREAMS_MAX} stream prefixes of at most 64 characters each"),
        ));
    }
    let from = app.rt.applied_seq() + 1;
    // API keys are an admin's to list: a read or write key hears nothing of their streams.
    let keys_too = who.scope == KeyScope::Admin;
    Ok(super::admin::tail_from(&app, &who, from, Some(CHANGES_GAP), move |env| {
        let wanted = prefixes.is_empty() || prefixes.iter().any(|p| env.stream.starts_with(p.as_str()));
        (wanted && (keys_too || !env.stream.starts_with("key_"))).then(|| {
            json!({
                "seq": env.seq,
                "stream": env.stream,
                "kind": env.event.kind(),
                "at": spool_model::time::rfc3339_ms(env.at_ms),
            })
            .to_string()
        })
    }))
}
