//! The API registry: one module per machine (`routes/<machine>/`: handlers in `mod.rs`, the JSON
//! shapes in `views.rs`), and one block of routes per machine below.

mod admin;
mod api_key;
mod automation;
mod connector;
mod export;
mod import_job;
mod index;
pub(crate) mod prompt;
pub(crate) mod prompt_run;
pub(crate) mod video;
mod webhook;

use crate::error::REQUEST_ID;
use crate::{ApiError, AppState, Principal};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use spool_runtime::Reply;
use std::sync::atomic::Ordering;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/indexes", post(index::create).get(index::list))
        .route("/indexes/{index_id}", get(index::retrieve).delete(index::delete))
        .route("/indexes/{index_id}/deletion", get(index::deletion))
        .route("/indexes/{index_id}/videos", get(video::index_videos))
        .route("/import-jobs", post(import_job::create).get(import_job::list))
        .route("/import-jobs/{job_id}", get(import_job::retrieve))
        .route("/import-jobs/{job_id}/outputs", get(import_job::outputs))
        .route("/import-jobs/{job_id}/files", get(import_job::files))
        .route("/import-jobs/{job_id}/retry", post(import_job::retry))
        .route("/import-jobs/{job_id}/cancel", post(import_job::cancel))
        .route("/videos/{video_id}", get(video::video).delete(video::delete))
        .route("/videos/{video_id}/deletion", get(video::deletion))
        .route("/videos/{video_id}/segments", get(video::segments))
        .route("/videos/batch/status", post(video::batch_status))
        .route("/videos", post(video::upload::create))
        .route("/prompts", post(prompt::create).get(prompt::list))
        .route("/prompts/test-schema", post(prompt::test_schema))
        .route("/prompts/{prompt_id}", get(prompt::retrieve).put(prompt::update).delete(prompt::delete))
        .route("/prompts/{prompt_id}/usage", get(prompt::usage))
        .route("/videos/upload", post(video::upload::upload).layer(axum::extract::DefaultBodyLimit::disable()))
        .route("/videos/signed-url", post(video::media::signed_url))
        .route("/videos/batch", post(video::media::batch))
        .route("/videos/batch/segments", post(video::media::batch_segments))
        .route("/playground/videos", get(video::playground))
        .route("/indexes/{index_id}/prompt-runs", get(prompt_run::index_runs))
        .route("/prompt-runs", get(prompt_run::list))
        .route("/prompt-runs/execute", post(prompt_run::execute))
        .route("/prompt-runs/estimate", post(prompt_run::estimate))
        .route("/prompt-runs/{run_id}", get(prompt_run::retrieve))
        .route("/prompt-runs/{run_id}/cancel", post(prompt_run::cancel))
        .route("/prompt-runs/{run_id}/results", get(prompt_run::results))
        .route("/prompt-runs/{run_id}/failed-segments", get(prompt_run::failed_segments))
        .route("/prompt-runs/{run_id}/llm-calls", get(prompt_run::llm_calls))
        .route("/prompt-runs/{run_id}/videos/{video_id}/video-result", get(prompt_run::video_result))
        .route("/prompt-runs/{run_id}/videos/{video_id}/segments/{segment_id}/retry", post(prompt_run::retry_segment))
        .route(
            "/prompt-runs/{run_id}/videos/{video_id}/segments/{segment_id}/retries/{retry_id}",
            get(prompt_run::retry_status),
        )
        .route("/videos/{video_id}/process", post(prompt_run::process_video))
        .route("/videos/{video_id}/prompt-runs", get(prompt_run::video_runs))
        .route("/indexes/{index_id}/automations/import", get(automation::get_import).put(automation::put_import))
        .route("/indexes/{index_id}/automations/import/pause", post(automation::pause_import))
        .route("/indexes/{index_id}/automations/import/resume", post(automation::resume_import))
        .route("/indexes/{index_id}/automations/export", get(automation::get_export).put(automation::put_export))
        .route("/indexes/{index_id}/automations/export/pause", post(automation::pause_export))
        .route("/indexes/{index_id}/automations/export/resume", post(automation::resume_export))
        .route("/exports", get(export::list))
        .route("/exports/index/{index_id}", post(export::create_index))
        .route("/exports/prompt-run/{run_id}", post(export::create_run))
        .route("/exports/{export_id}", get(export::retrieve))
        .route("/exports/{export_id}/download-url", post(export::download_url))
        .route("/exports/{export_id}/download", get(export::download))
        .route("/api-keys", post(api_key::create).get(api_key::list))
        .route("/api-keys/{key_id}", get(api_key::retrieve).delete(api_key::delete))
        .route("/api-keys/{key_id}/revoke", post(api_key::revoke))
        .route("/api-keys/{key_id}/rotate", post(api_key::rotate))
        .route("/auth/processing-activity", post(processing_activity))
        .route("/admin/test-clock/advance", post(advance_test_clock))
        .route("/admin/log", get(admin::log))
        .route("/admin/log/tail", get(admin::tail))
        .route("/admin/streams/{stream}", get(admin::stream))
        .route("/admin/bundles/{id}", get(admin::bundle))
        .route("/connectors", get(connector::list))
        .route("/connectors/s3", post(connector::create_s3))
        .route("/connectors/local", post(connector::create_local))
        .route("/connectors/azure", post(connector::create_azure))
        .route("/connectors/gcs", post(connector::create_gcs))
        .route("/connectors/{connector_id}", get(connector::retrieve).patch(connector::patch).delete(connector::delete))
        .route("/connectors/{connector_id}/test", post(connector::test))
        .route("/connectors/{connector_id}/browse", post(connector::browse))
        .route("/webhooks", post(webhook::create).get(webhook::list))
        .route("/webhooks/events", get(webhook::events))
        .route("/webhooks/deliveries/{delivery_id}", get(webhook::delivery))
        .route("/webhooks/deliveries/{delivery_id}/retry", post(webhook::retry))
        .route("/webhooks/{webhook_id}", get(webhook::retrieve).patch(webhook::patch).delete(webhook::delete))
        .route("/webhooks/{webhook_id}/rotate-secret", post(webhook::rotate))
        .route("/webhooks/{webhook_id}/test", post(webhook::test))
        .route("/webhooks/{webhook_id}/deliveries", get(webhook::deliveries))
        .route("/webhooks/{webhook_id}/deliveries/retry", post(webhook::bulk_retry));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/media/{*path}", get(video::media::serve))
        .route("/metrics", get(metrics))
        .nest("/api/v2", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Inside the request scope, so a panic's answer and its log line carry the request id.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(state.clone(), request_scope))
        .with_state(state)
}

