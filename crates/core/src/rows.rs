//! Tables of the fold (`engine-spec/tables.md`): the facts that never change once written
//! (videos' facts, [`VideoRow`]; jobs' finished files; `new_only` keys; index pages; delivered
//! deliveries; runs' answers and processor calls) live in tables of the log's store, not in
//! the state. The fold emits them: the sequencer commits each row in the same transaction as
//! the event it follows from, so a row is durable exactly when its event is. A decision that
//! reads rows gets them from [`Rows::videos`]: the rows of events folded into this state and not
//! yet known durable, and the rows the runtime loaded for it (`spool_runtime`'s loader, the one
//! place that reads tables for decisions).

use crate::machines::import_job::{FileStatus, ImportFile, PathKey};
use crate::machines::video::VideoRow;
use crate::machines::webhook::Delivery;
use spool_model::{DeliveryId, ImportJobId, IndexId, PromptRunId, RunTask, TaskAnswer, VideoId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The format of the tables as a whole; the log's store keeps the format it was built with
/// under [`TABLES_FORMAT_KEY`] of the `videos` table, and a store of another format (or none:
/// a data directory from before the tables) is rebuilt from the log at start.
pub const TABLES_FORMAT: u32 = 8;
/// Where the tables' format is kept (a key no video id can take).
pub const TABLES_FORMAT_KEY: &str = "~format";
/// Rows a state keeps for decisions beyond those of events in flight; past it the runtime
/// forgets the durable ones.
pub const ROWS_KEPT_MAX: usize = 4096;

/// A row's bytes: its format (one byte) and the bincode of the row. Encoding plain data into a
/// Vec cannot fail.
pub fn encode_row<T: serde::Serialize>(format: u8, row: &T) -> Vec<u8> {
    let mut out = vec![format];
    out.extend(bincode::serde::encode_to_vec(row, bincode::config::standard()).unwrap_or_default());
    out
}

/// A row written by [`encode_row`] with `format`; `None` for another format or damaged bytes
/// (they must decode to their exact length).
pub fn decode_row<T: serde::de::DeserializeOwned>(format: u8, bytes: &[u8]) -> Option<T> {
    let (&head, body) = bytes.split_first()?;
    if head != format {
        return None;
    }
    let (row, used) = bincode::serde::decode_from_slice::<T, _>(body, bincode::config::standard()).ok()?;
    (used == body.len()).then_some(row)
}

/// A write into a table, emitted by the fold of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowWrite {
    Video(VideoId, Arc<VideoRow>),
    /// An import job's imported or skipped file (`job_files`, keyed by
    /// `import_job::file_row_key`).
    JobFile(ImportJobId, Arc<ImportFile>),
    /// A `new_only` key of an imported file (`import_job::import_key` or `import_path_key`, by
    /// its [`PathKey`]): present in `import_keys` once imported.
    ImportKey(PathKey),
    /// A video's place on its index's pages (`index_videos`, keyed by [`index_video_key`]): put
    /// when it is imported, removed when its deletion starts.
    IndexVideo {
        index_id: IndexId,
        created_at_ms: u64,
        video_id: VideoId,
        present: bool,
    },
    /// A delivered delivery (`deliveries`, by id, and its key on its webhook's list,
    /// `webhook_deliveries`).
    Delivery(Arc<Delivery>),
    /// A prompt run's task answer (`run_answers`, keyed by its [`AnswerKey`]): its last
    /// success's.
    Answer(AnswerKey, Arc<TaskAnswer>),
    /// A prompt run's processor call, by its number in the run (`run_calls`, keyed by
    /// [`call_key`]).
    Call(PromptRunId, u64, Arc<crate::machines::prompt_run::LlmCallRecord>),
}

/// The format byte of a row of `run_calls` (bincode of `LlmCallRecord`).
pub const CALL_ROW_FORMAT: u8 = 1;

/// Where a run's processor call is kept: `{run}/{number, 16 hex digits}`, a run's calls one
/// range in the order they were recorded.
pub fn call_key(run_id: &PromptRunId, n: u64) -> String {
    format!("{run_id}/{n:016x}")
}

