use crate::keyring::{Keyring, MasterKey};
use crate::sequencer::{Sequencer, SequencerConfig, SequencerHost, SequencerThreads, Submission};
use crate::{Clock, IdSource, IdemBody, IdemKey, IdemRecord};
use spool_core::{Command, DomainError, Effect, Outcome, State, WorkKey, pending_effects};
use spool_log::{AppendRequest, EventLog, RedbLog, SideTable, SideWrite};
use spool_model::ApiKeyId;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

pub use crate::error::{Reply, RuntimeError, panic_message};
pub use crate::fold::SNAPSHOT_NAME;
pub use crate::sequencer::DECISION_EVENTS_MAX;
/// Effects running at once.
pub const EFFECTS_CONCURRENCY_MAX: usize = 64;
/// Times an effect may panic before it is given up: its job then fails with `internal_error`
/// (an effect with no job to fail is not offered again until the next start).
pub const EFFECT_PANIC_TRIES_MAX: u32 = 3;
/// Timers fired at once by the timer service.
pub const TIMER_FIRE_BATCH_MAX: usize = 256;
/// The timer service re-reads the clock at least this often (wall-clock jumps, missed wakes).
pub const TIMER_IDLE_MS: u64 = 1_000;
/// The purpose under which media URLs are signed (`/media/{path}?expires&sig`).
pub const MEDIA_SIGNING_PURPOSE: &str = "media-url/v1";

/// A snapshot's bytes per event of the tail it lets a restart skip: snapshots are taken every
/// `bytes / SNAPSHOT_BYTES_PER_EVENT` events (at least `snapshot_every_events`).
pub const SNAPSHOT_BYTES_PER_EVENT: u64 = 64;
/// The most events between two snapshots however large the state (a restart's tail).
pub const SNAPSHOT_TAIL_EVENTS_MAX: u64 = 250_000;
/// How long the log must be quiet before a snapshot of a server at rest.
pub const SNAPSHOT_IDLE_TICK: Duration = Duration::from_secs(1);
/// Rounds of [`Runtime::read_with_answers`]: each reads the answers of tasks that succeeded
/// since the round before.
pub const ANSWER_ROUNDS_MAX: usize = 4;
/// Fewer events than this since the last snapshot take none at rest.
pub const SNAPSHOT_IDLE_EVENTS_MIN: u64 = 1000;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub data_dir: PathBuf,
    /// The log: `None` is redb in the data directory; `postgres://…` is a PostgreSQL log
    /// (`engine-spec/cluster.md`; one partition for now).
    pub log_url: Option<String>,
    /// This node's name in a PostgreSQL log's lease (`SPOOL_NODE_ID`); empty: the one kept in
    /// `<data-dir>/node.id` (made at first start), so a restart of the same node takes its
    /// partition back at once.
    pub node_id: String,
    /// How long a PostgreSQL log's lease lasts unless renewed (`SPOOL_LEASE_TTL`).
    pub lease_ttl: Duration,
    /// The node's PostgreSQL reader pool, shared by its partitions (`None`: the log's own).
    pub pg_readers: Option<Arc<spool_log::PgReaders>>,
    /// The partition of a PostgreSQL log this runtime serves (0 unless the cluster is
    /// partitioned).
    pub partition: i32,
    /// In a partitioned cluster, the partition new ids carry (`spool_model::partition_of`);
    /// `None` otherwise.
    pub partition_tag: Option<u16>,
    /// Wait while another node holds the partition (`false`: fail at once with
    /// `HeldElsewhere`).
    pub wait_for_lease: bool,
    /// In an index partition of a partitioned cluster: the catalog's log (partition 0, read
    /// only), followed into this partition (`follow.rs`) and where the keyring reads the data
    /// keys of the catalog's secrets.
    pub catalog: Option<CatalogLog>,
    /// In the catalog of a partitioned cluster: its index partitions (their published domain
    /// events are delivered here, `follow.rs`); 0 elsewhere.
    pub index_partitions: u16,
    /// Take a snapshot after this many folded events.
    pub snapshot_every_events: u64,
    /// How often coarse API key usage is written (and expired idempotency records swept).
    pub usage_flush: Duration,
    /// How long an idempotency record is kept (at least 24 h by the contract).
    pub idempotency_ttl: Duration,
    /// How long SIGTERM waits for running effects.
    pub drain_timeout: Duration,
    /// Run effects (off for offline tools).
    pub run_effects: bool,
    /// The master key; `None` loads it from `SPOOL_MASTER_KEY` or `<data_dir>/master.key`.
    pub master_key: Option<MasterKey>,
    /// What the operator's environment says about storage.
    pub storage: spool_storage::StorageEnv,
    /// The object store every node of a cluster shares (`SPOOL_MEDIA_URL`, already under its
    /// prefix): media, staged uploads and export artifacts live in its `media/`, `uploads/`
    /// and `exports/` instead of the data directory, which then holds only scratch copies.
    pub shared_files: Option<spool_storage::Store>,
    /// Files copied at once by import jobs (all jobs together; `SPOOL_IMPORT_CONCURRENCY`).
    pub import_concurrency: usize,
    /// Webhook delivery settings (allowed hosts, retry schedule, timeout, rotation grace).
    pub webhooks: crate::executors::webhook::WebhookSettings,
    /// The processors prompt runs use (`[processors.<name>]`).
    pub processors: crate::executors::prompt_run::ProcessorSettings,
    /// Largest artifact of a download export (`SPOOL_EXPORT_DOWNLOAD_MAX_BYTES`).
    pub export_download_max_bytes: u64,
    /// Part size of resumable uploads of exports (`SPOOL_EXPORT_PART_BYTES`; 8 MiB).
    pub export_part_bytes: u64,
    /// How often an import automation lists its location (`SPOOL_AUTOMATION_WATCH_INTERVAL`).
    pub automation_watch_interval: Duration,
    /// Events one decision may write ([`DECISION_EVENTS_MAX`]; tests lower it to reach it with
    /// a few webhooks).
    pub decision_events_max: usize,
    /// Keep the search projection (`search.rs`) in `<data-dir>/search/`.
    pub search: bool,
}

/// The catalog's log, as an index partition reads it ([`RuntimeConfig::catalog`]).
#[derive(Clone)]
pub struct CatalogLog(pub Arc<dyn EventLog>);

impl std::fmt::Debug for CatalogLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogLog")
    }
}

/// Default of [`RuntimeConfig::idempotency_ttl`]: 48 h.
pub const IDEMPOTENCY_TTL_SECS_DEFAULT: u64 = 48 * 3600;
/// Expired idempotency records removed per sweep transaction.
pub const IDEMPOTENCY_SWEEP_BATCH_MAX: usize = 1024;

/// Default of [`RuntimeConfig::import_concurrency`].
pub const IMPORT_CONCURRENCY_DEFAULT: usize = 8;
/// The media store's folder inside the data directory.
pub const MEDIA_DIR: &str = "media";
/// Where copies on their way to a shared store (`SPOOL_MEDIA_URL`) are made, inside the data
/// directory.
pub const SCRATCH_DIR: &str = "scratch";
/// Where uploads are staged until their job imports them, inside the data directory.
pub const UPLOADS_DIR: &str = "uploads";

