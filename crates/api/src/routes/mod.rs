//! The API registry: one module per machine (`routes/<machine>/`: handlers in `mod.rs`, the JSON
//! shapes in `views.rs`), and one block of routes per machine below.

mod admin;
pub(crate) mod console;
pub(crate) mod search;
pub(crate) mod usage;
pub(crate) mod workflow;

/// One module per machine of the registry (`routes/<machine>/`), declared from the registry.
macro_rules! machine_modules {
    ($($module:ident $Var:ident),* $(,)?) => {
        $(pub(crate) mod $module;)*
    };
}
spool_core::for_each_machine!(machine_modules);

use crate::error::REQUEST_ID;
use crate::openapi::{Body, Doc, Q, QKind, Resp, q};
use crate::{ApiError, AppState, Principal};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use spool_runtime::Reply;
use std::sync::atomic::Ordering;

/// One `/api/v2` route: its handler and its description (`crate::openapi`).
pub(crate) struct Op {
    pub doc: Doc,
    pub route: axum::routing::MethodRouter<AppState>,
}

/// `op!(method "/path" handler, "operationId", "tag", response, field = value…)`: the method
/// names both the router's method and the description's, so they cannot disagree.
macro_rules! op {
    ($m:ident $path:literal $h:expr, $id:literal, $tag:literal, $resp:expr $(, $field:ident = $val:expr)* $(,)?) => {
        $crate::routes::Op {
            doc: $crate::openapi::Doc { tag: $tag, resp: $resp, $($field: const { $val },)* ..$crate::openapi::Doc::new(stringify!($m), $path, $id) },
            route: axum::routing::$m($h),
        }
    };
}

pub(crate) use op;

/// What a machine's `ops()` uses to describe its routes.
mod ops_prelude {
    pub(crate) use super::{CURSOR, LIMIT_100, LIMIT_1000, Op, json_body, op, optional_body};
    pub(crate) use crate::openapi::{Body, QKind, Resp, q};
}

pub(crate) const LIMIT_100: Q = q("limit", QKind::Int(1, 100));
pub(crate) const LIMIT_1000: Q = q("limit", QKind::Int(1, 1000));
pub(crate) const CURSOR: Q = q("cursor", QKind::Str);

pub(crate) const fn json_body(schema: &'static str) -> Body {
    Body::Json { schema, required: true }
}

pub(crate) const fn optional_body(schema: &'static str) -> Body {
    Body::Json { schema, required: false }
}

macro_rules! machine_ops {
    ($($module:ident $Var:ident),* $(,)?) => {
        /// Every `/api/v2` route: each machine's (`routes/<machine>/mod.rs` `ops()`, in the
        /// registry's order, `spool_core::for_each_machine!`), then the engine's own.
        pub(crate) fn api_ops() -> Vec<Op> {
            let mut ops = Vec::new();
            $(ops.extend($module::ops());)*
            ops.extend(search::ops());
            ops.extend(workflow::ops());
            ops.extend(usage::ops());
            ops.extend(console::ops());
            ops.extend(engine_ops());
            ops
        }
    };
}
spool_core::for_each_machine!(machine_ops);

/// The routes of the engine, not of one machine: the SDK's ping, the test clock, the log, the
/// description.
fn engine_ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(post "/auth/processing-activity" processing_activity, "processingActivity", "auth", Local("Ready"), body = optional_body("AnyBody")),
        op!(post "/admin/test-clock/advance" advance_test_clock, "advanceTestClock", "admin", Local("ClockNow"), body = json_body("ClockAdvance")),
        op!(get "/admin/log" admin::log, "readLog", "admin", Local("LogPage"), query = &[q("from", QKind::Int(0, u32::MAX as u64)), LIMIT_1000]),
        op!(get "/admin/log/tail" admin::tail, "tailLog", "admin", Events, query = &[q("from", QKind::Int(0, u32::MAX as u64))]),
        op!(get "/admin/streams/{stream}" admin::stream, "readStream", "admin", Local("LogPage"),
            query = &[q("from_version", QKind::Int(0, u32::MAX as u64)), LIMIT_1000, q("brief", QKind::Bool)]),
        op!(get "/admin/bundles/{id}" admin::bundle, "readBundle", "admin", NdJson),
        op!(get "/admin/replay/{stream}" admin::replay, "replayStream", "admin", Local("Object"),
            query = &[q("until", QKind::Int(1, u32::MAX as u64))]),
        op!(get "/admin/cluster" admin::cluster, "getClusterStatus", "admin", Local("Object")),
        op!(get "/openapi.json" openapi_json, "getOpenApi", "meta", Local("Object"), public = true),
    ]
}

