//! The redb implementation of [`EventLog`]. On-disk layout: `engine-spec/log-format.md`.

use crate::*;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use spool_model::{Envelope, FORMAT_VERSION, decode_envelope, encode_envelope};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};

/// seq → encoded envelope.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// (stream, version) → seq; version is 0-based.
pub(crate) const STREAM_INDEX: TableDefinition<(&str, u64), u64> = TableDefinition::new("stream_index");
/// stream → its version (number of events).
pub(crate) const STREAM_HEADS: TableDefinition<&str, u64> = TableDefinition::new("stream_heads");
/// name → 8 bytes at_seq (LE) + opaque snapshot bytes.
pub(crate) const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// scoped idempotency key → opaque record.
pub(crate) const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// owner → data key wrapped by the master key.
pub(crate) const DATA_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("data_keys");
/// The video projection (`SideTable::Videos`).
pub(crate) const VIDEOS: TableDefinition<&str, &[u8]> = TableDefinition::new("videos");
/// Import jobs' finished files (`SideTable::JobFiles`).
pub(crate) const JOB_FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("job_files");
/// `new_only` keys of imported files (`SideTable::ImportKeys`).
pub(crate) const IMPORT_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("import_keys");
/// Each index's live videos in page order (`SideTable::IndexVideos`).
pub(crate) const INDEX_VIDEOS: TableDefinition<&str, &[u8]> = TableDefinition::new("index_videos");
/// Delivered webhook deliveries (`SideTable::Deliveries`).
pub(crate) const DELIVERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("deliveries");
/// Each webhook's delivered deliveries, newest first (`SideTable::WebhookDeliveries`).
pub(crate) const WEBHOOK_DELIVERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("webhook_deliveries");
/// Prompt runs' task answers (`SideTable::RunAnswers`).
pub(crate) const RUN_ANSWERS: TableDefinition<&str, &[u8]> = TableDefinition::new("run_answers");
/// Prompt runs' processor calls (`SideTable::RunCalls`).
pub(crate) const RUN_CALLS: TableDefinition<&str, &[u8]> = TableDefinition::new("run_calls");
/// "format_version" → the format of the newest writer.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The stream index is written in bulk: entries of committed events wait in the writer's
/// memory until this many have gathered, then go into the next transaction. Readers cover the
/// not-yet-indexed tail (at most this many events plus one batch) by scanning it.
pub const STREAM_INDEX_FLUSH_EVENTS: usize = 4096;
const META_INDEXED_SEQ: &str = "stream_index_seq";

/// The log's file inside a data directory.
pub const LOG_FILE_NAME: &str = "spool.redb";

fn side_table(t: SideTable) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match t {
        SideTable::Idempotency => IDEMPOTENCY,
        SideTable::DataKeys => DATA_KEYS,
        SideTable::Videos => VIDEOS,
        SideTable::JobFiles => JOB_FILES,
        SideTable::ImportKeys => IMPORT_KEYS,
        SideTable::IndexVideos => INDEX_VIDEOS,
        SideTable::Deliveries => DELIVERIES,
        SideTable::WebhookDeliveries => WEBHOOK_DELIVERIES,
        SideTable::RunAnswers => RUN_ANSWERS,
        SideTable::RunCalls => RUN_CALLS,
    }
}

#[derive(Debug, Clone)]
pub struct RedbLogOptions {
    /// Requests per transaction (default [`GROUP_COMMIT_REQUESTS_MAX`]).
    pub group_requests_max: usize,
    /// redb page cache in bytes.
    pub cache_bytes: usize,
    /// Record the allocator state once per rest ([`REST_QUICK_REPAIR_AFTER`]) and in every
    /// commit that writes a snapshot (the runtime's idle one among them): a server's log.
    /// An offline tool, which only reads, writes nothing.
    pub commit_at_rest: bool,
}

impl Default for RedbLogOptions {
    fn default() -> Self {
        RedbLogOptions { group_requests_max: GROUP_COMMIT_REQUESTS_MAX, cache_bytes: 64 << 20, commit_at_rest: true }
    }
}

