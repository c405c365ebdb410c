//! A node of a cluster on a PostgreSQL log (`engine-spec/cluster.md`, "Any node answers"):
//! it answers every request, serving it itself when it holds the request's partition
//! (`routing.rs`) and forwarding it to the holder (the address the holder advertised in
//! `spool_nodes`) when it does not. A list over every index partition is gathered here.
//!
//! One hop only: a request that was already forwarded (`x-spool-forwarded-by`) and reaches a
//! node that does not hold the partition is answered 503 `partition_moved` with `Retry-After`,
//! never forwarded again. A holder that cannot be reached is answered 503 `holder_unreachable`
//! (the client retries; the next request looks the holder up again). Bodies stream through in
//! both directions: uploads, downloads and the log's event stream are never held in memory.

use crate::routing::{self, Gathered, Route};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use spool_log::{Directory, Holder};
use spool_runtime::Clock;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// The header a forwarding node adds (its node id): the holder never forwards such a request.
pub const FORWARDED_BY: &str = "x-spool-forwarded-by";
/// The partition a request is for, set by the node that routed it (a forwarded request, or one
/// part of a gathered list): the receiver serves that partition without routing again.
pub const PARTITION: &str = "x-spool-partition";
/// On an answer of the catalog of a partitioned cluster, between nodes: the catalog's applied
/// sequence number once it answered (what index partitions must have followed for a change of
/// a key, connector or prompt to hold there). Never sent to a client.
pub const CATALOG_SEQ: &str = "x-spool-catalog-seq";
/// How long a change of a key, connector or prompt waits for every index partition to follow
/// it before it is answered anyway (they then follow it within their next look, 200 ms).
pub const FOLLOW_BARRIER: Duration = Duration::from_secs(2);
/// A request one node makes of another (`POST /internal/catch-up`): `<ms>.<hex HMAC>` of what it
/// asks, under the cluster's master key; refused when the signature is wrong or over a minute
/// old or ahead.
pub const INTERNAL_SIG: &str = "x-spool-internal";
/// How far a signed request's time may be from the receiver's.
const INTERNAL_SKEW_MS: u64 = 60_000;
/// Catch-ups one node runs at once for others (more are answered 503).
const CATCH_UPS_AT_ONCE: usize = 8;
/// How long looked-up holders are trusted before they are looked up again.
const HOLDER_CACHE: Duration = Duration::from_millis(500);

/// A partition this node holds: its API and its runtime.
#[derive(Clone)]
pub struct Held {
    pub app: axum::Router,
    pub runtime: Arc<spool_runtime::Runtime>,
}

pub struct Node {
    pub node_id: String,
    dir: Arc<Directory>,
    /// The cluster's index partitions (0: one partition holds everything).
    pub partitions: u16,
    /// The partitions this node holds.
    local: RwLock<BTreeMap<i32, Held>>,
    client: reqwest::Client,
    holders: tokio::sync::Mutex<Option<(BTreeMap<i32, Holder>, Instant)>>,
    /// The cluster's master key: it signs the requests the nodes make of each other
    /// ([`INTERNAL_SIG`]), which only a node of the cluster can make.
    master: spool_runtime::MasterKey,
    /// Catch-ups asked of this node at once, at most.
    catch_ups: tokio::sync::Semaphore,
}

