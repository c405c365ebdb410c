//! The runtime simulator's network peers: one loopback server playing a webhook receiver
//! (`POST /hook`) and an http processor (`POST /worker`). At the fault level the seed sets, a
//! share of calls answer 500 or 503, hang past the caller's timeout, or (the processor) answer
//! a body that is not JSON; the rest answer after a short random wait, so answers come back in
//! another order than the calls went out.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a hanging answer waits: past both timeouts the simulator configures.
pub const HANG: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
pub struct Peers {
    fail_percent: AtomicU64,
    /// The share of processor answers without `label`, whatever the fault level (0 once the
    /// faults stop).
    invalid_percent: AtomicU64,
    rng: AtomicU64,
    pub injected: AtomicU64,
    /// Deliveries answered 2xx, by `webhook-id` (the delivery id), with how many times.
    pub delivered: Mutex<BTreeMap<String, u32>>,
    pub processor_calls: AtomicU64,
}

enum Fault {
    None,
    Status(StatusCode),
    Hang,
    Garbage,
    /// JSON whose metadata lacks the `label` the worker's prompt requires.
    Invalid,
}

impl Peers {
    pub fn set_fail_percent(&self, p: u64) {
        self.fail_percent.store(p.min(100), Ordering::Relaxed);
    }

    pub fn set_invalid_percent(&self, p: u64) {
        self.invalid_percent.store(p.min(100), Ordering::Relaxed);
    }

    fn draw(&self) -> u64 {
        spool_storage::twin::draw(&self.rng)
    }

    fn fault(&self, garbage: bool) -> Fault {
        let invalid = self.invalid_percent.load(Ordering::Relaxed);
        if garbage && invalid > 0 && self.draw() % 100 < invalid {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Fault::Invalid;
        }
        let p = self.fail_percent.load(Ordering::Relaxed);
        if p == 0 || self.draw() % 100 >= p {
            return Fault::None;
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        match self.draw() % if garbage { 5 } else { 3 } {
            0 => Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
            1 => Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
            2 => Fault::Hang,
            3 => Fault::Garbage,
            _ => Fault::Invalid,
        }
    }

    /// A short random wait, up to `max_ms`.
    async fn jitter(&self, max_ms: u64) {
        tokio::time::sleep(Duration::from_millis(self.draw() % max_ms)).await;
    }
}

async fn hook(State(p): State<Arc<Peers>>, headers: HeaderMap, _body: Bytes) -> Response {
    match p.fault(false) {
        Fault::Status(s) => return (s, "injected").into_response(),
        Fault::Hang => tokio::time::sleep(HANG).await,
        Fault::None | Fault::Garbage | Fault::Invalid => {}
    }
    // Deliveries of one webhook go one at a time: a short wait.
    p.jitter(4).await;
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    *p.delivered.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_insert(0) += 1;
    (StatusCode::OK, "ok").into_response()
}

async fn worker(State(p): State<Arc<Peers>>, _body: Bytes) -> Response {
    p.processor_calls.fetch_add(1, Ordering::Relaxed);
    match p.fault(true) {
        Fault::Status(s) => return (s, "injected").into_response(),
        Fault::Hang => tokio::time::sleep(HANG).await,
        Fault::Garbage => return (StatusCode::OK, "this is not JSON").into_response(),
        Fault::Invalid => {
            let body = serde_json::json!({ "metadata": { "other": 1 }, "metadata_text": "no label" });
            return (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response();
        }
        Fault::None => {}
    }
    p.jitter(20).await;
    let body = serde_json::json!({
        "metadata": { "label": "sim" },
        "metadata_text": "sim",
        "usage": { "input_tokens": 1, "output_tokens": 1 },
    });
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

/// Start the peers on a loopback port; they live as long as the tokio runtime.
pub async fn start(seed: u64) -> Result<(Arc<Peers>, SocketAddr), String> {
    let peers = Arc::new(Peers { rng: AtomicU64::new(seed ^ 0x5EED), ..Default::default() });
    let app = Router::new().route("/hook", post(hook)).route("/worker", post(worker)).with_state(peers.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((peers, addr))
}