/// The format byte of a row of `run_answers` (bincode of `TaskAnswer`).
pub const ANSWER_ROW_FORMAT: u8 = 1;

/// Where a task's answer is kept: `{run}/s{segment, 10 digits}` or `{run}/v{video, 10
/// digits}`, so a run's answers are one range, segments in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AnswerKey {
    pub run_id: PromptRunId,
    pub task: RunTask,
}

impl std::fmt::Display for AnswerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.task {
            RunTask::Segment(n) => write!(f, "{}/s{n:010}", self.run_id),
            RunTask::Video(v) => write!(f, "{}/v{v:010}", self.run_id),
        }
    }
}

/// Answers read for a view, by task.
pub type Answers = BTreeMap<AnswerKey, Arc<TaskAnswer>>;

/// The key of a video's place on its index's pages: `{index}/{created_at_ms, 16 hex digits}/{video}`,
/// so an index's keys are a range in page order.
pub fn index_video_key(index_id: &IndexId, created_at_ms: u64, video_id: &VideoId) -> String {
    format!("{index_id}/{created_at_ms:016x}/{video_id}")
}

/// Where an index's keys start (every one of its keys begins so).
pub fn index_video_prefix(index_id: &IndexId) -> String {
    format!("{index_id}/")
}

/// The (created_at, video) of an index key ([`index_video_key`]); `None` for another shape.
pub fn parse_index_video_key(key: &str) -> Option<(u64, VideoId)> {
    let mut parts = key.rsplitn(3, '/');
    let video = parts.next()?.parse().ok()?;
    let created = u64::from_str_radix(parts.next()?, 16).ok()?;
    Some((created, video))
}

/// A video's key on its index's pages: (created_at_ms, video).
pub type PageKey = (u64, VideoId);

/// A page of an index's videos as read from the table: its keys after `after`, at most `n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPage {
    pub n: usize,
    pub keys: Vec<(u64, VideoId)>,
}

/// The finished files of a job a decision may read: the first `n` of each finished status
/// (`Imported`, `Skipped`) in file id order, from the table and the events in flight.
pub const JOB_FILES_HEAD: usize = crate::machines::import_job::view::EMBEDDED_PAGE_ITEMS + 1;

/// The rows a state holds for decisions and the rows its fold emitted. Not part of the state's
/// truth: it is never in a snapshot and two states that differ only here are equal.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Whether the fold emits rows (`written`) and keeps the rows of new videos (`videos`): the
    /// sequencer's working state and a rebuild; the read state's fold does not (its rows are in
    /// the table already).
    pub emit: bool,
    /// Every row the fold ever emitted is here (the simulators' states, which have no tables):
    /// a row missing is a row that does not exist, and nothing needs loading.
    pub complete: bool,
    /// Rows written by the events folded since the last [`Rows::take_written`].
    pub written: Vec<RowWrite>,
    /// Rows a decision may read, with the sequence number of the event that wrote them (0: read
    /// from the table).
    pub videos: BTreeMap<VideoId, (u64, Arc<VideoRow>)>,
    /// Finished files of jobs a decision may read, with the sequence number of the event that
    /// wrote them (0: read from the table).
    pub files: BTreeMap<(ImportJobId, u32), (u64, Arc<ImportFile>)>,
    /// The (job, status) whose first rows were read from the table for this batch, and how many
    /// were asked for: with the rows in flight, the first that many of the status are in `files`.
    pub file_heads: BTreeMap<(ImportJobId, FileStatus), usize>,
    /// `new_only` keys a decision may read, present or not, with the sequence number of the
    /// event that wrote them (0: read from the table).
    pub keys: BTreeMap<PathKey, (u64, bool)>,
    /// Places on index pages written by events in flight (present, or removed), with the
    /// sequence number of the event that wrote them.
    pub index_keys: BTreeMap<(IndexId, u64, VideoId), (u64, bool)>,
    /// Pages of index videos read from the table for this batch, by (index, after).
    pub index_pages: BTreeMap<(IndexId, Option<(u64, VideoId)>), IndexPage>,
    /// Delivered deliveries a decision may read, with the sequence number of the event that
    /// delivered them (0: read from the table).
    pub deliveries: BTreeMap<DeliveryId, (u64, Arc<Delivery>)>,
    /// Task answers, kept only by a state with every row (`complete`: the simulators'): no
    /// decision reads one, and the views of a server read them from the table.
    pub answers: Answers,
}