/// Counters of the writer, for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Durable write transactions.
    pub commits: AtomicU64,
    /// Append requests answered with success.
    pub appends: AtomicU64,
    /// Events written.
    pub events: AtomicU64,
    /// Transactions that failed (every appender of them got an error).
    pub failed_commits: AtomicU64,
}

struct Job {
    req: AppendRequest,
    reply: oneshot::Sender<Result<Appended, Error>>,
}

/// The embedded log. Cheap to share behind an `Arc`; dropping the last handle stops the
/// writer after it has committed what it already received.
pub struct RedbLog {
    db: Arc<Database>,
    path: PathBuf,
    tx: Option<mpsc::Sender<Job>>,
    head: watch::Receiver<u64>,
    stats: Arc<LogStats>,
    writer: Option<std::thread::JoinHandle<()>>,
    repaired: bool,
}

impl RedbLog {
    /// Open (or create) the log in `data_dir`.
    pub fn open_dir(data_dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(data_dir).map_err(|e| Error::Storage(format!("{}: {e}", data_dir.display())))?;
        Self::open(&data_dir.join(LOG_FILE_NAME), RedbLogOptions::default())
    }

    /// Open (or create) the log file at `path`. Another process holding it is refused with
    /// [`Error::AlreadyOpen`].
    pub fn open(path: &Path, opts: RedbLogOptions) -> Result<Self, Error> {
        let began = std::time::Instant::now();
        let repairing = Arc::new(AtomicBool::new(false));
        let flag = repairing.clone();
        let db = Database::builder()
            .set_cache_size(opts.cache_bytes)
            .set_repair_callback(move |_| flag.store(true, Ordering::Relaxed))
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::AlreadyOpen { path: path.to_path_buf() },
                other => Error::from(other),
            })?;
        let repaired = repairing.load(Ordering::Relaxed);
        if repaired {
            // The file was not closed, and no commit at rest recorded its allocator state since
            // its last commit: redb walked it whole.
            tracing::info!(
                path = %path.display(),
                ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
                "the log was not closed cleanly and was repaired"
            );
        }
        let mut log = Self::start(db, path.to_path_buf(), opts)?;
        log.repaired = repaired;
        Ok(log)
    }

    /// Whether opening this log repaired it (redb walked the whole file: it was not closed
    /// cleanly, and had not rested since its last commit: [`REST_QUICK_REPAIR_AFTER`]).
    pub fn repaired(&self) -> bool {
        self.repaired
    }

    /// Open on any redb storage backend (in-memory for simulation, a failing one for tests).
    pub fn open_with_backend(backend: impl redb::StorageBackend, opts: RedbLogOptions) -> Result<Self, Error> {
        let db = Database::builder().set_cache_size(opts.cache_bytes).create_with_backend(backend)?;
        Self::start(db, PathBuf::from(":backend:"), opts)
    }

    fn start(db: Database, path: PathBuf, opts: RedbLogOptions) -> Result<Self, Error> {
        {
            let w = db.begin_write()?;
            w.open_table(EVENTS)?;
            w.open_table(STREAM_INDEX)?;
            w.open_table(STREAM_HEADS)?;
            w.open_table(SNAPSHOTS)?;
            w.open_table(IDEMPOTENCY)?;
            w.open_table(DATA_KEYS)?;
            w.open_table(VIDEOS)?;
            w.open_table(JOB_FILES)?;
            w.open_table(IMPORT_KEYS)?;
            w.open_table(INDEX_VIDEOS)?;
            w.open_table(DELIVERIES)?;
            w.open_table(WEBHOOK_DELIVERIES)?;
            w.open_table(RUN_ANSWERS)?;
            w.open_table(RUN_CALLS)?;
            let mut meta = w.open_table(META)?;
            let known = meta.get("format_version")?.map(|g| g.value()).unwrap_or(0);
            if known > u64::from(FORMAT_VERSION) {
                return Err(Error::Invalid(format!(
                    "the log was written by a newer Spool (format {known}); this build writes format {FORMAT_VERSION}"
                )));
            }
            meta.insert("format_version", u64::from(FORMAT_VERSION))?;
            drop(meta);
            w.commit()?;
        }
        let db = Arc::new(db);
        let head_seq = last_seq(&db)?;
        let (head_tx, head_rx) = watch::channel(head_seq);
        let (tx, rx) = mpsc::channel(APPEND_QUEUE_DEPTH_MAX);
        let wdb = db.clone();
        let stats = Arc::new(LogStats::default());
        let wstats = stats.clone();
        let group_max = opts.group_requests_max.clamp(1, GROUP_COMMIT_REQUESTS_MAX);
        let rest = opts.commit_at_rest;
        let writer = std::thread::Builder::new()
            .name("spool-log-writer".into())
            .spawn(move || writer_loop(wdb, rx, head_tx, head_seq, group_max, wstats, rest))
            .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(RedbLog { db, path, tx: Some(tx), head: head_rx, stats, writer: Some(writer), repaired: false })
    }

    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raw records from `from_seq` (for `spool verify`, which reports damaged records
    /// instead of stopping at the first).
    pub fn read_raw(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let r = self.db.begin_read()?;
        let t = r.open_table(EVENTS)?;
        let mut out = Vec::new();
        for item in t.range(from_seq..)?.take(limit.min(READ_BATCH_MAX)) {
            let (k, v) = item?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Every stream and its version, in name order, starting after `after`.
    pub fn streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, u64)>, Error> {
        let r = self.db.begin_read()?;
        let t = r.open_table(STREAM_HEADS)?;
        let mut out = Vec::new();
        let iter = match after {
            Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?,
            None => t.range::<&str>(..)?,
        };
        for item in iter.take(limit.min(READ_BATCH_MAX)) {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// Every side record of a table, in key order, starting after `after`.
    pub fn side_scan(
        &self,
        table: SideTable,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let r = self.db.begin_read()?;
        let t = r.open_table(side_table(table))?;
        let iter = match after {
            Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?,
            None => t.range::<&str>(..)?,
        };
        let mut out = Vec::new();
        for item in iter.take(limit.min(READ_BATCH_MAX)) {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Stop the writer after it has answered every queued append, and release the file.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for RedbLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn last_seq(db: &Database) -> Result<u64, Error> {
    let r = db.begin_read()?;
    let t = r.open_table(EVENTS)?;
    Ok(t.last()?.map(|(k, _)| k.value()).unwrap_or(0))
}

fn read_envelopes(db: &Database, from_seq: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
    let r = db.begin_read()?;
    let t = r.open_table(EVENTS)?;
    let mut out = Vec::new();
    for item in t.range(from_seq..)?.take(limit.min(READ_BATCH_MAX)) {
        let (k, v) = item?;
        let seq = k.value();
        let env = decode_envelope(v.value()).map_err(|source| Error::Corrupt { seq, source })?;
        out.push(env);
    }
    Ok(out)
}

impl EventLog for RedbLog {
    fn append(&self, req: AppendRequest) -> crate::Appending<'_> {
        Box::pin(async move {
            validate(&req)?;
            let tx = self.tx.as_ref().ok_or(Error::Closed)?;
            let (reply, rx) = oneshot::channel();
            tx.send(Job { req, reply }).await.map_err(|_| Error::Closed)?;
            rx.await.map_err(|_| Error::Closed)?
        })
    }

    fn stats(&self) -> &LogStats {
        RedbLog::stats(self)
    }

    fn submit(&self, req: AppendRequest) -> crate::Submitted {
        let (reply, rx) = oneshot::channel();
        if let Err(e) = validate(&req) {
            let _ = reply.send(Err(e));
            return crate::Submitted::new(rx);
        }
        let Some(tx) = self.tx.as_ref() else {
            let _ = reply.send(Err(Error::Closed));
            return crate::Submitted::new(rx);
        };
        let job = Job { req, reply };
        let job = match tx.try_send(job) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(job)) => Some(job),
            Err(mpsc::error::TrySendError::Closed(job)) => {
                let _ = job.reply.send(Err(Error::Closed));
                None
            }
        };
        if let Some(job) = job {
            // The queue is full: wait for room (back-pressure), in order.
            let tx = tx.clone();
            if let Err(e) = std::thread::scope(|s| s.spawn(move || tx.blocking_send(job)).join()).unwrap_or(Ok(())) {
                let _ = e.0.reply.send(Err(Error::Closed));
            }
        }
        crate::Submitted::new(rx)
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }

    fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        read_envelopes(&self.db, from_seq, limit)
    }

    fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        let limit = limit.min(READ_BATCH_MAX);
        let r = self.db.begin_read()?;
        let idx = r.open_table(STREAM_INDEX)?;
        let events = r.open_table(EVENTS)?;
        let indexed_seq = r.open_table(META)?.get(META_INDEXED_SEQ)?.map(|g| g.value()).unwrap_or(0);
        let mut out = Vec::new();
        for item in idx.range((stream, from_version)..=(stream, u64::MAX))?.take(limit) {
            let (_, seq) = item?;
            let seq = seq.value();
            let raw = events
                .get(seq)?
                .ok_or_else(|| Error::Storage(format!("stream index of {stream} names missing record {seq}")))?;
            out.push(decode_envelope(raw.value()).map_err(|source| Error::Corrupt { seq, source })?);
        }
        if out.len() < limit {
            // The tail that is not indexed yet: scan it (bounded by the flush threshold).
            let mut version = match idx.range((stream, 0)..=(stream, u64::MAX))?.next_back() {
                Some(item) => item?.0.value().1 + 1,
                None => 0,
            };
            for item in events.range(indexed_seq + 1..)? {
                let (k, v) = item?;
                let seq = k.value();
                let env = decode_envelope(v.value()).map_err(|source| Error::Corrupt { seq, source })?;
                if env.stream != stream {
                    continue;
                }
                if version >= from_version {
                    out.push(env);
                    if out.len() >= limit {
                        break;
                    }
                }
                version += 1;
            }
        }
        Ok(out)
    }

    fn stream_version(&self, stream: &str) -> Result<u64, Error> {
        let r = self.db.begin_read()?;
        let t = r.open_table(STREAM_HEADS)?;
        Ok(t.get(stream)?.map(|g| g.value()).unwrap_or(0))
    }

    fn tail(&self, from_seq: u64) -> Tail {
        let db = self.db.clone();
        Tail::new(from_seq, self.head.clone(), Arc::new(move |from, limit| read_envelopes(&db, from, limit)))
    }

    fn snapshot(&self, name: &str) -> Result<Option<Snapshot>, Error> {
        let r = self.db.begin_read()?;
        let t = r.open_table(SNAPSHOTS)?;
        let Some(v) = t.get(name)? else { return Ok(None) };
        let v = v.value();
        if v.len() < 8 {
            return Err(Error::Storage(format!("snapshot {name} is {} bytes, shorter than its header", v.len())));
        }
        let at_seq = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
        Ok(Some(Snapshot { at_seq, bytes: v[8..].to_vec() }))
    }

    fn side_get(&self, table: SideTable, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let r = self.db.begin_read()?;
        let t = r.open_table(side_table(table))?;
        Ok(t.get(key)?.map(|g| g.value().to_vec()))
    }

    fn side_scan(&self, table: SideTable, after: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>, Error> {
        RedbLog::side_scan(self, table, after, limit)
    }

    fn side_get_many(&self, table: SideTable, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        if keys.len() > READ_BATCH_MAX {
            return Err(Error::Invalid(format!("{} keys in one read; at most {READ_BATCH_MAX}", keys.len())));
        }
        let r = self.db.begin_read()?;
        let t = r.open_table(side_table(table))?;
        keys.iter().map(|k| Ok(t.get(k.as_str())?.map(|g| g.value().to_vec()))).collect()
    }
}

pub(crate) fn validate(req: &AppendRequest) -> Result<(), Error> {
    let n = req.event_count();
    if n > APPEND_EVENTS_MAX {
        return Err(Error::Invalid(format!("{n} events in one append; at most {APPEND_EVENTS_MAX}")));
    }
    // A stream may appear several times (the sequencer appends a batch in decision order);
    // each appearance expects the version the earlier ones leave.
    if req.streams.iter().any(|s| s.stream.is_empty()) {
        return Err(Error::Invalid("empty stream name".into()));
    }
    Ok(())
}

/// How long the writer waits with nothing to commit before it records redb's allocator state
/// (a commit with quick repair, which also writes the stream index still in memory): opened
/// after a kill -9 that came later, the file is not walked and checked whole (redb's full
/// repair, which takes time in proportion to the file: 2.4 s at 3.8 GB here). A commit with
/// quick repair costs more (its allocator state grows with the file: 3 ms against 1.3 at a
/// million videos), so only a writer at rest takes one, at most once per rest.
pub const REST_QUICK_REPAIR_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// The single writer: take one job, gather whatever else is already queued (bounded), commit
/// once, then answer everyone. At rest ([`REST_QUICK_REPAIR_AFTER`] without a job after a
/// commit), one empty commit with quick repair.
fn writer_loop(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<Job>,
    head_tx: watch::Sender<u64>,
    mut head: u64,
    group_max: usize,
    stats: Arc<LogStats>,
    rest: bool,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(group_max);
    let mut pending = match unindexed_tail(&db) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the unindexed tail of the log; the writer stops");
            return;
        }
    };
    // Waits for the next job with a timeout (the writer is a plain thread).
    let waiter = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        _ if !rest => None,
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "no timer for the writer: it never records the allocator state at rest");
            None
        }
    };
    // Whether the last commit recorded the allocator state (none at open: a repair's commit
    // does not).
    let mut rested = false;
    loop {
        let next = match (&waiter, rested) {
            (Some(w), false) => w.block_on(async { tokio::time::timeout(REST_QUICK_REPAIR_AFTER, rx.recv()).await }),
            _ => Ok(rx.blocking_recv()),
        };
        let first = match next {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(_) => {
                // At rest: record the allocator state (and write the stream index).
                match commit_batch(&db, &[], head, &pending, true) {
                    Ok(_) => {
                        pending.clear();
                        stats.commits.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // As any failed commit: redb may refuse every write after it until the
                        // file is opened again.
                        stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "the commit at rest (the allocator state) failed");
                    }
                }
                rested = true;
                continue;
            }
        };
        rested = false;
        let mut events = first.req.event_count();
        batch.push(first);
        while batch.len() < group_max && events < GROUP_COMMIT_EVENTS_MAX {
            match rx.try_recv() {
                Ok(job) => {
                    events += job.req.event_count();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        // A snapshot's commit (the runtime writes one when its commits have been quiet, and
        // every so many events, and at shutdown) records the allocator state (and the stream
        // index) as the rest commit would, so a kill -9 of the idle server right after its idle
        // snapshot opens without redb's repair walk; when the batch had no events of its own
        // the rest that follows needs no second one.
        let snapshot = rest && batch.iter().any(|j| j.req.side.iter().any(|s| matches!(s, SideWrite::Snapshot { .. })));
        let flush = snapshot || pending.len() >= STREAM_INDEX_FLUSH_EVENTS;
        match commit_batch(&db, &batch, head, if flush { &pending[..] } else { &[] }, snapshot) {
            Ok((results, new_head, mut indexed)) => {
                if flush {
                    pending.clear();
                }
                pending.append(&mut indexed);
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.events.fetch_add(new_head - head, Ordering::Relaxed);
                stats.appends.fetch_add(results.iter().filter(|r| r.is_ok()).count() as u64, Ordering::Relaxed);
                head = new_head;
                head_tx.send_replace(head);
                // This batch's own events wait in `pending` for the rest commit's index flush.
                rested = snapshot && pending.is_empty();
                for (job, res) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "log commit failed; nothing of this batch was written");
                stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                let msg = e.to_string();
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(Error::Storage(msg.clone())));
                }
                // The transaction was dropped: the head on disk is unchanged, but re-read it
                // in case the failure was ambiguous.
                if let Ok(h) = last_seq(&db) {
                    head = h;
                }
            }
        }
    }
    // Closing: write the rest of the stream index so the next open has nothing to rebuild.
    if !pending.is_empty()
        && let Err(e) = commit_batch(&db, &[], head, &pending, false)
    {
        tracing::warn!(error = %e, "stream index not flushed at close; it is rebuilt at next open");
    }
}