/// Gives every request an id (for error envelopes and the `X-Request-Id` header), counts
/// responses and logs one line per request (never headers or bodies: they may hold secrets).
async fn request_scope(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let id = spool_model::RequestId(app.rt.new_ulid()).to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = if path.starts_with("/api/") && !app.rt.is_ready() {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the server is starting or stopping; retry shortly",
        );
        e.retry_after = Some(1);
        REQUEST_ID.scope(id.clone(), async move { e.into_response() }).await
    } else {
        REQUEST_ID.scope(id.clone(), next.run(req)).await
    };
    let status = resp.status().as_u16();
    let class = match status {
        200..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        _ => 3,
    };
    app.responses[class].fetch_add(1, Ordering::Relaxed);
    if let Ok(v) = id.parse() {
        resp.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(target: "spool::http", %method, %path, status, request_id = %id, "request");
    resp
}

/// A handler panicked: answer 500 in the envelope (the connection stays, the server serves on)
/// and log the panic with the request id.
fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = spool_runtime::panic_message(payload.as_ref());
    let request_id = crate::error::current_request_id();
    tracing::error!(target: "spool::http", %request_id, panic = %what, "a request handler panicked");
    ApiError::internal("the server failed while handling this request; it is logged with this request id")
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take this method")
}

async fn healthz(State(app): State<AppState>) -> Response {
    if app.rt.is_ready() {
        (StatusCode::OK, axum::Json(serde_json::json!({ "status": "ok", "applied_seq": app.rt.applied_seq() })))
            .into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "status": "starting" }))).into_response()
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render(&app)).into_response()
}