impl PartialEq for Rows {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Rows {}

impl Rows {
    /// The rows emitted since the last call.
    pub fn take_written(&mut self) -> Vec<RowWrite> {
        std::mem::take(&mut self.written)
    }

    /// Forget the rows that are durable (written at or below `durable_seq`, or loaded) once
    /// more than [`ROWS_KEPT_MAX`] are kept: those still in flight stay, the rest can be read
    /// from the table again.
    pub fn forget_durable(&mut self, durable_seq: u64) {
        if self.videos.len() > ROWS_KEPT_MAX {
            self.videos.retain(|_, (seq, _)| *seq > durable_seq);
        }
        // A head read for one batch is not kept: the table moves on under it.
        self.file_heads.clear();
        self.files.retain(|_, (seq, _)| *seq > durable_seq);
        self.keys.retain(|_, (seq, _)| *seq > durable_seq);
        self.index_pages.clear();
        self.index_keys.retain(|_, (seq, _)| *seq > durable_seq);
        self.deliveries.retain(|_, (seq, _)| *seq > durable_seq);
    }

    /// The fold delivered a delivery: its row is written, and kept while in flight.
    pub fn delivered(&mut self, d: Delivery, seq: u64) {
        let d = Arc::new(d);
        self.written.push(RowWrite::Delivery(d.clone()));
        self.deliveries.insert(d.delivery_id, (seq, d));
    }

    /// The fold recorded a task's answer: its row is written.
    pub fn answered(&mut self, run_id: PromptRunId, task: RunTask, answer: TaskAnswer) {
        let key = AnswerKey { run_id, task };
        let answer = Arc::new(answer);
        if self.complete {
            self.answers.insert(key, answer.clone());
        }
        self.written.push(RowWrite::Answer(key, answer));
    }

    /// A delivered delivery this state holds (in flight, or loaded: `Need::Deliveries`).
    pub fn delivery(&self, id: &DeliveryId) -> Option<&Delivery> {
        self.deliveries.get(id).map(|(_, d)| &**d)
    }

    /// The fold placed a video on its index's pages, or took it off.
    pub fn index_video(&mut self, index_id: IndexId, created_at_ms: u64, video_id: VideoId, present: bool, seq: u64) {
        self.written.push(RowWrite::IndexVideo { index_id, created_at_ms, video_id, present });
        self.index_keys.insert((index_id, created_at_ms, video_id), (seq, present));
    }

    /// The next keys of an index's pages after `after`, at most `n`; the cursor past them (every
    /// key up to it was looked at: past the table's last key when the page the table gave was
    /// all taken); and whether they are the last. From the page read from the table
    /// (`Need::IndexPage`, at least `n + 1` keys) with the places written by the events in
    /// flight. A page not loaded gives nothing and is not the last (never skipped).
    pub fn index_page(
        &self,
        index_id: &IndexId,
        after: Option<(u64, VideoId)>,
        n: usize,
    ) -> (Vec<PageKey>, Option<PageKey>, bool) {
        use std::ops::Bound::{Excluded, Unbounded};
        let (table, full): (&[(u64, VideoId)], bool) = match self.index_pages.get(&(*index_id, after)) {
            Some(p) if !self.complete => (&p.keys, p.keys.len() >= p.n),
            _ if self.complete => (&[], false),
            _ => {
                debug_assert!(false, "an index page read without being loaded");
                return (Vec::new(), after, false);
            }
        };
        // Past the table's last key (when it stopped there) the table's order is unknown.
        let bound = if full { table.last().copied() } else { None };
        let mut merged: std::collections::BTreeSet<(u64, VideoId)> = table.iter().copied().collect();
        let lo = match after {
            Some((c, v)) => Excluded((*index_id, c, v)),
            None => std::ops::Bound::Included((*index_id, 0, VideoId(ulid::Ulid::nil()))),
        };
        for ((i, c, v), (_, present)) in self.index_keys.range((lo, Unbounded)) {
            if i != index_id {
                break;
            }
            if bound.is_some_and(|b| (*c, *v) > b) {
                break;
            }
            if *present {
                merged.insert((*c, *v));
            } else {
                merged.remove(&(*c, *v));
            }
        }
        let end = !full && merged.len() <= n;
        let all_taken = merged.len() <= n;
        let keys: Vec<(u64, VideoId)> = merged.into_iter().take(n).collect();
        let through = match (all_taken, bound) {
            (true, Some(b)) => Some(keys.last().map_or(b, |k| (*k).max(b))),
            _ => keys.last().copied().or(after),
        };
        (keys, through, end)
    }

