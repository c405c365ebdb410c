//! An in-memory twin of a bucket, with injected faults: what the runtime simulator
//! (`crates/sim`) gives connectors instead of a real S3, GCS or Azure server. It is object_store's
//! own `InMemory` (etags, multipart uploads, listings in key order) behind a wrapper that fails a
//! share of calls with a transient (`Generic`) error, cuts listings off part-way with one, and
//! yields before answering (so calls interleave). Faults are drawn from one seeded generator;
//! `set_fail_percent(0)` stops them.

use crate::Store;
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A bucket twin. Cheap to clone (shared contents and faults).
#[derive(Debug, Clone)]
pub struct TwinStore {
    inner: Arc<InMemory>,
    faults: Arc<Faults>,
}

#[derive(Debug)]
struct Faults {
    fail_percent: AtomicU64,
    rng: AtomicU64,
    injected: AtomicU64,
}

/// The next draw of a SplitMix64 sequence kept in an atomic: one seeded sequence that
/// concurrent callers share (the twins' faults).
pub fn draw(state: &AtomicU64) -> u64 {
    let mut z = state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Faults {
    fn draw(&self) -> u64 {
        draw(&self.rng)
    }

    fn fails(&self) -> bool {
        let p = self.fail_percent.load(Ordering::Relaxed);
        let hit = p > 0 && self.draw() % 100 < p;
        if hit {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    fn check(&self, what: &str) -> Result<()> {
        if self.fails() {
            return Err(injected(what));
        }
        Ok(())
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic { store: "twin", source: format!("injected fault: {what}: connection reset").into() }
}

/// A few yields, so that concurrent calls interleave as they would over a network.
async fn latency() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

impl TwinStore {
    pub fn new(seed: u64) -> TwinStore {
        TwinStore {
            inner: Arc::new(InMemory::new()),
            faults: Arc::new(Faults {
                fail_percent: AtomicU64::new(0),
                rng: AtomicU64::new(seed),
                injected: AtomicU64::new(0),
            }),
        }
    }

    /// The share of calls (0–100) that fail from now on.
    pub fn set_fail_percent(&self, p: u64) {
        self.faults.fail_percent.store(p.min(100), Ordering::Relaxed);
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.faults.injected.load(Ordering::Relaxed)
    }

    /// The contents without faults (for the simulator's own reads and writes).
    pub fn contents(&self) -> Arc<InMemory> {
        self.inner.clone()
    }

    /// This twin as a connector's store (with multipart uploads).
    pub fn store(&self) -> Store {
        let s = Arc::new(self.clone());
        Store { inner: s.clone(), multipart: Some(s), local_root: None }
    }
}

impl std::fmt::Display for TwinStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TwinStore")
    }
}

#[async_trait]
impl ObjectStore for TwinStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        latency().await;
        self.faults.check("put")?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        latency().await;
        self.faults.check("multipart start")?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        latency().await;
        self.faults.check("get")?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let faults = self.faults.clone();
        self.inner
            .delete_stream(locations)
            .map(move |r| match faults.check("delete") {
                Ok(()) => r,
                Err(e) => Err(e),
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        // A listing may be cut off after any entry: the entries before it, then the error.
        let faults = self.faults.clone();
        let cut = faults.fails().then(|| (faults.draw() % 8) as usize);
        let items = self.inner.list(prefix);
        match cut {
            None => items,
            Some(n) => items.take(n).chain(futures::stream::once(async { Err(injected("list")) })).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        latency().await;
        self.faults.check("list")?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        latency().await;
        self.faults.check("copy")?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[async_trait]
impl MultipartStore for TwinStore {
    async fn create_multipart(&self, path: &Path) -> Result<MultipartId> {
        latency().await;
        self.faults.check("create multipart")?;
        self.inner.create_multipart(path).await
    }

    async fn put_part(&self, path: &Path, id: &MultipartId, part_idx: usize, data: PutPayload) -> Result<PartId> {
        latency().await;
        self.faults.check("put part")?;
        self.inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(&self, path: &Path, id: &MultipartId, parts: Vec<PartId>) -> Result<PutResult> {
        latency().await;
        self.faults.check("complete multipart")?;
        self.inner.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> Result<()> {
        self.inner.abort_multipart(path, id).await
    }
}

/// The twins a [`crate::StorageEnv`] hands out instead of building real stores: by bucket name
/// (S3 connectors whose bucket is registered here).
#[derive(Clone, Default)]
pub struct Twins(pub Arc<std::sync::Mutex<std::collections::BTreeMap<String, TwinStore>>>);

impl std::fmt::Debug for Twins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Twins")
    }
}

impl Twins {
    pub fn add(&self, bucket: &str, twin: TwinStore) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(bucket.to_string(), twin);
    }

    pub fn get(&self, bucket: &str) -> Option<TwinStore> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(bucket).cloned()
    }
}
