//! The import job machine and the videos it creates (engine-spec/machines/import-job.md).

use crate::{Decision, DomainError, Outcome, State, StreamEvents};
use serde::{Deserialize, Serialize};
use spool_model::{
    ConnectorId, ConnectorScope, DiscoveredFile, Envelope, Event, FileFailure, ImportJobId, ImportMode, IndexId,
    MediaType, VideoId,
};
use std::collections::BTreeSet;

/// Copy effects offered per job at once (the runtime bounds concurrency further).
pub const IMPORT_EFFECTS_PER_JOB_MAX: usize = 64;
/// `import_job.progress` is raised at most this often per job.
pub const PROGRESS_EVENT_INTERVAL_MS: u64 = 2_000;
/// Objects in one scan page command.
pub const SCAN_PAGE_OBJECTS_MAX: usize = 1000;
/// Attempts of one file before a retryable failure lists it as failed.
pub const IMPORT_FILE_ATTEMPTS_MAX: u32 = 3;
/// Wait before attempt n+1 after a retryable failure of attempt n (index n-1), ±20% jitter.
pub const IMPORT_RETRY_BACKOFF_MS: [u64; 2] = [1_000, 5_000];
/// Jitter of a retry's wait, in percent either way.
pub const IMPORT_RETRY_JITTER_PCT: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobStatus {
    Pending,
    Scanning,
    Importing,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Scanning => "scanning",
            JobStatus::Importing => "importing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "pending" => JobStatus::Pending,
            "scanning" => JobStatus::Scanning,
            "importing" => JobStatus::Importing,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FileStatus {
    Pending,
    Started,
    Imported,
    Failed,
    Skipped,
    /// A retryable failure below the attempt limit: waiting for its retry timer.
    Waiting,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Pending => "pending",
            FileStatus::Started => "importing",
            FileStatus::Imported => "imported",
            FileStatus::Failed => "failed",
            FileStatus::Skipped => "skipped",
            FileStatus::Waiting => "retrying",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, FileStatus::Imported | FileStatus::Failed | FileStatus::Skipped)
    }

    /// The status an API name stands for (`importing` is a started copy).
    pub fn parse(s: &str) -> Option<FileStatus> {
        Some(match s {
            "pending" => FileStatus::Pending,
            "importing" => FileStatus::Started,
            "imported" => FileStatus::Imported,
            "failed" => FileStatus::Failed,
            "skipped" => FileStatus::Skipped,
            "retrying" => FileStatus::Waiting,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportFile {
    pub file: DiscoveredFile,
    pub status: FileStatus,
    pub attempts: u32,
    pub bytes: u64,
    pub failure: Option<FileFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportJob {
    pub job_id: ImportJobId,
    pub connector_id: ConnectorId,
    pub index_id: IndexId,
    pub source_prefix: String,
    pub file_pattern: String,
    pub recursive: bool,
    pub import_mode: ImportMode,
    pub status: JobStatus,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub completed_at_ms: Option<u64>,
    pub error: Option<String>,
    pub scan_done: bool,
    pub files: Vec<ImportFile>,
    /// Paths already discovered (a re-listed page after a crash adds nothing twice).
    pub seen_paths: BTreeSet<String>,
    /// File ids by status: counts, the work `effects_for` offers, and the pages of the views.
    pub by_status: crate::workset::StatusSets<FileStatus, u32>,
    /// Files that will be copied (not skipped): `parts_total`.
    pub candidates: u64,
    pub imported: u64,
    pub failed: u64,
    pub skipped: u64,
    pub bytes_transferred: u64,
    pub last_progress_ms: u64,
    /// Cancel asked while copies were running: nothing new starts; the job ends `cancelled`
    /// when the running copies have reported.
    pub cancel_requested: bool,
}

impl ImportJob {
    /// Accepts new work (scan pages, new copies).
    pub fn takes_work(&self) -> bool {
        !self.status.is_terminal() && !self.cancel_requested
    }

    /// Copies started and not yet reported.
    pub fn running(&self) -> usize {
        self.by_status.count(FileStatus::Started)
    }

    /// The ids of the files with this status, in order.
    pub fn files_in(&self, status: FileStatus) -> impl DoubleEndedIterator<Item = u32> + '_ {
        self.by_status.iter(status)
    }

    fn all_done(&self) -> bool {
        self.scan_done
            && self.by_status.count(FileStatus::Pending) == 0
            && self.by_status.count(FileStatus::Waiting) == 0
            && self.running() == 0
    }

    /// Move a file to another status, keeping the per-status sets in step.
    fn set_status(&mut self, file_id: u32, to: FileStatus) -> Option<FileStatus> {
        let f = self.files.get_mut(file_id as usize)?;
        let from = f.status;
        f.status = to;
        self.by_status.moved(file_id, from, to);
        Some(from)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Video {
    pub video_id: VideoId,
    pub index_id: IndexId,
    pub title: String,
    pub media_type: MediaType,
    pub connector_id: Option<ConnectorId>,
    pub source_path: String,
    pub source_etag: Option<String>,
    pub size_bytes: u64,
    pub sha256: [u8; 32],
    pub media_path: String,
    pub created_at_ms: u64,
}

/// An object as a scan page lists it (an effect's outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedObject {
    pub path: String,
    pub size_bytes: u64,
    pub etag: Option<String>,
    pub last_modified_ms: u64,
}

/// The key `new_only` dedupes on: connector, index, path and etag (or size and modification
/// time when the listing gives no etag).
pub fn import_key(
    connector: &ConnectorId,
    index: &IndexId,
    path: &str,
    etag: Option<&str>,
    size: u64,
    modified_ms: u64,
) -> String {
    match etag {
        Some(e) => format!("{connector}|{index}|{path}|{e}"),
        None => format!("{connector}|{index}|{path}|size:{size}|mtime:{modified_ms}"),
    }
}

/// The extension of a path's file name (lower case, without the dot).
pub fn extension(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// The stream of one file of a job: its start and outcome events go there, so the files of a
/// job are decided and appended in parallel (group commit) instead of one after another on the
/// job's stream. The job's end is decided by the `FinishImportJob` effect.
pub fn file_stream(job_id: &ImportJobId, file_id: u32) -> String {
    format!("{job_id}/f{file_id}")
}

/// Where an imported file's bytes go in the media store.
pub fn media_path(video_id: &VideoId, source_path: &str) -> String {
    let ext = extension(source_path);
    if ext.is_empty() { format!("videos/{video_id}/source") } else { format!("videos/{video_id}/source.{ext}") }
}

fn job<'a>(state: &'a State, id: &ImportJobId) -> Result<&'a ImportJob, DomainError> {
    state.imports.get(id).ok_or_else(|| DomainError::NotFound { kind: "import_job", id: id.to_string() })
}

fn domain(name: &str, subject: String, data: serde_json::Value) -> Event {
    Event::DomainEventRaised { name: name.into(), subject, data_json: data.to_string() }
}

fn progress_json(j: &ImportJob) -> serde_json::Value {
    progress_json_with(j, 0, 0, 0)
}

/// The job's progress after an outcome not folded yet (`imported` / `failed` more files,
/// `bytes` more transferred): O(1), no copy of the job.
fn progress_json_with(j: &ImportJob, imported: u64, failed: u64, bytes: u64) -> serde_json::Value {
    serde_json::json!({
        "job_id": j.job_id.to_string(),
        "index_id": j.index_id.to_string(),
        "total_files": j.files.len(),
        "imported": j.imported + imported,
        "failed": j.failed + failed,
        "skipped": j.skipped,
        "bytes_transferred": j.bytes_transferred + bytes,
    })
}

fn one(state: &State, stream: String, events: Vec<Event>, outcome: Outcome) -> Decision {
    let _ = state;
    Decision { streams: vec![StreamEvents { stream, events }], outcome }
}

/// A throttled `import_job.progress` after an outcome (its deltas not folded yet).
fn progress_if_due(j: &ImportJob, events: &mut Vec<Event>, now_ms: u64, imported: u64, failed: u64, bytes: u64) {
    if !j.status.is_terminal() && now_ms.saturating_sub(j.last_progress_ms) >= PROGRESS_EVENT_INTERVAL_MS {
        events.push(domain(
            "import_job.progress",
            j.job_id.to_string(),
            progress_json_with(j, imported, failed, bytes),
        ));
    }
}

/// Whether the job is ready to end, and how.
pub fn finish_due(j: &ImportJob) -> Option<JobStatus> {
    if j.status.is_terminal() {
        None
    } else if j.cancel_requested {
        (j.running() == 0).then_some(JobStatus::Cancelled)
    } else {
        j.all_done().then_some(JobStatus::Completed)
    }
}

/// `RecordImportJobFinished` (effect `FinishImportJob`): end the job once its last open file
/// closed (or, after a cancel, its last running copy reported).
pub fn record_finished(state: &State, job_id: &ImportJobId) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    let events = match finish_due(j) {
        None => return Ok(Decision { streams: vec![], outcome: Outcome::ImportJob(*job_id) }),
        Some(JobStatus::Cancelled) => vec![Event::ImportJobCancelled { job_id: *job_id }],
        Some(_) => {
            let name = if j.failed > 0 { "import_job.partial_completed" } else { "import_job.completed" };
            vec![Event::ImportJobCompleted { job_id: *job_id }, domain(name, job_id.to_string(), progress_json(j))]
        }
    };
    Ok(one(state, job_id.to_string(), events, Outcome::ImportJob(*job_id)))
}

#[allow(clippy::too_many_arguments)]
pub fn create(
    state: &State,
    job_id: ImportJobId,
    connector_id: &ConnectorId,
    index_id: &IndexId,
    source_prefix: &str,
    file_pattern: &str,
    recursive: bool,
    import_mode: Option<ImportMode>,
) -> Result<Decision, DomainError> {
    let conn = state
        .live_connector(connector_id)
        .ok_or_else(|| DomainError::NotFound { kind: "connector", id: connector_id.to_string() })?;
    if !conn.has_scope(ConnectorScope::Import) {
        return Err(DomainError::Unprocessable {
            code: "connector_scope_missing",
            message: format!("connector {connector_id} does not have the import scope"),
        });
    }
    state.live_index(index_id).ok_or_else(|| DomainError::NotFound { kind: "index", id: index_id.to_string() })?;
    let created = Event::ImportJobCreated {
        job_id,
        connector_id: *connector_id,
        index_id: *index_id,
        source_prefix: source_prefix.to_string(),
        file_pattern: if file_pattern.trim().is_empty() { "*".into() } else { file_pattern.to_string() },
        recursive,
        import_mode: import_mode.unwrap_or(conn.import_mode),
    };
    let started = domain(
        "import_job.started",
        job_id.to_string(),
        serde_json::json!({ "job_id": job_id.to_string(), "connector_id": connector_id.to_string(), "index_id": index_id.to_string() }),
    );
    Ok(one(state, job_id.to_string(), vec![created, started], Outcome::ImportJob(job_id)))
}

pub fn record_scan_page(
    state: &State,
    job_id: &ImportJobId,
    objects: &[ListedObject],
    ctx: &mut crate::Ctx,
) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if !j.takes_work() || j.scan_done {
        return Ok(Decision { streams: vec![], outcome: Outcome::ImportJob(*job_id) });
    }
    let mut files = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for o in objects.iter().take(SCAN_PAGE_OBJECTS_MAX) {
        if j.seen_paths.contains(&o.path) || !seen.insert(o.path.as_str()) {
            continue;
        }
        let file_id = (j.files.len() + files.len()) as u32;
        let key =
            import_key(&j.connector_id, &j.index_id, &o.path, o.etag.as_deref(), o.size_bytes, o.last_modified_ms);
        let skip = if MediaType::from_extension(&extension(&o.path)).is_none() {
            Some("unsupported_format")
        } else if o.size_bytes == 0 {
            Some("empty_object")
        } else if j.import_mode == ImportMode::NewOnly && state.imported_keys.contains(&key) {
            Some("already_imported")
        } else {
            None
        };
        files.push(DiscoveredFile {
            file_id,
            path: o.path.clone(),
            size_bytes: o.size_bytes,
            etag: o.etag.clone(),
            last_modified_ms: o.last_modified_ms,
            video_id: if skip.is_none() { Some(VideoId(ctx.new_ulid())) } else { None },
            skip_reason: skip.map(str::to_string),
        });
    }
    if files.is_empty() {
        return Ok(Decision { streams: vec![], outcome: Outcome::ImportJob(*job_id) });
    }
    Ok(one(
        state,
        job_id.to_string(),
        vec![Event::ImportFilesDiscovered { job_id: *job_id, files }],
        Outcome::ImportJob(*job_id),
    ))
}

pub fn record_scan_completed(state: &State, job_id: &ImportJobId) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if !j.takes_work() || j.scan_done {
        return Ok(Decision { streams: vec![], outcome: Outcome::ImportJob(*job_id) });
    }
    Ok(one(
        state,
        job_id.to_string(),
        vec![Event::ImportScanCompleted { job_id: *job_id }],
        Outcome::ImportJob(*job_id),
    ))
}

