//! A seeded simulation of the machines (`spool sim`): the real `decide`, `evolve`,
//! `pending_effects` and `outbox`, driven by one seed against simulated effect outcomes
//! (listings, copies, processor answers, export writes) with faults: failed and retryable
//! outcomes, duplicated and stale outcomes, effects cut off half-way by a crash, commits that
//! fail, crashes that drop the state and refold the log, and clock jumps. Workload: import jobs,
//! retries and cancels, prompt runs and cancels, an import automation watching a changing
//! bucket, an export automation, pauses and resumes. After every step the invariants of
//! `engine-spec/invariants.md` are checked; after the faults stop, every workflow must end
//! within a bound of simulated time (liveness). Everything follows from the seed, so a failing
//! seed replays exactly: `spool sim --seed N`.
//!
//! This is the core's half of the simulator: the sequencer's batching, the executors' IO and
//! the log's storage are not in it (see `engine-spec/invariants.md`, "What the simulator covers").
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // a simulator: its indexes are below lengths it just took

use crate::machines::automation::{AutomationEffect, AutomationKind, version_key};
use crate::machines::export::ExportEffect;
use crate::machines::import_job::{ImportEffect, JobStatus, ListedObject, path_key};
use crate::machines::prompt_run::PromptRunEffect;
use crate::{Command, Ctx, Effect, State, Timer, decide, evolve, outbox, pending_effects};
use spool_model::{
    AutomationId, ConnectorId, Envelope, Event, ExportId, FORMAT_VERSION, ImportJobId, IndexId, PromptId, PromptRunId,
    VideoId, WatchedObject,
};
use std::collections::{BTreeMap, BTreeSet};

/// Steps of the fault phase of one seed, unless told otherwise.
pub const SIM_STEPS_DEFAULT: usize = 300;
/// Steps the drain (no faults) may take before the seed fails for liveness.
pub const SIM_DRAIN_STEPS_MAX: usize = 20_000;
const START_MS: u64 = 1_764_000_000_000;

/// What one seed did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    pub seed: u64,
    pub steps: u64,
    pub events: u64,
    pub crashes: u64,
    pub failed_commits: u64,
    pub duplicates: u64,
    /// Simulated milliseconds from the start to the end of the drain.
    pub simulated_ms: u64,
    pub jobs: u64,
    pub runs: u64,
    pub exports: u64,
    pub videos: u64,
}

/// A small, fast, seedable generator (SplitMix64): the simulations need no other randomness.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len() as u64) as usize])
    }
    /// One draw whatever `v` holds, so that later choices do not depend on what it held (the
    /// runtime simulator's workload, whose state moves on its own).
    pub fn pick_any<T: Copy>(&mut self, v: &[T]) -> Option<T> {
        let r = self.next_u64();
        (!v.is_empty()).then(|| v[(r % v.len() as u64) as usize])
    }
}

struct World {
    st: State,
    log: Vec<Envelope>,
    now: u64,
    rng: Rng,
    faults: bool,
    /// The simulated bucket: path → (etag, size).
    bucket: BTreeMap<String, (String, u64)>,
    versions: u64,
    connector: ConnectorId,
    index: IndexId,
    prompt: PromptId,
    import_automation: Option<AutomationId>,
    export_automation: Option<AutomationId>,
    /// Command lists of effects run already: replayed as duplicated, late outcomes.
    done: Vec<Vec<Command>>,
    checks: StateChecks,
    report: SimReport,
}

fn command(json: &str) -> Command {
    // The setup commands are fixed text: a typo is a bug of this file.
    serde_json::from_str(json).unwrap_or_else(|e| panic!("sim setup command {json}: {e}"))
}

/// The invariants of one state that also hold across states (`counters-equal-outcomes`,
/// `finished-stays-finished`): this simulator and the runtime's (`crates/sim`) check them after
/// every step. A broken one panics with its name's words.
#[derive(Debug, Default)]
pub struct StateChecks {
    terminal_jobs: BTreeMap<ImportJobId, JobStatus>,
    terminal_runs: BTreeMap<PromptRunId, &'static str>,
    terminal_exports: BTreeMap<ExportId, &'static str>,
    videos_created: BTreeSet<VideoId>,
    exported: BTreeSet<(AutomationId, PromptRunId)>,
    runs_started: BTreeSet<ImportJobId>,
    results: BTreeSet<(PromptRunId, spool_model::RunTask)>,
    deliveries: BTreeSet<(spool_model::WebhookId, u64)>,
}