impl Node {
    pub fn new(
        node_id: String,
        dir: Arc<Directory>,
        partitions: u16,
        master: spool_runtime::MasterKey,
    ) -> anyhow::Result<Arc<Node>> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Arc::new(Node {
            node_id,
            dir,
            partitions,
            local: RwLock::new(BTreeMap::new()),
            client,
            holders: Default::default(),
            master,
            catch_ups: tokio::sync::Semaphore::new(CATCH_UPS_AT_ONCE),
        }))
    }

    /// This node now holds `partition`: it serves its requests itself.
    pub fn install(&self, partition: i32, held: Held) {
        self.local.write().unwrap_or_else(|p| p.into_inner()).insert(partition, held);
    }

    /// This node no longer serves `partition` (lost, or being handed over).
    pub fn remove(&self, partition: i32) -> Option<Held> {
        self.local.write().unwrap_or_else(|p| p.into_inner()).remove(&partition)
    }

    /// The partitions this node holds, with their runtimes.
    pub fn held(&self) -> Vec<(i32, Held)> {
        self.local.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(p, h)| (*p, h.clone())).collect()
    }

    /// Whether this node holds every partition (a cluster of one partition that it holds):
    /// then the API itself answers everything.
    fn serves_locally(&self, _req: &Request) -> bool {
        self.partitions == 0 && self.local(0).is_some()
    }

    fn local(&self, partition: i32) -> Option<axum::Router> {
        self.local.read().unwrap_or_else(|p| p.into_inner()).get(&partition).map(|h| h.app.clone())
    }

    async fn holder(&self, partition: i32) -> Result<Option<Holder>, spool_log::Error> {
        let mut cached = self.holders.lock().await;
        if let Some((h, at)) = cached.as_ref()
            && at.elapsed() < HOLDER_CACHE
        {
            return Ok(h.get(&partition).cloned());
        }
        let all: BTreeMap<i32, Holder> =
            self.dir.holders().await?.into_iter().filter_map(|(p, h)| h.map(|h| (p, h))).collect();
        let h = all.get(&partition).cloned();
        *cached = Some((all, Instant::now()));
        Ok(h)
    }

    async fn forget_holders(&self) {
        *self.holders.lock().await = None;
    }

    /// `/healthz` of a node. With one partition and not holding it: 200 while a live holder is
    /// known (requests are forwarded to it), 503 otherwise. Partitioned: 200 with the
    /// partitions this node holds.
    async fn health(&self) -> Response {
        if self.partitions > 0 {
            // Ready when every partition of the cluster has a live holder (this node's
            // requests can all be served); the partitions it holds either way.
            let held: Vec<i32> = self.held().into_iter().map(|(p, _)| p).collect();
            let unserved: Vec<i32> = match self.dir.holders().await {
                Ok(all) => all
                    .into_iter()
                    .filter(|(_, h)| h.as_ref().is_none_or(|h| h.lease_expires_in_ms <= 0))
                    .map(|(p, _)| p)
                    .collect(),
                Err(_) => (0..=i32::from(self.partitions)).collect(),
            };
            let status = if unserved.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            return (
                status,
                axum::Json(serde_json::json!({
                    "status": if unserved.is_empty() { "ok" } else { "partitions_unserved" },
                    "role": "node", "node_id": self.node_id,
                    "partitions": self.partitions, "held": held, "unserved": unserved,
                })),
            )
                .into_response();
        }
        match self.holder(0).await {
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

    /// Serve `req` for `partition`: here when this node holds it, else at its holder.
    async fn serve(&self, partition: i32, req: Request) -> Response {
        let held = self.local.read().unwrap_or_else(|p| p.into_inner()).get(&partition).cloned();
        let Some(held) = held else {
            // A read whose partition is moving is asked again (a holder handing it over, a new
            // one opening it), up to three times, before the client hears 503.
            if matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD)
                && !req.headers().contains_key(FORWARDED_BY)
            {
                let (mut parts, _) = req.into_parts();
                parts.headers.remove(header::CONTENT_LENGTH);
                parts.headers.remove(header::TRANSFER_ENCODING);
                for _ in 0..FORWARD_TRIES - 1 {
                    let resp = self.forward(partition, Request::from_parts(parts.clone(), Body::empty())).await;
                    if !resp.headers().contains_key(MOVING) {
                        return resp;
                    }
                    self.forget_holders().await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if self.local(partition).is_some() {
                        return Box::pin(self.serve(partition, Request::from_parts(parts, Body::empty()))).await;
                    }
                }
                return self.forward(partition, Request::from_parts(parts, Body::empty())).await;
            }
            return self.forward(partition, req).await;
        };
        if partition == 0 {
            let mut resp = answer(held.app, req).await;
            if self.partitions > 0 {
                resp.headers_mut()
                    .insert(HeaderName::from_static(CATALOG_SEQ), HeaderValue::from(held.runtime.applied_seq()));
            }
            return resp;
        }
        if !small_body(&req) {
            return answer(held.app, req).await;
        }
        // An index partition answers from its copy of the catalog, which follows the catalog
        // every 200 ms: a key, connector or prompt it does not know yet may have just been made.
        // It reads the catalog at once and is asked again (the body is kept for that).
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, routing::ROUTED_BODY_BYTES_MAX).await else {
            return too_large();
        };
        let again = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
        let first = answer(held.app.clone(), Request::from_parts(parts, Body::from(bytes))).await;
        let (first, unknown) = names_unknown_catalog_fact(first).await;
        if unknown {
            // Asked again whether or not this catch-up folded anything: the partition's
            // follower may have folded the fact between the first answer and the catch-up,
            // which then finds nothing new (a key used at once was refused so, now and then).
            held.runtime.catch_up_catalog().await;
            return answer(held.app, again).await;
        }
        first
    }

    async fn forward(&self, partition: i32, req: Request) -> Response {
        if req.headers().contains_key(FORWARDED_BY) {
            return unavailable(
                "partition_moved",
                "this node no longer holds the partition this request was forwarded for; retry",
            );
        }
        let holder = match self.holder(partition).await {
            Ok(Some(h)) => h,
            Ok(None) => return unavailable("no_holder", "no node holds this request's partition yet; retry shortly"),
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
        let mut headers = HeaderMap::with_capacity(parts.headers.len() + 2);
        // `Host` stays the client's: the holder builds the URLs it answers (signed media) from it.
        for (name, value) in &parts.headers {
            if !hop_by_hop(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(&self.node_id) {
            headers.insert(HeaderName::from_static(FORWARDED_BY), v);
        }
        if self.partitions > 0 {
            headers.insert(HeaderName::from_static(PARTITION), HeaderValue::from(partition));
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
                self.forget_holders().await;
                tracing::warn!(holder = %holder.node_id, error = %e, "forwarding to the partition's holder failed");
                unavailable(
                    "holder_unreachable",
                    "the node holding this request's partition could not be reached; retry (another node takes it over when its lease ends)",
                )
            }
        }
    }

    /// After a change of a key, connector or prompt in the catalog (at `seq`): every index
    /// partition catches up with the catalog through `seq` (here, or at its holder through
    /// `POST /internal/catch-up`), all at once, for at most [`FOLLOW_BARRIER`]. So once the
    /// change is answered, a revoked key, a deleted connector or prompt is refused everywhere.
    async fn follow_barrier(&self, seq: u64) {
        let one = |p: i32| async move {
            if let Some(held) = self.local(p).and_then(|_| self.held_runtime(p)) {
                return held.catch_up_catalog_to(seq, FOLLOW_BARRIER).await;
            }
            let now = spool_runtime::SystemClock.now_ms();
            let req = Request::builder()
                .method(axum::http::Method::POST)
                .uri(format!("{CATCH_UP_PATH}?to={seq}"))
                .header(INTERNAL_SIG, self.sign(p, seq, now))
                .body(Body::empty());
            match req {
                Ok(req) => self.forward(p, req).await.status() == StatusCode::NO_CONTENT,
                Err(_) => false,
            }
        };
        let all = futures::future::join_all((1..=i32::from(self.partitions)).map(one));
        match tokio::time::timeout(FOLLOW_BARRIER + Duration::from_millis(500), all).await {
            Ok(done) if done.iter().all(|ok| *ok) => {}
            _ => tracing::warn!(seq, "not every index partition followed a catalog change in time"),
        }
    }

    /// The signature of a catch-up of `partition` through `seq` asked at `now_ms`.
    fn sign(&self, partition: i32, seq: u64, now_ms: u64) -> String {
        let mac = self.master.mac("internal", format!("catch-up {partition} {seq} {now_ms}").as_bytes());
        format!("{now_ms}.{}", hex::encode(mac))
    }

    /// Whether a catch-up request was signed by a node of this cluster, within the allowed skew.
    fn signed(&self, headers: &HeaderMap, partition: i32, seq: u64) -> bool {
        let Some((ms, _)) = headers.get(INTERNAL_SIG).and_then(|v| v.to_str().ok()).and_then(|v| v.split_once('.'))
        else {
            return false;
        };
        let Ok(ms) = ms.parse::<u64>() else { return false };
        if spool_runtime::SystemClock.now_ms().abs_diff(ms) > INTERNAL_SKEW_MS {
            return false;
        }
        let want = self.sign(partition, seq, ms);
        let got = headers.get(INTERNAL_SIG).map(|v| v.as_bytes()).unwrap_or_default();
        want.len() == got.len() && want.bytes().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    fn held_runtime(&self, partition: i32) -> Option<Arc<spool_runtime::Runtime>> {
        self.local.read().unwrap_or_else(|p| p.into_inner()).get(&partition).map(|h| h.runtime.clone())
    }

    /// `POST /internal/catch-up?to=SEQ` from another node (its barrier): this node's index
    /// partition catches up with the catalog. 204 when it did, 503 otherwise.
    async fn catch_up(&self, headers: &HeaderMap, uri: &axum::http::Uri) -> Response {
        let partition = headers.get(PARTITION).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
        let seq = uri
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("to=")))
            .and_then(|v| v.parse::<u64>().ok());
        let (Some(p), Some(seq)) = (partition, seq) else {
            return envelope(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "a catch-up names its partition and sequence number",
            );
        };
        if !self.signed(headers, p, seq) {
            return envelope(StatusCode::FORBIDDEN, "forbidden", "only the nodes of this cluster ask this");
        }
        // Waits its turn (a barrier asks for every partition this node holds at once).
        let Ok(Ok(_slot)) = tokio::time::timeout(FOLLOW_BARRIER, self.catch_ups.acquire()).await else {
            return unavailable("busy", "too many catch-ups at once; retry");
        };
        match self.held_runtime(p).filter(|_| p > 0) {
            Some(rt) if rt.catch_up_catalog_to(seq, FOLLOW_BARRIER).await => StatusCode::NO_CONTENT.into_response(),
            Some(_) => unavailable("not_ready", "the partition did not follow the catalog in time"),
            None => unavailable("partition_moved", "this node does not hold that partition"),
        }
    }

    /// Whether a run of any index partition uses the prompt: each partition's
    /// `GET /prompts/{id}/usage` (with the client's headers, so its key is checked there too).
    /// An answer other than 200 or 404 (a partition that never saw the prompt has no run of it)
    /// is the error.
    async fn prompt_in_use(&self, id: &str, headers: &HeaderMap) -> Result<bool, Response> {
        for p in 1..=i32::from(self.partitions) {
            let mut one = Request::builder().method(axum::http::Method::GET).uri(format!("/api/v2/prompts/{id}/usage"));
            if let Some(h) = one.headers_mut() {
                copy_headers(headers, h, true);
                h.insert(HeaderName::from_static(PARTITION), HeaderValue::from(p));
            }
            let Ok(one) = one.body(Body::empty()) else {
                return Err(unavailable("internal_error", "a partition's question could not be built"));
            };
            let resp = self.serve(p, one).await;
            match resp.status() {
                StatusCode::OK => {
                    let Ok(bytes) = axum::body::to_bytes(resp.into_body(), 64 << 10).await else {
                        return Err(unavailable("holder_unreachable", "a partition's answer was cut off"));
                    };
                    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    if v["is_in_use"] == true {
                        return Ok(true);
                    }
                }
                StatusCode::NOT_FOUND => {}
                _ => return Err(resp),
            }
        }
        Ok(false)
    }

    /// An index export's `prompt_run_ids`, or a run's `target.video_ids` with an `index_id`,
    /// that live in another partition than the index: one that exists there (asked with the
    /// client's headers) is not the index's, answered 422 as one partition answers it; an
    /// unknown one is left to the index's partition (404). `None`: nothing to refuse here.
    async fn named_in_other_partitions(&self, body: &[u8], headers: &HeaderMap, what: Named) -> Option<Response> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let (index, ids, route, code) = match what {
            Named::ExportRuns(index) => (index, &v["prompt_run_ids"], "prompt-runs", "prompt_run_not_in_index"),
            Named::RunVideos => {
                let index = v["target"]["index_id"].as_str()?.parse::<spool_model::IndexId>().ok()?;
                (index, &v["target"]["video_ids"], "videos", "video_not_in_index")
            }
        };
        let home = spool_model::partition_of(index.0);
        for raw in ids.as_array()?.iter().filter_map(|r| r.as_str()).take(100) {
            let id = match what {
                Named::ExportRuns(_) => raw.parse::<spool_model::PromptRunId>().ok().map(|r| r.0),
                Named::RunVideos => raw.parse::<spool_model::VideoId>().ok().map(|v| v.0),
            };
            let Some(id) = id else { continue };
            let p = spool_model::partition_of(id);
            if p == home || p > self.partitions {
                continue;
            }
            if self.exists(i32::from(p), &format!("/api/v2/{route}/{raw}"), headers).await {
                let why = match what {
                    Named::ExportRuns(_) => format!("prompt run {raw} does not belong to index {index}"),
                    Named::RunVideos => format!("video {raw} is not in index {index}"),
                };
                return Some(envelope(StatusCode::UNPROCESSABLE_ENTITY, code, &why));
            }
        }
        None
    }

    /// `POST /videos/batch`, `/videos/batch/status`, `/videos/batch/segments` naming videos of
    /// several partitions: each partition is asked for its own videos (the same body with only
    /// those), and the answers are merged in the order the request named them. The first
    /// answer that is not 200 is answered as it is. `None`: the videos are of one partition
    /// (or the body is not one to split): routed as any body.
    async fn batch_over_partitions(&self, parts: &axum::http::request::Parts, body: &[u8]) -> Option<Response> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let field = if v.get("targets").is_some() { "targets" } else { "video_ids" };
        let entries = v.get(field)?.as_array()?;
        // Past the endpoint's bound (or empty): one partition answers it, 422.
        let bound = match parts.uri.path() {
            "/api/v2/videos/batch" => spool_api::BATCH_RETRIEVE_MAX,
            "/api/v2/videos/batch/segments" => spool_api::BATCH_SEGMENTS_MAX,
            _ => spool_api::BATCH_VIDEO_IDS_MAX,
        };
        if entries.is_empty() || entries.len() > bound {
            return None;
        }
        let video_of = |e: &serde_json::Value| -> Option<String> {
            match field {
                "targets" => e["video_id"].as_str().map(str::to_string),
                _ => e.as_str().map(str::to_string),
            }
        };
        let partition_of = |e: &serde_json::Value| -> Option<u16> {
            video_of(e)
                .and_then(|id| id.parse::<spool_model::VideoId>().ok())
                .map(|id| spool_model::partition_of(id.0))
                .filter(|p| *p <= self.partitions)
        };
        // An id that names no partition goes with the first one that does (it answers it as
        // unknown, as one partition would).
        let home = entries.iter().find_map(partition_of)?;
        let mut by_partition: BTreeMap<u16, Vec<serde_json::Value>> = BTreeMap::new();
        for e in entries {
            by_partition.entry(partition_of(e).unwrap_or(home)).or_default().push(e.clone());
        }
        if by_partition.len() < 2 {
            return None;
        }
        // Each answer's place: its (video, run) target's, else its video's first.
        let run_of = |e: &serde_json::Value| e["run_id"].as_str().map(str::to_string);
        let mut first_at: std::collections::HashMap<(String, Option<String>), usize> = std::collections::HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if let Some(id) = video_of(e) {
                first_at.entry((id.clone(), run_of(e))).or_insert(i);
                first_at.entry((id, None)).or_insert(i);
            }
        }
        let mut items: Vec<serde_json::Value> = Vec::new();
        for (p, mine) in by_partition {
            let mut one_body = v.clone();
            one_body[field] = serde_json::Value::Array(mine);
            let bytes = serde_json::to_vec(&one_body).ok()?;
            let mut one = Request::builder().method(parts.method.clone()).uri(parts.uri.clone());
            if let Some(h) = one.headers_mut() {
                copy_headers(&parts.headers, h, false);
                h.insert(HeaderName::from_static(PARTITION), HeaderValue::from(p));
            }
            let one = one.body(Body::from(bytes)).ok()?;
            let resp = self.serve(i32::from(p), one).await;
            if resp.status() != StatusCode::OK {
                return Some(resp);
            }
            let Ok(got) = axum::body::to_bytes(resp.into_body(), GATHER_BYTES_MAX).await else {
                return Some(unavailable("holder_unreachable", "a partition's answer was cut off or too large"));
            };
            match serde_json::from_slice::<serde_json::Value>(&got) {
                Ok(serde_json::Value::Array(v)) => items.extend(v),
                _ => return Some(unavailable("holder_unreachable", "a partition answered something unreadable")),
            }
        }
        // In the request's order (a video named twice, in `targets`, keeps its answers' order).
        items.sort_by_key(|item| {
            let id = item["video_id"].as_str().unwrap_or_default().to_string();
            let run = item["run_id"].as_str().map(str::to_string);
            first_at.get(&(id.clone(), run)).or_else(|| first_at.get(&(id, None))).copied().unwrap_or(usize::MAX)
        });
        Some((StatusCode::OK, axum::Json(serde_json::Value::Array(items))).into_response())
    }

    /// Whether `GET path` in `partition` (with the client's headers) answers 200.
    async fn exists(&self, partition: i32, path: &str, headers: &HeaderMap) -> bool {
        let mut one = Request::builder().method(axum::http::Method::GET).uri(path);
        if let Some(h) = one.headers_mut() {
            copy_headers(headers, h, true);
        }
        match one.body(Body::empty()) {
            Ok(one) => self.serve(partition, one).await.status() == StatusCode::OK,
            Err(_) => false,
        }
    }

    /// A list over every index partition: each partition's answer to the same request (here or
    /// at its holder), merged. The first answer that is not 200 is answered as it is (an
    /// unauthorized key, a bad query, a partition without a holder).
    async fn gather(&self, what: Gathered, req: Request) -> Response {
        if what == Gathered::Usage {
            return self.gather_usage(req).await;
        }
        if what == Gathered::ConsoleOverview {
            return self.gather_overview(req).await;
        }
        if what == Gathered::ConsoleList {
            return self.gather_console_list(req).await;
        }
        if what == Gathered::Events {
            return self.gather_events(req).await;
        }
        let (parts, _) = req.into_parts();
        let mut items: Vec<serde_json::Value> = Vec::new();
        // The catalog too: a request the node could not route (an upload) made its
        // resources there.
        for p in 0..=i32::from(self.partitions) {
            let mut one = Request::builder().method(parts.method.clone()).uri(parts.uri.clone());
            if let Some(h) = one.headers_mut() {
                copy_headers(&parts.headers, h, false);
                h.insert(HeaderName::from_static(PARTITION), HeaderValue::from(p));
            }
            let Ok(one) = one.body(Body::empty()) else {
                return unavailable("internal_error", "a gathered request could not be built");
            };
            let resp = self.serve(p, one).await;
            if resp.status() != StatusCode::OK {
                return resp;
            }
            let Ok(bytes) = axum::body::to_bytes(resp.into_body(), GATHER_BYTES_MAX).await else {
                return unavailable("holder_unreachable", "a partition's answer was cut off or too large");
            };
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Array(v)) => items.extend(v),
                _ => return unavailable("holder_unreachable", "a partition answered something unreadable"),
            }
        }
        let (id, newest_first, default_limit) = what.order();
        let key =
            |v: &serde_json::Value| (v["created_at"].as_str().map(str::to_string), v[id].as_str().map(str::to_string));
        items.sort_by_key(key);
        if newest_first {
            items.reverse();
        }
        let asked = parts
            .uri
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")).and_then(|v| v.parse::<usize>().ok()));
        if let Some(limit) = asked.or(default_limit) {
            items.truncate(limit);
        }
        (StatusCode::OK, axum::Json(serde_json::Value::Array(items))).into_response()
    }
}

