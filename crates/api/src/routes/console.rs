//! The web console (`engine-spec/console.md`): a page and its script, embedded in the binary and
//! served at `/console/` (no key: the page asks for one and sends it with each API call, as
//! any client does), and the one route it needs that the API had not: the overview's counts.

use super::json;
use crate::{ApiError, AppState, Principal};
use axum::extract::{Path, State};
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
    vec![op!(get "/console/overview" overview, "getConsoleOverview", "console", Local("Object"))]
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