impl RuntimeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            data_dir: data_dir.into(),
            log_url: None,
            node_id: String::new(),
            lease_ttl: spool_log::LEASE_TTL_DEFAULT,
            pg_readers: None,
            partition: 0,
            partition_tag: None,
            wait_for_lease: true,
            catalog: None,
            index_partitions: 0,
            snapshot_every_events: 10_000,
            usage_flush: Duration::from_secs(60),
            idempotency_ttl: Duration::from_secs(IDEMPOTENCY_TTL_SECS_DEFAULT),
            drain_timeout: Duration::from_secs(10),
            run_effects: true,
            master_key: None,
            storage: spool_storage::StorageEnv::default(),
            shared_files: None,
            import_concurrency: IMPORT_CONCURRENCY_DEFAULT,
            webhooks: Default::default(),
            processors: Default::default(),
            export_download_max_bytes: crate::executors::export::EXPORT_DOWNLOAD_MAX_BYTES_DEFAULT,
            export_part_bytes: spool_core::machines::export::EXPORT_PART_BYTES_DEFAULT,
            automation_watch_interval: Duration::from_millis(
                spool_core::machines::automation::WATCH_INTERVAL_DEFAULT_MS,
            ),
            decision_events_max: DECISION_EVENTS_MAX,
            search: true,
        }
    }
}

pub struct Runtime {
    /// The log, whichever it is (redb embedded; in memory for tests; PostgreSQL next).
    log: Arc<dyn EventLog>,
    keyring: Arc<Keyring>,
    /// What readers see: the fold of every durable batch (the sequencer decides on a working
    /// state of its own, ahead of this one by the batches on their way to the log).
    state: RwLock<State>,
    pub(crate) applied: watch::Sender<u64>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    pub(crate) cfg: RuntimeConfig,
    pub(crate) ready: watch::Sender<bool>,
    draining: AtomicBool,
    inflight_effects: Mutex<BTreeSet<Effect>>,
    /// Panics of each effect so far (in this process), and the effects given up after
    /// [`EFFECT_PANIC_TRIES_MAX`] of them.
    effect_panics: Mutex<std::collections::HashMap<Effect, u32>>,
    given_up_effects: Mutex<BTreeSet<Effect>>,
    effect_slots: Arc<Semaphore>,
    inflight_idem: Mutex<HashSet<String>>,
    usage: Mutex<BTreeMap<ApiKeyId, u64>>,
    /// The executors and their resources (media store, import slots, connector stores).
    pub(crate) executors: crate::executors::Executors,
    /// The sequencer's inbox: every command (API, effect outcome, timer) goes through it.
    inbox: Mutex<Option<tokio::sync::mpsc::Sender<Submission>>>,
    /// The sequencer's threads and the background tasks, joined by `shutdown`.
    sequencer: Mutex<Option<SequencerThreads>>,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Turns true at shutdown; background loops select on it.
    pub(crate) stopping: watch::Sender<bool>,
    /// In an index partition: how far the catalog follower has read (past its recorded
    /// position, with nothing to fold in between); a catch-up starts there (`follow.rs`).
    pub(crate) catalog_scanned: AtomicU64,
    /// The tokio runtime effects are spawned on (the sequencer is an OS thread).
    handle: tokio::runtime::Handle,
    /// Notified when a committed batch set a timer (the timer service re-reads the earliest).
    timers_changed: tokio::sync::Notify,
    last_snapshot_seq: AtomicU64,
    /// The size of the last snapshot written (0 before the first): the state's size, which
    /// sets how often snapshots are taken.
    last_snapshot_bytes: AtomicU64,
    /// The last sequence number this node committed (`after_commit`).
    last_committed: AtomicU64,
    /// A snapshot is being written (at most one at a time).
    snapshotting: AtomicBool,
    /// The `spool_waiting` gauges, kept as each committed batch is published (`gauges.rs`).
    gauges: Mutex<crate::gauges::Gauges>,
    /// See [`Runtime::partition_lost`].
    partition_lost: Mutex<Option<watch::Receiver<bool>>>,
    /// This node's id in a shared log's leases (`None` on a log of one process).
    node_id: Mutex<Option<String>>,
    /// The search projection (`search.rs`; `None` when the configuration keeps none).
    pub(crate) search: Option<Arc<spool_search::SearchIndex>>,
    /// Counters for `/metrics`.
    pub commands_total: AtomicU64,
    pub effects_total: AtomicU64,
}

impl Runtime {
    /// Open the data directory, restore the state (snapshot + tail) and start the fold task.
    /// Must be called inside a tokio runtime. Returns at once; `is_ready()` turns true (and
    /// `wait_ready()` returns) once the log is replayed.
    pub async fn open(
        cfg: RuntimeConfig,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
    ) -> Result<Arc<Runtime>, RuntimeError> {
        let mut lost = None;
        let mut held_by = None;
        let log: Arc<dyn EventLog> = match &cfg.log_url {
            Some(url) => {
                let node_id = match cfg.node_id.trim() {
                    "" => node_id_of(&cfg.data_dir, &*ids)?,
                    id => id.to_string(),
                };
                let opts = spool_log::PgLogOptions {
                    url: url.clone(),
                    partition: cfg.partition,
                    node_id: node_id.clone(),
                    lease_ttl: cfg.lease_ttl,
                    wait: cfg.wait_for_lease,
                    readers: cfg.pg_readers.clone(),
                };
                // Blocks while another node holds the lease (this node is a standby).
                let pg = tokio::task::spawn_blocking(move || spool_log::PgLog::open(opts))
                    .await
                    .map_err(|e| spool_log::Error::Storage(format!("opening the PostgreSQL log: {e}")))??;
                tracing::info!(
                    node_id,
                    epoch = pg.epoch(),
                    head = pg.head(),
                    partition = cfg.partition,
                    "this node holds a partition of the PostgreSQL log"
                );
                lost = Some(pg.lost());
                held_by = Some(node_id);
                Arc::new(pg)
            }
            None => Arc::new(RedbLog::open_dir(&cfg.data_dir)?),
        };
        let rt = Self::start(log, cfg, clock, ids).await?;
        *rt.partition_lost.lock().unwrap_or_else(|p| p.into_inner()) = lost;
        *rt.node_id.lock().unwrap_or_else(|p| p.into_inner()) = held_by;
        Ok(rt)
    }