pub fn record_job_failed(state: &State, job_id: &ImportJobId, error: &str) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if j.status.is_terminal() {
        return Ok(Decision { streams: vec![], outcome: Outcome::ImportJob(*job_id) });
    }
    let error: String = error.chars().take(1000).collect();
    let events = vec![
        Event::ImportJobFailed { job_id: *job_id, error: error.clone() },
        domain(
            "import_job.failed",
            job_id.to_string(),
            serde_json::json!({ "job_id": job_id.to_string(), "error_message": error }),
        ),
    ];
    Ok(one(state, job_id.to_string(), events, Outcome::ImportJob(*job_id)))
}

fn file(j: &ImportJob, file_id: u32) -> Result<&ImportFile, DomainError> {
    j.files
        .get(file_id as usize)
        .ok_or_else(|| DomainError::NotFound { kind: "import_file", id: format!("{}/{file_id}", j.job_id) })
}

pub fn start_file(state: &State, job_id: &ImportJobId, file_id: u32, attempt: u32) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    let f = file(j, file_id)?;
    let nothing = Decision { streams: vec![], outcome: Outcome::ImportJob(*job_id) };
    match f.status {
        // A new attempt may start only on a live job.
        FileStatus::Pending if attempt == f.attempts + 1 && j.takes_work() => Ok(one(
            state,
            file_stream(job_id, file_id),
            vec![Event::ImportFileStarted { job_id: *job_id, file_id, attempt }],
            Outcome::ImportJob(*job_id),
        )),
        // Resuming after a crash: the started attempt goes on (also while a cancel waits for
        // it, so its copy finishes cleanly).
        FileStatus::Started if attempt == f.attempts && !j.status.is_terminal() => Ok(nothing),
        _ => Err(DomainError::Stale(format!("file {file_id} of {job_id} cannot start attempt {attempt}"))),
    }
}