impl StateChecks {
    /// A job's `ImportJobRetried`: it may leave its finished status.
    pub fn reopened(&mut self, job_id: &ImportJobId) {
        self.terminal_jobs.remove(job_id);
    }

    /// A run's failed segment retried by hand (`PromptTaskRetryRequested`): it may leave its
    /// finished status.
    pub fn reopened_run(&mut self, run_id: &PromptRunId) {
        self.terminal_runs.remove(run_id);
    }

    /// The invariants over the log, one appended event at a time: `no-video-twice`,
    /// `one-export-per-run`, `one-run-per-job`, `no-result-twice` (a segment retried by hand
    /// may succeed again), `no-delivery-twice`; a job's retry or a segment's manual retry
    /// re-opens its job or run for `finished-stays-finished`.
    pub fn see(&mut self, event: &Event) {
        match event {
            Event::VideoCreated { video_id, .. } | Event::VideoImported { video_id, .. } => {
                assert!(self.videos_created.insert(*video_id), "video {video_id} created twice");
            }
            Event::AutomationExported { automation_id, run_id, .. } => {
                assert!(
                    self.exported.insert((*automation_id, *run_id)),
                    "run {run_id} handled twice by {automation_id}"
                );
            }
            Event::AutomationRunStarted { job_id, .. } => {
                assert!(self.runs_started.insert(*job_id), "job {job_id} started two runs");
            }
            Event::PromptTaskSucceeded { run_id, task, .. } => {
                assert!(self.results.insert((*run_id, *task)), "run {run_id}: task {task:?} has two results");
            }
            Event::PromptTaskRetryRequested { run_id, task, .. } => {
                self.results.remove(&(*run_id, *task));
                self.reopened_run(run_id);
            }
            Event::DeliveryCreated { webhook_id, sequence, delivery_id, .. } => {
                assert!(
                    self.deliveries.insert((*webhook_id, *sequence)),
                    "{delivery_id}: webhook {webhook_id} got event {sequence} twice"
                );
            }
            // A retry re-opens a finished job (contract §6.1): its end may change.
            Event::ImportJobRetried { job_id, .. } => self.reopened(job_id),
            _ => {}
        }
    }

    /// Videos created so far (`see`).
    pub fn videos(&self) -> usize {
        self.videos_created.len()
    }