impl Node {
    /// The same request asked of every partition (the catalog first): their JSON answers, or
    /// the first answer that is not 200, as it is.
    async fn ask_every_partition(
        &self,
        parts: &axum::http::request::Parts,
        uri: &str,
    ) -> Result<Vec<serde_json::Value>, Response> {
        let mut out = Vec::new();
        for p in 0..=i32::from(self.partitions) {
            let mut one = Request::builder().method(parts.method.clone()).uri(uri);
            if let Some(h) = one.headers_mut() {
                copy_headers(&parts.headers, h, false);
                h.insert(HeaderName::from_static(PARTITION), HeaderValue::from(p));
            }
            let Ok(one) = one.body(Body::empty()) else {
                return Err(unavailable("internal_error", "a gathered request could not be built"));
            };
            let resp = self.serve(p, one).await;
            if resp.status() != StatusCode::OK {
                return Err(resp);
            }
            let Ok(bytes) = axum::body::to_bytes(resp.into_body(), GATHER_BYTES_MAX).await else {
                return Err(unavailable("holder_unreachable", "a partition's answer was cut off or too large"));
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                return Err(unavailable("holder_unreachable", "a partition answered something unreadable"));
            };
            out.push(v);
        }
        Ok(out)
    }

    /// `GET /console/overview` over every partition: the counts added up, the waiting gauges
    /// added up by kind and reason, the newest failures of all (`spool_api`'s bound).
    async fn gather_overview(&self, req: Request) -> Response {
        let (parts, _) = req.into_parts();
        let answers = match self.ask_every_partition(&parts, &parts.uri.to_string()).await {
            Ok(a) => a,
            Err(resp) => return resp,
        };
        let mut merged = serde_json::Map::new();
        let mut waiting: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut failures: Vec<serde_json::Value> = Vec::new();
        for a in answers {
            let Some(o) = a.as_object() else { continue };
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("waiting", serde_json::Value::Array(list)) => {
                        for w in list {
                            let key = (
                                w["kind"].as_str().unwrap_or("").to_string(),
                                w["reason"].as_str().unwrap_or("").to_string(),
                            );
                            *waiting.entry(key).or_insert(0) += w["count"].as_u64().unwrap_or(0);
                        }
                    }
                    ("failures", serde_json::Value::Array(list)) => failures.extend(list.iter().cloned()),
                    (_, serde_json::Value::Object(counts)) => {
                        let slot = merged.entry(k.clone()).or_insert_with(|| serde_json::json!({}));
                        for (status, n) in counts {
                            let sum = slot[status].as_u64().unwrap_or(0) + n.as_u64().unwrap_or(0);
                            slot[status] = serde_json::json!(sum);
                        }
                    }
                    _ => {
                        merged.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
        failures.sort_by(|a, b| b["at"].as_str().cmp(&a["at"].as_str()));
        failures.truncate(spool_api::OVERVIEW_FAILURES_MAX);
        merged.insert(
            "waiting".into(),
            waiting
                .into_iter()
                .map(|((kind, reason), count)| serde_json::json!({"kind": kind, "reason": reason, "count": count}))
                .collect(),
        );
        merged.insert("failures".into(), serde_json::Value::Array(failures));
        (StatusCode::OK, axum::Json(serde_json::Value::Object(merged))).into_response()
    }

    /// `GET /console/lists/{kind}` over every partition: their pages merged newest first by
    /// their items' cursors. A partition that stopped early (its page full, or its scan
    /// bounded) stopped at its cursor: nothing older than the newest such cursor is answered
    /// (the next page, from that cursor, reads it), so no item is skipped or answered twice.
    async fn gather_console_list(&self, req: Request) -> Response {
        let (parts, _) = req.into_parts();
        let answers = match self.ask_every_partition(&parts, &parts.uri.to_string()).await {
            Ok(a) => a,
            Err(resp) => return resp,
        };
        let limit = parts
            .uri
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")).and_then(|v| v.parse::<usize>().ok()))
            .unwrap_or(50);
        let mut items: Vec<serde_json::Value> = Vec::new();
        let mut frontier: Option<String> = None;
        for a in answers {
            if let Some(list) = a["items"].as_array() {
                items.extend(list.iter().cloned());
            }
            if let Some(c) = a["next_cursor"].as_str()
                && frontier.as_deref().is_none_or(|f| c > f)
            {
                frontier = Some(c.to_string());
            }
        }
        let cursor = |v: &serde_json::Value| v["cursor"].as_str().unwrap_or("").to_string();
        items.sort_by_key(|v| std::cmp::Reverse(cursor(v)));
        if let Some(f) = &frontier {
            // A partition's page ends at its cursor, which is its last item: that one is kept.
            items.retain(|v| cursor(v).as_str() >= f.as_str());
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(cursor)
        } else {
            frontier
        };
        (StatusCode::OK, axum::Json(serde_json::json!({ "items": items, "next_cursor": next }))).into_response()
    }

    /// `GET /console/changes` and `GET /admin/log/tail` over every partition: each partition's
    /// events (its own sequence numbers) with `"partition"` added, as they arrive. The stream
    /// ends when any partition's does (a holder gone, the key revoked): the client opens it
    /// again, as after any cut.
    async fn gather_events(&self, req: Request) -> Response {
        use futures::StreamExt;
        let (parts, _) = req.into_parts();
        let mut feeds = Vec::new();
        for p in 0..=i32::from(self.partitions) {
            let mut one = Request::builder().method(parts.method.clone()).uri(parts.uri.clone());
            if let Some(h) = one.headers_mut() {
                copy_headers(&parts.headers, h, false);
                h.insert(HeaderName::from_static(PARTITION), HeaderValue::from(p));
            }
            let Ok(one) = one.body(Body::empty()) else {
                return unavailable("internal_error", "a gathered request could not be built");
            };
            let resp = self.serve(p, one).await;
            if resp.status() != StatusCode::OK {
                return resp;
            }
            feeds.push(sse_events(resp.into_body().into_data_stream(), p).boxed());
        }
        // Every 15 s a comment line, as one partition's feed sends, so proxies keep it open.
        let beats = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(15)).await;
            Some((Some(axum::body::Bytes::from_static(b":\n\n")), ()))
        })
        .boxed();
        feeds.push(beats);
        let merged = futures::stream::select_all(feeds)
            .take_while(|item| std::future::ready(item.is_some()))
            .filter_map(|item| std::future::ready(item.map(Ok::<_, std::convert::Infallible>)));
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(merged))
            .unwrap_or_else(|_| unavailable("internal_error", "a gathered stream could not be built"))
    }

    /// `GET /usage…` over every partition: each one's counters, added up (a list, such as the
    /// metric types, is the catalog's; a refusal is answered as it is).
    async fn gather_usage(&self, req: Request) -> Response {
        let (parts, _) = req.into_parts();
        // History: every partition's months (each may hold months the others lack), merged,
        // then cut to the caller's `limit`.
        let query = parts.uri.query().unwrap_or("");
        let limit = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("limit="))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(12);
        let uri = if parts.uri.path().ends_with("/history") {
            let rest: Vec<&str> = query.split('&').filter(|kv| !kv.starts_with("limit=") && !kv.is_empty()).collect();
            let mut q = rest.join("&");
            if !q.is_empty() {
                q.push('&');
            }
            format!("{}?{q}limit=120", parts.uri.path())
        } else {
            parts.uri.to_string()
        };
        let mut merged: Option<serde_json::Value> = None;
        for p in 0..=i32::from(self.partitions) {
            let mut one = Request::builder().method(parts.method.clone()).uri(uri.as_str());
            if let Some(h) = one.headers_mut() {
                copy_headers(&parts.headers, h, false);
                h.insert(HeaderName::from_static(PARTITION), HeaderValue::from(p));
            }
            let Ok(one) = one.body(Body::empty()) else {
                return unavailable("internal_error", "a gathered request could not be built");
            };
            let resp = self.serve(p, one).await;
            if resp.status() != StatusCode::OK {
                return resp;
            }
            let Ok(bytes) = axum::body::to_bytes(resp.into_body(), GATHER_BYTES_MAX).await else {
                return unavailable("holder_unreachable", "a partition's answer was cut off or too large");
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                return unavailable("holder_unreachable", "a partition answered something unreadable");
            };
            if v.is_array() {
                return (StatusCode::OK, axum::Json(v)).into_response();
            }
            merged = Some(match merged {
                None => v,
                Some(mut m) => {
                    add_usage(&mut m, &v);
                    m
                }
            });
        }
        let mut merged = merged.unwrap_or_default();
        if let Some(periods) = merged.get_mut("periods").and_then(serde_json::Value::as_array_mut) {
            periods.truncate(limit);
        }
        (StatusCode::OK, axum::Json(merged)).into_response()
    }
}