/// One stream index entry that is not yet in the `stream_index` table.
type IndexEntry = (String, u64, u64);

/// The index entries of events after the table's `stream_index_seq`: rebuilt from the events
/// themselves at open (the events are the truth; the index is derived).
fn unindexed_tail(db: &Database) -> Result<Vec<IndexEntry>, Error> {
    let r = db.begin_read()?;
    let meta = r.open_table(META)?;
    let from = meta.get(META_INDEXED_SEQ)?.map(|g| g.value()).unwrap_or(0) + 1;
    let events = r.open_table(EVENTS)?;
    let heads = r.open_table(STREAM_HEADS)?;
    let mut tail: Vec<(u64, String)> = Vec::new();
    for item in events.range(from..)? {
        let (k, v) = item?;
        let seq = k.value();
        let env = decode_envelope(v.value()).map_err(|source| Error::Corrupt { seq, source })?;
        tail.push((seq, env.stream));
    }
    // Versions: count back from each stream's head.
    let mut remaining: HashMap<String, u64> = HashMap::new();
    for (_, stream) in &tail {
        *remaining.entry(stream.clone()).or_insert(0) += 1;
    }
    let mut next_version: HashMap<String, u64> = HashMap::new();
    for (stream, n) in &remaining {
        let head = heads.get(stream.as_str())?.map(|g| g.value()).unwrap_or(*n);
        next_version.insert(stream.clone(), head.saturating_sub(*n));
    }
    let mut out = Vec::with_capacity(tail.len());
    for (seq, stream) in tail {
        let v = next_version.get_mut(&stream).expect("counted above");
        out.push((stream, *v, seq));
        *v += 1;
    }
    Ok(out)
}

