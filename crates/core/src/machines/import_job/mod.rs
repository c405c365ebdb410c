//! The import job machine (engine-spec/machines/import-job.md): a job lists a connector's
//! objects, classifies them, and copies each candidate into the media store as a video.

mod decide;
mod effects;
mod evolve;
pub mod view;

pub use decide::*;
pub use effects::{ImportEffect, effects_for, work_key};
pub use evolve::{evolve, evolve_job};

use serde::{Deserialize, Serialize};
use spool_model::{
    ConnectorId, DiscoveredFile, FileFailure, ImportJobId, ImportMode, IndexId, JobSource, MediaFacts, VideoId,
};
use std::collections::{BTreeMap, BTreeSet};

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
/// Listings of a connector job's source before a transient failure fails the job.
pub const IMPORT_SCAN_ATTEMPTS_MAX: u32 = 5;
/// Wait before listing n+1 after a transient failure of listing n (index n-1), ±20% jitter.
pub const IMPORT_SCAN_BACKOFF_MS: [u64; 4] = [2_000, 10_000, 30_000, 60_000];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImportCommand {
    CreateImportJob {
        connector_id: ConnectorId,
        index_id: IndexId,
        source_prefix: String,
        file_pattern: String,
        recursive: bool,
        import_mode: Option<ImportMode>,
    },
    /// Effect outcome: one listed page of the scan.
    RecordScanPage {
        job_id: ImportJobId,
        objects: Vec<ListedObject>,
    },
    /// Effect outcome: the listing ended.
    RecordScanCompleted {
        job_id: ImportJobId,
    },
    /// Effect outcome: the listing failed. A `transient` failure (storage unreachable, 5xx)
    /// below [`IMPORT_SCAN_ATTEMPTS_MAX`] waits for a retry; any other fails the job.
    RecordScanFailed {
        job_id: ImportJobId,
        error: String,
        transient: bool,
    },
    /// Effect outcome: job-level trouble (connector or index gone, the object missing).
    RecordImportJobFailed {
        job_id: ImportJobId,
        error: String,
    },
    /// A copy attempt begins (the executor records it before copying).
    StartImportFile {
        job_id: ImportJobId,
        file_id: u32,
        attempt: u32,
    },
    RecordFileImported {
        job_id: ImportJobId,
        file_id: u32,
        attempt: u32,
        bytes: u64,
        sha256: [u8; 32],
        /// The probe's facts of the stored copy; absent only in scenario files written before
        /// the probe (the file is then one part without facts).
        #[serde(default)]
        facts: Option<MediaFacts>,
    },
    RecordFileFailed {
        job_id: ImportJobId,
        file_id: u32,
        attempt: u32,
        failure: FileFailure,
    },
    CancelImportJob {
        job_id: ImportJobId,
    },
    RetryImportJob {
        job_id: ImportJobId,
    },
    /// Effect outcome: end the job if it is done (or cancelled with nothing running).
    RecordImportJobFinished {
        job_id: ImportJobId,
    },
    /// `POST /videos/upload`: the upload is staged whole (size and hash known); a job of one
    /// file imports it. `index_id` `None` is the playground.
    OpenUploadJob {
        index_id: Option<IndexId>,
        title: String,
        file_name: String,
        staged_key: String,
        size_bytes: u64,
        sha256: [u8; 32],
    },
    /// `POST /videos`: a job of one object of a connector.
    OpenUriJob {
        index_id: IndexId,
        title: String,
        connector_id: ConnectorId,
        video_uri: String,
        path: String,
    },
}

/// The index of playground media (uploads without an index): the nil id, never a real index.
pub const PLAYGROUND: IndexId = IndexId(ulid::Ulid::nil());

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
    /// The videos an imported file became, one per part (empty before it is imported, and for
    /// files imported before the probe: then its `video_id` is its one part).
    #[serde(default)]
    pub parts: Vec<VideoId>,
}