/// A search of an index (`path(index)`) whose `index_ids` name indexes of other partitions:
/// each owner is asked for its own indexes (and its own `run_ids`), and its answer returned
/// with the request's body for the merge. `Err`: the answer to give as it is (the request
/// stays within one partition, or a partition refused it). With `images`, a partition whose
/// results in scope have no image vector (422 naming `enable_image_embedding`) adds no hits;
/// its refusal is the answer only when every partition gave it.
async fn ask_index_owners(
    node: &Arc<Node>,
    index: &str,
    req: Request,
    path: impl Fn(&str) -> String,
    images: bool,
) -> Result<(serde_json::Map<String, serde_json::Value>, Vec<serde_json::Value>), Response> {
    let n = node.partitions;
    let p0 = routing::partition_of_id(index, n);
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, routing::ROUTED_BODY_BYTES_MAX).await else {
        return Err(too_large());
    };
    let as_is = |parts, bytes| Request::from_parts(parts, Body::from(bytes));
    let Ok(serde_json::Value::Object(v)) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Err(node.serve(p0, as_is(parts, bytes)).await);
    };
    // A list of ids, or one id (the handlers take either).
    let ids = |k: &str| -> Vec<String> {
        match v.get(k) {
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        }
    };
    let (index_ids, run_ids) = (ids("index_ids"), ids("run_ids"));
    let mut by_p: BTreeMap<i32, Vec<String>> = BTreeMap::from([(p0, vec![index.to_string()])]);
    for i in index_ids {
        let list = by_p.entry(routing::partition_of_id(&i, n)).or_default();
        if !list.contains(&i) {
            list.push(i);
        }
    }
    // Runs of no partition searched: the path's partition answers (it refuses an unknown run).
    let runs_elsewhere = run_ids.iter().any(|r| !by_p.contains_key(&routing::partition_of_id(r, n)));
    if by_p.len() == 1 || runs_elsewhere {
        return Err(node.serve(p0, as_is(parts, bytes)).await);
    }
    let mut answers = Vec::new();
    let mut no_images = None;
    for (q, indexes) in &by_p {
        let runs: Vec<&String> = run_ids.iter().filter(|r| routing::partition_of_id(r, n) == *q).collect();
        if !run_ids.is_empty() && runs.is_empty() {
            continue;
        }
        let mut one = v.clone();
        one.insert("index_ids".into(), serde_json::json!(indexes[1..]));
        if run_ids.is_empty() {
            one.remove("run_ids");
        } else {
            one.insert("run_ids".into(), serde_json::json!(runs));
        }
        let mut r = Request::builder().method(parts.method.clone()).uri(path(&indexes[0]));
        if let Some(h) = r.headers_mut() {
            copy_headers(&parts.headers, h, true);
            h.insert(HeaderName::from_static(PARTITION), HeaderValue::from(*q));
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let Ok(r) = r.body(Body::from(serde_json::to_vec(&one).unwrap_or_default())) else {
            return Err(unavailable("internal_error", "a gathered request could not be built"));
        };
        let resp = node.serve(*q, r).await;
        if images && resp.status() == StatusCode::UNPROCESSABLE_ENTITY {
            let Ok(body) = axum::body::to_bytes(resp.into_body(), GATHER_BYTES_MAX).await else {
                return Err(unavailable("holder_unreachable", "a partition's answer was cut off or too large"));
            };
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let refusal = (StatusCode::UNPROCESSABLE_ENTITY, [(header::CONTENT_TYPE, "application/json")], body);
            if v["error"]["details"]["setting"] != "enable_image_embedding" {
                return Err(refusal.into_response());
            }
            no_images = Some(refusal);
            continue;
        }
        if resp.status() != StatusCode::OK {
            return Err(resp);
        }
        let Ok(body) = axum::body::to_bytes(resp.into_body(), GATHER_BYTES_MAX).await else {
            return Err(unavailable("holder_unreachable", "a partition's answer was cut off or too large"));
        };
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return Err(unavailable("holder_unreachable", "a partition answered something unreadable"));
        };
        answers.push(answer);
    }
    if answers.is_empty()
        && let Some(refusal) = no_images
    {
        return Err(refusal.into_response());
    }
    Ok((v, answers))
}