    /// The fold imported a file: its `new_only` key is written, and kept while in flight.
    pub fn key_written(&mut self, key: PathKey, seq: u64) {
        self.written.push(RowWrite::ImportKey(key));
        self.keys.insert(key, (seq, true));
    }

    /// Whether a `new_only` key was imported. The key must have been loaded for the decision
    /// that asks (`Need::ImportKeys`); debug builds check it.
    pub fn imported(&self, key: &PathKey) -> bool {
        debug_assert!(self.complete || self.keys.contains_key(key), "a new_only key read without being loaded");
        self.keys.get(key).is_some_and(|(_, present)| *present)
    }

    /// The fold finished a job's file: its row is written, and kept while in flight.
    pub fn file_written(&mut self, job_id: ImportJobId, f: ImportFile, seq: u64) {
        let f = Arc::new(f);
        self.written.push(RowWrite::JobFile(job_id, f.clone()));
        self.files.insert((job_id, f.file.file_id), (seq, f));
    }

    /// A file imported in this decision turned out to have parts: its row is written again.
    pub fn file_parts(&mut self, job_id: ImportJobId, file_id: u32, parts: &[VideoId], seq: u64) {
        let Some((_, f)) = self.files.get(&(job_id, file_id)) else { return };
        let mut f = (**f).clone();
        f.parts = parts.to_vec();
        self.file_written(job_id, f, seq);
    }

    /// The first `n` finished files of a job with this status that this state holds (its head
    /// read from the table, then the rows in flight), in id order.
    pub fn finished_files(&self, job_id: &ImportJobId, status: FileStatus, n: usize) -> Vec<Arc<ImportFile>> {
        let lo = (*job_id, 0);
        let hi = (*job_id, u32::MAX);
        self.files.range(lo..=hi).map(|(_, (_, f))| f).filter(|f| f.status == status).take(n).cloned().collect()
    }

    /// Whether the first `n` of a job's finished files of this status were read for this batch.
    pub fn has_head(&self, job_id: &ImportJobId, status: FileStatus, n: usize) -> bool {
        self.file_heads.get(&(*job_id, status)).is_some_and(|m| *m >= n)
    }
}

/// What a decision may read from the tables: the runtime's loader reads each into
/// [`State::rows`](crate::State) first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// The rows of these videos.
    Videos(Vec<VideoId>),
    /// The first `n` finished files of a job with this status.
    JobFiles { job_id: ImportJobId, status: FileStatus, n: usize },
    /// Whether these `new_only` keys were imported.
    ImportKeys(Vec<PathKey>),
    /// The first `n` keys of an index's pages after `after`.
    IndexPage { index_id: IndexId, after: Option<(u64, VideoId)>, n: usize },
    /// The rows of these delivered deliveries.
    Deliveries(Vec<DeliveryId>),
}