pub fn record_file_imported(
    state: &State,
    job_id: &ImportJobId,
    file_id: u32,
    attempt: u32,
    bytes: u64,
    sha256: [u8; 32],
    now_ms: u64,
) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    let f = file(j, file_id)?;
    // A duplicate or stale outcome (effects run at least once), or a copy that finished after
    // its job ended (its index was deleted): a terminal job never changes again. The executor
    // removes what such a copy wrote.
    if f.status != FileStatus::Started || f.attempts != attempt || j.status.is_terminal() {
        return Ok(Decision { streams: vec![], outcome: Outcome::ImportJob(*job_id) });
    }
    let Some(video_id) = f.file.video_id else {
        return Err(DomainError::InvalidState(format!("file {file_id} of {job_id} has no video id")));
    };
    let mut events = vec![Event::ImportFileImported { job_id: *job_id, file_id, video_id, bytes, sha256 }];
    progress_if_due(j, &mut events, now_ms, 1, 0, bytes);
    let title = f.file.path.rsplit('/').next().unwrap_or(&f.file.path).to_string();
    let media_type = MediaType::from_extension(&extension(&f.file.path)).unwrap_or(MediaType::Video);
    let video_events = vec![
        Event::VideoCreated {
            video_id,
            index_id: j.index_id,
            title: title.clone(),
            media_type,
            connector_id: Some(j.connector_id),
            source_path: f.file.path.clone(),
            source_etag: f.file.etag.clone(),
            size_bytes: bytes,
            sha256,
            media_path: media_path(&video_id, &f.file.path),
        },
        domain(
            "media.created",
            video_id.to_string(),
            serde_json::json!({
                "video_id": video_id.to_string(),
                "index_id": j.index_id.to_string(),
                "title": title,
                "media_type": media_type.as_str(),
                "import_job_id": job_id.to_string(),
            }),
        ),
    ];
    let vs = video_id.to_string();
    let fs = file_stream(job_id, file_id);
    Ok(Decision {
        streams: vec![StreamEvents { stream: fs, events }, StreamEvents { stream: vs, events: video_events }],
        outcome: Outcome::ImportJob(*job_id),
    })
}