/// A ranked search of an index whose `index_ids` name indexes of other partitions
/// ([`ask_index_owners`]): the hits are merged by score and cut to `top_k` (a multimodal
/// search's text and image ranks are counted again over the merged list, and fused again).
async fn search_over_partitions(node: &Arc<Node>, index: &str, what: &'static str, req: Request) -> Response {
    let multimodal = what == "multimodal-search";
    let (v, answers) =
        match ask_index_owners(node, index, req, |i| format!("/api/v2/indexes/{i}/{what}"), what != "search").await {
            Ok(x) => x,
            Err(resp) => return resp,
        };
    let mut hits: Vec<serde_json::Value> = Vec::new();
    for answer in answers {
        match answer {
            serde_json::Value::Array(a) => hits.extend(a),
            _ => return unavailable("holder_unreachable", "a partition answered something unreadable"),
        }
    }
    let top_k = v.get("top_k").and_then(serde_json::Value::as_u64).unwrap_or(if what == "search" { 30 } else { 20 });
    let top_k = usize::try_from(top_k).unwrap_or(usize::MAX);
    if multimodal {
        // Each side ranked again over the merged hits, then fused again (RRF).
        let weight = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.5);
        let (tw, iw) = (weight("text_weight"), weight("image_weight"));
        for (rank_key, score_key) in [("text_rank", "text_score"), ("image_rank", "image_score")] {
            let mut on_side: Vec<usize> = (0..hits.len()).filter(|i| hits[*i].get(rank_key).is_some()).collect();
            let s = |i: &usize| hits[*i][score_key].as_f64().unwrap_or(0.0);
            on_side.sort_by(|a, b| s(b).total_cmp(&s(a)));
            for (r, i) in on_side.into_iter().enumerate() {
                hits[i][rank_key] = serde_json::json!(r + 1);
            }
        }
        let rrf = |rank: Option<u64>, w: f64| {
            rank.map_or(0.0, |r| w / (spool_api::RRF_K + f64::from(u32::try_from(r).unwrap_or(u32::MAX))))
        };
        for h in &mut hits {
            let fused = rrf(h["text_rank"].as_u64(), tw) + rrf(h["image_rank"].as_u64(), iw);
            h["fused_score"] = serde_json::json!(fused);
            h["similarity_score"] = serde_json::json!(fused);
        }
        let f = |h: &serde_json::Value| h["fused_score"].as_f64().unwrap_or(0.0);
        hits.sort_by(|a, b| f(b).total_cmp(&f(a)));
    } else {
        let score =
            |h: &serde_json::Value| h["text_score"].as_f64().or_else(|| h["similarity_score"].as_f64()).unwrap_or(0.0);
        hits.sort_by(|a, b| score(b).total_cmp(&score(a)));
    }
    hits.truncate(top_k);
    (StatusCode::OK, axum::Json(serde_json::Value::Array(hits))).into_response()
}

