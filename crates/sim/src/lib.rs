//! The runtime simulator (`spool sim --runtime`): the real `Runtime` (sequencer, machines,
//! executors, timer service, snapshots, keyring) against in-memory twins, driven by one seed:
//! - the log on a redb [`SimDisk`] whose bytes are durable only at `sync_data`; a **crash**
//!   fails every later write, stops the runtime and opens a new one on the last durable image
//!   (so a commit that was running is lost, and a **failed commit** can be injected just before);
//! - the connectors' bucket a [`TwinStore`] (object_store's `InMemory`) that fails a share of
//!   calls and cuts listings off part-way, at a level the seed changes;
//! - the clock a [`TestClock`], moved by the seed (and jumped by up to an hour);
//! - media bytes real WAVs (the probe reads them), in a temporary folder.
//!
//! The workload (objects arriving, imports, cancels, retries, probe prompt runs, exports to the
//! bucket and for download, video deletions) and the faults come from the seed. The runtime's own
//! threads are not scheduled by the simulator, so a failing seed replays the same workload and
//! faults, not always the same interleaving. After every step the state invariants hold
//! (`StateChecks`: counters equal outcomes, finished stays finished); at the end, with faults
//! off, every job, run and export ends within a bound of simulated time (liveness), a fold of
//! the log equals the live state, no video is created twice, every completed export to the
//! bucket is there with its recorded checksum, and the connector's secret is nowhere in the
//! log's bytes (`engine-spec/invariants.md`).
//!
//! With `nodes > 1` (`spool sim --runtime --nodes 3`) the log is one partition shared by the
//! nodes ([`spool_log::SharedMemLog`]: a lease on a database clock, an epoch checked in every
//! commit, in-doubt commits settled before the answer), each node's runtime on a clock of its
//! own (skewed from the simulation's by up to ±5 s), and a crash is one of: the holder killed
//! (after a commit whose answer is lost, sometimes) and another node, or the same one, taking
//! over once the lease expired; the holder paused past its lease while another takes over and
//! works, then resumed (its next commit is refused and it drops the partition); a commit whose
//! answer is lost, settled or not. On top of the checks above: every command a node
//! acknowledged is in the final state, no event of an earlier epoch follows a later one's, and
//! every paused holder found its partition lost.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose

use object_store::ObjectStoreExt;
use redb::StorageBackend;
use sha2::Digest;
use spool_core::sim::{Rng, StateChecks};
use spool_core::{Command, Outcome, State};
use spool_log::{EventLog, LostAnswer, MemNode, READ_BATCH_MAX, RedbLog, RedbLogOptions, SharedMemLog};
use spool_model::{
    ConnectorId, ConnectorLocation, ConnectorScope, ExportDestination, ExportKind, ImportJobId, ImportMode, IndexId,
    PromptId, PromptRunId, Provider, VideoId,
};
use spool_runtime::{Clock, MasterKey, Runtime, RuntimeConfig, SeededIds, TestClock};
use spool_storage::twin::{TwinStore, Twins};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod peers;

const START_MS: u64 = 1_764_000_000_000;
const BUCKET: &str = "sim-bucket";
/// The connector's secret: it must never be in the log's bytes in clear text.
const SECRET: &str = "sim-secret-never-in-clear-7f3a";
/// The secret a credentials patch rotates it to (the same rule).
const SECRET_ROTATED: &str = "sim-secret-rotated-never-in-clear-91c4";
/// The http processor's signing secret (`whsec_` + standard base64).
const PROCESSOR_SECRET: &str = "whsec_c3Bvb2wtc2ltdWxhdG9yLXByb2Nlc3Nvci1rZXktMzI=";
/// The name runs use for the http processor twin.
const WORKER: &str = "worker";
/// Simulated time the drain may take before liveness is broken.
pub const DRAIN_SIMULATED_MS_MAX: u64 = 6 * 3_600_000;
/// Real time a seed's drain may take (a hang is a failure, not a stuck CI).
const DRAIN_REAL_MAX: Duration = Duration::from_secs(60);

/// Steps per seed with faults, before the drain.
pub const SIM_STEPS_DEFAULT: usize = 60;

/// What one seed did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SimReport {
    pub seed: u64,
    pub steps: u64,
    pub crashes: u64,
    pub failed_commits: u64,
    pub injected_storage_faults: u64,
    pub simulated_ms: u64,
    pub events: u64,
    pub jobs: u64,
    pub runs: u64,
    pub exports: u64,
    pub videos: u64,
    pub deliveries: u64,
    /// Rows of `run_answers` checked against the runs' succeeded tasks.
    pub answers: u64,
    /// Rows of `run_calls` checked against the runs' counts.
    pub calls: u64,
    pub injected_peer_faults: u64,
    pub processor_calls: u64,
    /// Commands of the rarer workload steps that were taken (not refused).
    pub uri_jobs: u64,
    pub segment_retries: u64,
    pub credential_patches: u64,
    /// Cluster mode: partitions taken over, paused holders fenced out, answers lost.
    pub takeovers: u64,
    pub fenced: u64,
    pub lost_answers: u64,
}

impl SimReport {
    /// Sum of seeds (`seed` is left as it is).
    pub fn add(&mut self, r: &SimReport) {
        self.steps += r.steps;
        self.crashes += r.crashes;
        self.failed_commits += r.failed_commits;
        self.injected_storage_faults += r.injected_storage_faults;
        self.simulated_ms += r.simulated_ms;
        self.events += r.events;
        self.jobs += r.jobs;
        self.runs += r.runs;
        self.exports += r.exports;
        self.videos += r.videos;
        self.deliveries += r.deliveries;
        self.answers += r.answers;
        self.calls += r.calls;
        self.injected_peer_faults += r.injected_peer_faults;
        self.processor_calls += r.processor_calls;
        self.uri_jobs += r.uri_jobs;
        self.segment_retries += r.segment_retries;
        self.credential_patches += r.credential_patches;
        self.takeovers += r.takeovers;
        self.fenced += r.fenced;
        self.lost_answers += r.lost_answers;
    }
}