pub fn record_file_failed(
    state: &State,
    job_id: &ImportJobId,
    file_id: u32,
    attempt: u32,
    failure: &FileFailure,
    ctx: &mut crate::Ctx,
) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    let f = file(j, file_id)?;
    if f.status != FileStatus::Started || f.attempts != attempt || j.status.is_terminal() {
        return Ok(Decision { streams: vec![], outcome: Outcome::ImportJob(*job_id) });
    }
    let failure = FileFailure {
        code: failure.code.clone(),
        message: failure.message.chars().take(1000).collect(),
        retryable: failure.retryable,
    };
    let now_ms = ctx.now_ms;
    if failure.retryable && attempt < IMPORT_FILE_ATTEMPTS_MAX && j.takes_work() {
        // Not failed yet: a durable timer brings the file back after a backoff decided here.
        let due_ms = now_ms + retry_backoff_ms(attempt, ctx);
        let events = vec![Event::ImportFileRetryScheduled { job_id: *job_id, file_id, attempt, due_ms, failure }];
        return Ok(one(state, file_stream(job_id, file_id), events, Outcome::ImportJob(*job_id)));
    }
    let mut events = vec![Event::ImportFileFailed { job_id: *job_id, file_id, attempt, failure }];
    progress_if_due(j, &mut events, now_ms, 0, 1, 0);
    Ok(one(state, file_stream(job_id, file_id), events, Outcome::ImportJob(*job_id)))
}