/// The key of a cursor a partition issued (`v1:<key>`, base64url), or `None`.
fn cursor_key(c: Option<&str>) -> Option<String> {
    use base64::Engine;
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c?).ok()?;
    String::from_utf8(b).ok()?.strip_prefix("v1:").map(str::to_string)
}

fn cursor_of(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{key}"))
}

/// A filter search whose `index_ids` name indexes of other partitions: each partition pages
/// through its own indexes after the same cursor (a `result_id`: pages go in `result_id` order
/// everywhere), and the pages are merged. A partition that stopped early (it examined its bound
/// of results) bounds the merged page at its cursor, so nothing is skipped ([`ask_index_owners`]).
async fn filter_over_partitions(node: &Arc<Node>, index: &str, req: Request) -> Response {
    let (v, answers) = match ask_index_owners(node, index, req, |i| format!("/api/v2/search/filter/{i}"), false).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let page_size = v.get("page_size").and_then(serde_json::Value::as_u64).unwrap_or(50);
    let page = usize::try_from(page_size).unwrap_or(usize::MAX);
    let mut results: Vec<serde_json::Value> = Vec::new();
    let mut bound: Option<String> = None;
    for answer in answers {
        if let Some(a) = answer["results"].as_array() {
            results.extend(a.iter().cloned());
        }
        if let Some(next) = cursor_key(answer["next_page_token"].as_str()) {
            bound = Some(match bound {
                Some(b) if b <= next => b,
                _ => next,
            });
        }
    }
    let id = |h: &serde_json::Value| h["result_id"].as_str().unwrap_or_default().to_string();
    results.sort_by_key(id);
    if let Some(b) = &bound {
        results.retain(|h| id(h) <= *b);
    }
    let next = if results.len() > page {
        results.truncate(page);
        results.last().map(id)
    } else {
        bound
    };
    let token = next.as_deref().map(cursor_of);
    let shown = results.len();
    let body = serde_json::json!({
        "results": results,
        "data": results,
        "next_page_token": token,
        "total_shown": shown,
        "pagination": { "limit": page_size, "has_more": token.is_some(), "next_cursor": token },
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Adds one partition's usage answer to the merged one: `metrics`, `breakdown` and `totals`
/// by key, and `periods` by their `summary_id`.
fn add_usage(into: &mut serde_json::Value, v: &serde_json::Value) {
    fn add_map(into: &mut serde_json::Value, v: &serde_json::Value) {
        let (Some(a), Some(b)) = (into.as_object_mut(), v.as_object()) else { return };
        for (k, x) in b {
            let sum = match (a.get(k), x) {
                (Some(serde_json::Value::Number(n)), serde_json::Value::Number(m)) => match (n.as_u64(), m.as_u64()) {
                    (Some(n), Some(m)) => serde_json::json!(n.saturating_add(m)),
                    _ => serde_json::json!(n.as_f64().unwrap_or(0.0) + m.as_f64().unwrap_or(0.0)),
                },
                (None, x) => x.clone(),
                (Some(other), _) => other.clone(),
            };
            a.insert(k.clone(), sum);
        }
    }
    for key in ["metrics", "breakdown", "totals"] {
        if let (Some(a), Some(b)) = (into.get_mut(key), v.get(key)) {
            add_map(a, b);
        }
    }
    if let (Some(serde_json::Value::Array(a)), Some(serde_json::Value::Array(b))) =
        (into.get_mut("periods"), v.get("periods"))
    {
        for period in b {
            match a.iter_mut().find(|x| x["summary_id"] == period["summary_id"]) {
                Some(x) => {
                    for key in ["metrics", "totals"] {
                        if let (Some(m), Some(n)) = (x.get_mut(key), period.get(key)) {
                            add_map(m, n);
                        }
                    }
                }
                None => a.push(period.clone()),
            }
        }
        a.sort_by(|x, y| y["summary_id"].as_str().cmp(&x["summary_id"].as_str()));
    }
}

async fn answer(app: axum::Router, req: Request) -> Response {
    match app.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// A body small enough to keep for a second try (uploads are not).
fn small_body(req: &Request) -> bool {
    use axum::body::HttpBody;
    req.body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= u64::try_from(routing::ROUTED_BODY_BYTES_MAX).unwrap_or(u64::MAX))
}

/// Whether an answer says a catalog fact is unknown (an API key: 401; a connector or a prompt:
/// 404), with the answer rebuilt.
async fn names_unknown_catalog_fact(resp: Response) -> (Response, bool) {
    match resp.status() {
        StatusCode::UNAUTHORIZED => (resp, true),
        StatusCode::NOT_FOUND => {
            let (parts, body) = resp.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
                return (Response::from_parts(parts, Body::empty()), false);
            };
            let text = String::from_utf8_lossy(&bytes);
            let unknown = text.contains("resource_connector_not_found") || text.contains("resource_prompt_not_found");
            (Response::from_parts(parts, Body::from(bytes)), unknown)
        }
        _ => (resp, false),
    }
}

/// Largest answer of one partition to a gathered list.
const GATHER_BYTES_MAX: usize = 64 << 20;

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

/// Tries of a read whose partition is moving (the first and two more).
const FORWARD_TRIES: usize = 3;
/// Parses of an upload's beginning, looking for its index.
const UPLOAD_PEEKS_MAX: usize = 16;
/// Set on this node's own 503 answers while a partition moves (never sent by a holder).
const MOVING: &str = "x-spool-partition-moving";

/// 503 in the contract's envelope, with `Retry-After: 1`.
fn unavailable(code: &str, message: &str) -> Response {
    let mut resp = envelope(StatusCode::SERVICE_UNAVAILABLE, code, message);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp.headers_mut().insert(HeaderName::from_static(MOVING), HeaderValue::from_static("1"));
    resp
}

/// An answer of the node itself in the contract's error envelope, with a request id of its own.
fn envelope(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = spool_model::RequestId(ulid::Ulid::new()).to_string();
    let mut resp = (
        status,
        axum::Json(serde_json::json!({
            "error": { "code": code, "message": message, "details": {}, "request_id": request_id }
        })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// A webhook's `index_ids` live in their index partitions: each is looked up there (with the
/// caller's key) before the catalog takes the request; an unknown one is answered 422 as the
/// catalog of a single partition answers it.
async fn check_indexes_then_serve(node: &Node, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, routing::ROUTED_BODY_BYTES_MAX).await else {
        return too_large();
    };
    let ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("index_ids").and_then(|a| a.as_array().cloned()))
        .unwrap_or_default()
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    for id in ids.iter().take(routing::INDEX_IDS_CHECKED_MAX) {
        if id.parse::<spool_model::IndexId>().is_err() {
            continue; // the catalog answers what is not an index id
        }
        let path = format!("/api/v2/indexes/{id}");
        let Route::Partition(p) = routing::route(&axum::http::Method::GET, &path, node.partitions) else { continue };
        let mut look = Request::builder().method(axum::http::Method::GET).uri(path.as_str());
        if let Some(h) = look.headers_mut() {
            for name in [header::AUTHORIZATION, HeaderName::from_static("x-api-key")] {
                if let Some(v) = parts.headers.get(&name) {
                    h.insert(name, v.clone());
                }
            }
        }
        let Ok(look) = look.body(Body::empty()) else { continue };
        let status = node.serve(p, look).await.status();
        if status == StatusCode::NOT_FOUND {
            let request_id = spool_model::RequestId(ulid::Ulid::new()).to_string();
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(serde_json::json!({
                    "error": {
                        "code": "validation_error",
                        "message": format!("index_ids: index {id} does not exist"),
                        "details": { "field": "index_ids" },
                        "request_id": request_id,
                    }
                })),
            )
                .into_response();
        }
        if status != StatusCode::OK {
            break; // a refused key, a partition without a holder: the catalog answers
        }
    }
    node.serve(0, Request::from_parts(parts, Body::from(bytes))).await
}

/// An upload goes to its index's partition (the `index_id` field comes before the file): the
/// body's beginning is read (at most `UPLOAD_PEEK_BYTES_MAX`) and sent on, the rest streams.
async fn route_upload(node: &Node, req: Request) -> Response {
    use futures::StreamExt;
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').find_map(|kv| kv.trim().strip_prefix("boundary=")))
        .map(|b| b.trim_matches('"').to_string());
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut prefix: Vec<u8> = Vec::new();
    let mut index: Option<String> = None;
    if let Some(boundary) = boundary {
        // Parsed again only when a part's head may have ended, at most `UPLOAD_PEEKS_MAX` times
        // (a body sent a byte at a time costs no more than a few parses of 64 KiB).
        let mut parses = 0;
        let mut ended = true;
        while prefix.len() < routing::UPLOAD_PEEK_BYTES_MAX {
            if ended && parses < UPLOAD_PEEKS_MAX {
                parses += 1;
                if let Some(found) = routing::upload_index(&prefix, &boundary) {
                    index = found;
                    break;
                }
            }
            match stream.next().await {
                Some(Ok(chunk)) => {
                    ended = chunk.windows(2).any(|w| w == b"\r\n") || chunk.ends_with(b"\r");
                    prefix.extend_from_slice(&chunk);
                }
                _ => {
                    if let Some(found) = routing::upload_index(&prefix, &boundary) {
                        index = found;
                    }
                    break;
                }
            }
        }
    }
    let p = match index
        .map(|id| routing::route(&axum::http::Method::GET, &format!("/api/v2/indexes/{id}"), node.partitions))
    {
        Some(Route::Partition(p)) => p,
        _ => 0,
    };
    let head = futures::stream::once(async move { Ok::<_, axum::Error>(axum::body::Bytes::from(prefix)) });
    let body = Body::from_stream(head.chain(stream));
    node.serve(p, Request::from_parts(parts, body)).await
}

/// 413 in the contract's envelope: a body too large to route.
fn too_large() -> Response {
    let request_id = spool_model::RequestId(ulid::Ulid::new()).to_string();
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        axum::Json(serde_json::json!({
            "error": {
                "code": "payload_too_large",
                "message": format!("the body is larger than {} bytes", routing::ROUTED_BODY_BYTES_MAX),
                "details": { "max_bytes": routing::ROUTED_BODY_BYTES_MAX },
                "request_id": request_id,
            }
        })),
    )
        .into_response()
}

/// The node's whole HTTP surface: the API of the partitions it holds, forwarding for the others.
pub fn router(node: Arc<Node>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(node)
}

/// `GET /prompts/{id}/usage`: the catalog's answer, `is_in_use` when a run of any index
/// partition uses the prompt.
async fn prompt_usage(node: &Node, id: &str, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let resp = node.serve(0, Request::from_parts(parts.clone(), Body::empty())).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (rparts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
        return unavailable("holder_unreachable", "the catalog's answer was cut off");
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(rparts, Body::from(bytes));
    };
    match node.prompt_in_use(id, &parts.headers).await {
        Err(resp) => resp,
        Ok(in_use) => {
            if in_use {
                v["is_in_use"] = serde_json::Value::Bool(true);
            }
            let mut out = (rparts.status, axum::Json(v)).into_response();
            for (name, value) in &rparts.headers {
                if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
                    out.headers_mut().insert(name.clone(), value.clone());
                }
            }
            out
        }
    }
}