    /// This node's id in a shared log's leases (`None` on a log of one process).
    pub fn node_id(&self) -> Option<String> {
        self.node_id.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// On a PostgreSQL log: turns true, for good, when this node lost its partition (another
    /// node took it over, or the lease could not be renewed in time). `None` on other logs.
    pub fn partition_lost(&self) -> Option<watch::Receiver<bool>> {
        self.partition_lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub async fn start(
        log: Arc<dyn EventLog>,
        cfg: RuntimeConfig,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
    ) -> Result<Arc<Runtime>, RuntimeError> {
        let master = match cfg.master_key.clone() {
            Some(k) => k,
            None => {
                crate::keyring::recover_rotation(&cfg.data_dir, &*log)?;
                MasterKey::load(&cfg.data_dir)?.0
            }
        };
        let mut keyring = Keyring::load(master, log.clone()).await?;
        if let Some(catalog) = &cfg.catalog {
            keyring = keyring.reading_keys_from(catalog.0.clone());
        }
        let keyring = Arc::new(keyring);
        // The snapshot now; the tail is folded on the sequencer's thread before it takes
        // commands (the caller may serve meanwhile: `/api` answers 503 until ready).
        let state = crate::fold::restore_snapshot(&*log)?;
        if state.applied_seq > 0 {
            tracing::info!(at_seq = state.applied_seq, "restored the state from a snapshot");
        }
        let (inbox, rx) = crate::sequencer::inbox();
        let webhooks = crate::executors::webhook::WebhookExecutor::new(cfg.webhooks.clone())
            .map_err(|e| spool_log::Error::Storage(format!("the webhook client: {e}")))?;
        let prompt_runs = crate::executors::prompt_run::PromptRunExecutor::new(cfg.processors.clone())
            .map_err(|e| spool_log::Error::Storage(format!("the processor client: {e}")))?;
        // With a shared store the data directory's `scratch/` holds the copies on their way
        // to it (emptied when the process starts: `clear_scratch`); else media lives in
        // `media/`.
        let media_dir = match cfg.shared_files {
            Some(_) => cfg.data_dir.join(SCRATCH_DIR),
            None => cfg.data_dir.join(MEDIA_DIR),
        };
        std::fs::create_dir_all(&media_dir)
            .map_err(|e| spool_log::Error::Storage(format!("{}: {e}", media_dir.display())))?;
        let scratch = spool_storage::Store::local(&media_dir)
            .map_err(|e| spool_log::Error::Storage(format!("{}: {e}", media_dir.display())))?;
        // A partitioned cluster's node holds several partitions on one data directory: each
        // stages its uploads in a folder of its own, swept by it alone.
        let uploads_dir = match cfg.partition_tag {
            Some(p) => cfg.data_dir.join(UPLOADS_DIR).join(format!("p{p}")),
            None => cfg.data_dir.join(UPLOADS_DIR),
        };
        std::fs::create_dir_all(&uploads_dir)
            .map_err(|e| spool_log::Error::Storage(format!("{}: {e}", uploads_dir.display())))?;
        let (media, uploads, exports) = match &cfg.shared_files {
            Some(shared) => {
                let under = |sub: &str| {
                    shared.under(sub).map_err(|e| spool_log::Error::Storage(format!("SPOOL_MEDIA_URL {sub}/: {e}")))
                };
                (under("media")?, under("uploads")?, Some(under("exports")?))
            }
            None => {
                let uploads = spool_storage::Store::local(&uploads_dir)
                    .map_err(|e| spool_log::Error::Storage(format!("{}: {e}", uploads_dir.display())))?;
                (scratch.clone(), uploads, None)
            }
        };
        let search = match cfg.search {
            true => {
                let dir = match cfg.partition_tag {
                    Some(p) => cfg.data_dir.join(crate::search::SEARCH_DIR).join(format!("p{p}")),
                    None => cfg.data_dir.join(crate::search::SEARCH_DIR),
                };
                let opened = tokio::task::spawn_blocking(move || spool_search::SearchIndex::open_shared(&dir))
                    .await
                    .map_err(|e| spool_log::Error::Storage(format!("opening the search index: {e}")))?
                    .map_err(|e| spool_log::Error::Storage(e.to_string()))?;
                Some(opened)
            }
            false => None,
        };
        let (applied, _) = watch::channel(state.applied_seq);
        let rt = Arc::new(Runtime {
            search,
            log,
            keyring,
            last_snapshot_seq: AtomicU64::new(state.applied_seq),
            last_snapshot_bytes: AtomicU64::new(0),
            last_committed: AtomicU64::new(0),
            snapshotting: AtomicBool::new(false),
            state: RwLock::new(state),
            applied,
            clock,
            ids,
            ready: watch::channel(false).0,
            draining: AtomicBool::new(false),
            inflight_effects: Mutex::new(BTreeSet::new()),
            effect_panics: Mutex::new(std::collections::HashMap::new()),
            given_up_effects: Mutex::new(BTreeSet::new()),
            effect_slots: Arc::new(Semaphore::new(EFFECTS_CONCURRENCY_MAX)),
            inflight_idem: Mutex::new(HashSet::new()),
            usage: Mutex::new(BTreeMap::new()),
            gauges: Mutex::new(Default::default()),
            partition_lost: Mutex::new(None),
            node_id: Mutex::new(None),
            executors: crate::executors::Executors {
                media,
                scratch,
                uploads,
                uploads_dir,
                exports,
                imports: crate::executors::import_job::ImportExecutor {
                    slots: Arc::new(Semaphore::new(cfg.import_concurrency.max(1))),
                },
                connectors: Default::default(),
                webhooks,
                prompt_runs,
            },
            inbox: Mutex::new(Some(inbox)),
            sequencer: Mutex::new(None),
            background: Mutex::new(Vec::new()),
            stopping: watch::channel(false).0,
            catalog_scanned: AtomicU64::new(0),
            handle: tokio::runtime::Handle::current(),
            timers_changed: tokio::sync::Notify::new(),
            commands_total: AtomicU64::new(0),
            effects_total: AtomicU64::new(0),
            cfg,
        });
        let host = Arc::new(Host(rt.clone()));
        let sequencer = Sequencer::new(
            rt.log.clone(),
            rt.keyring.clone(),
            rt.clock.clone(),
            rt.ids.clone(),
            host,
            SequencerConfig { decision_events_max: rt.cfg.decision_events_max, partition: rt.cfg.partition_tag },
        );
        let starting = rt.clone();
        let threads = sequencer
            .spawn(rx, move || starting.fold_log_and_get_ready())
            .map_err(|e| spool_log::Error::Storage(format!("starting the sequencer: {e}")))?;
        *rt.sequencer.lock().unwrap_or_else(|p| p.into_inner()) = Some(threads);
        let mut background = Vec::new();
        if rt.cfg.run_effects {
            let timers = rt.clone();
            background.push(tokio::spawn(async move { timers.timer_loop().await }));
        }
        background.push(tokio::spawn(rt.clone().snapshot_when_idle()));
        background.push(tokio::spawn(rt.clone().follow_search()));
        if rt.cfg.run_effects {
            // The holder that acts tells the output (a node that only reads would repeat it).
            background.push(tokio::spawn(rt.clone().follow_announcements()));
        }
        let starter = rt.clone();
        background.push(tokio::spawn(async move {
            let mut stop = starter.stopping.subscribe();
            starter.wait_ready().await;
            if starter.cfg.run_effects {
                let mut tick = tokio::time::interval(starter.cfg.usage_flush);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    if starter.draining.load(Ordering::SeqCst) {
                        return;
                    }
                    starter.flush_usage().await;
                    starter.sweep_idempotency().await;
                }
            }
        }));
        if rt.cfg.run_effects && rt.cfg.index_partitions > 0 {
            background.push(tokio::spawn(crate::follow::ingest_partitions(rt.clone(), rt.cfg.index_partitions)));
        }
        if let (true, Some(catalog)) = (rt.cfg.run_effects, rt.cfg.catalog.clone()) {
            background.push(tokio::spawn(crate::follow::follow_catalog(rt.clone(), catalog.0)));
        }
        *rt.background.lock().unwrap_or_else(|p| p.into_inner()) = background;
        Ok(rt)
    }

    /// Wait until the log present at start is folded.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// The operator's webhook settings.
    pub fn webhook_settings(&self) -> &crate::WebhookSettings {
        &self.executors.webhooks.settings
    }

    /// The processors prompt runs may use.
    pub fn processors(&self) -> &crate::ProcessorSettings {
        &self.cfg.processors
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Where uploads are staged while they arrive (`<data-dir>/uploads`).
    pub fn uploads_dir(&self) -> PathBuf {
        self.executors.uploads_dir.clone()
    }

    /// The media store's folder (`None`: media lives in the shared store, [`Runtime::media_store`]).
    pub fn media_dir(&self) -> Option<PathBuf> {
        self.executors.media.local_root.clone()
    }

    /// The media store.
    pub fn media_store(&self) -> &spool_storage::Store {
        &self.executors.media
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn ids(&self) -> &Arc<dyn IdSource> {
        &self.ids
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A new ULID from the runtime's clock and entropy (for ids drawn outside `decide`: request
    /// ids, ids that own a data key before their command exists, probe names).
    pub fn new_ulid(&self) -> ulid::Ulid {
        let u = ulid::Ulid::from_parts(self.clock.now_ms(), self.ids.entropy());
        match self.cfg.partition_tag {
            Some(p) => spool_model::with_partition(u, p),
            None => u,
        }
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow() && !self.draining.load(Ordering::SeqCst)
    }

    pub fn applied_seq(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Told each time a batch is folded and durable (its last sequence number): what a live
    /// tail of the log waits on.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Read the folded state.
    /// The `spool_waiting` gauges: `(kind, reason) → n` (kept as batches commit, O(1) to read).
    pub fn waiting_gauges(&self) -> Vec<((&'static str, &'static str), u64)> {
        self.gauges.lock().unwrap_or_else(|p| p.into_inner()).counts()
    }

    /// A video's immutable facts, from the `videos` table (`spool_core::rows`).
    pub fn video_row(&self, id: &spool_model::VideoId) -> Result<Option<Arc<spool_core::VideoRow>>, RuntimeError> {
        Ok(crate::rows::read_video_rows(&*self.log, [*id])?.remove(id))
    }

    /// The rows of these videos that the table holds.
    pub fn video_rows(
        &self,
        ids: impl IntoIterator<Item = spool_model::VideoId>,
    ) -> Result<std::collections::BTreeMap<spool_model::VideoId, Arc<spool_core::VideoRow>>, RuntimeError> {
        Ok(crate::rows::read_video_rows(&*self.log, ids)?)
    }

    /// The rows of these delivered deliveries that the table holds (`deliveries`).
    pub fn delivered_rows(
        &self,
        ids: impl IntoIterator<Item = spool_model::DeliveryId>,
    ) -> Result<
        std::collections::BTreeMap<spool_model::DeliveryId, Arc<spool_core::machines::webhook::Delivery>>,
        RuntimeError,
    > {
        Ok(crate::rows::read_deliveries(&*self.log, ids)?)
    }

    /// The answers of these tasks that the table holds (`run_answers`).
    pub fn run_answers(
        &self,
        keys: impl IntoIterator<Item = spool_core::AnswerKey>,
    ) -> Result<spool_core::Answers, RuntimeError> {
        Ok(crate::rows::read_answers(&*self.log, keys)?)
    }

    /// A run's processor calls from number `from` on, at most `n` (`run_calls`).
    pub fn run_calls(
        &self,
        run_id: &spool_model::PromptRunId,
        from: u64,
        n: usize,
    ) -> Result<Vec<spool_core::machines::prompt_run::LlmCallRecord>, RuntimeError> {
        Ok(crate::rows::read_run_calls(&*self.log, run_id, from, n)?)
    }

    /// A webhook's delivered deliveries, newest first, at most `n` (`webhook_deliveries`).
    pub fn webhook_delivered(
        &self,
        webhook_id: &spool_model::WebhookId,
        before: Option<(u64, spool_model::DeliveryId)>,
        n: usize,
    ) -> Result<Vec<(u64, spool_model::DeliveryId)>, RuntimeError> {
        Ok(crate::rows::read_webhook_delivered(&*self.log, webhook_id, before, n)?)
    }

    /// An index's videos after `after` in page order, at most `n` (`index_videos`).
    pub fn index_videos(
        &self,
        index_id: &spool_model::IndexId,
        after: Option<(u64, spool_model::VideoId)>,
        n: usize,
    ) -> Result<Vec<(u64, spool_model::VideoId)>, RuntimeError> {
        Ok(crate::rows::read_index_page(&*self.log, index_id, after, n)?)
    }

    /// Every live video of an index, in page order (an index's purge, its export).
    pub fn index_video_ids(&self, index_id: &spool_model::IndexId) -> Result<Vec<spool_model::VideoId>, RuntimeError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.index_videos(index_id, after, spool_log::READ_BATCH_MAX)?;
            out.extend(page.iter().map(|(_, v)| *v));
            if page.len() < spool_log::READ_BATCH_MAX {
                return Ok(out);
            }
            after = page.last().copied();
        }
    }

    /// A job's finished files of one status from file id `from` on, at most `n`, from the
    /// `job_files` table.
    pub fn job_files(
        &self,
        job_id: &spool_model::ImportJobId,
        status: spool_core::imports::FileStatus,
        from: u32,
        n: usize,
    ) -> Result<Vec<Arc<spool_core::imports::ImportFile>>, RuntimeError> {
        Ok(crate::rows::read_job_files(&*self.log, job_id, status, from, n)?)
    }

    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&st)
    }

    /// A view that shows task answers (`run_answers`): `pick` names the answers it shows in a
    /// state, `answer` renders it with them. The keys are named under the read lock, their rows
    /// read off it, then the view renders under the lock again, once `pick` names no answer it
    /// lacks: a task that succeeded between the two reads has its answer read in one more round
    /// (at most [`ANSWER_ROUNDS_MAX`]; past them, a missing row renders as a task without
    /// answer).
    pub fn read_with_answers<R>(
        &self,
        pick: impl Fn(&State) -> Vec<spool_core::AnswerKey>,
        answer: impl Fn(&State, &spool_core::Answers) -> R,
    ) -> Result<R, RuntimeError> {
        let mut answers = spool_core::Answers::new();
        let mut keys = self.read(&pick);
        for _ in 0..ANSWER_ROUNDS_MAX {
            keys.retain(|k| !answers.contains_key(k));
            if !keys.is_empty() {
                answers.extend(self.run_answers(std::mem::take(&mut keys))?);
            }
            let rendered = self.read(|st| {
                let lacking: Vec<_> = pick(st).into_iter().filter(|k| !answers.contains_key(k)).collect();
                if lacking.is_empty() { Ok(answer(st, &answers)) } else { Err(lacking) }
            });
            match rendered {
                Ok(r) => return Ok(r),
                Err(lacking) => keys = lacking,
            }
        }
        Ok(self.read(|st| answer(st, &answers)))
    }

    /// The state readers see, for the commit thread (its only writer).
    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// On the sequencer's thread, before it takes commands: fold what the log holds beyond the
    /// snapshot, sweep the staged uploads no job needs, mark the runtime ready and offer the
    /// pending effects. Returns the state the sequencer decides on first.
    fn fold_log_and_get_ready(self: &Arc<Self>) -> State {
        if let Err(e) = crate::rows::ensure_tables(&*self.log) {
            tracing::error!(error = %e, "the tables cannot be built from the log; the server stays unready");
            return self.read(State::clone);
        }
        let working = {
            let mut st = self.state_mut();
            if let Err(e) = crate::fold::fold_tail(&*self.log, &mut st) {
                // Nothing is served until ready, and ready never comes: the operator sees why.
                tracing::error!(error = %e, "the log cannot be replayed; the server stays unready");
                return st.clone();
            }
            self.applied.send_replace(st.applied_seq);
            // The whole log is folded and nothing is served yet (the API answers 503 until
            // ready, so no upload is being staged): every staged file an open job names is known.
            let needed = crate::files::needed_uploads(&st);
            let uploads = if self.files_shared() {
                // Staged uploads live in the shared store: a local one is a leftover.
                let (rt, ready_ms) = (self.clone(), self.now_ms());
                self.handle.spawn(async move { rt.sweep_shared_uploads(needed, ready_ms).await });
                sweep_uploads(&self.uploads_dir(), &Default::default())
            } else {
                sweep_uploads(&self.uploads_dir(), &needed)
            };
            let media = self.media_dir().map_or(0, |media| sweep_cut_copies(&media, &st));
            let artifacts = sweep_artifacts(&self.cfg.data_dir.join(crate::EXPORTS_DIR), &st, self.cfg.partition_tag);
            if media + uploads + artifacts > 0 {
                tracing::info!(
                    media,
                    uploads,
                    artifacts,
                    "start-up sweep: removed {media} media files, {uploads} staged uploads and {artifacts} export artifacts that no recorded event names"
                );
            }
            *self.gauges.lock().unwrap_or_else(|p| p.into_inner()) = crate::gauges::Gauges::of(&st);
            st.clone()
        };
        self.ready.send_replace(true);
        tracing::info!(head = self.log.head(), "log replayed");
        self.dispatch_effects();
        working
    }

    /// The timer service: fire every due timer as a `FireTimer` command (through the
    /// sequencer, like everything else), then sleep until the earliest one, a new timer, or a
    /// clock jump. Timers live in the state, derived from the log: none is lost on a restart,
    /// and one that fired is gone from the state, so it never fires twice.
    async fn timer_loop(self: Arc<Self>) {
        self.wait_ready().await;
        let jumped = self.clock.jumped();
        let mut stop = self.stopping.subscribe();
        loop {
            if self.draining.load(Ordering::SeqCst) {
                return;
            }
            let now = self.clock.now_ms();
            let due: Vec<spool_core::Timer> = self.read(|st| {
                st.timers
                    .iter()
                    .take_while(|(d, _)| *d <= now)
                    .take(TIMER_FIRE_BATCH_MAX)
                    .map(|(_, t)| t.clone())
                    .collect()
            });
            if !due.is_empty() {
                let fired = futures::future::join_all(
                    due.into_iter()
                        .map(|timer| self.execute(Command::Engine(spool_core::EngineCommand::FireTimer { timer }))),
                )
                .await;
                if let Some(Err(e)) = fired.into_iter().find(|r| r.is_err()) {
                    tracing::warn!(error = %e, "a timer did not fire; trying again shortly");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                continue;
            }
            let next = self.read(|st| st.next_timer().map(|(d, _)| *d));
            let wait = next.map_or(TIMER_IDLE_MS, |d| d.saturating_sub(now)).min(TIMER_IDLE_MS);
            let jump = async {
                match &jumped {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
                _ = self.timers_changed.notified() => {}
                _ = jump => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// After a committed batch: offer the effects of the aggregates it touched, and take a
    /// snapshot when enough events were folded since the last one.
    pub(crate) fn after_commit(self: &Arc<Self>, touched: &BTreeSet<WorkKey>, last_seq: u64, timers: bool) {
        if timers {
            self.timers_changed.notify_one();
        }
        if !*self.ready.borrow() {
            return;
        }
        for key in touched {
            self.offer_effects(*key);
        }
        // A snapshot encodes the state (the work in flight: finished work is in tables), so
        // one is taken when the events since the last one outnumber its bytes over
        // `SNAPSHOT_BYTES_PER_EVENT` (at least `snapshot_every_events`, at most
        // `SNAPSHOT_TAIL_EVENTS_MAX`): O(1) amortized per event up to a state of 16 MiB, then
        // its size over the cap; the tail replayed at start is bounded by both, not the log.
        self.last_committed.fetch_max(last_seq, Ordering::SeqCst);
        let last = self.last_snapshot_seq.load(Ordering::SeqCst);
        let by_size =
            (self.last_snapshot_bytes.load(Ordering::SeqCst) / SNAPSHOT_BYTES_PER_EVENT).min(SNAPSHOT_TAIL_EVENTS_MAX);
        let every = self.cfg.snapshot_every_events.max(by_size);
        if last_seq.saturating_sub(last) >= every {
            self.start_snapshot();
        }
    }

    /// Take a snapshot in the background unless one is being taken.
    fn start_snapshot(self: &Arc<Self>) {
        if !self.snapshotting.swap(true, Ordering::SeqCst) {
            let rt = self.clone();
            self.handle.spawn(async move {
                rt.snapshot().await;
                rt.snapshotting.store(false, Ordering::SeqCst);
            });
        }
    }

    /// Once this node's commits have been quiet for a tick (`SNAPSHOT_IDLE_TICK`) with at least
    /// `SNAPSHOT_IDLE_EVENTS_MIN` events since the last snapshot, take one: a server at rest
    /// restarts from a snapshot of its whole log (the count-based rule waits for more events).
    async fn snapshot_when_idle(self: Arc<Self>) {
        let mut stop = self.stopping.subscribe();
        self.wait_ready().await;
        let mut seen = self.last_committed.load(Ordering::SeqCst);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SNAPSHOT_IDLE_TICK) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let head = self.last_committed.load(Ordering::SeqCst);
            let last = self.last_snapshot_seq.load(Ordering::SeqCst);
            // At rest the read state is the durable one: taken as it is, no fold of the tail
            // again.
            if head == seen
                && head >= last + SNAPSHOT_IDLE_EVENTS_MIN
                && !self.draining.load(Ordering::SeqCst)
                && !self.snapshotting.swap(true, Ordering::SeqCst)
            {
                self.snapshot_read_state().await;
                self.snapshotting.store(false, Ordering::SeqCst);
            }
            seen = head;
        }
    }

    /// Write a snapshot while serving: the state is folded anew, off every lock, from the last
    /// snapshot and the durable events after it (a checkpointer: the same fold `spool verify`
    /// checks is deterministic), then encoded. Readers and the sequencer never wait for it; the
    /// cost is a transient second copy of the state while it runs.
    pub async fn snapshot(&self) {
        let log = self.log.clone();
        let folded = tokio::task::spawn_blocking(move || {
            let began = std::time::Instant::now();
            let st = crate::fold::load_state(&*log)?;
            let fold_ms = spool_model::num::ms(began.elapsed());
            let bytes = st.to_snapshot();
            Ok::<_, spool_log::Error>((st.applied_seq, bytes, fold_ms, spool_model::num::ms(began.elapsed()) - fold_ms))
        })
        .await;
        match folded {
            Ok(Ok((at_seq, bytes, fold_ms, encode_ms))) => self.write_snapshot(at_seq, bytes, fold_ms, encode_ms).await,
            Ok(Err(e)) => tracing::warn!(error = %e, "snapshot not written: the log could not be folded"),
            Err(e) => tracing::warn!(error = %e, "snapshot not written: its fold failed"),
        }
    }

    /// Write a snapshot of the read state (at shutdown, when nothing else runs).
    async fn snapshot_read_state(&self) {
        let began = std::time::Instant::now();
        // Cloned under the read lock, encoded off it (and off the async workers).
        let st = self.read(State::clone);
        let encoded = tokio::task::spawn_blocking(move || (st.applied_seq, st.to_snapshot())).await;
        let Ok((at_seq, bytes)) = encoded else {
            tracing::warn!("snapshot not written: its encoding failed");
            return;
        };
        let ms = spool_model::num::ms(began.elapsed());
        self.write_snapshot(at_seq, bytes, 0, ms).await;
    }

    async fn write_snapshot(&self, at_seq: u64, bytes: Vec<u8>, fold_ms: u64, encode_ms: u64) {
        if at_seq <= self.last_snapshot_seq.load(Ordering::SeqCst) {
            return;
        }
        let bytes_len = bytes.len();
        let req = AppendRequest {
            streams: vec![],
            side: vec![SideWrite::Snapshot { name: SNAPSHOT_NAME.into(), at_seq, bytes }],
        };
        match self.log.append(req).await {
            Ok(_) => {
                self.last_snapshot_seq.fetch_max(at_seq, Ordering::SeqCst);
                self.last_snapshot_bytes.store(bytes_len as u64, Ordering::SeqCst);
                tracing::info!(at_seq, bytes = bytes_len, fold_ms, encode_ms, "snapshot written");
            }
            Err(e) => tracing::warn!(error = %e, "snapshot not written"),
        }
    }

    /// Offer every pending effect (at start: the state's work sets, never everything).
    pub(crate) fn dispatch_effects(self: &Arc<Self>) {
        let effects = self.read(pending_effects);
        self.spawn_effects(effects);
    }

    /// Offer the effects of one aggregate (after a batch touched it, or one of its effects ended).
    fn offer_effects(self: &Arc<Self>, key: WorkKey) {
        let effects = self.read(|st| spool_core::effects_for(st, key));
        self.spawn_effects(effects);
    }

    fn spawn_effects(self: &Arc<Self>, effects: Vec<Effect>) {
        if !self.cfg.run_effects || self.draining.load(Ordering::SeqCst) {
            return;
        }
        // What is not given up and not running already, each set locked once per offer (a
        // run's offer holds up to `RUN_TASKS_OFFERED_MAX` tasks, most of them running).
        let effects: Vec<Effect> = {
            let given_up = self.given_up_effects.lock().unwrap_or_else(|p| p.into_inner());
            let mut inflight = self.inflight_effects.lock().unwrap_or_else(|p| p.into_inner());
            let mut fresh = Vec::new();
            for e in effects {
                if (given_up.is_empty() || !given_up.contains(&e)) && !inflight.contains(&e) {
                    inflight.insert(e.clone());
                    fresh.push(e);
                }
            }
            fresh
        };
        for effect in effects {
            let rt = self.clone();
            self.handle.spawn(async move {
                // A prompt task waits for its processor's slot first, so tasks queued behind a
                // slow processor hold no engine-wide slot (imports and webhooks go on).
                let processor_slot = rt.processor_slot(&effect).await;
                let Ok(_slot) = rt.effect_slots.clone().acquire_owned().await else { return };
                if !rt.draining.load(Ordering::SeqCst) {
                    use futures::FutureExt;
                    rt.effects_total.fetch_add(1, Ordering::Relaxed);
                    // A panic in an executor is a failure of that effect, never a wedged task.
                    // The processor slot is the task's until its executor gives it back (once
                    // the processor answered: the record's commit holds no processor slot).
                    let run = crate::executors::prompt_run::PROCESSOR_SLOT.scope(
                        std::cell::RefCell::new(processor_slot),
                        std::panic::AssertUnwindSafe(rt.run_effect(&effect)).catch_unwind(),
                    );
                    match run.await {
                        Err(payload) => {
                            let what = panic_message(payload.as_ref());
                            drop(payload);
                            rt.effect_panicked(&effect, what).await;
                        }
                        // Panics are counted in a row: a run without one starts the count
                        // again (a webhook's sender is one effect for all its deliveries).
                        Ok(()) => {
                            let mut panics = rt.effect_panics.lock().unwrap_or_else(|p| p.into_inner());
                            if !panics.is_empty() {
                                panics.remove(&effect);
                            }
                        }
                    }
                }
                rt.inflight_effects.lock().unwrap_or_else(|p| p.into_inner()).remove(&effect);
                // Its outcome may not have changed anything (a failed record): offer again.
                rt.offer_effects(effect.work_key());
            });
        }
    }

    /// An executor panicked: count it; at [`EFFECT_PANIC_TRIES_MAX`] give the effect up and
    /// record the failure of its job (`internal_error`).
    async fn effect_panicked(&self, effect: &Effect, what: String) {
        let tries = {
            let mut p = self.effect_panics.lock().unwrap_or_else(|p| p.into_inner());
            let n = p.entry(effect.clone()).or_insert(0);
            *n += 1;
            *n
        };
        tracing::error!(?effect, tries, panic = %what, "an effect executor panicked");
        if tries < EFFECT_PANIC_TRIES_MAX {
            return;
        }
        self.effect_panics.lock().unwrap_or_else(|p| p.into_inner()).remove(effect);
        let message =
            format!("internal_error: Spool failed while running this work ({tries} tries); see the server log");
        self.give_up_effect(effect, "internal_error", message).await;
    }

    /// Give an effect up: it is not offered again until the next start, and the failure of its
    /// job, file, task or export is recorded (so the next start does not offer it either).
    pub(crate) async fn give_up_effect(&self, effect: &Effect, code: &str, message: String) {
        self.given_up_effects.lock().unwrap_or_else(|p| p.into_inner()).insert(effect.clone());
        let mut result = Ok(());
        let commands = Self::give_up_command(effect, code, message);
        if commands.is_empty() {
            tracing::error!(?effect, "given up until the next start");
        }
        for (i, cmd) in commands.into_iter().enumerate() {
            match self.execute(cmd).await {
                // A first step that no longer fits (an attempt already started) is fine.
                Err(RuntimeError::Domain(DomainError::Stale(_))) if i == 0 => {}
                Err(e) => result = Err(e),
                Ok(_) => {}
            }
        }
        if let Err(e) = result {
            tracing::error!(error = %e, ?effect, "the failure of a panicking effect was not recorded");
        }
    }

    /// Decide, append, fold; no answer to render.
    pub async fn execute(&self, cmd: impl Into<crate::sequencer::Work>) -> Result<Outcome, RuntimeError> {
        let reply = self.execute_with(cmd, None, Vec::new(), |_, _| Reply { status: 200, body: Vec::new() }).await?;
        Ok(reply.1)
    }

    /// Submit a command to the sequencer: it is decided in order with everything else, its
    /// events (with the idempotency record, when there is a key, and the given side writes) are
    /// appended in the batch's group commit, and the answer, rendered from the state the command
    /// led to, comes back once that commit is durable.
    pub async fn execute_with(
        &self,
        cmd: impl Into<crate::sequencer::Work>,
        idem: Option<&IdemKey>,
        side: Vec<SideWrite>,
        render: impl FnOnce(&State, Outcome) -> Reply + Send + 'static,
    ) -> Result<(Reply, Outcome), RuntimeError> {
        let rx = self.submit_with(cmd, idem, side, render).await?;
        rx.await.map_err(|_| RuntimeError::Stopped)?
    }

    /// Hand a command to the sequencer without waiting for its commit: commands submitted one
    /// after another by one task are decided in that order. The receiver answers once the
    /// command's commit is durable (an executor pipelines its outcomes with it).
    pub(crate) async fn submit(
        &self,
        cmd: impl Into<crate::sequencer::Work>,
    ) -> Result<tokio::sync::oneshot::Receiver<crate::sequencer::Answered>, RuntimeError> {
        self.submit_with(cmd, None, Vec::new(), |_, _| Reply { status: 200, body: Vec::new() }).await
    }

    async fn submit_with(
        &self,
        cmd: impl Into<crate::sequencer::Work>,
        idem: Option<&IdemKey>,
        side: Vec<SideWrite>,
        render: impl FnOnce(&State, Outcome) -> Reply + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<crate::sequencer::Answered>, RuntimeError> {
        let work = cmd.into();
        let usage = matches!(&work, crate::sequencer::Work::Command(c) if matches!(**c, Command::ApiKey(spool_core::ApiKeyCommand::RecordApiKeyUse { .. })));
        if self.draining.load(Ordering::SeqCst) && !usage {
            return Err(RuntimeError::ShuttingDown);
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        let sub = crate::sequencer::Submission { work, idem: idem.cloned(), side, render: Box::new(render), reply };
        let inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(RuntimeError::Stopped)?;
        inbox.send(sub).await.map_err(|_| RuntimeError::Stopped)?;
        Ok(rx)
    }

    /// Like `execute_with`, for a request that carries an `Idempotency-Key`: a stored answer
    /// is replayed (same fingerprint) or refused (another fingerprint); concurrent requests
    /// with the same key are refused while the first runs.
    pub async fn execute_idempotent(
        &self,
        cmd: impl Into<crate::sequencer::Work>,
        key: &IdemKey,
        side: Vec<SideWrite>,
        render: impl FnOnce(&State, Outcome) -> Reply + Send + 'static,
    ) -> Result<Reply, RuntimeError> {
        if let Some(reply) = self.stored_reply(key)? {
            return Ok(reply);
        }
        {
            let mut inflight = self.inflight_idem.lock().unwrap_or_else(|p| p.into_inner());
            if !inflight.insert(key.scoped.clone()) {
                return Err(RuntimeError::IdempotencyInProgress);
            }
        }
        let result = async {
            // Checked again: the first request may have finished between the check and the lock.
            if let Some(reply) = self.stored_reply(key)? {
                return Ok(reply);
            }
            self.execute_with(cmd, Some(key), side, render).await.map(|(r, _)| r)
        }
        .await;
        self.inflight_idem.lock().unwrap_or_else(|p| p.into_inner()).remove(&key.scoped);
        result
    }

    /// The answer stored under an `Idempotency-Key` (refused when the key came with another
    /// request): a step made of several commands replays it before deciding anything.
    pub fn replay(&self, key: &IdemKey) -> Result<Option<Reply>, RuntimeError> {
        self.stored_reply(key)
    }

    /// Whether this runtime serves an index partition of a partitioned cluster (the catalog's
    /// facts, such as prompts, are made in the catalog, not here).
    pub fn is_index_partition(&self) -> bool {
        self.cfg.catalog.is_some()
    }

    fn stored_reply(&self, key: &IdemKey) -> Result<Option<Reply>, RuntimeError> {
        let Some(bytes) = self.log.side_get(SideTable::Idempotency, &key.scoped)? else { return Ok(None) };
        let Some(rec) = IdemRecord::decode(&bytes) else { return Ok(None) };
        if rec.fingerprint != key.fingerprint {
            return Err(RuntimeError::IdempotencyMismatch);
        }
        let body = match rec.body {
            IdemBody::Plain(b) => b,
            IdemBody::Sealed(s) => match self.keyring.open(&s)? {
                Some(b) => b.to_vec(),
                None => return Err(RuntimeError::IdempotencyUnreadable),
            },
        };
        Ok(Some(Reply { status: rec.status, body }))
    }

    /// Delete idempotency records older than the TTL, with the data keys of sealed ones (their
    /// stored secrets are then gone for good). Returns how many were removed.
    pub async fn sweep_idempotency(&self) -> usize {
        let cutoff = self.clock.now_ms().saturating_sub(spool_model::num::ms(self.cfg.idempotency_ttl));
        let mut removed = 0;
        let mut after: Option<String> = None;
        loop {
            let batch = match self.log.side_scan(SideTable::Idempotency, after.as_deref(), spool_log::READ_BATCH_MAX) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency sweep: reading failed");
                    return removed;
                }
            };
            let Some((last, _)) = batch.last().cloned() else { return removed };
            let mut side = Vec::new();
            for (key, bytes) in batch {
                let Some(rec) = IdemRecord::decode(&bytes) else { continue };
                if rec.created_at_ms >= cutoff {
                    continue;
                }
                if let IdemBody::Sealed(s) = &rec.body {
                    side.push(self.keyring.shred(&s.owner));
                }
                side.push(SideWrite::Delete { table: SideTable::Idempotency, key });
                if side.len() >= IDEMPOTENCY_SWEEP_BATCH_MAX {
                    break;
                }
            }
            let n =
                side.iter().filter(|w| matches!(w, SideWrite::Delete { table: SideTable::Idempotency, .. })).count();
            if n > 0 {
                match self.log.append(AppendRequest { streams: vec![], side }).await {
                    Ok(_) => removed += n,
                    Err(e) => {
                        tracing::warn!(error = %e, "idempotency sweep: delete failed");
                        return removed;
                    }
                }
            }
            after = Some(last);
        }
    }

    /// Note that a key was used now; written coarsely by the usage flusher.
    pub fn note_key_use(&self, key_id: ApiKeyId) {
        let now = self.clock.now_ms();
        self.usage.lock().unwrap_or_else(|p| p.into_inner()).insert(key_id, now);
    }

    /// The latest use of a key: what is written, or newer in memory.
    pub fn key_last_used(&self, key_id: &ApiKeyId, stored: Option<u64>) -> Option<u64> {
        let mem = self.usage.lock().unwrap_or_else(|p| p.into_inner()).get(key_id).copied();
        match (stored, mem) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Write the usage noted since the last flush (one event per key at most).
    pub async fn flush_usage(&self) {
        let pending: Vec<(ApiKeyId, u64)> =
            std::mem::take(&mut *self.usage.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect();
        for (key_id, used_at_ms) in pending {
            if let Err(e) =
                self.execute(Command::ApiKey(spool_core::ApiKeyCommand::RecordApiKeyUse { key_id, used_at_ms })).await
            {
                tracing::debug!(error = %e, "key usage not recorded");
            }
        }
    }

    /// SIGTERM: stop starting effects, let running ones finish (bounded), write what is
    /// pending and a snapshot. Everything acknowledged is already durable.
    pub async fn shutdown(&self) {
        self.flush_usage().await;
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + self.cfg.drain_timeout;
        while !self.inflight_effects.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("effects still running at the drain deadline are abandoned; they resume at next start");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // One snapshot at a time: the last one written is the newest (a checkpoint under way
        // finishes first, within the drain bound).
        while self.snapshotting.swap(true, Ordering::SeqCst) {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.snapshot_read_state().await;
        // Stop the background loops, then the sequencer (its inbox closes when the last sender
        // goes), so the data directory is free once this returns.
        self.stopping.send_replace(true);
        let tasks = std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        self.inbox.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = self.sequencer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(threads) = threads {
            let _ = tokio::task::spawn_blocking(move || threads.join()).await;
        }
        // On a shared log, the next holder takes the partition at once (not after the lease).
        let log = self.log.clone();
        let _ = tokio::task::spawn_blocking(move || log.hand_back()).await;
    }
}

/// Remove staged uploads no open job needs: bodies a crash cut off, and uploads whose job
/// ended while the file was being removed. The sequencer runs it once the log is folded and
/// before the runtime is ready (so before any upload can be staged).
pub(crate) fn sweep_uploads(dir: &std::path::Path, needed: &std::collections::BTreeSet<String>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if needed.contains(&name) {
            continue;
        }
        let path = entry.path();
        let done = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match done {
            Ok(()) => {
                removed += 1;
                tracing::info!(path = %path.display(), "removed an upload no job needs");
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove a staged upload"),
        }
    }
    removed
}

/// Remove the export artifacts of the data directory no export names (`<export id>.json` of an
/// export the log does not hold, or a file of another name): a crash between an artifact's
/// making and its export's record, or a folder copied from elsewhere. An artifact of an export
/// the log holds is kept, whatever its status. In a partitioned cluster (the node's partitions
/// share its data directory, and open at different times) only this partition's ids are
/// looked at. O(artifacts kept here).
fn sweep_artifacts(dir: &std::path::Path, st: &State, partition: Option<u16>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let id = name.split('.').next().and_then(|id| id.parse::<spool_model::ExportId>().ok());
        let theirs = match (partition, id) {
            (Some(p), Some(id)) => spool_model::partition_of(id.0) != p,
            // A name that is no export's: left to the unpartitioned runtime alone.
            (Some(_), None) => true,
            (None, _) => false,
        };
        let named = name
            .strip_suffix(".json")
            .and_then(|i| i.parse::<spool_model::ExportId>().ok())
            .is_some_and(|id| st.exports.contains_key(&id));
        if named || theirs {
            continue;
        }
        let path = entry.path();
        let done = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match done {
            Ok(()) => {
                removed += 1;
                tracing::info!(path = %path.display(), "removed an export artifact no export names");
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove an export artifact"),
        }
    }
    removed
}

/// Remove the copies a crash left in the media store that no recorded event names: a copy is written under a
/// staging name (`<path>#<suffix>`: object_store's, or `#spool-<ulid>` for a copy between
/// folders) and renamed (or removed, when it fails) before its outcome is recorded, so what a
/// crash cuts off is a staged file beside the media path of a file whose attempt began and
/// has no outcome: a `Started` file of a job (its job may have ended since); and the media
/// path of such a file itself, a copy renamed into place before the crash cut off its record
/// (no `VideoImported` names it: that comes with the outcome). Only their folders
/// are read (each once), so the sweep costs the work in flight, not the library (a walk of the
/// whole store took 1.9 s at a million videos). Runs before the runtime is ready: no copy of
/// this process is under way.
fn sweep_cut_copies(media_dir: &std::path::Path, st: &State) -> usize {
    let mut by_dir: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    // Every job's, not only the open ones': a job can end while a copy of it runs (its index
    // was deleted), and the file stays `Started`.
    for j in st.imports.values() {
        let started = j.by_status.iter(spool_core::imports::FileStatus::Started).filter_map(|id| j.files.get(&id));
        for f in started {
            let Some(video_id) = f.file.video_id else { continue };
            let path = media_dir.join(spool_core::imports::media_path(&video_id, &f.file.path));
            if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
                by_dir.entry(dir.to_path_buf()).or_default().insert(name.to_string());
            }
        }
    }
    let mut removed = 0;
    for (dir, names) in by_dir {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // A staged copy (`<path>#…`), or the media file itself: a copy that finished but
            // whose outcome was not recorded (the attempt is begun again; if it never is, the
            // file would be nobody's).
            let base = name.split_once('#').map_or(name, |(base, _)| base);
            if !names.contains(base) {
                continue;
            }
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(path = %path.display(), "removed a media copy a crash left unrecorded");
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove a half-written copy"),
            }
        }
    }
    removed
}

/// The runtime as the sequencer's host: durable batches are folded into the state readers
/// see, then their effects offered.
struct Host(Arc<Runtime>);

impl SequencerHost for Host {
    fn publish(&self, events: &[spool_model::Envelope]) {
        let Some(last) = events.last() else { return };
        let mut st = self.0.state_mut();
        for env in events {
            spool_core::evolve(&mut st, env);
            // A catalog fact reached this index partition: its owner's data key is read again
            // at its next use (a connector deleted in the catalog had its key shredded there).
            if let spool_model::Event::CatalogFollowed { events, .. } = &env.event {
                for m in events {
                    self.0.keyring.evict(&m.stream);
                }
            }
        }
        debug_assert_eq!(st.applied_seq, last.seq, "the read state follows the log without gaps");
        self.0.applied.send_replace(st.applied_seq);
    }

    fn committed(&self, touched: &BTreeSet<WorkKey>, last_seq: u64, timers_changed: bool) {
        // The gauges of the aggregates the batch touched (the set the sequencer computed while
        // folding it), read from the state `publish` just moved (this thread is its only writer).
        self.0.read(|st| {
            let mut gauges = self.0.gauges.lock().unwrap_or_else(|p| p.into_inner());
            for key in touched {
                gauges.update(st, *key);
            }
            gauges.check(st);
        });
        self.0.after_commit(touched, last_seq, timers_changed);
    }

    fn durable_state(&self) -> State {
        // Called after a failed commit. A shared log's commit whose answer was lost and could
        // not be settled was answered as failed although it may have landed: what the log holds
        // beyond the read state is folded in first (nothing, on a log whose failed commits
        // write nothing), so the next decision follows the log, never a state without them.
        let mut folded = false;
        loop {
            let from = self.0.read(|st| st.applied_seq) + 1;
            let batch = match self.0.log.read_from(from, spool_log::READ_BATCH_MAX) {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "the log cannot be read after a failed commit");
                    break;
                }
            };
            // Read first, then asked: still held now means every event read was written while
            // this runtime held the partition. A fenced one must never fold (nor act on) the
            // next holder's events.
            match self.0.log.holds_partition() {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("the partition was taken over; its new holder's events are not folded here");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot tell whether the partition is still held after a failed commit");
                    break;
                }
            }
            tracing::warn!(
                from,
                events = batch.len(),
                "a commit answered as failed had landed; its events are folded in"
            );
            self.publish(&batch);
            folded = true;
        }
        if folded {
            self.0.read(|st| {
                *self.0.gauges.lock().unwrap_or_else(|p| p.into_inner()) = crate::gauges::Gauges::of(st);
            });
            self.0.timers_changed.notify_one();
            if *self.0.ready.borrow() {
                self.0.dispatch_effects();
            }
        }
        self.0.read(|st| st.clone())
    }

    fn command_taken(&self) {
        self.0.commands_total.fetch_add(1, Ordering::Relaxed);
    }
}

/// This node's id, kept in `<data-dir>/node.id` (made at first start).
pub fn node_id_of(data_dir: &std::path::Path, ids: &dyn IdSource) -> Result<String, spool_log::Error> {
    let path = data_dir.join("node.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| spool_log::Error::Storage(format!("{}: {e}", data_dir.display())))?;
            let id = format!("node_{:032x}", ids.entropy());
            std::fs::write(&path, &id).map_err(|e| spool_log::Error::Storage(format!("{}: {e}", path.display())))?;
            Ok(id)
        }
    }
}