    pub fn check(&mut self, st: &State) {
        for (id, j) in &st.imports {
            use crate::machines::import_job::FileStatus as F;
            // Imported and skipped files are rows (the simulator's state keeps every row).
            let count = |s| j.files.values().filter(|f| f.status == s).count() as u64;
            // (A state that does not keep its rows, the runtime's read state, has them in tables.)
            let rows = |s| st.rows.finished_files(id, s, usize::MAX).len() as u64;
            if st.rows.emit {
                assert_eq!(j.imported, rows(F::Imported), "job {id}: imported counter");
                assert_eq!(j.skipped, rows(F::Skipped), "job {id}: skipped counter");
            }
            assert_eq!(j.failed, count(F::Failed), "job {id}: failed counter");
            assert_eq!(
                j.files.len() as u64 + j.imported + j.skipped,
                u64::from(j.file_count),
                "job {id}: every discovered file is the job's or a row"
            );
            if j.status.is_terminal() {
                let was = *self.terminal_jobs.entry(*id).or_insert(j.status);
                assert_eq!(was, j.status, "finished job {id} changed without a retry");
            } else {
                assert!(!self.terminal_jobs.contains_key(id), "finished job {id} re-opened without a retry");
            }
        }
        for (id, r) in &st.prompt_runs {
            use crate::machines::prompt_run::TaskStatus as T;
            let succeeded = r.segments.iter().filter(|s| s.task.status == T::Succeeded).count() as u64;
            let failed = r.segments.iter().filter(|s| s.task.status == T::Failed).count() as u64;
            assert_eq!(r.completed_segments, succeeded, "run {id}: completed counter");
            assert_eq!(r.failed_segments, failed, "run {id}: failed counter");
            // A succeeded task's answer is a row (`run_answers`), written by the fold of its
            // success: a state with every row holds one per succeeded task.
            if st.rows.complete {
                for (n, s) in r.segments.iter().enumerate() {
                    let key = crate::AnswerKey { run_id: *id, task: spool_model::RunTask::Segment(n as u32) };
                    assert_eq!(
                        st.rows.answers.contains_key(&key),
                        s.task.status == T::Succeeded,
                        "run {id}: segment {n} is {:?}; its answer row",
                        s.task.status
                    );
                }
                for (v, rv) in r.videos.iter().enumerate() {
                    if rv.video_level.as_ref().is_some_and(|t| t.status == T::Succeeded) {
                        let key = crate::AnswerKey { run_id: *id, task: spool_model::RunTask::Video(v as u32) };
                        assert!(st.rows.answers.contains_key(&key), "run {id}: video {v}'s video-level answer row");
                    }
                }
            }
            if r.status.is_terminal() {
                let now = r.status.as_str();
                let was = *self.terminal_runs.entry(*id).or_insert(now);
                assert_eq!(was, now, "finished run {id} changed from {was} to {now}");
            }
        }
        for (id, e) in &st.exports {
            if e.status.is_terminal() {
                let now = e.status.as_str();
                let was = *self.terminal_exports.entry(*id).or_insert(now);
                assert_eq!(was, now, "finished export {id} changed from {was} to {now}");
            }
        }
    }
}