/// What a body names that may live in another partition ([`Node::named_in_other_partitions`]).
#[derive(Clone, Copy)]
enum Named {
    /// An index export's `prompt_run_ids`.
    ExportRuns(spool_model::IndexId),
    /// A run's `target.video_ids` (with its `target.index_id`).
    RunVideos,
}

/// The client's headers on a request this node makes for it (to a partition here or at its
/// holder): all but the connection's own and, when the body is another, its length and type.
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, new_body: bool) {
    for (name, value) in from {
        let body_header = name == header::CONTENT_LENGTH || (new_body && name == header::CONTENT_TYPE);
        if !hop_by_hop(name) && !body_header {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Where another node asks an index partition held here to catch up with the catalog.
const CATCH_UP_PATH: &str = "/internal/catch-up";

async fn dispatch(State(node): State<Arc<Node>>, req: Request) -> Response {
    let from_node = req.headers().contains_key(FORWARDED_BY);
    if from_node && req.uri().path() == CATCH_UP_PATH && node.partitions > 0 {
        let (parts, _) = req.into_parts();
        return node.catch_up(&parts.headers, &parts.uri).await;
    }
    let barrier = node.partitions > 0 && !from_node && routing::changes_catalog_fact(req.method(), req.uri().path());
    let mut resp = route(&node, req).await;
    let seq = resp.headers().get(CATALOG_SEQ).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if !from_node {
        resp.headers_mut().remove(CATALOG_SEQ);
    }
    if barrier
        && resp.status().is_success()
        && let Some(seq) = seq
    {
        node.follow_barrier(seq).await;
    }
    resp
}

async fn route(node: &Arc<Node>, req: Request) -> Response {
    // A body past the API's bound (every route but uploads takes at most 1 MiB) is answered
    // here as the holder would answer it: forwarding it would have the holder answer while
    // the body is still being sent, which the forwarding client cannot read.
    if !routing::is_upload(req.method(), req.uri().path())
        && req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n > routing::ROUTED_BODY_BYTES_MAX)
        && !node.serves_locally(&req)
    {
        return too_large();
    }
    if node.partitions == 0 {
        if req.uri().path() == "/healthz" && node.local(0).is_none() {
            return node.health().await;
        }
        return node.serve(0, req).await;
    }
    if req.uri().path() == "/healthz" {
        return node.health().await;
    }
    // Routed already by the node that sent it here. Honoured only where the routing itself
    // could have chosen that partition (a list's part, a new index, a body's or an upload's
    // index partition, or the partition of the path): a client that sets it cannot reach a
    // catalog route in an index partition.
    if let Some(p) = req.headers().get(PARTITION).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok())
        && (0..=i32::from(node.partitions)).contains(&p)
    {
        let path = req.uri().path();
        let routed = routing::route(req.method(), path, node.partitions);
        let could = match routed {
            Route::Partition(q) => {
                q == p
                    || (p >= 1
                        && (routing::routed_by_body(req.method(), path)
                            || routing::is_upload(req.method(), path)
                            || routing::prompt_usage(req.method(), path).is_some()))
            }
            Route::Gather(_) => true,
            Route::NewIndex => p >= 1,
        };
        if could {
            return node.serve(p, req).await;
        }
    }
    if routing::is_upload(req.method(), req.uri().path()) {
        return route_upload(node, req).await;
    }
    if let Some(index) = routing::index_export(req.method(), req.uri().path())
        && let Ok(index) = index.parse::<spool_model::IndexId>()
    {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, routing::ROUTED_BODY_BYTES_MAX).await else {
            return too_large();
        };
        if let Some(refused) = node.named_in_other_partitions(&bytes, &parts.headers, Named::ExportRuns(index)).await {
            return refused;
        }
        let p = i32::from(spool_model::partition_of(index.0));
        return node.serve(p, Request::from_parts(parts, Body::from(bytes))).await;
    }
    if let Some(id) = routing::prompt_usage(req.method(), req.uri().path()) {
        let id = id.to_string();
        return prompt_usage(node, &id, req).await;
    }
    if let Some(id) = routing::prompt_delete_unforced(req.method(), req.uri().path(), req.uri().query()) {
        let id = id.to_string();
        let (parts, body) = req.into_parts();
        match node.prompt_in_use(&id, &parts.headers).await {
            Err(resp) => return resp,
            Ok(true) => {
                let why = format!("prompt {id} is used by a run or an automation; delete with force=true");
                return envelope(StatusCode::CONFLICT, "invalid_state", &why);
            }
            Ok(false) => return node.serve(0, Request::from_parts(parts, body)).await,
        }
    }
    if let Some(index) = routing::index_filter(req.method(), req.uri().path()) {
        let index = index.to_string();
        return filter_over_partitions(node, &index, req).await;
    }
    if let Some((index, what)) = routing::index_search(req.method(), req.uri().path()) {
        let index = index.to_string();
        return search_over_partitions(node, &index, what, req).await;
    }
    if let Some(Route::Partition(p)) = routing::search_page(req.uri().path(), req.uri().query(), node.partitions) {
        return node.serve(p, req).await;
    }
    if routing::names_indexes(req.method(), req.uri().path()) {
        return check_indexes_then_serve(node, req).await;
    }
    if routing::routed_by_body(req.method(), req.uri().path()) {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, routing::ROUTED_BODY_BYTES_MAX).await else {
            return too_large();
        };
        if parts.uri.path().starts_with("/api/v2/prompt-runs/")
            && let Some(refused) = node.named_in_other_partitions(&bytes, &parts.headers, Named::RunVideos).await
        {
            return refused;
        }
        if parts.uri.path().starts_with("/api/v2/videos/batch")
            && let Some(merged) = node.batch_over_partitions(&parts, &bytes).await
        {
            return merged;
        }
        let p = match routing::by_body(&bytes, node.partitions) {
            Route::Partition(p) => p,
            _ => 0,
        };
        return node.serve(p, Request::from_parts(parts, Body::from(bytes))).await;
    }
    match routing::route(req.method(), req.uri().path(), node.partitions) {
        Route::Partition(p) => node.serve(p, req).await,
        Route::NewIndex => {
            let key = req.headers().get("idempotency-key").and_then(|v| v.to_str().ok());
            let random = u64::try_from(ulid::Ulid::new().random() & u128::from(u64::MAX)).unwrap_or(0);
            let p = routing::new_index_partition(key, node.partitions, random);
            node.serve(p, req).await
        }
        Route::Gather(what) => node.gather(what, req).await,
    }
}