/// What a command's decision (and the answer rendered from it) reads from the tables, on the
/// state before it: an import job's cancel and retry answer with the job, whose JSON shows its
/// first outputs and skipped files; an import automation's run takes the videos its job
/// imported; a decision over videos reads their rows. What is read first can name more: the
/// runtime asks again after loading until nothing new is named ([`NEEDS_ROUNDS_MAX`]).
pub fn needs(state: &crate::State, cmd: &crate::Command) -> Vec<Need> {
    use crate::machines::automation::AutomationCommand;
    use crate::machines::export::ExportCommand;
    use crate::machines::import_job::{ImportCommand, import_key, import_path_key, path_key};
    use crate::machines::prompt_run::PromptRunCommand;
    use crate::machines::video::VideoCommand;
    use spool_model::AutomationConfig;
    use spool_model::ImportMode;
    match cmd {
        // A scan page of a `new_only` job skips what was imported before.
        crate::Command::Import(ImportCommand::RecordScanPage { job_id, objects }) => {
            match state.imports.get(job_id).filter(|j| j.import_mode == ImportMode::NewOnly) {
                Some(j) => vec![Need::ImportKeys(
                    objects
                        .iter()
                        .take(crate::machines::import_job::SCAN_PAGE_OBJECTS_MAX)
                        .map(|o| {
                            let k = import_key(
                                &j.connector_id,
                                &j.index_id,
                                &o.path,
                                o.etag.as_deref(),
                                o.size_bytes,
                                o.last_modified_ms,
                            );
                            path_key(&k)
                        })
                        .collect(),
                )],
                None => Vec::new(),
            }
        }
        // An import automation's debounce imports what it found: by key and by path when the
        // connector is `new_only`.
        crate::Command::Engine(crate::EngineCommand::FireTimer {
            timer: crate::Timer::AutomationDebounce { automation_id },
        }) => {
            let Some(a) = state.automations.get(automation_id) else { return Vec::new() };
            let AutomationConfig::Import { connector_id, .. } = &a.config else { return Vec::new() };
            if state.live_connector(connector_id).is_none_or(|c| c.import_mode != ImportMode::NewOnly) {
                return Vec::new();
            }
            let mut keys = Vec::with_capacity(a.found.len() * 2);
            for o in a.found.values() {
                let k =
                    import_key(connector_id, &a.index_id, &o.path, o.etag.as_deref(), o.size_bytes, o.last_modified_ms);
                keys.push(path_key(&k));
                keys.push(path_key(&import_path_key(connector_id, &a.index_id, &o.path)));
            }
            vec![Need::ImportKeys(keys)]
        }
        crate::Command::Import(
            ImportCommand::CancelImportJob { job_id } | ImportCommand::RetryImportJob { job_id },
        ) => job_head(state, job_id),
        crate::Command::Automation(AutomationCommand::StartRun { job_id, .. }) => {
            // One more than a run takes: a job that imported more is refused, as before.
            let n = crate::machines::prompt_run::AUTOMATION_RUN_VIDEOS_MAX + 1;
            let mut out = vec![Need::JobFiles { job_id: *job_id, status: FileStatus::Imported, n }];
            if state.rows.has_head(job_id, FileStatus::Imported, n) {
                let files = state.rows.finished_files(job_id, FileStatus::Imported, n);
                let videos: Vec<VideoId> = files.iter().flat_map(|f| f.part_videos()).collect();
                // More than a run takes: refused without reading them.
                if videos.len() < n {
                    out.push(Need::Videos(videos));
                }
            }
            out
        }
        crate::Command::Video(VideoCommand::DeleteVideo { video_id }) => vec![Need::Videos(vec![*video_id])],
        // A retry of a delivery answers with it, and refuses a delivered one: its row.
        crate::Command::Webhook(crate::machines::webhook::WebhookCommand::RetryDelivery { delivery_id })
            if !state.deliveries.contains_key(delivery_id) =>
        {
            vec![Need::Deliveries(vec![*delivery_id])]
        }
        crate::Command::PromptRun(PromptRunCommand::ExecuteRun {
            target: spool_model::RunTarget::Videos { video_ids, .. },
            ..
        }) if video_ids.len() <= crate::machines::prompt_run::RUN_TARGET_VIDEOS_MAX => {
            vec![Need::Videos(video_ids.clone())]
        }
        crate::Command::PromptRun(PromptRunCommand::AddRunVideos { run_id }) => {
            let Some(r) = state.prompt_runs.get(run_id).filter(|r| r.takes_work() && !r.listing_done) else {
                return Vec::new();
            };
            let index_id = match &r.target {
                spool_model::RunTarget::Index { index_id } => Some(*index_id),
                spool_model::RunTarget::Playground => Some(crate::machines::import_job::PLAYGROUND),
                spool_model::RunTarget::Videos { .. } => None,
            };
            let mut out = Vec::new();
            if let Some(index_id) = index_id {
                let n = crate::machines::prompt_run::RUN_VIDEOS_PAGE_MAX + 1;
                let page = Need::IndexPage { index_id, after: r.list_after, n };
                let loaded = state.rows.index_pages.get(&(index_id, r.list_after)).is_some_and(|p| p.n >= n);
                out.push(page);
                if !loaded && !state.rows.complete {
                    return out;
                }
            }
            out.push(Need::Videos(crate::machines::prompt_run::next_videos(state, r).0));
            out
        }
        crate::Command::PromptRun(PromptRunCommand::RecordVideoAnalysis { run_id, video, .. }) => {
            match state.prompt_runs.get(run_id).and_then(|r| r.videos.get(*video as usize)) {
                Some(rv) => vec![Need::Videos(vec![rv.video_id])],
                None => Vec::new(),
            }
        }
        // An index's export of runs: a run that does not name the index belongs to it when one
        // of its videos is in it.
        crate::Command::Export(ExportCommand::CreateExport { run_ids, .. }) => {
            let videos: Vec<VideoId> = run_ids
                .iter()
                .take(crate::machines::export::EXPORT_RUN_IDS_MAX)
                .filter_map(|r| state.prompt_runs.get(r))
                .filter(|r| r.index_id().is_none())
                .flat_map(|r| r.videos.iter().map(|v| v.video_id))
                .collect();
            if videos.is_empty() { Vec::new() } else { vec![Need::Videos(videos)] }
        }
        _ => Vec::new(),
    }
}