type BatchResult = (Vec<Result<Appended, Error>>, u64, Vec<IndexEntry>);

fn commit_batch(
    db: &Database,
    batch: &[Job],
    mut head: u64,
    flush_index: &[IndexEntry],
    quick_repair: bool,
) -> Result<BatchResult, Error> {
    let mut w = db.begin_write()?;
    w.set_quick_repair(quick_repair);
    let mut results = Vec::with_capacity(batch.len());
    let mut indexed = Vec::new();
    {
        if let Some((_, _, last)) = flush_index.last() {
            let mut index = w.open_table(STREAM_INDEX)?;
            for (stream, version, seq) in flush_index {
                index.insert((stream.as_str(), *version), *seq)?;
            }
            w.open_table(META)?.insert(META_INDEXED_SEQ, *last)?;
        }
        let mut events = w.open_table(EVENTS)?;
        let mut heads = w.open_table(STREAM_HEADS)?;
        let mut snapshots = w.open_table(SNAPSHOTS)?;
        let mut idem = w.open_table(IDEMPOTENCY)?;
        let mut data_keys = w.open_table(DATA_KEYS)?;
        let mut videos = w.open_table(VIDEOS)?;
        let mut job_files = w.open_table(JOB_FILES)?;
        let mut import_keys = w.open_table(IMPORT_KEYS)?;
        let mut index_videos = w.open_table(INDEX_VIDEOS)?;
        let mut deliveries = w.open_table(DELIVERIES)?;
        let mut webhook_deliveries = w.open_table(WEBHOOK_DELIVERIES)?;
        let mut run_answers = w.open_table(RUN_ANSWERS)?;
        let mut run_calls = w.open_table(RUN_CALLS)?;
        // Versions changed in this transaction (the table sees them too, but this saves reads).
        let mut versions: HashMap<&str, u64> = HashMap::new();
        let mut buf = Vec::new();
        'jobs: for job in batch {
            // Check every stream of the request before writing any of it; a stream named again
            // in the same request continues from its earlier appearance.
            let mut current = Vec::with_capacity(job.req.streams.len());
            let mut within: HashMap<&str, u64> = HashMap::new();
            for s in &job.req.streams {
                let actual = match within.get(s.stream.as_str()).or_else(|| versions.get(s.stream.as_str())) {
                    Some(v) => *v,
                    None => heads.get(s.stream.as_str())?.map(|g| g.value()).unwrap_or(0),
                };
                within.insert(s.stream.as_str(), actual + s.events.len() as u64);
                let ok = match s.expected {
                    Expected::Any => true,
                    Expected::NoStream => actual == 0,
                    Expected::Exact(v) => actual == v,
                };
                if !ok {
                    results.push(Err(Error::Conflict { stream: s.stream.clone(), expected: s.expected, actual }));
                    continue 'jobs;
                }
                current.push(actual);
            }
            for side in &job.req.side {
                if let SideWrite::Snapshot { name, at_seq, .. } = side {
                    let after = head + job.req.event_count() as u64;
                    if *at_seq > after {
                        results.push(Err(Error::Invalid(format!(
                            "snapshot {name} at seq {at_seq} is ahead of the log ({after})"
                        ))));
                        continue 'jobs;
                    }
                }
            }
            let first_seq = if job.req.event_count() > 0 { head + 1 } else { 0 };
            let mut new_versions = Vec::with_capacity(job.req.streams.len());
            for (s, mut version) in job.req.streams.iter().zip(current) {
                for ev in &s.events {
                    head += 1;
                    let env = Envelope {
                        seq: head,
                        stream: s.stream.clone(),
                        at_ms: ev.at_ms,
                        format_version: FORMAT_VERSION,
                        event: ev.event.clone(),
                    };
                    buf.clear();
                    buf.extend(encode_envelope(&env).map_err(Error::Encode)?);
                    events.insert(head, buf.as_slice())?;
                    indexed.push((s.stream.clone(), version, head));
                    version += 1;
                }
                if !s.events.is_empty() {
                    heads.insert(s.stream.as_str(), version)?;
                }
                versions.insert(s.stream.as_str(), version);
                new_versions.push(version);
            }
            for side in &job.req.side {
                match side {
                    SideWrite::Put { table, key, value } => {
                        let t = match table {
                            SideTable::Idempotency => &mut idem,
                            SideTable::DataKeys => &mut data_keys,
                            SideTable::Videos => &mut videos,
                            SideTable::JobFiles => &mut job_files,
                            SideTable::ImportKeys => &mut import_keys,
                            SideTable::IndexVideos => &mut index_videos,
                            SideTable::Deliveries => &mut deliveries,
                            SideTable::WebhookDeliveries => &mut webhook_deliveries,
                            SideTable::RunAnswers => &mut run_answers,
                            SideTable::RunCalls => &mut run_calls,
                        };
                        t.insert(key.as_str(), value.as_slice())?;
                    }
                    SideWrite::Delete { table, key } => {
                        let t = match table {
                            SideTable::Idempotency => &mut idem,
                            SideTable::DataKeys => &mut data_keys,
                            SideTable::Videos => &mut videos,
                            SideTable::JobFiles => &mut job_files,
                            SideTable::ImportKeys => &mut import_keys,
                            SideTable::IndexVideos => &mut index_videos,
                            SideTable::Deliveries => &mut deliveries,
                            SideTable::WebhookDeliveries => &mut webhook_deliveries,
                            SideTable::RunAnswers => &mut run_answers,
                            SideTable::RunCalls => &mut run_calls,
                        };
                        t.remove(key.as_str())?;
                    }
                    SideWrite::Snapshot { name, at_seq, bytes } => {
                        let mut v = Vec::with_capacity(8 + bytes.len());
                        v.extend_from_slice(&at_seq.to_le_bytes());
                        v.extend_from_slice(bytes);
                        snapshots.insert(name.as_str(), v.as_slice())?;
                    }
                }
            }
            let last_seq = head;
            results.push(Ok(Appended { first_seq, last_seq, versions: new_versions }));
        }
    }
    w.commit()?;
    Ok((results, head, indexed))
}

impl crate::RawLog for RedbLog {
    fn read_raw(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        RedbLog::read_raw(self, from_seq, limit)
    }

    fn streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, u64)>, Error> {
        RedbLog::streams(self, after, limit)
    }
}