/// The longest server-sent event a partition's feed may send (its events are a few KiB).
const SSE_EVENT_BYTES_MAX: usize = 1 << 20;

/// One partition's server-sent events re-framed whole (a chunk of its body may hold part of
/// one, or several), each event's JSON with `"partition"` added, then a `None` when the feed
/// ends (or sends something unreadable). An event longer than [`SSE_EVENT_BYTES_MAX`] is left
/// out (logged), the feed goes on.
fn sse_events(
    body: axum::body::BodyDataStream,
    partition: i32,
) -> impl futures::Stream<Item = Option<axum::body::Bytes>> + Send {
    use futures::StreamExt;
    // (body, bytes not yet framed, ended, skipping an event too long to keep)
    let state = (body, Vec::<u8>::new(), false, false);
    futures::stream::unfold(state, move |(mut body, mut buf, ended, mut skipping)| async move {
        if ended {
            return None;
        }
        loop {
            if let Some(at) = buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = buf.drain(..at + 2).collect();
                if skipping {
                    // The rest of the event that was too long: dropped, the feed goes on.
                    skipping = false;
                    continue;
                }
                let text = String::from_utf8_lossy(&frame);
                let data: String = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue;
                }
                let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&data) else {
                    return Some((None, (body, buf, true, false)));
                };
                v["partition"] = serde_json::json!(partition);
                let out = axum::body::Bytes::from(format!("data: {v}\n\n"));
                return Some((Some(out), (body, buf, false, false)));
            }
            if buf.len() > SSE_EVENT_BYTES_MAX {
                // An event longer than the bound (an event of many objects): it is dropped
                // (what comes up to its end is skipped), not the whole feed; a reader that
                // needs it reads it from the log (`GET /admin/log?from=`).
                tracing::warn!(
                    partition,
                    "an event of a partition's feed is longer than 1 MiB: left out of the merged feed"
                );
                buf.clear();
                skipping = true;
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    if skipping {
                        // Only the end of the long event matters: keep the last byte, so a
                        // separator split between chunks is still seen.
                        let keep = buf.last().copied();
                        buf.clear();
                        buf.extend(keep);
                    }
                    buf.extend_from_slice(&chunk);
                }
                _ => return Some((None, (body, buf, true, skipping))),
            }
        }
    })
}
