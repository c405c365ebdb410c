//! A node of a cluster on a PostgreSQL log (`engine-spec/cluster.md`, "Any node answers"):
//! it answers every request, serving it itself while it holds the partition and forwarding it to
//! the holder (the address the holder advertised in `spool_nodes`) while it does not.
//!
//! One hop only: a request that was already forwarded (`x-spool-forwarded-by`) and reaches a
//! node that does not hold the partition is answered 503 `partition_moved` with `Retry-After`,
//! never forwarded again. A holder that cannot be reached is answered 503 `holder_unreachable`
//! (the client retries; the next request looks the holder up again). Bodies stream through in
//! both directions: uploads, downloads and the log's event stream are never held in memory.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use spool_log::{Directory, Holder};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// The header a forwarding node adds (its node id): the holder never forwards such a request.
pub const FORWARDED_BY: &str = "x-spool-forwarded-by";
/// How long a looked-up holder is trusted before it is looked up again.
const HOLDER_CACHE: Duration = Duration::from_millis(500);
/// The partition every request belongs to (one partition today; `cluster.md`).
const PARTITION: i32 = 0;

pub struct Node {
    pub node_id: String,
    dir: Arc<Directory>,
    /// The API, once this node holds the partition.
    local: RwLock<Option<axum::Router>>,
    client: reqwest::Client,
    holder: tokio::sync::Mutex<Option<(Holder, Instant)>>,
}

impl Node {
    pub fn new(node_id: String, dir: Arc<Directory>) -> anyhow::Result<Arc<Node>> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Arc::new(Node { node_id, dir, local: RwLock::new(None), client, holder: Default::default() }))
    }

    /// This node now holds the partition: it serves every request itself.
    pub fn install(&self, app: axum::Router) {
        *self.local.write().unwrap_or_else(|p| p.into_inner()) = Some(app);
    }

    fn local(&self) -> Option<axum::Router> {
        self.local.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn holder(&self) -> Result<Option<Holder>, spool_log::Error> {
        let mut cached = self.holder.lock().await;
        if let Some((h, at)) = cached.as_ref()
            && at.elapsed() < HOLDER_CACHE
        {
            return Ok(Some(h.clone()));
        }
        let h = self.dir.holder(PARTITION).await?;
        *cached = h.clone().map(|h| (h, Instant::now()));
        Ok(h)
    }

    async fn forget_holder(&self) {
        *self.holder.lock().await = None;
    }

    /// `/healthz` of a node that does not hold the partition: 200 while a live holder is known
    /// (requests are forwarded to it), 503 otherwise.
    async fn health(&self) -> Response {
        match self.holder().await {
            Ok(Some(h)) if h.lease_expires_in_ms > 0 && h.node_id != self.node_id => (
                StatusCode::OK,
                axum::Json(serde_json::json!({
                    "status": "ok", "role": "forwarding", "node_id": self.node_id, "holder": h.node_id,
                })),
            )
                .into_response(),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "status": "no_holder", "role": "forwarding", "node_id": self.node_id })),
            )
                .into_response(),
        }
    }

    async fn forward(&self, req: Request) -> Response {
        if req.headers().contains_key(FORWARDED_BY) {
            return unavailable(
                "partition_moved",
                "this node no longer holds the partition this request was forwarded for; retry",
            );
        }
        let holder = match self.holder().await {
            Ok(Some(h)) => h,
            Ok(None) => return unavailable("no_holder", "no node holds the log's partition yet; retry shortly"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up the partition's holder");
                return unavailable("cluster_unavailable", "the cluster's database cannot be reached; retry shortly");
            }
        };
        if holder.node_id == self.node_id {
            // This node took the partition and is still opening it.
            return unavailable("not_ready", "the server is starting or stopping; retry shortly");
        }
        let Some(base) = holder.advertise_url.clone() else {
            return unavailable("holder_unreachable", "the partition's holder has not said where it is reached; retry");
        };
        let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let (parts, body) = req.into_parts();
        let mut headers = HeaderMap::with_capacity(parts.headers.len() + 1);
        for (name, value) in &parts.headers {
            if !hop_by_hop(name) && name != header::HOST {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(&self.node_id) {
            headers.insert(HeaderName::from_static(FORWARDED_BY), v);
        }
        let sent = self
            .client
            .request(parts.method, url)
            .headers(headers)
            .body(reqwest::Body::wrap_stream(body.into_data_stream()))
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let mut out = Response::builder().status(resp.status().as_u16());
                if let Some(h) = out.headers_mut() {
                    for (name, value) in resp.headers() {
                        if !hop_by_hop(name) {
                            h.append(name.clone(), value.clone());
                        }
                    }
                }
                out.body(Body::from_stream(resp.bytes_stream())).unwrap_or_else(|_| {
                    unavailable("holder_unreachable", "the partition's holder answered something unreadable")
                })
            }
            Err(e) => {
                self.forget_holder().await;
                tracing::warn!(holder = %holder.node_id, error = %e, "forwarding to the partition's holder failed");
                unavailable(
                    "holder_unreachable",
                    "the node holding the log's partition could not be reached; retry (another node takes it over when its lease ends)",
                )
            }
        }
    }
}

/// Headers of one connection, not of the request (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// 503 in the contract's envelope, with `Retry-After: 1`.
fn unavailable(code: &str, message: &str) -> Response {
    let request_id = spool_model::RequestId(ulid::Ulid::new()).to_string();
    let mut resp = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "error": { "code": code, "message": message, "details": {}, "request_id": request_id }
        })),
    )
        .into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The node's whole HTTP surface: the API when it holds the partition, forwarding otherwise.
pub fn router(node: Arc<Node>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(node)
}

async fn dispatch(State(node): State<Arc<Node>>, req: Request) -> Response {
    if let Some(app) = node.local() {
        return match app.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
    }
    if req.uri().path() == "/healthz" {
        return node.health().await;
    }
    node.forward(req).await
}