/// The wait before the attempt after `attempt`: the schedule's step, ±jitter from the context's
/// entropy (recorded in the event, so replay never recomputes it).
pub fn retry_backoff_ms(attempt: u32, ctx: &mut crate::Ctx) -> u64 {
    let i = (attempt.max(1) as usize - 1).min(IMPORT_RETRY_BACKOFF_MS.len() - 1);
    let base = IMPORT_RETRY_BACKOFF_MS[i];
    let spread = base * IMPORT_RETRY_JITTER_PCT / 100;
    let r = (ctx.new_ulid().random() as u64) % (2 * spread + 1);
    base - spread + r
}

/// `FireTimer` of a file's retry: the file is pending again. Stale timers (fired already) add
/// nothing; a timer whose job ended still fires once, so that it leaves the index.
pub fn fire_retry(state: &State, timer: &crate::Timer) -> Result<Decision, DomainError> {
    let crate::Timer::ImportFileRetry { job_id, file_id, attempt } = timer;
    if !state.timer_due.contains_key(timer) {
        return Ok(Decision { streams: vec![], outcome: Outcome::Done });
    }
    let events = vec![Event::ImportFileRetryDue { job_id: *job_id, file_id: *file_id, attempt: *attempt }];
    Ok(one(state, file_stream(job_id, *file_id), events, Outcome::Done))
}

pub fn cancel(state: &State, job_id: &ImportJobId) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if j.status.is_terminal() || j.cancel_requested {
        // Cancelling a finished (or cancelling) job answers it unchanged.
        return Ok(Decision { streams: vec![], outcome: Outcome::ImportJob(*job_id) });
    }
    // Copies may be starting on their own streams right now: the cancel is a request; the
    // `FinishImportJob` effect ends the job once no copy runs, so a `cancelled` job never
    // changes again.
    Ok(one(
        state,
        job_id.to_string(),
        vec![Event::ImportJobCancelRequested { job_id: *job_id }],
        Outcome::ImportJob(*job_id),
    ))
}

pub fn retry(state: &State, job_id: &ImportJobId) -> Result<Decision, DomainError> {
    let j = job(state, job_id)?;
    if !j.status.is_terminal() {
        return Err(DomainError::InvalidState(format!(
            "import job {job_id} is {}; retry a finished job",
            j.status.as_str()
        )));
    }
    let failed: Vec<u32> = j.files_in(FileStatus::Failed).collect();
    if failed.is_empty() {
        return Err(DomainError::InvalidState(format!("import job {job_id} has no failed files to retry")));
    }
    if state.live_connector(&j.connector_id).is_none() || state.live_index(&j.index_id).is_none() {
        return Err(DomainError::InvalidState("the job's connector or index is gone".into()));
    }
    Ok(one(
        state,
        job_id.to_string(),
        vec![Event::ImportJobRetried { job_id: *job_id, file_ids: failed }],
        Outcome::ImportJob(*job_id),
    ))
}