/// The videos whose rows the fold of an event reads: only events written before the tables
/// (`VideoDeletionRequested`, `PromptRunVideosAdded`; their replacements carry what they need).
/// A replay loads them first (`spool_runtime::fold`); the simulators' states hold every row.
pub fn fold_reads(event: &spool_model::Event) -> Vec<VideoId> {
    match event {
        spool_model::Event::VideoDeletionRequested { video_id, .. } => vec![*video_id],
        spool_model::Event::PromptRunVideosAdded { videos, .. } => videos.clone(),
        _ => Vec::new(),
    }
}

/// How many times the runtime asks [`needs`] (or `outbox_rows`) again after loading what it
/// named: a job's files, then their videos.
pub const NEEDS_ROUNDS_MAX: usize = 3;

/// The finished files an import job's JSON shows (none to read when it has none).
pub fn job_head(state: &crate::State, job_id: &ImportJobId) -> Vec<Need> {
    let Some(j) = state.imports.get(job_id) else { return Vec::new() };
    let mut out = Vec::new();
    for status in [FileStatus::Imported, FileStatus::Skipped] {
        if j.count(status) > 0 {
            out.push(Need::JobFiles { job_id: *job_id, status, n: JOB_FILES_HEAD });
        }
    }
    // Its outputs show their videos' time ranges: once the files are here, their rows.
    if j.count(FileStatus::Imported) == 0 || state.rows.has_head(job_id, FileStatus::Imported, JOB_FILES_HEAD) {
        let files = state.rows.finished_files(job_id, FileStatus::Imported, JOB_FILES_HEAD);
        let videos = crate::machines::import_job::view::outputs_videos(&files, JOB_FILES_HEAD);
        if !videos.is_empty() {
            out.push(Need::Videos(videos));
        }
    }
    out
}

/// The finished files a state holds for a job's JSON (`import_job::view::import_job`).
pub fn job_head_files(state: &crate::State, job_id: &ImportJobId) -> Vec<Arc<ImportFile>> {
    let mut out = state.rows.finished_files(job_id, FileStatus::Imported, JOB_FILES_HEAD);
    out.extend(state.rows.finished_files(job_id, FileStatus::Skipped, JOB_FILES_HEAD));
    out.sort_by_key(|f| f.file.file_id);
    out
}

