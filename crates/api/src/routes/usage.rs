//! Usage and rate limits (contract-search §2.13, §2.14). Usage is read from counters folded
//! from the log by calendar month, UTC (`spool_core::usage`); there is no billing. Rate limits
//! are the node's per-key limiter (`crate::rate_limit`).

use super::json;
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};
use spool_core::usage::{MonthUsage, month_bounds, month_of, next_month};
use spool_model::Scope;
use spool_model::time::rfc3339_ms;

use super::ops_prelude::*;

pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(get "/usage" current, "getUsage", "usage", Model("CurrentUsage")),
        op!(get "/usage/history" history, "getUsageHistory", "usage", Model("UsageHistory"),
            query = &[q("start_date", QKind::Str), q("end_date", QKind::Str), q("limit", QKind::Int(1, 120))]),
        op!(get "/usage/details" details, "getUsageDetails", "usage", Array("UsageDetail"),
            query = &[q("metric_type", QKind::Str), q("start_date", QKind::Str), q("end_date", QKind::Str), LIMIT_1000]),
        op!(get "/usage/breakdown" breakdown, "getUsageBreakdown", "usage", Model("UsageBreakdown"),
            query = &[q("start_date", QKind::Str), q("end_date", QKind::Str)]),
        op!(get "/usage/metric-types" metric_types, "getUsageMetricTypes", "usage", Array("UsageMetricTypeInfo")),
        op!(get "/rate-limit/status" limit_status, "getRateLimitStatus", "rate-limits", Model("RateLimitStatus")),
        op!(post "/rate-limit/refresh" limit_refresh, "refreshRateLimits", "rate-limits", Model("RateLimitStatus")),
    ]
}

/// Every metric: its name, unit and what it counts.
pub const METRICS: [(&str, &str, &str); 10] = [
    ("video_minutes_probed", "minutes", "minutes of media imported and probed in the calendar month (UTC)"),
    (
        "video_minutes_processed",
        "minutes",
        "minutes of media in segments a prompt run answered in the calendar month (UTC)",
    ),
    ("segments_processed", "segments", "segments with a stored answer, by the month the answer came"),
    ("processor_calls", "calls", "processor calls recorded (answers and failed calls that reached a processor)"),
    (
        "processor_calls_without_token_usage",
        "calls",
        "processor calls whose processor reported no tokens: token totals leave them out",
    ),
    ("input_tokens", "tokens", "input tokens the processors reported"),
    ("output_tokens", "tokens", "output tokens the processors reported"),
    ("videos_uploaded", "videos", "videos made by imports and uploads (each part of a long file is one)"),
    ("storage_bytes", "bytes", "bytes stored by imports in the month (deletions are not subtracted)"),
    (
        "searches",
        "requests",
        "search requests this server process served since it started (not kept in the log; the page route of a workflow search does not count)",
    ),
];

fn metrics_of(m: &MonthUsage, searches: u64) -> Map<String, Value> {
    let minutes = |ms: u64| ms as f64 / 60_000.0;
    let mut out = Map::new();
    let mut put = |k: &str, v: f64| {
        out.insert(k.to_string(), json!(v));
    };
    put("video_minutes_probed", minutes(m.video_ms_probed));
    put("video_minutes_processed", minutes(m.video_ms_processed));
    put("segments_processed", m.segments_processed as f64);
    put("processor_calls", m.processor_calls as f64);
    put("processor_calls_without_token_usage", m.calls_without_token_usage as f64);
    put("input_tokens", m.input_tokens as f64);
    put("output_tokens", m.output_tokens as f64);
    put("videos_uploaded", m.videos_uploaded as f64);
    put("storage_bytes", m.bytes_imported as f64);
    put("searches", searches as f64);
    out
}

fn totals(m: &MonthUsage, searches: u64) -> Value {
    json!({
        "total_tokens": m.total_tokens(),
        "total_searches": searches,
        "total_storage_bytes": m.bytes_imported,
        "total_videos_uploaded": m.videos_uploaded,
        "total_segments_created": m.segments_processed,
    })
}

fn month_range(ym: u32) -> (String, String) {
    let (a, b) = month_bounds(ym);
    (rfc3339_ms(a), rfc3339_ms(b))
}

/// The month a `start_date`/`end_date` names (`2026-12-01`, `2026-12`, a full ISO time).
fn month_param(raw: Option<&str>, name: &str) -> Result<Option<u32>, ApiError> {
    let Some(s) = raw.map(str::trim).filter(|s| !s.is_empty()) else { return Ok(None) };
    let bad = || ApiError::validation(name, "must be a date such as 2026-12-01 (or a time in ISO 8601)");
    let y: u32 = s.get(0..4).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let m: u32 = s.get(5..7).and_then(|x| x.parse().ok()).filter(|m| (1..=12).contains(m)).ok_or_else(bad)?;
    if s.get(4..5) != Some("-") {
        return Err(bad());
    }
    Ok(Some(y * 100 + m))
}

fn months(app: &AppState) -> Vec<(u32, MonthUsage)> {
    app.rt.read(|st| st.usage.months.iter().map(|(k, v)| (*k, *v)).collect())
}

fn searches(app: &AppState) -> u64 {
    app.searches.load(std::sync::atomic::Ordering::Relaxed)
}