impl ImportFile {
    /// The videos of an imported file, in part order.
    pub fn part_videos(&self) -> Vec<VideoId> {
        if self.parts.is_empty() { self.file.video_id.into_iter().collect() } else { self.parts.clone() }
    }
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
    /// Listings that failed with a transient error; the scan waits while the retry timer of
    /// the last one is set ([`scan_retry_pending`]).
    pub scan_failures: u32,
    /// The last listing failure and when the first of them happened (cleared by a completed
    /// listing): `waiting_on` `storage_unreachable`.
    pub scan_error: Option<String>,
    pub scan_failing_since_ms: Option<u64>,
    /// The files not imported nor skipped (pending, started, waiting for a retry, failed: the
    /// work in flight and what a retry takes up), by file id. An imported or skipped file is a
    /// row of the `job_files` table (`engine-spec/tables.md`), written in the commit of the event
    /// that finished it, and leaves the state.
    pub files: BTreeMap<u32, ImportFile>,
    /// Files discovered (the next file id).
    pub file_count: u32,
    /// Paths already discovered while the scan runs (a re-listed page after a crash adds nothing
    /// twice); emptied when the scan completes.
    pub seen_paths: BTreeSet<PathKey>,
    /// Ids of the files in `files` by status: counts, the work `effects_for` offers, and the
    /// pages of the views (imported and skipped files are counted by `imported` and `skipped`).
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
    /// A one-object job (upload or URI); `None` for a connector scan.
    pub source: Option<JobSource>,
    /// The title its video gets (one-object jobs); else the file name.
    pub title: Option<String>,
    /// Parts beyond the first of imported long files: `parts_total` is `candidates` plus these.
    pub extra_parts: u64,
}

impl ImportJob {
    /// A pending job with nothing discovered: all files of the connector (`*`, recursive,
    /// import mode `all`) until its event says otherwise.
    pub fn new(job_id: ImportJobId, connector_id: ConnectorId, index_id: IndexId, at: u64) -> ImportJob {
        ImportJob {
            job_id,
            connector_id,
            index_id,
            source_prefix: String::new(),
            file_pattern: "*".into(),
            recursive: true,
            import_mode: ImportMode::All,
            status: JobStatus::Pending,
            created_at_ms: at,
            updated_at_ms: at,
            completed_at_ms: None,
            error: None,
            scan_done: false,
            scan_failures: 0,
            scan_error: None,
            scan_failing_since_ms: None,
            files: BTreeMap::new(),
            file_count: 0,
            seen_paths: BTreeSet::new(),
            by_status: Default::default(),
            candidates: 0,
            imported: 0,
            failed: 0,
            skipped: 0,
            bytes_transferred: 0,
            last_progress_ms: at,
            cancel_requested: false,
            source: None,
            title: None,
            extra_parts: 0,
        }
    }

    /// `connector`, `upload` or `uri` (`ImportJob.source_kind`).
    pub fn source_kind(&self) -> &'static str {
        match self.source {
            None => "connector",
            Some(JobSource::Upload { .. }) => "upload",
            Some(JobSource::Uri { .. }) => "uri",
        }
    }

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

    /// Move a file in `files` to another status that keeps it there, keeping the per-status
    /// sets in step.
    fn set_status(&mut self, file_id: u32, to: FileStatus) -> Option<FileStatus> {
        let f = self.files.get_mut(&file_id)?;
        let from = f.status;
        f.status = to;
        self.by_status.moved(file_id, from, to);
        Some(from)
    }

    /// An imported file leaves `files` (its row goes to the `job_files` table): the file, with
    /// its new status, and the status it left.
    fn finish(&mut self, file_id: u32, to: FileStatus) -> Option<(FileStatus, ImportFile)> {
        let mut f = self.files.remove(&file_id)?;
        let from = f.status;
        self.by_status.remove(from, file_id);
        f.status = to;
        Some((from, f))
    }

    /// The number of files with this status.
    pub fn count(&self, status: FileStatus) -> u64 {
        match status {
            FileStatus::Imported => self.imported,
            FileStatus::Skipped => self.skipped,
            s => self.by_status.count(s) as u64,
        }
    }

    /// Whether a file was discovered and has left `files` (imported or skipped).
    pub fn finished_file(&self, file_id: u32) -> bool {
        file_id < self.file_count && !self.files.contains_key(&file_id)
    }
}

/// The job's scan waits for the retry timer of its last failed listing (the timer is the one
/// record of it: set by `ImportScanRetryScheduled`, gone with `ImportScanRetryDue`).
pub fn scan_retry_pending(state: &crate::State, j: &ImportJob) -> bool {
    j.scan_failures > 0
        && state.timer_due.contains_key(&crate::Timer::ImportScanRetry { job_id: j.job_id, attempt: j.scan_failures })
}

/// An object as a scan page lists it (an effect's outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedObject {
    pub path: String,
    pub size_bytes: u64,
    pub etag: Option<String>,
    pub last_modified_ms: u64,
}