/// `POST /auth/processing-activity`: the SDK's ping before processing calls and
/// `client.authenticate()`. Any valid key may send it.
/// The body is read (and ignored) before answering: answering first would leave its bytes on
/// the connection, which is then closed under the client's next request.
async fn processing_activity(_who: Principal, _body: axum::body::Bytes) -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": "ready" }))
}

/// `POST /admin/test-clock/advance {"ms": N}` (admin): move the engine's clock forward, when
/// `serve` runs on a controllable clock (`SPOOL_TEST_CLOCK_MS`, debug builds only: tests drive
/// timers with it instead of sleeping). On the wall clock: 404.
async fn advance_test_clock(
    State(app): State<AppState>,
    who: Principal,
    body: axum::body::Bytes,
) -> Result<Response, crate::ApiError> {
    who.require(spool_model::Scope::Admin)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Advance {
        ms: u64,
    }
    let a: Advance = serde_json::from_slice(&body)
        .map_err(|e| crate::ApiError::validation("ms", format!("expected {{\"ms\": <milliseconds>}}: {e}")))?;
    if !app.rt.clock().advance_by(a.ms) {
        return Err(crate::ApiError::new(StatusCode::NOT_FOUND, "not_found", "this server runs on the wall clock"));
    }
    let now = app.rt.clock().now_ms();
    Ok(json(StatusCode::OK, &serde_json::json!({ "now_ms": now, "now": spool_model::time::rfc3339_ms(now) })))
}

/// A read of one aggregate: the id parsed (a malformed id is 404, like an unknown one), its view
/// read from the state, 404 `resource_<kind>_not_found` when there is none.
pub(crate) fn show<I: std::str::FromStr>(
    app: &AppState,
    kind: &str,
    raw: &str,
    view: impl FnOnce(&spool_core::State, I) -> Option<serde_json::Value>,
) -> Result<Response, crate::ApiError> {
    let id: I = raw.parse().map_err(|_| crate::ApiError::not_found(kind, raw))?;
    let v = app.rt.read(|st| view(st, id)).ok_or_else(|| crate::ApiError::not_found(kind, raw))?;
    Ok(json(StatusCode::OK, &v))
}

pub(crate) fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(v).unwrap_or_default()).into_response()
}

/// Run a command: replayed or refused by its `Idempotency-Key` when it has one, else executed;
/// the answer is rendered from the state the command leads to.
pub(crate) async fn run_command(
    app: &AppState,
    cmd: impl Into<spool_runtime::Work>,
    idem: Option<spool_runtime::IdemKey>,
    side: Vec<spool_log::SideWrite>,
    render: impl FnOnce(&spool_core::State, spool_core::Outcome) -> Reply + Send + 'static,
) -> Result<Response, ApiError> {
    let r = match idem {
        Some(k) => app.rt.execute_idempotent(cmd, &k, side, render).await?,
        None => app.rt.execute_with(cmd, None, side, render).await?.0,
    };
    Ok(reply(r))
}

pub(crate) fn reply(r: Reply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    (status, [(header::CONTENT_TYPE, "application/json")], r.body).into_response()
}

/// The answer showing the aggregate a command led to. The preview always holds it, so `None`
/// is a bug, answered 500 rather than a panic.
pub(crate) fn view_reply(status: StatusCode, view: Option<serde_json::Value>) -> Reply {
    match view {
        Some(v) => to_reply(status, &v),
        None => to_reply(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({})),
    }
}

/// A bare JSON array of `(created_at_ms, id, view)` items, oldest first (ties by id).
pub(crate) fn oldest_first(mut items: Vec<(u64, String, serde_json::Value)>) -> Response {
    items.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    json(StatusCode::OK, &serde_json::Value::Array(items.into_iter().map(|(_, _, v)| v).collect()))
}

pub(crate) fn to_reply(status: StatusCode, v: &serde_json::Value) -> Reply {
    Reply { status: status.as_u16(), body: serde_json::to_vec(v).unwrap_or_default() }
}