/// A redb backend in memory whose bytes become durable only at `sync_data`, like a disk
/// under a page cache: [`Disk::crash`] keeps the durable image and fails everything after. A
/// sync copies only the ranges written since the last one (O(bytes written), not O(size)).
#[derive(Debug, Default)]
pub struct Disk {
    bytes: Mutex<Bytes>,
    crashed: AtomicBool,
    fail_syncs: AtomicU64,
}

#[derive(Debug, Default)]
struct Bytes {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// (offset, length) written since the last sync.
    dirty: Vec<(usize, usize)>,
}

impl Disk {
    fn from_image(image: Vec<u8>) -> Arc<Disk> {
        let bytes = Bytes { live: image.clone(), durable: image, dirty: Vec::new() };
        Arc::new(Disk { bytes: Mutex::new(bytes), ..Default::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bytes> {
        self.bytes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn image(&self) -> Vec<u8> {
        self.lock().durable.clone()
    }

    fn crash(&self) {
        self.crashed.store(true, Ordering::SeqCst);
    }

    fn io_error(what: &str) -> std::io::Error {
        std::io::Error::other(format!("sim disk: {what}"))
    }

    fn writable(&self) -> Result<(), std::io::Error> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(Disk::io_error("crashed"));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct SimDisk(Arc<Disk>);

impl StorageBackend for SimDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.lock().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let b = self.0.lock();
        let start = offset as usize;
        let end = start
            .checked_add(out.len())
            .filter(|e| *e <= b.live.len())
            .ok_or_else(|| Disk::io_error("read past the end"))?;
        out.copy_from_slice(&b.live[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.writable()?;
        self.0.lock().live.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.writable()?;
        if self.0.fail_syncs.load(Ordering::SeqCst) > 0 {
            self.0.fail_syncs.fetch_sub(1, Ordering::SeqCst);
            return Err(Disk::io_error("injected failed commit"));
        }
        let mut b = self.0.lock();
        let Bytes { live, durable, dirty } = &mut *b;
        durable.resize(live.len(), 0);
        for (off, len) in dirty.drain(..) {
            let end = (off + len).min(live.len());
            if off < end {
                durable[off..end].copy_from_slice(&live[off..end]);
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.writable()?;
        let mut b = self.0.lock();
        let (off, end) = (offset as usize, offset as usize + data.len());
        if b.live.len() < end {
            b.live.resize(end, 0);
        }
        b.live[off..end].copy_from_slice(data);
        b.dirty.push((off, data.len()));
        Ok(())
    }
}

/// A node's clock: the simulation's, skewed by a few seconds of its own.
struct SkewedClock {
    base: Arc<TestClock>,
    skew_ms: i64,
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        self.base.now_ms().saturating_add_signed(self.skew_ms)
    }
    fn jumped(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.base.jumped()
    }
    fn advance_by(&self, ms: u64) -> bool {
        self.base.advance(ms);
        true
    }
}

/// The cluster mode's shared partition and who holds it.
struct Cluster {
    log: SharedMemLog,
    nodes: u64,
    holder: u64,
    hold: MemNode,
    /// Outcomes the nodes acknowledged (each must be in the final state).
    acked: Vec<Outcome>,
}

/// The lease of the cluster mode, on the database's clock.
const LEASE_MS: u64 = 10_000;

struct World {
    seed: u64,
    cluster: Option<Cluster>,
    rng: Rng,
    tmp: tempfile::TempDir,
    master: MasterKey,
    clock: Arc<TestClock>,
    twins: Twins,
    twin: TwinStore,
    disk: Arc<Disk>,
    rt: Arc<Runtime>,
    peers: Arc<peers::Peers>,
    peer_addr: std::net::SocketAddr,
    restarts: u64,
    index: IndexId,
    prompt: PromptId,
    labels: PromptId,
    connector: ConnectorId,
    webhook: spool_model::WebhookId,
    webhook_secret: String,
    objects: u64,
    /// Media objects put in the bucket (what a URI registration may name).
    media: Vec<String>,
    checks: StateChecks,
    report: SimReport,
}

fn command(json: &str) -> Command {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("sim command {json}: {e}"))
}

/// What every incarnation of the runtime of one seed shares.
struct Machine<'a> {
    seed: u64,
    tmp: &'a std::path::Path,
    master: &'a MasterKey,
    twins: &'a Twins,
    peer: std::net::SocketAddr,
}

/// The log of one seed's single node: redb on the simulated disk.
fn disk_log(disk: &Arc<Disk>, restarts: u64) -> Result<Arc<dyn EventLog>, String> {
    let log = RedbLog::open_with_backend(SimDisk(disk.clone()), RedbLogOptions::default())
        .map_err(|e| format!("opening the log after {restarts} restarts: {e}"))?;
    Ok(Arc::new(log))
}

async fn open(
    m: Machine<'_>,
    restarts: u64,
    log: Arc<dyn EventLog>,
    node_clock: Arc<dyn Clock>,
) -> Result<Arc<Runtime>, String> {
    let Machine { seed, tmp, master, twins, peer } = m;
    let mut cfg = RuntimeConfig::new(tmp.join("data"));
    cfg.master_key = Some(master.clone());
    cfg.storage.twins = Some(twins.clone());
    cfg.drain_timeout = Duration::from_millis(500);
    cfg.snapshot_every_events = 500;
    cfg.webhooks = spool_runtime::WebhookSettings {
        allow_hosts: vec!["127.0.0.1".into()],
        retry_schedule_ms: vec![0, 1_000, 10_000, 60_000],
        timeout: Duration::from_millis(150),
        disable_after: 1_000_000,
        ..Default::default()
    };
    cfg.processors.processors.insert(
        WORKER.into(),
        spool_runtime::ProcessorConfig {
            kind: spool_runtime::ProcessorKind::Http {
                url: format!("http://{peer}/worker"),
                secret: PROCESSOR_SECRET.into(),
                timeout: Duration::from_millis(150),
                response_bytes_max: 65_536,
            },
            concurrency: 4,
        },
    );
    let ids = Arc::new(SeededIds::new(seed.wrapping_mul(1_000_003).wrapping_add(restarts)));
    let rt = Runtime::start(log, cfg, node_clock, ids)
        .await
        .map_err(|e| format!("starting the runtime after {restarts} restarts: {e}"))?;
    rt.wait_ready().await;
    Ok(rt)
}

impl World {
    async fn new(seed: u64, nodes: u64) -> Result<World, String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(tmp.path().join("data")).map_err(|e| e.to_string())?;
        let master = MasterKey::generate();
        let clock = Arc::new(TestClock::new(START_MS));
        let twins = Twins::default();
        let twin = TwinStore::new(seed);
        twins.add(BUCKET, twin.clone());
        let disk = Disk::from_image(Vec::new());
        let (peers, peer_addr) = peers::start(seed).await?;
        peers.set_invalid_percent(8);
        let machine = Machine { seed, tmp: tmp.path(), master: &master, twins: &twins, peer: peer_addr };
        let (rt, cluster) = if nodes > 1 {
            let log = SharedMemLog::new(START_MS);
            let hold = log.take("node-0", LEASE_MS).ok_or("the first node could not take the partition")?;
            let node_clock = Arc::new(SkewedClock { base: clock.clone(), skew_ms: 0 });
            let rt = open(machine, 0, Arc::new(hold.clone()), node_clock).await?;
            (rt, Some(Cluster { log, nodes, holder: 0, hold, acked: Vec::new() }))
        } else {
            (open(machine, 0, disk_log(&disk, 0)?, clock.clone()).await?, None)
        };
        let mut w = World {
            seed,
            cluster,
            rng: Rng(seed),
            tmp,
            master,
            clock,
            twins,
            twin,
            disk,
            rt,
            peers,
            peer_addr,
            restarts: 0,
            index: IndexId(Default::default()),
            prompt: PromptId(Default::default()),
            labels: PromptId(Default::default()),
            connector: ConnectorId(Default::default()),
            webhook: spool_model::WebhookId(Default::default()),
            webhook_secret: String::new(),
            objects: 0,
            media: Vec::new(),
            checks: StateChecks::default(),
            report: SimReport { seed, ..Default::default() },
        };
        w.setup().await?;
        Ok(w)
    }

    async fn setup(&mut self) -> Result<(), String> {
        let e = |what: &str, e: spool_runtime::RuntimeError| format!("setup, {what}: {e}");
        match self.rt.execute(command(r#"{"CreateIndex":{"name":"sim","user_id":"u"}}"#)).await {
            Ok(Outcome::Index(i)) => self.index = i,
            other => return Err(format!("setup, the index: {other:?}")),
        }
        match self
            .rt
            .execute(command(
                r#"{"CreatePrompt":{"user_id":"u","name":"Facts","description":"","prompt_text":"Report the media facts.","json_schema":"{\"type\":\"object\"}","video_level":null,"semantic":{"disabled_segment_fields":[],"disabled_video_level_fields":[]}}}"#,
            ))
            .await
        {
            Ok(Outcome::Prompt(p)) => self.prompt = p,
            other => return Err(format!("setup, the prompt: {other:?}")),
        }
        // The http worker's runs use a prompt whose schema requires `label`: an answer without
        // it fails its segment (for good: no retry mends a wrong answer).
        match self
            .rt
            .execute(command(
                r#"{"CreatePrompt":{"user_id":"u","name":"Labels","description":"","prompt_text":"Label this segment.","json_schema":"{\"type\":\"object\",\"required\":[\"label\"]}","video_level":null,"semantic":{"disabled_segment_fields":[],"disabled_video_level_fields":[]}}}"#,
            ))
            .await
        {
            Ok(Outcome::Prompt(p)) => self.labels = p,
            other => return Err(format!("setup, the labels prompt: {other:?}")),
        }
        let connector_id = ConnectorId(self.rt.new_ulid());
        let cmd = Command::Connector(spool_core::ConnectorCommand::CreateConnector {
            connector_id,
            provider: Provider::S3,
            name: "bucket".into(),
            scopes: vec![ConnectorScope::Import, ConnectorScope::Export],
            import_mode: ImportMode::All,
            export_base_path: Some("out".into()),
            location: ConnectorLocation {
                bucket: Some(BUCKET.into()),
                region: Some("us-east-1".into()),
                ..Default::default()
            },
            credentials: None,
        });
        let creds = spool_storage::Credentials {
            aws_access_key_id: Some("AKIASIM".into()),
            aws_secret_access_key: Some(SECRET.into()),
            ..Default::default()
        };
        self.rt.execute(Runtime::create_connector(cmd, Some(creds))).await.map_err(|x| e("the connector", x))?;
        self.connector = connector_id;
        let webhook_id = spool_model::WebhookId(self.rt.new_ulid());
        let cmd = Command::Webhook(spool_core::WebhookCommand::CreateWebhook {
            webhook_id,
            name: "receiver".into(),
            url: format!("http://{}/hook", self.peer_addr),
            events: spool_core::machines::webhook::WEBHOOK_EVENTS.iter().map(|s| s.to_string()).collect(),
            index_ids: None,
            metadata_json: None,
            secret: None,
        });
        let secret = spool_runtime::new_secret(self.rt.ids().as_ref());
        self.webhook_secret = secret.clone();
        self.rt.execute(Runtime::create_webhook(cmd, secret)).await.map_err(|x| e("the webhook", x))?;
        self.webhook = webhook_id;
        // Both automations of the index: the watch imports what arrives under `in/` and runs
        // the probe over it; each completed run is exported to the bucket.
        let preset = r#"{"video_segmentation":"Fixed","audio_segmentation":"Fixed","video_segment_s":1,"audio_segment_s":1,"processing_model":null,"processor":"probe","enable_transcription":true,"enable_image_embedding":true}"#;
        let save = format!(
            r#"{{"SaveAutomation":{{"index_id":"{}","config":{{"Import":{{"enabled":true,"connector_id":"{}","source_prefix":"in/","file_pattern":"*","recursive":true,"debounce_ms":300000,"prompt_id":"{}","preset":{preset}}}}},"paused":false}}}}"#,
            self.index, self.connector, self.prompt
        );
        self.rt.execute(command(&save)).await.map_err(|x| e("the import automation", x))?;
        let save = format!(
            r#"{{"SaveAutomation":{{"index_id":"{}","config":{{"Export":{{"enabled":true,"connector_id":"{}","subpath":"auto"}}}},"paused":false}}}}"#,
            self.index, self.connector
        );
        self.rt.execute(command(&save)).await.map_err(|x| e("the export automation", x))?;
        Ok(())
    }

    fn state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.rt.read(f)
    }

    /// A command of the workload: refusals (a cancelled job retried, a run of nothing…) are
    /// answers, not failures; a storage error is a failed commit the sim caused.
    async fn exec(&mut self, cmd: impl Into<spool_runtime::Work>) -> Option<Outcome> {
        let out = self.rt.execute(cmd).await.ok();
        if let (Some(c), Some(o @ (Outcome::Import(_) | Outcome::PromptRun(_) | Outcome::Export(_)))) =
            (self.cluster.as_mut(), &out)
        {
            c.acked.push(*o);
        }
        out
    }

    async fn put_object(&mut self) {
        self.objects += 1;
        let n = self.objects;
        let (path, bytes) = match self.rng.below(10) {
            0 => (format!("in/notes{n}.txt"), b"not media".to_vec()),
            1 => (format!("other/clip{n}.wav"), spool_media::pcm_wav(format!("{}-{n}", self.seed).as_bytes())),
            _ => (format!("in/clip{n}.wav"), spool_media::pcm_wav(format!("{}-{n}", self.seed).as_bytes())),
        };
        if path.ends_with(".wav") {
            self.media.push(path.clone());
        }
        let _ = self.twin.contents().put(&object_store::path::Path::from(path), bytes.into()).await;
    }

    fn jobs(&self) -> Vec<ImportJobId> {
        self.state(|st| st.imports.keys().copied().collect())
    }

    fn runs(&self, done: bool) -> Vec<PromptRunId> {
        self.state(|st| {
            st.prompt_runs.iter().filter(|(_, r)| !done || r.status.is_terminal()).map(|(id, _)| *id).collect()
        })
    }

    async fn crash(&mut self) -> Result<(), String> {
        if self.cluster.is_some() {
            return self.failover().await;
        }
        let fail_commit = self.rng.chance(30);
        let wait_ms = self.rng.below(20);
        if fail_commit {
            // The next commit fails (its appenders get an error), then the process dies.
            self.disk.fail_syncs.store(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            self.report.failed_commits += 1;
        }
        self.disk.crash();
        self.rt.shutdown().await;
        self.restarts += 1;
        self.report.crashes += 1;
        self.disk = Disk::from_image(self.disk.image());
        self.rt = open(self.machine(), self.restarts, disk_log(&self.disk, self.restarts)?, self.clock.clone()).await?;
        Ok(())
    }

    /// What every incarnation of this seed's runtime shares.
    fn machine(&self) -> Machine<'_> {
        Machine {
            seed: self.seed,
            tmp: self.tmp.path(),
            master: &self.master,
            twins: &self.twins,
            peer: self.peer_addr,
        }
    }

    /// Cluster mode: the database's clock follows the simulation's (it never goes back) and
    /// the holder renews its lease.
    fn renew(&mut self) {
        let now = self.clock_ms();
        if let Some(c) = &self.cluster {
            c.log.set_now(now);
            c.hold.renew();
        }
    }

    /// Cluster mode's crash: a kill, a pause past the lease, or a lost answer.
    async fn failover(&mut self) -> Result<(), String> {
        match self.rng.below(3) {
            0 => self.kill_holder().await,
            1 => self.pause_holder().await,
            _ => {
                let how = [LostAnswer::Applied, LostAnswer::NotApplied, LostAnswer::AppliedUnsettled]
                    [self.rng.below(3) as usize];
                if let Some(c) = &self.cluster {
                    c.hold.lose_next_answer(how);
                }
                self.report.lost_answers += 1;
                Ok(())
            }
        }
    }

    /// The holder dies (sometimes right after a commit whose answer is lost); once its lease
    /// expired another node (or the same one, restarted) takes the partition over.
    async fn kill_holder(&mut self) -> Result<(), String> {
        let Some(c) = &self.cluster else { return Ok(()) };
        if self.rng.chance(40) {
            let how = [LostAnswer::Applied, LostAnswer::NotApplied][self.rng.below(2) as usize];
            c.hold.lose_next_answer(how);
            self.report.lost_answers += 1;
            tokio::time::sleep(Duration::from_millis(self.rng.below(20))).await;
        }
        c.hold.kill();
        self.rt.shutdown().await;
        self.report.crashes += 1;
        self.take_over(true).await
    }

    /// The holder stops (SIGSTOP) past its lease: another node takes over and works a little;
    /// then the old one resumes, its next commit is refused, and it finds its partition lost.
    async fn pause_holder(&mut self) -> Result<(), String> {
        let Some(c) = &self.cluster else { return Ok(()) };
        let (old_hold, old_rt) = (c.hold.clone(), self.rt.clone());
        old_hold.pause();
        self.take_over(false).await?;
        // The new holder works while the old one is stopped (its effects may still be at work:
        // whatever they record is refused).
        self.put_object().await;
        let cmd = spool_core::ImportCommand::CreateImportJob {
            connector_id: self.connector,
            index_id: self.index,
            source_prefix: "in/".into(),
            file_pattern: "*".into(),
            recursive: true,
            import_mode: None,
        };
        self.exec(Command::Import(cmd)).await;
        tokio::time::sleep(Duration::from_millis(self.rng.below(30))).await;
        old_hold.resume();
        // Its next commit (a timer, an effect's outcome, or this one) is refused.
        let refused = old_rt.execute(command(r#"{"CreateIndex":{"name":"late","user_id":"u"}}"#)).await;
        if refused.is_ok() {
            return Err("split-brain: a holder paused past its lease had a command acknowledged".into());
        }
        if !old_hold.is_lost() || old_hold.renew() {
            return Err("split-brain: a holder paused past its lease did not find its partition lost".into());
        }
        // Nor did it fold (and act on) the new holder's events.
        let own = self.cluster.as_ref().map(|c| c.log.epochs()).unwrap_or_default();
        let last_own = own.iter().rposition(|e| *e <= old_hold.epoch()).map_or(0, |i| i + 1);
        if old_rt.applied_seq() > last_own as u64 {
            return Err(format!(
                "split-brain: a fenced holder folded the next holder's events (applied {}, its own end at {last_own})",
                old_rt.applied_seq()
            ));
        }
        old_rt.shutdown().await;
        self.report.fenced += 1;
        Ok(())
    }

    /// Another node takes the partition over once the lease expired on the database's clock
    /// (after a kill, sometimes the same node, restarted, which takes its own lease back at
    /// once), and opens its runtime on a clock skewed by up to ±5 s.
    async fn take_over(&mut self, dead: bool) -> Result<(), String> {
        let Some((nodes, holder)) = self.cluster.as_ref().map(|c| (c.nodes, c.holder)) else { return Ok(()) };
        let same = dead && self.rng.chance(30);
        let node = if same { holder } else { (holder + 1 + self.rng.below(nodes - 1)) % nodes };
        let skew_ms = i64::try_from(self.rng.below(10_001)).unwrap_or(0) - 5_000;
        let Some(c) = self.cluster.as_mut() else { return Ok(()) };
        if !same {
            c.log.advance(LEASE_MS + 1);
        }
        let hold = c
            .log
            .take(&format!("node-{node}"), LEASE_MS)
            .ok_or_else(|| format!("takeover: node-{node} found the lease held after it expired"))?;
        c.holder = node;
        c.hold = hold.clone();
        self.restarts += 1;
        self.report.takeovers += 1;
        let node_clock = Arc::new(SkewedClock { base: self.clock.clone(), skew_ms });
        self.rt = open(self.machine(), self.restarts, Arc::new(hold), node_clock).await?;
        Ok(())
    }

    async fn step(&mut self) -> Result<(), String> {
        self.renew();
        match self.rng.below(100) {
            0..=17 => self.put_object().await,
            18..=27 => {
                let cmd = spool_core::ImportCommand::CreateImportJob {
                    connector_id: self.connector,
                    index_id: self.index,
                    source_prefix: if self.rng.chance(80) { "in/".into() } else { String::new() },
                    file_pattern: "*".into(),
                    recursive: true,
                    import_mode: None,
                };
                self.exec(Command::Import(cmd)).await;
            }
            28..=31 => {
                let cancel = self.rng.chance(50);
                if let Some(job_id) = self.rng.pick_any(&self.jobs()) {
                    let cmd = if cancel {
                        spool_core::ImportCommand::CancelImportJob { job_id }
                    } else {
                        spool_core::ImportCommand::RetryImportJob { job_id }
                    };
                    let retry = matches!(cmd, spool_core::ImportCommand::RetryImportJob { .. });
                    if self.exec(Command::Import(cmd)).await.is_some() && retry {
                        self.checks.reopened(&job_id);
                    }
                }
            }
            32..=40 => {
                let (processor, prompt) =
                    if self.rng.chance(50) { (WORKER, self.labels) } else { ("probe", self.prompt) };
                let cmd = format!(
                    r#"{{"ExecuteRun":{{"prompt_id":"{}","target":{{"Index":{{"index_id":"{}"}}}},"settings":{{"video_segmentation":"Fixed","audio_segmentation":"Fixed","video_segment_s":1,"audio_segment_s":1,"processing_model":null,"processor":"{processor}","enable_transcription":true,"enable_image_embedding":true}},"executed_by":"sim"}}}}"#,
                    prompt, self.index
                );
                self.exec(command(&cmd)).await;
            }
            41..=43 => {
                if let Some(run_id) = self.rng.pick_any(&self.runs(false)) {
                    self.exec(Command::PromptRun(spool_core::PromptRunCommand::CancelRun {
                        run_id,
                        requested_by: "sim".into(),
                    }))
                    .await;
                }
            }
            44..=51 => {
                let to_bucket = self.rng.chance(60);
                let of_run = self.rng.chance(70);
                let (kind, target, run_ids) = match self.rng.pick_any(&self.runs(true)) {
                    Some(run) if of_run => (ExportKind::PromptRun, run.to_string(), vec![run]),
                    _ => (ExportKind::Index, self.index.to_string(), Vec::new()),
                };
                self.exec(Command::Export(spool_core::ExportCommand::CreateExport {
                    kind,
                    target,
                    run_ids,
                    connector_id: to_bucket.then_some(self.connector),
                    subpath: to_bucket.then(|| "sim".to_string()),
                    user_id: "u".into(),
                }))
                .await;
            }
            52..=54 => {
                // Live videos (on their index's pages) and deleted ones (a repeated DELETE).
                let mut videos: Vec<VideoId> = Vec::new();
                for index in [self.index, spool_core::imports::PLAYGROUND] {
                    videos.extend(self.rt.index_video_ids(&index).unwrap_or_default());
                }
                videos.extend(self.state(|st| st.video_deletions.keys().copied().collect::<Vec<_>>()));
                if let Some(video_id) = self.rng.pick_any(&videos) {
                    self.exec(Command::Video(spool_core::VideoCommand::DeleteVideo { video_id })).await;
                }
            }
            55..=69 => {
                let span = if self.rng.chance(10) { 3_600_000 } else { 120_000 };
                self.clock.advance(self.rng.below(span));
            }
            70..=74 => {
                let p = [0, 0, 5, 20, 50][self.rng.below(5) as usize];
                self.twin.set_fail_percent(p);
                let q = [0, 0, 10, 30, 60][self.rng.below(5) as usize];
                self.peers.set_fail_percent(q);
            }
            75..=78 => self.crash().await?,
            79..=80 => {
                // A paused webhook holds its deliveries (`webhook_paused`); resuming sends them.
                let status = if self.rng.chance(50) { "paused" } else { "active" };
                self.set_webhook(status).await;
            }
            81..=83 => self.upload().await?,
            86 => {
                // `POST /videos`: one object of the connector, by its URI.
                if let Some(path) = self.rng.pick_any(&self.media.iter().map(String::as_str).collect::<Vec<_>>()) {
                    let cmd = spool_core::ImportCommand::OpenUriJob {
                        index_id: self.index,
                        title: format!("registered {path}"),
                        connector_id: self.connector,
                        video_uri: format!("s3://{BUCKET}/{path}"),
                        path: path.to_string(),
                    };
                    if self.exec(Command::Import(cmd)).await.is_some() {
                        self.report.uri_jobs += 1;
                    }
                }
            }
            87..=89 => {
                // A failed segment of a finished run retried by hand (it reopens the run).
                let failed: Vec<(PromptRunId, VideoId, u32)> = self.state(|st| {
                    use spool_core::machines::prompt_run::TaskStatus as T;
                    st.prompt_runs
                        .values()
                        .filter(|r| r.status.is_terminal())
                        .flat_map(|r| {
                            r.segments
                                .iter()
                                .enumerate()
                                .filter(|(_, sg)| sg.task.status == T::Failed)
                                .filter_map(|(n, sg)| {
                                    r.videos.get(sg.video as usize).map(|v| (r.run_id, v.video_id, n as u32))
                                })
                                .take(4)
                        })
                        .collect()
                });
                if let Some((run_id, video_id, segment)) = self.rng.pick_any(&failed) {
                    // `segment` is the run-wide number, as the segment id's suffix is.
                    let cmd = spool_core::PromptRunCommand::RetrySegment { run_id, video_id, segment };
                    if self.exec(Command::PromptRun(cmd)).await.is_some() {
                        self.checks.reopened_run(&run_id);
                        self.report.segment_retries += 1;
                    }
                }
            }
            90 => {
                // The connector's credentials patched (sealed again in the sequencer).
                let cmd = Command::Connector(spool_core::ConnectorCommand::UpdateConnector {
                    connector_id: self.connector,
                    name: None,
                    scopes: None,
                    import_mode: None,
                    export_base_path: None,
                    credentials: None,
                });
                let patch = spool_storage::Credentials {
                    aws_secret_access_key: Some(if self.rng.chance(50) { SECRET_ROTATED } else { SECRET }.into()),
                    ..Default::default()
                };
                if self.exec(Runtime::update_connector(cmd, Some(patch))).await.is_some() {
                    self.report.credential_patches += 1;
                }
            }
            84..=85 => {
                let kind = if self.rng.chance(50) {
                    spool_core::machines::automation::AutomationKind::Import
                } else {
                    spool_core::machines::automation::AutomationKind::Export
                };
                let index_id = self.index;
                let cmd = if self.rng.chance(50) {
                    spool_core::AutomationCommand::PauseAutomation { index_id, kind }
                } else {
                    spool_core::AutomationCommand::ResumeAutomation { index_id, kind }
                };
                self.exec(Command::Automation(cmd)).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(5 + self.rng.below(20))).await,
        }
        self.report.steps += 1;
        self.check()
    }

    /// An upload as `POST /videos/upload` makes it: the bytes staged in the uploads folder,
    /// then a one-file job that imports them (to the index, or 20 % of the time the playground).
    async fn upload(&mut self) -> Result<(), String> {
        self.objects += 1;
        let n = self.objects;
        let bytes = spool_media::pcm_wav(format!("upload-{}-{n}", self.seed).as_bytes());
        let key = format!("sim-upload-{n}");
        let path = self.rt.uploads_dir().join(&key);
        std::fs::write(&path, &bytes).map_err(|e| format!("staging an upload: {e}"))?;
        let playground = self.rng.chance(20);
        let cmd = spool_core::ImportCommand::OpenUploadJob {
            index_id: (!playground).then_some(self.index),
            title: format!("upload {n}"),
            file_name: format!("up{n}.wav"),
            staged_key: key,
            size_bytes: bytes.len() as u64,
            sha256: sha2::Sha256::digest(&bytes).into(),
        };
        self.exec(Command::Import(cmd)).await;
        Ok(())
    }

    async fn set_webhook(&mut self, status: &str) {
        let cmd = spool_core::WebhookCommand::UpdateWebhook {
            webhook_id: self.webhook,
            name: None,
            url: None,
            events: None,
            index_ids: None,
            metadata_json: None,
            status: Some(status.into()),
        };
        self.exec(Command::Webhook(cmd)).await;
    }

    fn check(&mut self) -> Result<(), String> {
        let rt = self.rt.clone();
        let checks = &mut self.checks;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.read(|st| checks.check(st))))
            .map_err(|p| panic_text(p.as_ref()))
    }

    fn settled(st: &State) -> bool {
        use spool_core::machines::webhook::DeliveryStatus as D;
        st.deliveries.values().all(|d| matches!(d.status, D::Delivered | D::Failed))
            && st.imports.values().all(|j| j.status.is_terminal())
            && st.prompt_runs.values().all(|r| r.status.is_terminal())
            && st.exports.values().all(|e| e.status.is_terminal())
            && st.automations.values().all(|a| {
                !a.active()
                    || (a.found.is_empty() && a.jobs_ended.is_empty() && a.pending_runs.is_empty() && !a.listing_due)
            })
    }

    fn unsettled(st: &State) -> String {
        let mut out = Vec::new();
        for j in st.imports.values().filter(|j| !j.status.is_terminal()) {
            out.push(format!("job {} {:?} waiting on {:?}", j.job_id, j.status, spool_core::waiting::of_job(st, j)));
        }
        for r in st.prompt_runs.values().filter(|r| !r.status.is_terminal()) {
            out.push(format!(
                "run {} {} waiting on {:?}",
                r.run_id,
                r.status.as_str(),
                spool_core::waiting::of_run(st, r)
            ));
        }
        for e in st.exports.values().filter(|e| !e.status.is_terminal()) {
            out.push(format!(
                "export {} {} waiting on {:?}",
                e.export_id,
                e.status.as_str(),
                spool_core::waiting::of_export(st, e)
            ));
        }
        for d in st.deliveries.values().filter(|d| spool_core::waiting::of_delivery(st, d).is_some()).take(3) {
            out.push(format!("delivery {} waiting on {:?}", d.delivery_id, spool_core::waiting::of_delivery(st, d)));
        }
        out.truncate(6);
        out.join("; ")
    }

    /// Faults off: every workflow must end within [`DRAIN_SIMULATED_MS_MAX`] of simulated time.
    async fn drain(&mut self) -> Result<(), String> {
        self.twin.set_fail_percent(0);
        self.peers.set_fail_percent(0);
        self.peers.set_invalid_percent(0);
        self.set_webhook("active").await;
        for kind in [
            spool_core::machines::automation::AutomationKind::Import,
            spool_core::machines::automation::AutomationKind::Export,
        ] {
            let cmd = spool_core::AutomationCommand::ResumeAutomation { index_id: self.index, kind };
            self.exec(Command::Automation(cmd)).await;
        }
        let from = self.clock_ms();
        let started = Instant::now();
        loop {
            // Let the effects run, then move the clock 30 s; when nothing moved, straight to the
            // next timer (what waits on one comes back).
            let before = self.state(|st| st.applied_seq);
            for _ in 0..4 {
                if self.state(Self::settled) {
                    return self.check_tables();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.check()?;
            if self.clock_ms() - from > DRAIN_SIMULATED_MS_MAX || started.elapsed() > DRAIN_REAL_MAX {
                return Err(format!(
                    "liveness: not settled {} simulated minutes ({:.0} s of real time) after the faults stopped: {}",
                    (self.clock_ms() - from) / 60_000,
                    started.elapsed().as_secs_f64(),
                    self.state(Self::unsettled)
                ));
            }
            let (after, next) = self.state(|st| (st.applied_seq, st.next_timer().map(|(due, _)| *due)));
            let now = self.clock_ms();
            let jump = match next {
                Some(due) if after == before => due.saturating_sub(now).max(30_000),
                _ => 30_000,
            };
            self.clock.advance(jump);
        }
    }

    /// Once settled: every job's imported and skipped counters equal its rows in the
    /// `job_files` table (`engine-spec/tables.md`; the read state keeps no rows, so the state's
    /// checks cannot see them).
    fn check_tables(&self) -> Result<(), String> {
        use spool_core::imports::FileStatus;
        let jobs: Vec<(spool_model::ImportJobId, u64, u64)> =
            self.state(|st| st.imports.iter().map(|(id, j)| (*id, j.imported, j.skipped)).collect());
        for (id, imported, skipped) in jobs {
            for (status, want) in [(FileStatus::Imported, imported), (FileStatus::Skipped, skipped)] {
                let rows = self.rt.job_files(&id, status, 0, usize::MAX).map_err(|e| e.to_string())?;
                let held = u64::try_from(rows.len()).unwrap_or(u64::MAX);
                if held != want {
                    return Err(format!(
                        "tables: job {id} counts {want} {} files, its job_files table holds {held}",
                        status.as_str()
                    ));
                }
            }
        }
        Ok(())
    }

    fn clock_ms(&self) -> u64 {
        use spool_runtime::Clock;
        self.clock.now_ms()
    }

    fn all_events(&self) -> Result<Vec<spool_model::Envelope>, String> {
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            let batch = self.rt.log().read_from(from, READ_BATCH_MAX).map_err(|e| e.to_string())?;
            let Some(last) = batch.last() else { return Ok(out) };
            from = last.seq + 1;
            out.extend(batch);
        }
    }

    async fn final_checks(&mut self) -> Result<(), String> {
        // A clean restart first (in cluster mode, a kill and a takeover): what follows reads
        // only what is durable.
        if self.cluster.is_some() {
            if let Some(c) = &self.cluster {
                c.hold.kill();
            }
            self.rt.shutdown().await;
            self.take_over(true).await?;
        } else {
            self.crash().await?;
        }
        let live = self.state(Clone::clone);
        let folded = spool_runtime::tools::fold_state(&**self.rt.log()).map_err(|e| e.to_string())?;
        if live.applied_seq == folded.applied_seq && live != folded {
            return Err(format!(
                "fold-equals-live: a fold of the {} events differs from the live state",
                folded.applied_seq
            ));
        }
        let events = self.all_events()?;
        // The log's own invariants over every event, as the machines' simulator checks them
        // after each append.
        let mut log_checks = StateChecks::default();
        for env in &events {
            let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| log_checks.see(&env.event)));
            seen.map_err(|p| format!("{} (seq {})", panic_text(p.as_ref()), env.seq))?;
        }
        {
            use spool_core::machines::webhook::DeliveryStatus as D;
            let seen = self.peers.delivered.lock().unwrap_or_else(|p| p.into_inner()).clone();
            // The delivered ones are rows of the `deliveries` table; the others are in the state.
            let mut rows = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .rt
                    .log()
                    .side_scan(spool_log::SideTable::Deliveries, after.as_deref(), READ_BATCH_MAX)
                    .map_err(|e| e.to_string())?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (key, bytes) in page {
                    let d = spool_core::machines::webhook::Delivery::decode_row(&bytes)
                        .ok_or_else(|| format!("delivery-rows: the row of {key} does not decode"))?;
                    if d.status != D::Delivered || live.deliveries.contains_key(&d.delivery_id) {
                        return Err(format!("delivery-rows: {key} is a row and {} in the state", d.status.as_str()));
                    }
                    rows.push(d);
                }
            }
            let delivered: u64 = live.webhooks.values().map(|w| w.delivered).sum();
            if delivered != rows.len() as u64 {
                return Err(format!(
                    "delivery-rows: {delivered} delivered by the webhooks' counts, {} rows",
                    rows.len()
                ));
            }
            self.report.deliveries = (rows.len() + live.deliveries.len()) as u64;
            for d in live.deliveries.values().chain(rows.iter()) {
                match d.status {
                    D::Delivered if d.attempts >= 1 && seen.contains_key(&d.delivery_id.to_string()) => {}
                    D::Failed if d.attempts >= 1 => {}
                    _ => {
                        return Err(format!(
                            "delivery-ends: {} is {} after {} attempts (received {})",
                            d.delivery_id,
                            d.status.as_str(),
                            d.attempts,
                            seen.get(&d.delivery_id.to_string()).copied().unwrap_or(0)
                        ));
                    }
                }
            }
        }
        {
            // A succeeded task's answer is a row of `run_answers`; no other task has one.
            use spool_core::machines::prompt_run::TaskStatus as T;
            let mut succeeded = std::collections::BTreeSet::new();
            for r in live.prompt_runs.values() {
                for (n, s) in r.segments.iter().enumerate() {
                    if s.task.status == T::Succeeded {
                        let task = spool_model::RunTask::Segment(spool_model::num::sat_u32(n));
                        succeeded.insert(spool_core::AnswerKey { run_id: r.run_id, task }.to_string());
                    }
                }
                for (v, rv) in r.videos.iter().enumerate() {
                    if rv.video_level.as_ref().is_some_and(|t| t.status == T::Succeeded) {
                        let task = spool_model::RunTask::Video(spool_model::num::sat_u32(v));
                        succeeded.insert(spool_core::AnswerKey { run_id: r.run_id, task }.to_string());
                    }
                }
            }
            let mut after: Option<String> = None;
            let mut answers = 0u64;
            loop {
                let page = self
                    .rt
                    .log()
                    .side_scan(spool_log::SideTable::RunAnswers, after.as_deref(), READ_BATCH_MAX)
                    .map_err(|e| e.to_string())?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (key, bytes) in page {
                    let answer: Option<spool_model::TaskAnswer> =
                        spool_core::rows::decode_row(spool_core::rows::ANSWER_ROW_FORMAT, &bytes);
                    if answer.is_none() {
                        return Err(format!("answer-rows: the row of {key} does not decode"));
                    }
                    answers += 1;
                    // A video-level answer stays while its task is asked again (a segment retry).
                    if !succeeded.remove(&key) && !key.contains("/v") {
                        return Err(format!("answer-rows: {key} is a row of a task that has not succeeded"));
                    }
                }
            }
            if let Some(key) = succeeded.first() {
                return Err(format!("answer-rows: {key} succeeded and has no row ({} such)", succeeded.len()));
            }
            self.report.answers = answers;
            // Every processor call a run counted is a row of `run_calls`, numbered from 0.
            let mut calls = 0u64;
            for r in live.prompt_runs.values() {
                let rows = spool_runtime::rows::read_run_calls(self.rt.log().as_ref(), &r.run_id, 0, usize::MAX)
                    .map_err(|e| e.to_string())?;
                if rows.len() as u64 != r.calls {
                    return Err(format!("call-rows: run {} counted {} calls, {} rows", r.run_id, r.calls, rows.len()));
                }
                calls += r.calls;
            }
            self.report.calls = calls;
        }
        self.report.injected_peer_faults = self.peers.injected.load(Ordering::Relaxed);
        self.report.processor_calls = self.peers.processor_calls.load(Ordering::Relaxed);
        let image = match &self.cluster {
            // The shared log's records, as a database would hold them.
            Some(_) => events
                .iter()
                .map(|e| spool_model::codec::encode_envelope(e).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?
                .concat(),
            None => self.disk.image(),
        };
        if let Some(c) = &self.cluster {
            let epochs = c.log.epochs();
            if let Some(w) = epochs.windows(2).position(|w| w[1] < w[0]) {
                return Err(format!(
                    "fenced-epochs: event {} of epoch {} follows one of epoch {}",
                    w + 2,
                    epochs[w + 1],
                    epochs[w]
                ));
            }
            for o in &c.acked {
                let present = match o {
                    Outcome::Import(id) => live.imports.contains_key(id),
                    Outcome::PromptRun(id) => live.prompt_runs.contains_key(id),
                    Outcome::Export(id) => live.exports.contains_key(id),
                    _ => true,
                };
                if !present {
                    return Err(format!("acknowledged-durable: {o:?} was acknowledged and is not in the log"));
                }
            }
        }
        for (what, secret) in [
            ("the connector's secret", SECRET),
            ("the connector's rotated secret", SECRET_ROTATED),
            ("the webhook's secret", self.webhook_secret.as_str()),
        ] {
            if !secret.is_empty() && image.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                return Err(format!("secrets-sealed: {what} is in the log's bytes in clear text"));
            }
        }
        let exports: Vec<(String, Option<[u8; 32]>)> = live
            .exports
            .values()
            .filter(|e| e.status.is_terminal() && e.status.as_str() == "completed")
            .filter_map(|e| match &e.destination {
                ExportDestination::Connector { object_path, .. } => Some((object_path.clone(), e.sha256)),
                ExportDestination::Download => None,
            })
            .collect();
        for (path, sha) in exports {
            let got = self.twin.contents().get(&object_store::path::Path::from(path.as_str())).await;
            let bytes = match got {
                Ok(g) => g.bytes().await.map_err(|e| e.to_string())?,
                Err(e) => return Err(format!("export-in-bucket: {path}: {e}")),
            };
            let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
            if sha.is_some_and(|s| s != digest) {
                return Err(format!("export-in-bucket: {path} differs from the checksum its export recorded"));
            }
        }
        self.report.events = events.len() as u64;
        self.report.jobs = live.imports.len() as u64;
        self.report.runs = live.prompt_runs.len() as u64;
        self.report.exports = live.exports.len() as u64;
        self.report.videos = log_checks.videos() as u64;
        self.report.injected_storage_faults = self.twin.injected();
        Ok(())
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    spool_runtime::panic_message(p)
}

/// Run one seed: `steps` steps with faults, the drain, the final checks. Any broken invariant
/// (or panic) is an `Err` naming the seed.
pub fn run(seed: u64, steps: usize) -> Result<SimReport, String> {
    run_nodes(seed, steps, 1)
}

/// [`run`] on `nodes` nodes sharing one partition (cluster mode when more than one).
pub fn run_nodes(seed: u64, steps: usize, nodes: u64) -> Result<SimReport, String> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let out = tokio.block_on(async move {
        let mut w = World::new(seed, nodes).await?;
        let t0 = Instant::now();
        for i in 0..steps {
            w.step().await.map_err(|e| format!("step {i}: {e}"))?;
        }
        let t1 = Instant::now();
        w.drain().await?;
        let t2 = Instant::now();
        w.final_checks().await?;
        #[allow(clippy::disallowed_methods)] // a developer's switch for timings, read by the simulator alone
        let times = std::env::var_os("SPOOL_SIM_TIMES").is_some();
        if times {
            eprintln!("seed {seed}: steps {:?}, drain {:?}, final {:?}", t1 - t0, t2 - t1, t2.elapsed());
        }
        w.report.simulated_ms = w.clock_ms() - START_MS;
        w.rt.shutdown().await;
        Ok::<SimReport, String>(w.report.clone())
    });
    tokio.shutdown_timeout(Duration::from_secs(5));
    out.map_err(|e| format!("seed {seed}: {e}"))
}