impl From<&spool_model::WatchedObject> for ListedObject {
    fn from(o: &spool_model::WatchedObject) -> Self {
        ListedObject {
            path: o.path.clone(),
            size_bytes: o.size_bytes,
            etag: o.etag.clone(),
            last_modified_ms: o.last_modified_ms,
        }
    }
}

/// The key of a finished file's row in the `job_files` table: `{job}/{i|s}/{file id, 10
/// digits}` (`i` imported, `s` skipped), so a job's files of one status page in id order.
pub fn file_row_key(job_id: &ImportJobId, status: FileStatus, file_id: u32) -> String {
    format!("{}{file_id:010}", file_row_prefix(job_id, status))
}

/// The prefix of a job's rows of one finished status in the `job_files` table.
pub fn file_row_prefix(job_id: &ImportJobId, status: FileStatus) -> String {
    let s = if status == FileStatus::Skipped { 's' } else { 'i' };
    format!("{job_id}/{s}/")
}

/// The format of an [`ImportFile`] row (its first byte).
pub const FILE_ROW_FORMAT: u8 = 1;

impl ImportFile {
    pub fn encode_row(&self) -> Vec<u8> {
        crate::rows::encode_row(FILE_ROW_FORMAT, self)
    }

    /// `None` for bytes of another format or damaged ones.
    pub fn decode_row(bytes: &[u8]) -> Option<ImportFile> {
        crate::rows::decode_row(FILE_ROW_FORMAT, bytes)
    }
}

/// A path or dedupe key kept by its 128-bit SHA-256 prefix: 16 bytes instead of a string per
/// file, in memory and in snapshots (a collision needs ~2^64 keys).
pub type PathKey = [u8; 16];

/// The [`PathKey`] of a string.
pub fn path_key(s: &str) -> PathKey {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// The key of a path imported from a connector into an index, whatever its version: an import
/// automation's `new_only` skips a changed object whose path was imported before.
pub fn import_path_key(connector: &ConnectorId, index: &IndexId, path: &str) -> String {
    format!("{connector}|{index}|{path}")
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

/// The stream of a job's file events: the job's own stream. (Before the sequencer each file had
/// `job_…/f<N>`, so that files could be appended in parallel under optimistic concurrency;
/// logs written then still fold and replay the same.)
pub fn file_stream(job_id: &ImportJobId, _file_id: u32) -> String {
    job_id.to_string()
}

/// Where an imported file's bytes go in the media store.
/// `videos/<shard>/<video_id>[.<ext>]`, the shard being the id's last two characters (random
/// bits of the ULID: 1,024 folders), so no folder grows with the library and no file needs a
/// folder of its own. (Older videos keep the path their `VideoCreated` recorded.)
pub fn media_path(video_id: &VideoId, source_path: &str) -> String {
    let ext = extension(source_path);
    let id = video_id.to_string();
    let shard = &id[id.len().saturating_sub(2)..];
    if ext.is_empty() { format!("videos/{shard}/{id}") } else { format!("videos/{shard}/{id}.{ext}") }
}

/// This machine in the registry (`crate::machines::for_each_machine!`).
pub struct Machine;

impl super::Machine for Machine {
    type Command = ImportCommand;
    type Effect = ImportEffect;
    type Key = spool_model::ImportJobId;
    const NOT_FOUND: &'static [(&'static str, &'static str)] = &[("import_job", "resource_import_job_not_found")];

    fn decide(
        state: &crate::State,
        cmd: &ImportCommand,
        ctx: &mut crate::Ctx,
    ) -> Result<crate::Decision, crate::DomainError> {
        decide(state, cmd, ctx)
    }

    fn evolve(state: &mut crate::State, env: &spool_model::Envelope) {
        evolve(state, env)
    }

    fn work_key(event: &spool_model::Event) -> Option<crate::WorkKey> {
        work_key(event)
    }

    fn effects_for(state: &crate::State, key: spool_model::ImportJobId) -> Vec<ImportEffect> {
        effects_for(state, key)
    }

    fn with_work(state: &crate::State) -> Vec<spool_model::ImportJobId> {
        state.active_imports.iter().copied().collect()
    }

    fn fire(
        state: &crate::State,
        timer: &crate::Timer,
        _ctx: &mut crate::Ctx,
    ) -> Option<Result<crate::Decision, crate::DomainError>> {
        match timer {
            crate::Timer::ImportFileRetry { .. } => Some(fire_retry(state, timer)),
            crate::Timer::ImportScanRetry { .. } => Some(fire_scan_retry(state, timer)),
            _ => None,
        }
    }
}