/// `GET /usage`: this calendar month (UTC).
pub async fn current(State(app): State<AppState>, who: Principal) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let ym = month_of(app.rt.now_ms());
    let m = app.rt.read(|st| st.usage.month(ym).copied().unwrap_or_default());
    let (start, end) = month_range(ym);
    let s = searches(&app);
    Ok(json(
        StatusCode::OK,
        &json!({
            "user_id": who.id,
            "period_start": start,
            "period_end": end,
            "metrics": metrics_of(&m, s),
            "totals": totals(&m, s),
        }),
    ))
}

/// `GET /usage/history`: months newest first, within `start_date..=end_date`, at most `limit`.
pub async fn history(State(app): State<AppState>, who: Principal, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let q = crate::body::Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 12, 1, 120)?);
    let from = month_param(q.get("start_date"), "start_date")?.unwrap_or(0);
    let to = month_param(q.get("end_date"), "end_date")?.unwrap_or(u32::MAX);
    let now = month_of(app.rt.now_ms());
    let periods: Vec<Value> = months(&app)
        .into_iter()
        .rev()
        .filter(|(ym, _)| (from..=to).contains(ym))
        .take(limit)
        .map(|(ym, m)| {
            let (start, end) = month_range(ym);
            // The process's searches belong to the month it serves now alone.
            let s = if ym == now { searches(&app) } else { 0 };
            let t = totals(&m, s);
            json!({
                "summary_id": format!("usage_{}-{:02}", ym / 100, ym % 100),
                "period_start": start,
                "period_end": end,
                "metrics": metrics_of(&m, s),
                "totals": t,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &json!({ "user_id": who.id, "periods": periods })))
}

/// `GET /usage/details`: per-event usage records are not kept (the counters are by month), so
/// 422 `usage_details_unavailable` rather than an empty list that reads as "nothing happened".
pub async fn details(who: Principal) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "usage_details_unavailable",
        "this server keeps usage as monthly counters, not per-event records: read /usage/history or /usage/breakdown (a run's processor calls are at /prompt-runs/{id}/llm-calls)",
    ))
}

/// `GET /usage/breakdown`: the sum of the months within `start_date..=end_date` (this month
/// without them).
pub async fn breakdown(
    State(app): State<AppState>,
    who: Principal,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let q = crate::body::Query::parse(q.as_deref())?;
    let now = month_of(app.rt.now_ms());
    let from = month_param(q.get("start_date"), "start_date")?;
    let to = month_param(q.get("end_date"), "end_date")?;
    let (from, to) = match (from, to) {
        (None, None) => (now, now),
        (f, t) => (f.unwrap_or(0), t.unwrap_or(now)),
    };
    if from > to {
        return Err(ApiError::validation("start_date", "is after end_date"));
    }
    let mut sum = MonthUsage::default();
    for (_, m) in months(&app).into_iter().filter(|(ym, _)| (from..=to).contains(ym)) {
        sum.video_ms_probed += m.video_ms_probed;
        sum.video_ms_processed += m.video_ms_processed;
        sum.segments_processed += m.segments_processed;
        sum.video_results += m.video_results;
        sum.processor_calls += m.processor_calls;
        sum.calls_without_token_usage += m.calls_without_token_usage;
        sum.input_tokens += m.input_tokens;
        sum.output_tokens += m.output_tokens;
        sum.videos_uploaded += m.videos_uploaded;
        sum.runs_completed += m.runs_completed;
        sum.bytes_imported += m.bytes_imported;
    }
    let s = if (from..=to).contains(&now) { searches(&app) } else { 0 };
    let start = month_bounds(from.max(197_001)).0;
    let end = month_bounds(next_month(to.min(999_912))).0;
    Ok(json(
        StatusCode::OK,
        &json!({
            "user_id": who.id,
            "period_start": rfc3339_ms(start),
            "period_end": rfc3339_ms(end),
            "breakdown": metrics_of(&sum, s),
            "totals": totals(&sum, s),
        }),
    ))
}

/// `GET /usage/metric-types`.
pub async fn metric_types(who: Principal) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let v: Vec<Value> = METRICS.iter().map(|(t, u, d)| json!({ "type": t, "unit": u, "description": d })).collect();
    Ok(json(StatusCode::OK, &Value::Array(v)))
}

fn status_json(app: &AppState, who: &Principal) -> Value {
    json!({
        "user_id": who.id,
        "plan_id": "self-hosted",
        "categories": app.cfg.limiter.status(&who.id, app.rt.now_ms()),
    })
}

/// `GET /rate-limit/status`: the caller's counts in this node's windows (`{}` without limits).
pub async fn limit_status(State(app): State<AppState>, who: Principal) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    Ok(json(StatusCode::OK, &status_json(&app, &who)))
}

/// `POST /rate-limit/refresh`: the limits read again from the configuration (counts kept),
/// then the status.
pub async fn limit_refresh(State(app): State<AppState>, who: Principal) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    if let Some(reload) = &app.cfg.reload_limits {
        match reload() {
            Ok(limits) => app.cfg.limiter.replace(limits),
            Err(e) => {
                return Err(ApiError::validation(
                    "rate_limits",
                    format!("the configuration's limits cannot be read: {e}"),
                ));
            }
        }
    }
    Ok(json(StatusCode::OK, &status_json(&app, &who)))
}