/// Fold an import event into its job.
pub fn evolve_job(j: &mut ImportJob, event: &Event, at: u64) {
    j.updated_at_ms = at;
    match event {
        Event::ImportFilesDiscovered { files, .. } => {
            if j.status == JobStatus::Pending {
                j.status = JobStatus::Scanning;
            }
            for f in files {
                if f.file_id as usize != j.files.len() {
                    // File ids are positions; `decide` numbers them so. Anything else is ignored.
                    continue;
                }
                j.seen_paths.insert(f.path.clone());
                let status = if f.skip_reason.is_some() { FileStatus::Skipped } else { FileStatus::Pending };
                if status == FileStatus::Skipped {
                    j.skipped += 1;
                } else {
                    j.candidates += 1;
                }
                j.by_status.insert(status, f.file_id);
                j.files.push(ImportFile { file: f.clone(), status, attempts: 0, bytes: 0, failure: None });
            }
        }
        Event::ImportScanCompleted { .. } => {
            j.scan_done = true;
            if !j.status.is_terminal() {
                j.status = JobStatus::Importing;
            }
        }
        Event::ImportFileStarted { file_id, attempt, .. } => {
            if j.set_status(*file_id, FileStatus::Started).is_some()
                && let Some(f) = j.files.get_mut(*file_id as usize)
            {
                f.attempts = *attempt;
            }
        }
        Event::ImportFileImported { file_id, bytes, .. } => {
            if let Some(from) = j.set_status(*file_id, FileStatus::Imported) {
                if from == FileStatus::Failed {
                    j.failed -= 1;
                }
                if let Some(f) = j.files.get_mut(*file_id as usize) {
                    f.bytes = *bytes;
                    f.failure = None;
                }
                j.imported += 1;
                j.bytes_transferred += bytes;
            }
        }
        Event::ImportFileFailed { file_id, failure, .. } => {
            if let Some(from) = j.set_status(*file_id, FileStatus::Failed) {
                if from != FileStatus::Failed {
                    j.failed += 1;
                }
                if let Some(f) = j.files.get_mut(*file_id as usize) {
                    f.failure = Some(failure.clone());
                }
            }
        }
        Event::ImportFileRetryScheduled { file_id, failure, .. } => {
            if j.set_status(*file_id, FileStatus::Waiting).is_some()
                && let Some(f) = j.files.get_mut(*file_id as usize)
            {
                f.failure = Some(failure.clone());
            }
        }
        Event::ImportFileRetryDue { file_id, attempt, .. } => {
            let waits = |f: &ImportFile| f.status == FileStatus::Waiting && f.attempts == *attempt;
            if j.files.get(*file_id as usize).is_some_and(waits) {
                j.set_status(*file_id, FileStatus::Pending);
            }
        }
        Event::ImportJobCompleted { .. } => {
            j.status = JobStatus::Completed;
            j.completed_at_ms = Some(at);
        }
        Event::ImportJobFailed { error, .. } => {
            j.status = JobStatus::Failed;
            j.error = Some(error.clone());
            j.completed_at_ms = Some(at);
        }
        Event::ImportJobCancelRequested { .. } => j.cancel_requested = true,
        Event::ImportJobCancelled { .. } => {
            j.status = JobStatus::Cancelled;
            j.completed_at_ms = Some(at);
        }
        Event::ImportJobRetried { file_ids, .. } => {
            for id in file_ids {
                if j.files.get(*id as usize).is_some_and(|f| f.status == FileStatus::Failed) {
                    j.set_status(*id, FileStatus::Pending);
                    j.failed -= 1;
                }
            }
            j.status = if j.scan_done { JobStatus::Importing } else { JobStatus::Scanning };
            j.cancel_requested = false;
            j.completed_at_ms = None;
            j.error = None;
        }
        Event::DomainEventRaised { name, .. } if name == "import_job.progress" => j.last_progress_ms = at,
        _ => {}
    }
}