impl World {
    fn new(seed: u64) -> World {
        let connector: ConnectorId = "conn_01KB0000000000000000000001".parse().expect("a fixed id");
        let mut w = World {
            st: State::kept_rows(),
            log: Vec::new(),
            now: START_MS,
            rng: Rng(seed),
            // The setup never fails; the faults start with the first step.
            faults: false,
            bucket: BTreeMap::new(),
            versions: 0,
            connector,
            index: IndexId(ulid::Ulid::nil()),
            prompt: PromptId(ulid::Ulid::nil()),
            import_automation: None,
            export_automation: None,
            done: Vec::new(),
            checks: StateChecks::default(),
            report: SimReport { seed, ..Default::default() },
        };
        if let Some(crate::Outcome::Index(i)) = w.apply(command(r#"{"CreateIndex":{"name":"sim","user_id":"u"}}"#)) {
            w.index = i;
        }
        w.apply(command(
            r#"{"CreateConnector":{"connector_id":"conn_01KB0000000000000000000001","provider":"local","name":"bucket","scopes":["import","export"],"import_mode":"all","export_base_path":"out","location":{"bucket":null,"region":null,"endpoint":null,"storage_account":null,"container":null,"tenant_id":null,"client_id":null,"gcp_project_id":null,"root":"/sim"},"credentials":null}}"#,
        ));
        if let Some(crate::Outcome::Prompt(p)) = w.apply(command(
            r#"{"CreatePrompt":{"user_id":"u","name":"Facts","description":"","prompt_text":"Report the media facts.","json_schema":"{\"type\":\"object\"}","video_level":null,"semantic":{"disabled_segment_fields":[],"disabled_video_level_fields":[]}}}"#,
        )) {
            w.prompt = p;
        }
        let preset = r#"{"video_segmentation":"Fixed","audio_segmentation":"Fixed","video_segment_s":1,"audio_segment_s":1,"processing_model":null,"processor":"probe","enable_transcription":true,"enable_image_embedding":true}"#;
        let save = format!(
            r#"{{"SaveAutomation":{{"index_id":"{}","config":{{"Import":{{"enabled":true,"connector_id":"{}","source_prefix":"in/","file_pattern":"*","recursive":true,"debounce_ms":300000,"prompt_id":"{}","preset":{preset}}}}},"paused":false}}}}"#,
            w.index, w.connector, w.prompt
        );
        let cmd = command(&save);
        if let Err(e) = decide(&w.st, &cmd, &mut Ctx::new(w.now, 1)) {
            panic!("the sim's import automation is refused: {e}");
        }
        if let Some(crate::Outcome::Automation(a)) = w.apply(cmd) {
            w.import_automation = Some(a);
        }
        let save = format!(
            r#"{{"SaveAutomation":{{"index_id":"{}","config":{{"Export":{{"enabled":true,"connector_id":"{}","subpath":"auto"}}}},"paused":false}}}}"#,
            w.index, w.connector
        );
        if let Some(crate::Outcome::Automation(a)) = w.apply(command(&save)) {
            w.export_automation = Some(a);
        }
        assert!(w.export_automation.is_some(), "the sim's export automation is refused");
        w.faults = true;
        w
    }

    /// Decide and fold one command as the sequencer does (its outbox too); a refused command
    /// appends nothing. With faults on, a commit may fail: its events are dropped and the state
    /// is rebuilt from the log.
    fn apply(&mut self, cmd: Command) -> Option<crate::Outcome> {
        let mut ctx = Ctx::new(self.now, u128::from(self.rng.next_u64()) << 64 | u128::from(self.rng.next_u64()));
        let decision = decide(&self.st, &cmd, &mut ctx).ok()?;
        let before = self.log.len();
        self.fold(&decision.streams);
        let deliveries = outbox(&self.st, &decision, &mut ctx);
        self.fold(&deliveries);
        if self.faults && self.rng.chance(1) && self.log.len() > before {
            self.log.truncate(before);
            self.st = crate::replay(State::kept_rows(), &self.log);
            self.report.failed_commits += 1;
            return None;
        }
        for env in &self.log[before..] {
            self.checks.see(&env.event);
        }
        self.report.events += (self.log.len() - before) as u64;
        Some(decision.outcome)
    }

    fn fold(&mut self, streams: &[crate::StreamEvents]) {
        for s in streams {
            for ev in &s.events {
                let env = Envelope {
                    seq: self.st.applied_seq + 1,
                    stream: s.stream.clone(),
                    at_ms: self.now,
                    format_version: FORMAT_VERSION,
                    event: ev.clone(),
                };
                evolve(&mut self.st, &env);
                self.log.push(env);
            }
        }
    }

    /// A crash: memory is gone; the state comes back from the log (and must equal the live
    /// one), and a snapshot of it decodes to the same state. The tables (the rows the simulator
    /// keeps in its state) are durable: the fold of the log writes them again.
    fn crash(&mut self) {
        let refolded = crate::replay(State::kept_rows(), &self.log);
        assert!(refolded == self.st, "the fold of the log differs from the live state");
        let snap = State::from_snapshot(&refolded.to_snapshot());
        assert!(snap.as_ref() == Some(&refolded), "a snapshot does not decode to its state");
        self.st = refolded;
        self.report.crashes += 1;
    }

    /// What an executor would report for an effect (faults decide failures).
    fn outcome(&mut self, e: &Effect) -> Vec<Command> {
        use crate::{AutomationCommand as A, ExportCommand as X, ImportCommand as I, PromptRunCommand as P};
        let fail = |w: &mut World, p| w.faults && w.rng.chance(p);
        match e {
            Effect::Import(ImportEffect::ScanImport { job_id }) => {
                if fail(self, 3) {
                    return vec![Command::Import(I::RecordImportJobFailed {
                        job_id: *job_id,
                        error: "sim: connector gone".into(),
                    })];
                }
                let prefix = self.st.imports.get(job_id).map(|j| j.source_prefix.clone()).unwrap_or_default();
                let objects: Vec<ListedObject> = self.listing(&prefix).iter().map(Into::into).collect();
                let mut out: Vec<Command> = objects
                    .chunks(3)
                    .map(|c| Command::Import(I::RecordScanPage { job_id: *job_id, objects: c.to_vec() }))
                    .collect();
                if fail(self, 15) {
                    // A partial listing: some pages, then the storage stops answering.
                    let kept = self.rng.below(out.len() as u64 + 1) as usize;
                    out.truncate(kept);
                    let transient = self.rng.chance(85);
                    out.push(Command::Import(I::RecordScanFailed {
                        job_id: *job_id,
                        error: "sim: connection refused".into(),
                        transient,
                    }));
                    return out;
                }
                out.push(Command::Import(I::RecordScanCompleted { job_id: *job_id }));
                out
            }
            Effect::Import(ImportEffect::ImportFile { job_id, file_id, attempt }) => {
                let (job_id, file_id, attempt) = (*job_id, *file_id, *attempt);
                let start = Command::Import(I::StartImportFile { job_id, file_id, attempt });
                let end = if fail(self, 15) {
                    let retryable = self.rng.chance(60);
                    let failure = spool_model::FileFailure {
                        code: if retryable { "source_read_failed" } else { "media_unreadable" }.into(),
                        message: "sim".into(),
                        retryable,
                    };
                    I::RecordFileFailed { job_id, file_id, attempt, failure }
                } else {
                    let bytes = self
                        .st
                        .imports
                        .get(&job_id)
                        .and_then(|j| j.files.get(&file_id))
                        .map_or(1, |f| f.file.size_bytes);
                    I::RecordFileImported {
                        job_id,
                        file_id,
                        attempt,
                        bytes,
                        sha256: [7; 32],
                        facts: Some(audio_second()),
                    }
                };
                vec![start, Command::Import(end)]
            }
            Effect::Import(ImportEffect::FinishImportJob { job_id }) => {
                vec![Command::Import(I::RecordImportJobFinished { job_id: *job_id })]
            }
            Effect::PromptRun(PromptRunEffect::ListRunVideos { run_id }) => {
                vec![Command::PromptRun(P::AddRunVideos { run_id: *run_id })]
            }
            Effect::PromptRun(PromptRunEffect::PlanVideo { run_id, video }) => {
                vec![Command::PromptRun(P::RecordVideoAnalysis {
                    run_id: *run_id,
                    video: *video,
                    boundaries_us: None,
                    source: "none".into(),
                })]
            }
            Effect::PromptRun(PromptRunEffect::RunTask { run_id, task, attempt }) => {
                let (run_id, task, attempt) = (*run_id, *task, *attempt);
                let usage = spool_model::CallUsage { input_tokens: 1, output_tokens: 1, duration_ms: 1 };
                let end = if fail(self, 15) {
                    let failure = spool_model::TaskFailure {
                        stage: spool_model::FailureStage::Processing,
                        code: "processor_error".into(),
                        message: "sim".into(),
                        retryable: self.rng.chance(60),
                        error_paths: Vec::new(),
                    };
                    P::RecordTaskFailed { run_id, task, attempt, failure, usage: None }
                } else {
                    let answer = spool_model::TaskAnswer {
                        metadata_json: r#"{"duration_seconds":1}"#.into(),
                        metadata_text: "one second".into(),
                    };
                    // An image vector each time: kept for runs with image embedding only.
                    let image_vector_le = 1.0f32.to_le_bytes().to_vec();
                    P::RecordTaskSucceeded { run_id, task, attempt, answer, usage, image_vector_le }
                };
                vec![Command::PromptRun(P::StartTask { run_id, task, attempt }), Command::PromptRun(end)]
            }
            Effect::PromptRun(PromptRunEffect::FinishRun { run_id }) => {
                vec![Command::PromptRun(P::FinishRun { run_id: *run_id })]
            }
            Effect::Export(ExportEffect::RunExport { export_id, attempt }) => {
                let (export_id, attempt) = (*export_id, *attempt);
                let end = if fail(self, 15) {
                    X::RecordExportFailed {
                        export_id,
                        attempt,
                        error: "sim: write failed".into(),
                        retryable: self.rng.chance(60),
                    }
                } else {
                    X::RecordExportCompleted { export_id, attempt }
                };
                vec![
                    Command::Export(X::StartExport { export_id, attempt }),
                    Command::Export(X::RecordExportGenerated { export_id, attempt, size_bytes: 100, sha256: [1; 32] }),
                    Command::Export(end),
                ]
            }
            Effect::Automation(AutomationEffect::Watch { automation_id, listing }) => {
                let (automation_id, listing) = (*automation_id, *listing);
                if fail(self, 5) {
                    return vec![Command::Automation(A::RecordWatchListed {
                        automation_id,
                        listing,
                        objects: 0,
                        error: Some("sim: listing failed".into()),
                        interval_ms: 60_000,
                        gone: Vec::new(),
                    })];
                }
                let prefix = match self.st.automations.get(&automation_id).map(|a| &a.config) {
                    Some(spool_model::AutomationConfig::Import { source_prefix, .. }) => source_prefix.clone(),
                    _ => return Vec::new(),
                };
                let objects = self.listing(&prefix);
                let n = objects.len() as u64;
                let listed: BTreeSet<crate::imports::PathKey> =
                    objects.iter().map(|o| crate::imports::path_key(&o.path)).collect();
                // As the watch does: a listing of nothing forgets nothing.
                let gone: Vec<crate::imports::PathKey> = self
                    .st
                    .automations
                    .get(&automation_id)
                    .filter(|_| !objects.is_empty())
                    .map(|a| a.manifest.keys().filter(|k| !listed.contains(*k)).copied().collect())
                    .unwrap_or_default();
                let mut out: Vec<Command> = objects
                    .chunks(3)
                    .map(|c| Command::Automation(A::RecordWatchPage { automation_id, listing, objects: c.to_vec() }))
                    .collect();
                out.push(Command::Automation(A::RecordWatchListed {
                    automation_id,
                    listing,
                    objects: n,
                    error: None,
                    interval_ms: 60_000,
                    gone,
                }));
                out
            }
            Effect::Automation(AutomationEffect::StartRun { automation_id, job_id }) => {
                vec![Command::Automation(A::StartRun { automation_id: *automation_id, job_id: *job_id })]
            }
            Effect::Automation(AutomationEffect::ExportRun { automation_id, run_id }) => {
                vec![Command::Automation(A::ExportRun { automation_id: *automation_id, run_id: *run_id })]
            }
            // Not in the workload: no webhooks, no deletions.
            _ => Vec::new(),
        }
    }

    fn listing(&self, prefix: &str) -> Vec<WatchedObject> {
        self.bucket
            .range(prefix.to_string()..)
            .take_while(|(p, _)| p.starts_with(prefix))
            .map(|(p, (etag, size))| WatchedObject {
                path: p.clone(),
                size_bytes: *size,
                etag: Some(etag.clone()),
                last_modified_ms: 1,
            })
            .collect()
    }

    /// Run one pending effect's outcome; with faults, a crash may cut it after a prefix.
    fn run_effect(&mut self, e: &Effect) {
        let cmds = self.outcome(e);
        let cut =
            if self.faults && self.rng.chance(5) { self.rng.below(cmds.len() as u64 + 1) as usize } else { cmds.len() };
        for c in cmds.iter().take(cut) {
            self.apply(c.clone());
        }
        if cut < cmds.len() {
            self.crash();
        }
        self.done.push(cmds);
        if self.done.len() > 64 {
            self.done.remove(0);
        }
    }

    fn fire_due_timers(&mut self) {
        let due: Vec<Timer> =
            self.st.timers.iter().take_while(|(d, _)| *d <= self.now).map(|(_, t)| t.clone()).collect();
        for timer in due {
            self.apply(Command::Engine(crate::EngineCommand::FireTimer { timer }));
        }
    }

    fn put_object(&mut self) {
        self.versions += 1;
        let dir = if self.rng.chance(80) { "in/" } else { "other/" };
        let existing: Vec<String> = self.bucket.keys().filter(|k| k.starts_with(dir)).cloned().collect();
        let path = match self.rng.pick(&existing) {
            Some(p) if self.rng.chance(30) => p.clone(),
            _ => {
                let ext = *self.rng.pick(&["wav", "wav", "mp3", "txt"]).unwrap_or(&"wav");
                format!("{dir}{}/f{}.{ext}", self.rng.below(3), self.rng.below(1000))
            }
        };
        let size = self.rng.below(4);
        self.bucket.insert(path, (format!("e{}", self.versions), size));
    }

    fn step(&mut self) {
        let effects = pending_effects(&self.st);
        match self.rng.below(100) {
            0..=44 | 90..=99 => {
                if let Some(e) = self.rng.pick(&effects).cloned() {
                    self.run_effect(&e);
                }
            }
            45..=49 => {
                // A duplicated, late outcome of an effect run before.
                if let Some(cmds) = self.rng.pick(&self.done).cloned() {
                    for c in cmds {
                        self.apply(c);
                    }
                    self.report.duplicates += 1;
                }
            }
            50..=59 => {
                let span = if self.rng.chance(10) { 3_600_000 } else { 120_000 };
                self.now += self.rng.below(span);
                self.fire_due_timers();
            }
            60..=62 => self.crash(),
            63..=72 => self.put_object(),
            73..=75 => {
                let prefix = if self.rng.chance(70) { "in/" } else { "" };
                let cmd = crate::ImportCommand::CreateImportJob {
                    connector_id: self.connector,
                    index_id: self.index,
                    source_prefix: prefix.into(),
                    file_pattern: "*".into(),
                    recursive: true,
                    import_mode: None,
                };
                self.apply(Command::Import(cmd));
            }
            76..=77 => {
                let jobs: Vec<ImportJobId> = self.st.imports.keys().copied().collect();
                if let Some(job_id) = self.rng.pick(&jobs).copied() {
                    let cmd = if self.rng.chance(50) {
                        crate::ImportCommand::CancelImportJob { job_id }
                    } else {
                        crate::ImportCommand::RetryImportJob { job_id }
                    };
                    self.apply(Command::Import(cmd));
                }
            }
            78..=81 => {
                let cmd = format!(
                    r#"{{"ExecuteRun":{{"prompt_id":"{}","target":{{"Index":{{"index_id":"{}"}}}},"settings":{{"video_segmentation":"Fixed","audio_segmentation":"Fixed","video_segment_s":1,"audio_segment_s":1,"processing_model":null,"processor":"probe","enable_transcription":true,"enable_image_embedding":true}},"executed_by":"sim"}}}}"#,
                    self.prompt, self.index
                );
                self.apply(command(&cmd));
            }
            82..=83 => {
                let runs: Vec<PromptRunId> = self.st.prompt_runs.keys().copied().collect();
                if let Some(run_id) = self.rng.pick(&runs).copied() {
                    self.apply(Command::PromptRun(crate::PromptRunCommand::CancelRun {
                        run_id,
                        requested_by: "sim".into(),
                    }));
                }
            }
            _ => {
                let kind = if self.rng.chance(50) { AutomationKind::Import } else { AutomationKind::Export };
                let index_id = self.index;
                let cmd = if self.rng.chance(50) {
                    crate::AutomationCommand::PauseAutomation { index_id, kind }
                } else {
                    crate::AutomationCommand::ResumeAutomation { index_id, kind }
                };
                self.apply(Command::Automation(cmd));
            }
        }
        self.report.steps += 1;
        self.check();
    }

    /// The invariants that hold after every step (`engine-spec/invariants.md`).
    fn check(&mut self) {
        self.checks.check(&self.st);
        for a in self.st.automations.values() {
            if !a.active() {
                assert!(
                    !self.st.timer_due.contains_key(&Timer::AutomationWatch { automation_id: a.automation_id })
                        && !self
                            .st
                            .timer_due
                            .contains_key(&Timer::AutomationDebounce { automation_id: a.automation_id }),
                    "automation {} is not active and has a timer",
                    a.automation_id
                );
            }
            if self.st.timer_due.contains_key(&Timer::AutomationDebounce { automation_id: a.automation_id }) {
                assert!(!a.found.is_empty(), "automation {}: a debounce with nothing found", a.automation_id);
            }
        }
    }

    /// Everything that was started has ended, and the automations have nothing left to do.
    fn settled(&self) -> bool {
        self.st.imports.values().all(|j| j.status.is_terminal())
            && self.st.prompt_runs.values().all(|r| r.status.is_terminal())
            && self.st.exports.values().all(|e| e.status.is_terminal())
            && self.st.automations.values().all(|a| {
                !a.active()
                    || (a.found.is_empty() && a.jobs_ended.is_empty() && a.pending_runs.is_empty() && !a.listing_due)
            })
    }

    fn unsettled(&self) -> String {
        let mut out = Vec::new();
        for j in self.st.imports.values().filter(|j| !j.status.is_terminal()) {
            out.push(format!("job {} {:?} scan_done={} files={}", j.job_id, j.status, j.scan_done, j.file_count));
        }
        for r in self.st.prompt_runs.values().filter(|r| !r.status.is_terminal()) {
            out.push(format!(
                "run {} {} listing_done={} videos={} segments={}",
                r.run_id,
                r.status.as_str(),
                r.listing_done,
                r.videos.len(),
                r.segments.len()
            ));
        }
        for e in self.st.exports.values().filter(|e| !e.status.is_terminal()) {
            out.push(format!("export {} {}", e.export_id, e.status.as_str()));
        }
        for a in self.st.automations.values() {
            out.push(format!(
                "automation {} active={} found={} jobs_ended={} pending_runs={} listing_due={}",
                a.automation_id,
                a.active(),
                a.found.len(),
                a.jobs_ended.len(),
                a.pending_runs.len(),
                a.listing_due
            ));
        }
        out.join("; ")
    }

    /// Faults stop; the automations are resumed; one listing after the last change of the
    /// bucket; then every workflow must end within `SIM_DRAIN_STEPS_MAX` steps.
    fn drain(&mut self) -> Result<(), String> {
        self.faults = false;
        for kind in [AutomationKind::Import, AutomationKind::Export] {
            self.apply(Command::Automation(crate::AutomationCommand::ResumeAutomation { index_id: self.index, kind }));
        }
        let mut listed_after_change = false;
        for _ in 0..SIM_DRAIN_STEPS_MAX {
            let effects = pending_effects(&self.st);
            if let Some(e) = effects.first().cloned() {
                if matches!(e, Effect::Automation(AutomationEffect::Watch { .. })) {
                    listed_after_change = true;
                }
                self.run_effect(&e);
                self.check();
                continue;
            }
            if listed_after_change && self.settled() {
                return self.final_checks();
            }
            let Some((due, _)) = self.st.next_timer().cloned() else {
                return Err(format!(
                    "nothing is due, no timer is set, and the workflows have not ended: {}",
                    self.unsettled()
                ));
            };
            self.now = self.now.max(due);
            self.fire_due_timers();
            self.check();
        }
        Err(format!("the workflows did not end within {SIM_DRAIN_STEPS_MAX} drain steps"))
    }

    fn final_checks(&mut self) -> Result<(), String> {
        self.crash();
        // Every object under the watched prefix, as it is now, is in the manifest: it was seen,
        // and since nothing is found any more, imported (or skipped) by an automation job.
        if let Some(a) = self.import_automation.and_then(|id| self.st.automations.get(&id)) {
            for o in self.listing("in/") {
                if a.manifest.get(&path_key(&o.path)) != Some(&version_key(&o)) {
                    return Err(format!("{} (etag {:?}) was never seen by the watch", o.path, o.etag));
                }
            }
        }
        self.report.simulated_ms = self.now - START_MS;
        self.report.jobs = self.st.imports.len() as u64;
        self.report.runs = self.st.prompt_runs.len() as u64;
        self.report.exports = self.st.exports.len() as u64;
        self.report.videos = self.checks.videos() as u64;
        Ok(())
    }
}

fn audio_second() -> spool_model::MediaFacts {
    spool_model::MediaFacts {
        container: "wav".into(),
        duration_us: Some(1_000_000),
        bit_rate: Some(64_000),
        streams: vec![spool_model::StreamFacts {
            kind: spool_model::StreamKind::Audio,
            codec: "pcm_u8".into(),
            width: None,
            height: None,
            frame_rate: None,
            sample_rate: Some(8000),
            channels: Some(1),
            duration_us: Some(1_000_000),
        }],
    }
}

/// Run one seed: `steps` steps with faults, then the drain. An invariant that breaks is an
/// `Err` with the seed's step and the message (a panic inside is caught and reported the same).
pub fn run(seed: u64, steps: usize) -> Result<SimReport, String> {
    let outcome = std::panic::catch_unwind(|| {
        let mut w = World::new(seed);
        for _ in 0..steps {
            w.step();
        }
        w.drain().map(|()| w.report.clone())
    });
    match outcome {
        Ok(r) => r.map_err(|e| format!("seed {seed}: {e}")),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Err(format!("seed {seed}: {msg}"))
        }
    }
}