/// The description of [`api_ops`] (`crate::openapi`).
pub fn openapi() -> serde_json::Value {
    let docs: Vec<Doc> = api_ops().into_iter().map(|o| o.doc).collect();
    crate::openapi::document(&docs)
}

/// `GET /api/v2/openapi.json`: no key needed.
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| serde_json::to_vec_pretty(&openapi()).unwrap_or_default());
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}

pub fn router(state: AppState) -> Router {
    let mut api = Router::new();
    for op in api_ops() {
        api = api.route(op.doc.path, op.route);
    }
    Router::new()
        .route("/healthz", get(healthz))
        .route("/media/{*path}", get(video::media::serve))
        .route("/metrics", get(metrics))
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/{file}", get(console::asset))
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
        let mut body = serde_json::json!({ "status": "ok", "applied_seq": app.rt.applied_seq() });
        // On a shared log: this node holds the partition (a node that does not forwards, and
        // answers `/healthz` itself with `"role": "forwarding"`).
        if let Some(node) = app.rt.node_id() {
            body["role"] = "holder".into();
            body["node_id"] = node.into();
        }
        (StatusCode::OK, axum::Json(body)).into_response()
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

/// The immutable facts of videos, read from the `videos` table for one answer.
pub(crate) type VideoRows = std::collections::BTreeMap<spool_model::VideoId, std::sync::Arc<spool_core::VideoRow>>;

/// Answer from the read state and the rows of the videos `pick` names in it
/// (`engine-spec/tables.md`): the ids under the read lock, their rows from the table off it, then
/// the answer under the lock again (a video gone meanwhile is left out by `answer`'s lookups).
pub(crate) fn with_video_rows<R>(
    app: &AppState,
    pick: impl FnOnce(&spool_core::State) -> Vec<spool_model::VideoId>,
    answer: impl FnOnce(&spool_core::State, &VideoRows) -> R,
) -> Result<R, crate::ApiError> {
    let ids = app.rt.read(pick);
    let rows = app.rt.video_rows(ids)?;
    Ok(app.rt.read(|st| answer(st, &rows)))
}

/// The video of a row read for an answer, when it is visible (no deletion started, in a live
/// index or the playground).
pub(crate) fn shown(
    st: &spool_core::State,
    rows: &VideoRows,
    id: &spool_model::VideoId,
) -> Option<(spool_core::Video, std::sync::Arc<spool_core::VideoRow>)> {
    let row = rows.get(id)?;
    let v = st.video_of(*id, row);
    v.visible(st).then(|| (v, row.clone()))
}

/// Whether a video is visible: its row read from the table, then the read state.
pub(crate) fn video_visible(app: &AppState, id: &spool_model::VideoId) -> Result<bool, crate::ApiError> {
    let rows = app.rt.video_rows([*id])?;
    Ok(app.rt.read(|st| shown(st, &rows, id).is_some()))
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
        // The resource the command named is not in the state it led to: answered in the
        // envelope like every other error (it once was a bare `{}`).
        None => to_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({ "error": {
                "code": "internal_error",
                "message": "the answer could not be rendered; see the server log",
                "details": {},
                "request_id": crate::error::current_request_id(),
            }}),
        ),
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