/// Fold import and video events into the state (called from `evolve`).
pub fn evolve(state: &mut State, env: &Envelope) {
    let at = env.at_ms;
    match &env.event {
        Event::ImportJobCreated {
            job_id,
            connector_id,
            index_id,
            source_prefix,
            file_pattern,
            recursive,
            import_mode,
        } => {
            state.imports.insert(
                *job_id,
                ImportJob {
                    job_id: *job_id,
                    connector_id: *connector_id,
                    index_id: *index_id,
                    source_prefix: source_prefix.clone(),
                    file_pattern: file_pattern.clone(),
                    recursive: *recursive,
                    import_mode: *import_mode,
                    status: JobStatus::Pending,
                    created_at_ms: at,
                    updated_at_ms: at,
                    completed_at_ms: None,
                    error: None,
                    scan_done: false,
                    files: Vec::new(),
                    seen_paths: BTreeSet::new(),
                    by_status: Default::default(),
                    candidates: 0,
                    imported: 0,
                    failed: 0,
                    skipped: 0,
                    bytes_transferred: 0,
                    last_progress_ms: at,
                    cancel_requested: false,
                },
            );
            state.active_imports.insert(*job_id);
            state.imports_by_created.insert((at, *job_id));
            state.imports_by_status.insert(JobStatus::Pending, (at, *job_id));
        }
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
        } => {
            state.videos.insert(
                *video_id,
                Video {
                    video_id: *video_id,
                    index_id: *index_id,
                    title: title.clone(),
                    media_type: *media_type,
                    connector_id: *connector_id,
                    source_path: source_path.clone(),
                    source_etag: source_etag.clone(),
                    size_bytes: *size_bytes,
                    sha256: *sha256,
                    media_path: media_path.clone(),
                    created_at_ms: at,
                },
            );
            state.index_videos.entry(*index_id).or_default().insert((at, *video_id));
        }
        Event::ImportFilesDiscovered { job_id, .. }
        | Event::ImportScanCompleted { job_id }
        | Event::ImportFileStarted { job_id, .. }
        | Event::ImportFileImported { job_id, .. }
        | Event::ImportFileFailed { job_id, .. }
        | Event::ImportJobCompleted { job_id }
        | Event::ImportJobFailed { job_id, .. }
        | Event::ImportJobCancelled { job_id }
        | Event::ImportJobCancelRequested { job_id }
        | Event::ImportFileRetryScheduled { job_id, .. }
        | Event::ImportFileRetryDue { job_id, .. }
        | Event::ImportJobRetried { job_id, .. } => {
            match &env.event {
                Event::ImportFileRetryScheduled { file_id, attempt, due_ms, .. } => {
                    let t = crate::Timer::ImportFileRetry { job_id: *job_id, file_id: *file_id, attempt: *attempt };
                    state.set_timer(t, *due_ms);
                }
                Event::ImportFileRetryDue { file_id, attempt, .. } => {
                    let t = crate::Timer::ImportFileRetry { job_id: *job_id, file_id: *file_id, attempt: *attempt };
                    state.clear_timer(&t);
                }
                _ => {}
            }
            if let Some(j) = state.imports.get_mut(job_id) {
                let before = j.status;
                evolve_job(j, &env.event, at);
                state.imports_by_status.moved((j.created_at_ms, *job_id), before, j.status);
                if let Event::ImportFileImported { file_id, .. } = &env.event
                    && let Some(f) = j.files.get(*file_id as usize)
                {
                    state.imported_keys.insert(import_key(
                        &j.connector_id,
                        &j.index_id,
                        &f.file.path,
                        f.file.etag.as_deref(),
                        f.file.size_bytes,
                        f.file.last_modified_ms,
                    ));
                }
                if j.status.is_terminal() {
                    state.active_imports.remove(job_id);
                } else {
                    state.active_imports.insert(*job_id);
                }
            }
        }
        Event::DomainEventRaised { name, subject, .. } if name == "import_job.progress" => {
            if let Ok(id) = subject.parse::<ImportJobId>()
                && let Some(j) = state.imports.get_mut(&id)
            {
                j.last_progress_ms = at;
            }
        }
        _ => {}
    }
}