/// The row an event writes, if any: a pure function of the event and its time (the fold emits
/// it, and a rebuild of the tables from the log reads it off each event).
pub fn of_event(env: &spool_model::Envelope) -> Option<RowWrite> {
    use spool_model::Event;
    match &env.event {
        Event::VideoCreated {
            video_id,
            index_id,
            title,
            media_type,
            connector_id,
            source_path,
            source_etag,
            size_bytes,
            sha256,
            media_path,
        } => Some(RowWrite::Video(
            *video_id,
            Arc::new(VideoRow {
                index_id: *index_id,
                media_type: *media_type,
                created_at_ms: env.at_ms,
                title: title.clone(),
                connector_id: *connector_id,
                source_path: source_path.clone(),
                source_etag: source_etag.clone(),
                size_bytes: *size_bytes,
                sha256: *sha256,
                media_path: media_path.clone(),
                facts: None,
                part: None,
                parts: Vec::new(),
            }),
        )),
        Event::VideoImported {
            video_id,
            index_id,
            title,
            media_type,
            connector_id,
            source_path,
            source_etag,
            size_bytes,
            sha256,
            media_path,
            facts,
            part,
            parts,
        } => Some(RowWrite::Video(
            *video_id,
            Arc::new(VideoRow {
                index_id: *index_id,
                media_type: *media_type,
                created_at_ms: env.at_ms,
                title: title.clone(),
                connector_id: *connector_id,
                source_path: source_path.clone(),
                source_etag: source_etag.clone(),
                size_bytes: *size_bytes,
                sha256: *sha256,
                media_path: media_path.clone(),
                facts: Some(facts.clone()),
                part: Some(*part),
                parts: parts.clone(),
            }),
        )),
        _ => None,
    }
}

/// Where a view reads the immutable facts of videos: a state's [`Rows`], or rows the API read
/// from the table for one answer.
pub trait RowSource {
    fn video_row(&self, id: &VideoId) -> Option<Arc<VideoRow>>;
    /// A task's answer (`run_answers`), when it was read for this view.
    fn answer(&self, run_id: &PromptRunId, task: RunTask) -> Option<Arc<TaskAnswer>>;
}

impl RowSource for crate::State {
    fn video_row(&self, id: &VideoId) -> Option<Arc<VideoRow>> {
        self.rows.videos.get(id).map(|(_, r)| r.clone())
    }

    fn answer(&self, run_id: &PromptRunId, task: RunTask) -> Option<Arc<TaskAnswer>> {
        self.rows.answers.get(&AnswerKey { run_id: *run_id, task }).cloned()
    }
}

/// Video rows and answers read from the tables for one view.
pub struct ViewRows<'a> {
    pub videos: &'a BTreeMap<VideoId, Arc<VideoRow>>,
    pub answers: &'a Answers,
}

impl RowSource for ViewRows<'_> {
    fn video_row(&self, id: &VideoId) -> Option<Arc<VideoRow>> {
        self.videos.get(id).cloned()
    }

    fn answer(&self, run_id: &PromptRunId, task: RunTask) -> Option<Arc<TaskAnswer>> {
        self.answers.get(&AnswerKey { run_id: *run_id, task }).cloned()
    }
}

impl RowSource for Answers {
    fn video_row(&self, _: &VideoId) -> Option<Arc<VideoRow>> {
        None
    }

    fn answer(&self, run_id: &PromptRunId, task: RunTask) -> Option<Arc<TaskAnswer>> {
        self.get(&AnswerKey { run_id: *run_id, task }).cloned()
    }
}

impl RowSource for BTreeMap<VideoId, Arc<VideoRow>> {
    fn video_row(&self, id: &VideoId) -> Option<Arc<VideoRow>> {
        self.get(id).cloned()
    }

    fn answer(&self, _: &PromptRunId, _: RunTask) -> Option<Arc<TaskAnswer>> {
        None
    }
}

/// No rows (views that need none, and tests).
pub struct NoRows;

impl RowSource for NoRows {
    fn video_row(&self, _: &VideoId) -> Option<Arc<VideoRow>> {
        None
    }

    fn answer(&self, _: &PromptRunId, _: RunTask) -> Option<Arc<TaskAnswer>> {
        None
    }
}
