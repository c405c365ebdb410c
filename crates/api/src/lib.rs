//! spool-api: the HTTP surface, `/api/v2` as the official SDK expects it (contract.md), plus
//! `/healthz` and `/metrics` at the root.
//!
//! One place speaks HTTP errors: [`ApiError`] renders the contract's envelope
//! `{"error":{"code","message","details","request_id"}}` for every failure, including unknown
//! routes, wrong methods, bodies that do not parse and bodies that are too large. Handlers
//! never answer 204 or a redirect.

mod auth;
mod body;
mod error;
mod metrics;
pub mod openapi;
pub mod rate_limit;
mod routes;

pub use routes::openapi as openapi_document;

pub use auth::Principal;
pub use error::ApiError;

use axum::Router;
use spool_runtime::Runtime;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Largest request body accepted (413 above).
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Longest `Idempotency-Key` accepted.
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;

#[derive(Clone)]
pub struct ApiConfig {
    /// SHA-256 of `SPOOL_API_KEY`, an admin key accepted while the variable is set.
    pub env_admin_key_hash: Option<[u8; 32]>,
    /// Storage settings of the operator (S3 endpoint, local roots).
    pub storage: spool_storage::StorageEnv,
    /// Browse answers past this many entries are refused (`browse_too_many_results`).
    pub browse_max_entries: usize,
    /// Largest upload (`SPOOL_UPLOAD_MAX_BYTES`; 413 above).
    pub upload_max_bytes: u64,
    /// An upload that sends nothing for this long is answered 408 (`SPOOL_UPLOAD_IDLE_TIMEOUT`).
    pub upload_idle_timeout: std::time::Duration,
    /// The longest an upload may take from its first byte to its last (`SPOOL_UPLOAD_DEADLINE`).
    pub upload_deadline: std::time::Duration,
    /// The base clients reach (`SPOOL_PUBLIC_URL`), for signed media URLs; else the request's host.
    pub public_url: Option<String>,
    /// Per-key rate limits (`rate_limit`), shared by every partition of the node.
    pub limiter: Arc<rate_limit::Limiter>,
    /// Reads the limits the configuration says now (`POST /rate-limit/refresh`).
    /// The prompt `POST /videos/{id}/process` uses when it names none (`SPOOL_DEFAULT_PROMPT`,
    /// config `default_prompt`).
    pub default_prompt: Option<String>,
    pub reload_limits: Option<Arc<dyn Fn() -> Result<rate_limit::RateLimits, String> + Send + Sync>>,
}

/// Default of [`ApiConfig::browse_max_entries`].
pub const BROWSE_MAX_ENTRIES_DEFAULT: usize = 50_000;
pub use routes::console::{LIST_SCAN_MAX, OVERVIEW_FAILURES_MAX};
pub use routes::search::RRF_K;
pub use routes::video::BATCH_VIDEO_IDS_MAX;
pub use routes::video::media::{BATCH_RETRIEVE_MAX, BATCH_SEGMENTS_MAX};
pub use routes::video::upload::{UPLOAD_BYTES_MAX_DEFAULT, UPLOAD_DEADLINE_DEFAULT, UPLOAD_IDLE_TIMEOUT_DEFAULT};

#[doc(hidden)]
pub struct Shared {
    pub rt: Arc<Runtime>,
    pub cfg: ApiConfig,
    /// Responses by class: 2xx, 3xx, 4xx, 5xx.
    pub responses: [AtomicU64; 4],
    /// Searches served (`/usage`'s `searches`: this process's, since it started).
    pub searches: AtomicU64,
    /// The workflow searches' snapshots (`routes::workflow`).
    pub snapshots: routes::workflow::Snapshots,
}

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The whole HTTP application.
pub fn router(rt: Arc<Runtime>, cfg: ApiConfig) -> Router {
    let state = AppState(Arc::new(Shared {
        rt,
        cfg,
        responses: Default::default(),
        searches: Default::default(),
        snapshots: Default::default(),
    }));
    routes::router(state)
}
