//! The persisted events. One enum for every aggregate; each event's stream is the public id
//! of the aggregate it belongs to (see `engine-spec/events.md`).
//!
//! Architecture invariant: variants are only ever appended at the end, fields of an existing
//! variant never change. A change of shape is a new variant (or a new `format_version`
//! decoded in [`crate::codec`]). bincode is not self-describing: no `untagged`, `flatten` or
//! `skip_serializing_if` in anything persisted.

use crate::ids::*;
use crate::media::{MediaFacts, PartRange};
use crate::names::{DomainEventName, RunStatus, WebhookStatus};
use crate::run::{CallUsage, RunPrompt, RunSettings, RunTarget, RunTask, TaskAnswer, TaskFailure, TimeRange};
use crate::sealed::Sealed;
use serde::{Deserialize, Serialize};

/// API key scopes, ordered: admin > write > read. The SDK's `search` is accepted as read
/// at the API boundary and never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// Where an index deletion stands; the SDK validates these three strings strictly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeletionStage {
    Draining,
    Deleting,
    Deleted,
}

impl DeletionStage {
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionStage::Draining => "draining",
            DeletionStage::Deleting => "deleting",
            DeletionStage::Deleted => "deleted",
        }
    }
}

/// A connector's storage provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    S3,
    Gcs,
    Azure,
    /// A folder under one of the operator's `SPOOL_LOCAL_ROOTS` (an extension).
    Local,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::S3 => "s3",
            Provider::Gcs => "gcs",
            Provider::Azure => "azure",
            Provider::Local => "local",
        }
    }
}

/// What a connector may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorScope {
    Import,
    Export,
}

impl ConnectorScope {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorScope::Import => "import",
            ConnectorScope::Export => "export",
        }
    }
}

/// Which objects an import takes: all matches, or only those not imported before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportMode {
    All,
    NewOnly,
}

impl ImportMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMode::All => "all",
            ImportMode::NewOnly => "new_only",
        }
    }
}

/// Where a connector's objects are; every provider uses the fields it needs. Nothing here is
/// secret: credentials travel sealed, beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorLocation {
    /// S3 and GCS bucket.
    pub bucket: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// S3-compatible or Azure endpoint URL (an extension).
    pub endpoint: Option<String>,
    pub storage_account: Option<String>,
    pub container: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub gcp_project_id: Option<String>,
    /// Local folder (an extension).
    pub root: Option<String>,
}

/// The kind of media a file holds, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaType {
    Video,
    Audio,
    Image,
}

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Video => "video",
            MediaType::Audio => "audio",
            MediaType::Image => "image",
        }
    }

    /// The media type of a file extension (any case), or `None` when Spool does not import it.
    pub fn from_extension(ext: &str) -> Option<MediaType> {
        match ext.to_ascii_lowercase().as_str() {
            "mp4" | "m4v" | "mov" | "avi" | "mkv" | "webm" | "mpg" | "mpeg" | "ts" => Some(MediaType::Video),
            "mp3" | "wav" | "flac" | "m4a" | "ogg" | "aac" | "aif" | "aiff" | "opus" => Some(MediaType::Audio),
            "jpg" | "jpeg" | "png" | "webp" | "gif" | "bmp" | "tif" | "tiff" | "heic" | "heif" => {
                Some(MediaType::Image)
            }
            _ => None,
        }
    }
}

/// One object found by an import's scan, with what the scan decided about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredFile {
    /// Position in the job (0-based), also its public `file_id` and `source_ordinal`.
    pub file_id: u32,
    pub path: String,
    pub size_bytes: u64,
    pub etag: Option<String>,
    pub last_modified_ms: u64,
    /// Decided before any copy, so a re-run after a crash writes the same video.
    pub video_id: Option<VideoId>,
    /// Set when the file is skipped (`unsupported_format`, `empty_object`, `already_imported`).
    pub skip_reason: Option<String>,
}

/// Why one file of an import failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFailure {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

/// Declares [`Event`] and, from the same list, [`EventKind`] (its variants without their
/// fields, in declaration order: the index bincode writes) and [`EVENT_KINDS`] (their names).
/// A variant is added in one place; the golden test (`tests/golden.rs`) keeps the order.
macro_rules! event_enum {
    (
        $(#[$meta:meta])*
        pub enum Event { $($(#[$vmeta:meta])* $Var:ident { $($body:tt)* }),* $(,)? }
    ) => {
        $(#[$meta])*
        pub enum Event { $($(#[$vmeta])* $Var { $($body)* }),* }

        /// What kind of fact an event is: [`Event`]'s variants without their fields, in the
        /// same order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum EventKind {
            $($Var),*
        }

        /// The names of the variants, in declaration order; `Event::kind_index` indexes into it.
        pub const EVENT_KINDS: &[&str] = &[$(stringify!($Var)),*];

        impl Event {
            /// The event's kind.
            pub fn event_kind(&self) -> EventKind {
                match self {
                    $(Event::$Var { .. } => EventKind::$Var),*
                }
            }
        }
    };
}

event_enum! {
/// Every fact Spool records. Past tense; the time of the fact is the envelope's `at_ms`.
// Events live briefly in memory (a decision, a fold batch); a flat layout keeps the persisted
// shape obvious, so the size difference between variants is accepted.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Stream `idx_…`.
    IndexCreated {
        index_id: IndexId,
        name: String,
        user_id: String,
    },
    /// Stream `idx_…`. The deletion id is decided once; repeated DELETEs return it.
    IndexDeletionRequested {
        index_id: IndexId,
        deletion_id: DeletionId,
    },
    /// Stream `idx_…`. No work of the index is running any more.
    IndexDrained {
        index_id: IndexId,
        deletion_id: DeletionId,
    },
    /// Stream `idx_…`. Terminal: the index and what it owned are gone.
    IndexDeleted {
        index_id: IndexId,
        deletion_id: DeletionId,
    },
    /// Stream `key_…`. Only the SHA-256 of the secret is stored.
    ApiKeyCreated {
        key_id: ApiKeyId,
        name: String,
        scopes: Vec<Scope>,
        key_prefix: String,
        key_hash: [u8; 32],
        expires_at_ms: Option<u64>,
    },
    /// Stream `key_…`.
    ApiKeyRevoked {
        key_id: ApiKeyId,
    },
    /// Stream `key_…`. The old secret stops working in the same instant.
    ApiKeyRotated {
        key_id: ApiKeyId,
        key_prefix: String,
        key_hash: [u8; 32],
    },
    /// Stream `key_…`. Terminal.
    ApiKeyDeleted {
        key_id: ApiKeyId,
    },
    /// Stream `key_…`. Coarse usage (at most one per key per flush interval), never one per request.
    ApiKeyUsed {
        key_id: ApiKeyId,
        used_at_ms: u64,
    },
    /// Stream `conn_…`. Credentials are sealed for the connector's own data key.
    ConnectorCreated {
        connector_id: ConnectorId,
        provider: Provider,
        name: String,
        scopes: Vec<ConnectorScope>,
        import_mode: ImportMode,
        export_base_path: Option<String>,
        location: ConnectorLocation,
        credentials: Option<Sealed>,
    },
    /// Stream `conn_…`. Only the fields that changed are `Some`; `export_base_path:
    /// Some(None)` clears it.
    ConnectorUpdated {
        connector_id: ConnectorId,
        name: Option<String>,
        scopes: Option<Vec<ConnectorScope>>,
        import_mode: Option<ImportMode>,
        export_base_path: Option<Option<String>>,
        credentials: Option<Sealed>,
    },
    /// Stream `conn_…`. The outcome of a connection test.
    ConnectorTested {
        connector_id: ConnectorId,
        success: bool,
        error: Option<String>,
    },
    /// Stream `conn_…`. Terminal; the data key of its credentials is deleted in the same
    /// transaction (crypto-shredding).
    ConnectorDeleted {
        connector_id: ConnectorId,
    },
    /// Stream `job_…`. `import_mode` is the connector's, or the job's override.
    ImportJobCreated {
        job_id: ImportJobId,
        connector_id: ConnectorId,
        index_id: IndexId,
        source_prefix: String,
        file_pattern: String,
        recursive: bool,
        import_mode: ImportMode,
    },
    /// Stream `job_…`. One listed page's new objects, classified.
    ImportFilesDiscovered {
        job_id: ImportJobId,
        files: Vec<DiscoveredFile>,
    },
    /// Stream `job_…`. The listing is complete.
    ImportScanCompleted {
        job_id: ImportJobId,
    },
    /// Stream `job_…`. A copy attempt begins.
    ImportFileStarted {
        job_id: ImportJobId,
        file_id: u32,
        attempt: u32,
    },
    /// Stream `job_…`. The file is in the media store (a `VideoCreated` commits with it).
    ImportFileImported {
        job_id: ImportJobId,
        file_id: u32,
        video_id: VideoId,
        bytes: u64,
        sha256: [u8; 32],
    },
    /// Stream `job_…`.
    ImportFileFailed {
        job_id: ImportJobId,
        file_id: u32,
        attempt: u32,
        failure: FileFailure,
    },
    /// Stream `job_…`. Terminal: every file imported, failed or skipped.
    ImportJobCompleted {
        job_id: ImportJobId,
    },
    /// Stream `job_…`. Terminal: job-level trouble (listing failed, connector or index gone).
    ImportJobFailed {
        job_id: ImportJobId,
        error: String,
    },
    /// Stream `job_…`. Terminal: no new file starts; what was imported stays.
    ImportJobCancelled {
        job_id: ImportJobId,
    },
    /// Stream `job_…`. These failed files are pending again.
    ImportJobRetried {
        job_id: ImportJobId,
        file_ids: Vec<u32>,
    },
    /// Stream `vid_…`.
    VideoCreated {
        video_id: VideoId,
        index_id: IndexId,
        title: String,
        media_type: MediaType,
        connector_id: Option<ConnectorId>,
        source_path: String,
        source_etag: Option<String>,
        size_bytes: u64,
        sha256: [u8; 32],
        /// Where the bytes are in the media store.
        media_path: String,
    },
    /// A domain event for webhooks (`import_job.completed`, `media.created`, …), on the stream of
    /// its subject, in the same append as the change it reports.
    DomainEventRaised {
        name: DomainEventName,
        subject: String,
        data_json: String,
    },
    /// Stream `job_…`. No new file starts; copies already running finish, then
    /// `ImportJobCancelled` ends the job.
    ImportJobCancelRequested {
        job_id: ImportJobId,
    },
    /// Stream `job_…/fN`. A retryable failure below the attempt limit: the file waits for a
    /// durable timer at `due_ms` (backoff and jitter decided in the core) instead of failing.
    ImportFileRetryScheduled {
        job_id: ImportJobId,
        file_id: u32,
        attempt: u32,
        due_ms: u64,
        failure: FileFailure,
    },
    /// Stream `job_…/fN`. The retry timer of `attempt` fired: the file is pending again (when its
    /// job still takes work). The timer is gone either way.
    ImportFileRetryDue {
        job_id: ImportJobId,
        file_id: u32,
        attempt: u32,
    },
    /// Stream `idx_…`. The index's description (set at creation when given).
    IndexDescriptionSet {
        index_id: IndexId,
        description: String,
    },
    /// Stream `wh_…`. A webhook exists; its secret is sealed for its own data key.
    WebhookCreated {
        webhook_id: WebhookId,
        name: String,
        url: String,
        events: Vec<DomainEventName>,
        /// `None`: every index.
        index_ids: Option<Vec<IndexId>>,
        metadata_json: Option<String>,
        secret: Sealed,
    },
    /// Stream `wh_…`. Only what changed; `status` is `active`, `paused` or `disabled`.
    WebhookUpdated {
        webhook_id: WebhookId,
        name: Option<String>,
        url: Option<String>,
        events: Option<Vec<DomainEventName>>,
        index_ids: Option<Vec<IndexId>>,
        metadata_json: Option<Option<String>>,
        status: Option<WebhookStatus>,
    },
    /// Stream `wh_…`. A new secret; the previous one still signs `webhook-signature` until
    /// `grace_until_ms`.
    WebhookSecretRotated {
        webhook_id: WebhookId,
        secret: Sealed,
        grace_until_ms: u64,
    },
    /// Stream `wh_…`. Terminal; its data key is deleted in the same transaction.
    WebhookDeleted {
        webhook_id: WebhookId,
    },
    /// Stream `wh_…`. The outbox: a delivery of a domain event, in the same append as the event.
    /// `payload_json` is the body, serialized once; it is signed and sent as is.
    DeliveryCreated {
        delivery_id: DeliveryId,
        webhook_id: WebhookId,
        event_type: DomainEventName,
        sequence: u64,
        index_id: Option<IndexId>,
        payload_json: String,
    },
    /// Stream `wh_…`. One attempt and what it came to: delivered, a retry at `retry_at_ms`
    /// (backoff and jitter decided in the core), or failed for good.
    DeliveryAttempted {
        delivery_id: DeliveryId,
        webhook_id: WebhookId,
        attempt: u32,
        status_code: Option<u16>,
        response_excerpt: Option<String>,
        error: Option<String>,
        duration_ms: u64,
        delivered: bool,
        retry_at_ms: Option<u64>,
    },
    /// Stream `wh_…`. A delivery is pending again: its retry timer fired, or a manual retry.
    DeliveryPending {
        delivery_id: DeliveryId,
        webhook_id: WebhookId,
    },
    /// Stream `wh_…`. A bulk retry of the webhook's deliveries in `status` (created within the
    /// range) starts; it runs page by page (`BulkRetryProgressed`), durable across restarts.
    BulkRetryStarted {
        webhook_id: WebhookId,
        status: String,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
    },
    /// Stream `wh_…`. A page was done: deliveries up to (created_ms, delivery) were looked at.
    BulkRetryProgressed {
        webhook_id: WebhookId,
        after_ms: u64,
        after: DeliveryId,
        retried: u64,
    },
    /// Stream `wh_…`. The bulk retry looked at every delivery.
    BulkRetryFinished {
        webhook_id: WebhookId,
        retried: u64,
    },
    /// Stream `vid_…`. Deletion started (status `draining`): the video is gone from the API.
    VideoDeletionRequested {
        video_id: VideoId,
        deletion_id: DeletionId,
    },
    /// Stream `vid_…`. No work of the video runs any more (status `deleting`).
    VideoDrained {
        video_id: VideoId,
        deletion_id: DeletionId,
    },
    /// Stream `vid_…`. Terminal: its media-store object is gone (status `deleted`).
    VideoDeleted {
        video_id: VideoId,
        deletion_id: DeletionId,
    },
    /// Stream `job_…`, in the append of `ImportFileImported`, for media long enough to become
    /// several parts: the videos the file became, one per part (the first is the file's
    /// `video_id`). A file of one part has no such event.
    ImportFileProbed {
        job_id: ImportJobId,
        file_id: u32,
        parts: Vec<VideoId>,
    },
    /// Stream `vid_…`. A video made by an import since the probe: `VideoCreated`'s fields, the
    /// probe's facts of the stored media, the part of it this video covers, and `parts`: on the
    /// first part every part's video in order, on a later part the first part's video alone
    /// (logs written before that list every part on every part, which reads the same), and
    /// empty when the media is one part. One event, so a file costs no more appended events
    /// than before the probe, and a file of n parts O(n) bytes of log.
    VideoImported {
        video_id: VideoId,
        index_id: IndexId,
        title: String,
        media_type: MediaType,
        connector_id: Option<ConnectorId>,
        source_path: String,
        source_etag: Option<String>,
        size_bytes: u64,
        sha256: [u8; 32],
        media_path: String,
        facts: MediaFacts,
        part: PartRange,
        parts: Vec<VideoId>,
    },
    /// Stream `job_…`. A job of one object (an upload, or one object of a connector), with its
    /// title; `index_id` `None` is the playground. Its file is discovered in the same append.
    ImportJobOpened {
        job_id: ImportJobId,
        source: JobSource,
        index_id: Option<IndexId>,
        title: String,
    },
    /// Stream `prompt_…`. Schemas are kept as the JSON text that was checked.
    PromptCreated {
        prompt_id: PromptId,
        user_id: String,
        name: String,
        description: String,
        prompt_text: String,
        json_schema: String,
        video_level: Option<PromptVideoLevel>,
        semantic: PromptSemantic,
    },
    /// Stream `prompt_…`. Only the given fields change; `video_level: Some(None)` clears it.
    PromptUpdated {
        prompt_id: PromptId,
        name: Option<String>,
        description: Option<String>,
        prompt_text: Option<String>,
        json_schema: Option<String>,
        video_level: Option<Option<PromptVideoLevel>>,
        semantic: Option<PromptSemantic>,
    },
    /// Stream `prompt_…`. Terminal.
    PromptDeleted {
        prompt_id: PromptId,
    },
    /// Stream `run_…`. A prompt run, with the prompt as it was and what was asked.
    PromptRunCreated {
        run_id: PromptRunId,
        prompt_id: PromptId,
        prompt: RunPrompt,
        target: RunTarget,
        settings: RunSettings,
        executed_by: String,
    },
    /// Stream `run_…`. The next page of the run's videos (numbered in order); `done`: no more.
    PromptRunVideosAdded {
        run_id: PromptRunId,
        videos: Vec<VideoId>,
        done: bool,
    },
    /// Stream `run_…`. A video's segments, decided from its facts (and the boundaries its
    /// media offered); `method` says how (`fixed`, `keyframes`, `silence`, `image`, `none`).
    PromptRunVideoPlanned {
        run_id: PromptRunId,
        video: u32,
        segments: Vec<TimeRange>,
        method: String,
    },
    /// Stream `run_…`. An attempt of a task begins (recorded before the processor is called).
    PromptTaskStarted {
        run_id: PromptRunId,
        task: RunTask,
        attempt: u32,
    },
    /// Stream `run_…`. The attempt's answer passed the schema: the task's one result.
    PromptTaskSucceeded {
        run_id: PromptRunId,
        task: RunTask,
        attempt: u32,
        answer: TaskAnswer,
        usage: CallUsage,
    },
    /// Stream `run_…`. The attempt failed; with `retry_due_ms` a durable timer brings it back,
    /// without it the task is failed.
    PromptTaskFailed {
        run_id: PromptRunId,
        task: RunTask,
        attempt: u32,
        failure: TaskFailure,
        usage: Option<CallUsage>,
        retry_due_ms: Option<u64>,
    },
    /// Stream `run_…`. A retry timer fired: the task is pending again.
    PromptTaskRetryDue {
        run_id: PromptRunId,
        task: RunTask,
        attempt: u32,
    },
    /// Stream `run_…`. A failed segment was retried by hand (reopening a finished run).
    PromptTaskRetryRequested {
        run_id: PromptRunId,
        task: RunTask,
        retry_id: RetryId,
    },
    /// Stream `run_…`. Nothing new starts; the run ends `cancelled` once nothing runs.
    PromptRunCancelRequested {
        run_id: PromptRunId,
        requested_by: String,
    },
    /// Stream `run_…`. `completed`, `completed_with_failures`, `failed` or `cancelled`.
    PromptRunFinished {
        run_id: PromptRunId,
        status: RunStatus,
        error: Option<String>,
    },
    /// Stream `exp_…`. An export of an index (its runs, or only `run_ids`) or of one run.
    ExportCreated {
        export_id: ExportId,
        kind: ExportKind,
        index_id: Option<IndexId>,
        run_ids: Vec<PromptRunId>,
        destination: ExportDestination,
        user_id: String,
    },
    /// Stream `exp_…`. An attempt begins (recorded before the artifact is made).
    ExportStarted {
        export_id: ExportId,
        attempt: u32,
    },
    /// Stream `exp_…`. The artifact is made and kept (`<data-dir>/exports/<id>.json`): every
    /// download and upload reads these bytes.
    ExportGenerated {
        export_id: ExportId,
        attempt: u32,
        size_bytes: u64,
        sha256: [u8; 32],
    },
    /// Stream `exp_…`. Terminal: downloadable, or written to the connector.
    ExportCompleted {
        export_id: ExportId,
        attempt: u32,
    },
    /// Stream `exp_…`. With `retry_due_ms` a durable timer brings it back; without, terminal.
    ExportFailed {
        export_id: ExportId,
        attempt: u32,
        error: String,
        retry_due_ms: Option<u64>,
    },
    /// Stream `exp_…`. A retry timer fired: the export is queued again.
    ExportRetryDue {
        export_id: ExportId,
        attempt: u32,
    },
    /// Stream `exp_…`. A multipart upload of the artifact to the connector began (or began
    /// again, its earlier upload gone): parts recorded before are dropped.
    ExportUploadStarted {
        export_id: ExportId,
        attempt: u32,
        upload_id: String,
    },
    /// Stream `exp_…`. Part `part` (from 0, in order) of the upload is stored, with the id the
    /// store gave it: after a crash the upload goes on from the next part.
    ExportPartWritten {
        export_id: ExportId,
        part: u32,
        content_id: String,
    },
    /// Stream `auto_…`. An index's import or export automation, saved whole (PUT replaces it).
    AutomationSaved {
        automation_id: AutomationId,
        index_id: IndexId,
        config: AutomationConfig,
    },
    /// Stream `auto_…`. A temporary stop; the configuration is kept.
    AutomationPaused {
        automation_id: AutomationId,
    },
    AutomationResumed {
        automation_id: AutomationId,
    },
    /// Stream `auto_…`. An export automation handled a completed run, once per run: the export
    /// it created (its `ExportCreated` is in the same append), or why it could not.
    AutomationExported {
        automation_id: AutomationId,
        run_id: PromptRunId,
        export_id: Option<ExportId>,
        error: Option<String>,
    },
    /// Stream `auto_…`. An import automation's watch timer fired: a listing of its location is
    /// due.
    AutomationWatchDue {
        automation_id: AutomationId,
    },
    /// Stream `auto_…`. One listed page's new or changed objects (a key not in the automation's
    /// manifest, or with another etag or size). The manifest takes them, and the debounce is
    /// (re)armed one `debounce_interval` after this event.
    AutomationObjectsFound {
        automation_id: AutomationId,
        objects: Vec<WatchedObject>,
    },
    /// Stream `auto_…`. A listing of the location ended after `objects` objects (`error` when it
    /// failed); the next one is due at `next_listing_ms`.
    AutomationListed {
        automation_id: AutomationId,
        objects: u64,
        error: Option<String>,
        next_listing_ms: u64,
    },
    /// Stream `auto_…`. The debounce expired: the import job made of exactly the found objects
    /// (its `ImportJobCreated`, `ImportFilesDiscovered` and `ImportScanCompleted` are in the same
    /// append), or why none could be made.
    AutomationImportStarted {
        automation_id: AutomationId,
        job_id: Option<ImportJobId>,
        files: u32,
        error: Option<String>,
    },
    /// Stream `auto_…`. An automation's import job ended: the prompt run started with the preset
    /// on its videos (its `PromptRunCreated` is in the same append), or why none could start.
    AutomationRunStarted {
        automation_id: AutomationId,
        job_id: ImportJobId,
        run_id: Option<PromptRunId>,
        error_code: Option<String>,
        error: Option<String>,
    },
    /// Stream `job_…`. The listing of a connector job's source failed with a transient error
    /// (the storage could not be reached, or answered 5xx) below the attempt limit: the scan
    /// waits for a durable timer at `due_ms`, then lists again from the start (paths already
    /// discovered add nothing).
    ImportScanRetryScheduled {
        job_id: ImportJobId,
        attempt: u32,
        due_ms: u64,
        error: String,
    },
    /// Stream `job_…`. The scan's retry timer of `attempt` fired: the listing starts again when
    /// the job still takes work. The timer is gone either way.
    ImportScanRetryDue {
        job_id: ImportJobId,
        attempt: u32,
    },
    /// Stream `catalog`, in an index partition of a partitioned cluster (`cluster.md`,
    /// "Partitions"): the catalog's (partition 0's) events up to `through_seq` were read; the
    /// ones index partitions need (`mirrored_to_partitions`: API keys, connectors, prompts) are
    /// carried here, in the catalog's order, and folded as the catalog folded them. The
    /// partition's log stays self-contained: its replay needs no other partition.
    CatalogFollowed {
        through_seq: u64,
        events: Vec<MirroredEvent>,
    },
    /// Stream `outbox`, in an index partition of a partitioned cluster: a domain event raised
    /// here (`DomainEventRaised`, same append), with its data resolved as the API showed its
    /// resource right after it, for the catalog to deliver (webhooks live there: `cluster.md`).
    DomainEventPublished {
        event_id: String,
        name: DomainEventName,
        index_id: Option<IndexId>,
        data_json: String,
    },
    /// Stream `outbox`, in the catalog of a partitioned cluster: index partition `partition`'s
    /// log was read through `through_seq`; the deliveries of its published events up to there
    /// are in the same append (one per webhook and event: the cursor moves with them).
    PartitionIngested {
        partition: u16,
        through_seq: u64,
    },
    /// Stream `vid_…`. Deletion started (status `draining`), with what its fold needs of the
    /// video (which index's pages and counters it leaves), so no fold reads the video's row:
    /// what `VideoDeletionRequested` (39) is since the tables (`engine-spec/tables.md`).
    VideoDeletionStarted {
        video_id: VideoId,
        deletion_id: DeletionId,
        index_id: IndexId,
        created_at_ms: u64,
        media_ms: u64,
    },
    /// Stream `run_…`. The next page of the run's videos with what the fold needs of each (its
    /// media type), and the listing's cursor after it (an index's run: the last video's
    /// `(created_at_ms, video_id)`): what `PromptRunVideosAdded` (49) is since the tables.
    PromptRunVideosListed {
        run_id: PromptRunId,
        videos: Vec<(VideoId, MediaType)>,
        after: Option<(u64, VideoId)>,
        done: bool,
    },
    /// Stream `run_…`. The image vector the run's processor gave with a segment's answer (runs
    /// with `enable_image_embedding`; `engine-spec/processors.md`): little-endian `f32`s, at most
    /// 4,096. Appended right after the task's `PromptTaskSucceeded`, in the same decision; the
    /// search projection indexes it with the answer (`engine-spec/search.md`). Folds to nothing.
    PromptTaskImageVector {
        run_id: PromptRunId,
        task: RunTask,
        attempt: u32,
        vector_le: Vec<u8>,
    },
    /// Stream `auto_…`. Objects of an import automation's manifest that a whole listing, ended
    /// without error, did not list (deleted, or no longer matching): the manifest forgets them
    /// (by path key), and so does the found set, so an object put back later is found again.
    /// Appended just before that listing's `AutomationListed`, at most
    /// `GONE_PATHS_PER_EVENT` keys each.
    AutomationObjectsGone {
        automation_id: AutomationId,
        paths: Vec<[u8; 16]>,
    },
    /// Stream `auto_…`. The automation's index was deleted: it leaves the state, with its
    /// timers and work. Appended with the index's `IndexDeleted`, in the same decision.
    AutomationRemoved {
        automation_id: AutomationId,
    },
}
}

/// A catalog event carried into an index partition by [`Event::CatalogFollowed`], with the
/// catalog's sequence number, time and stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredEvent {
    pub seq: u64,
    pub at_ms: u64,
    pub stream: String,
    pub event: Event,
}

/// The catalog events an index partition folds too (`Event::CatalogFollowed`): what its
/// decisions and its API read of API keys, connectors and prompts. Key usage, webhooks and
/// deliveries stay in the catalog.
pub fn mirrored_to_partitions(event: &Event) -> bool {
    matches!(
        event,
        Event::ApiKeyCreated { .. }
            | Event::ApiKeyRevoked { .. }
            | Event::ApiKeyRotated { .. }
            | Event::ApiKeyDeleted { .. }
            | Event::ConnectorCreated { .. }
            | Event::ConnectorUpdated { .. }
            | Event::ConnectorTested { .. }
            | Event::ConnectorDeleted { .. }
            | Event::PromptCreated { .. }
            | Event::PromptUpdated { .. }
            | Event::PromptDeleted { .. }
    )
}

/// An object an import automation's listing saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedObject {
    pub path: String,
    pub size_bytes: u64,
    pub etag: Option<String>,
    pub last_modified_ms: u64,
}

/// What an automation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutomationConfig {
    /// Watch a connector's prefix; debounced imports, then a prompt run with the preset.
    Import {
        enabled: bool,
        connector_id: ConnectorId,
        source_prefix: String,
        file_pattern: String,
        recursive: bool,
        debounce_ms: u64,
        prompt_id: PromptId,
        preset: crate::run::RunSettings,
    },
    /// Export every run of the index that ends completed (or with failures).
    Export { enabled: bool, connector_id: ConnectorId, subpath: String },
}

/// What an export packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportKind {
    Index,
    PromptRun,
}

/// Where an export goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportDestination {
    /// Kept by Spool, for `GET /exports/{id}/download`.
    Download,
    /// Written to `object_path` (inside the connector's `export_base_path`) of a connector.
    Connector { connector_id: ConnectorId, base_path: String, subpath: String, object_path: String, uri: String },
}

/// A prompt's video-level extraction: one more processor call per video over its segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptVideoLevel {
    pub instructions_text: String,
    pub json_schema: String,
}

/// Output fields left out of semantic indexing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptSemantic {
    pub disabled_segment_fields: Vec<String>,
    pub disabled_video_level_fields: Vec<String>,
}

/// Where a one-object job's object is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobSource {
    /// `POST /videos/upload`: received whole into Spool's staging folder, under `staged_key`.
    Upload { file_name: String, staged_key: String, size_bytes: u64, sha256: [u8; 32] },
    /// `POST /videos`: the object at `path` of a connector, as `video_uri` named it.
    Uri { connector_id: ConnectorId, video_uri: String, path: String },
}

impl Event {
    /// The variant's position, equal to the index bincode writes.
    pub fn kind_index(&self) -> usize {
        self.event_kind() as usize
    }

    /// A `VideoCreated` with the probe's facts, as `VideoImported`; any other event unchanged.
    pub fn with_media(self, facts: MediaFacts, part: PartRange, parts: Vec<VideoId>) -> Event {
        match self {
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
            } => Event::VideoImported {
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
            },
            other => other,
        }
    }

    /// The variant's name, as `spool log show` prints it and `--kind` filters it.
    pub fn kind(&self) -> &'static str {
        EVENT_KINDS[self.kind_index()]
    }

    /// One fixed example of every variant, used by the golden-encoding tests.
    #[doc(hidden)]
    pub fn samples() -> Vec<Event> {
        use ulid::Ulid;
        let index_id = IndexId(Ulid::from_parts(1_764_000_000_000, 1));
        let deletion_id = DeletionId(Ulid::from_parts(1_764_000_000_001, 2));
        let key_id = ApiKeyId(Ulid::from_parts(1_764_000_000_002, 3));
        let connector_id = ConnectorId(Ulid::from_parts(1_764_000_000_003, 4));
        let job_id = ImportJobId(Ulid::from_parts(1_764_000_000_004, 5));
        let video_id = VideoId(Ulid::from_parts(1_764_000_000_005, 6));
        let prompt_id = PromptId(Ulid::from_parts(1_764_000_000_008, 10));
        let second_part = VideoId(Ulid::from_parts(1_764_000_000_006, 9));
        let run_id = PromptRunId(Ulid::from_parts(1_764_000_000_009, 11));
        let retry_id = RetryId(Ulid::from_parts(1_764_000_000_010, 12));
        let export_id = ExportId(Ulid::from_parts(1_764_000_000_011, 13));
        let automation_id = AutomationId(Ulid::from_parts(1_764_000_000_012, 14));
        let facts = crate::MediaFacts {
            container: "mp4".into(),
            duration_us: Some(2_000_000),
            bit_rate: Some(209_712),
            streams: vec![crate::StreamFacts {
                kind: crate::StreamKind::Video,
                codec: "h264".into(),
                width: Some(176),
                height: Some(144),
                frame_rate: Some((25, 1)),
                sample_rate: None,
                channels: None,
                duration_us: Some(2_000_000),
            }],
        };
        let webhook_id = WebhookId(Ulid::from_parts(1_764_000_000_006, 7));
        let delivery_id = DeliveryId(Ulid::from_parts(1_764_000_000_007, 8));
        let sealed = Sealed { owner: connector_id.to_string(), nonce: [9; 24], ciphertext: vec![1, 2, 3, 4, 5] };
        let mut hash = [0u8; 32];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = u8::try_from(i * 7).unwrap_or(0);
        }
        vec![
            Event::IndexCreated { index_id, name: "Library ünïcode".into(), user_id: "local".into() },
            Event::IndexDeletionRequested { index_id, deletion_id },
            Event::IndexDrained { index_id, deletion_id },
            Event::IndexDeleted { index_id, deletion_id },
            Event::ApiKeyCreated {
                key_id,
                name: "ci".into(),
                scopes: vec![Scope::Read, Scope::Write],
                key_prefix: "sk_live_abcd".into(),
                key_hash: hash,
                expires_at_ms: Some(1_800_000_000_000),
            },
            Event::ApiKeyRevoked { key_id },
            Event::ApiKeyRotated { key_id, key_prefix: "sk_live_efgh".into(), key_hash: hash },
            Event::ApiKeyDeleted { key_id },
            Event::ApiKeyUsed { key_id, used_at_ms: 1_764_000_100_000 },
            Event::ConnectorCreated {
                connector_id,
                provider: Provider::S3,
                name: "archive".into(),
                scopes: vec![ConnectorScope::Import, ConnectorScope::Export],
                import_mode: ImportMode::NewOnly,
                export_base_path: Some("exports/spool".into()),
                location: ConnectorLocation {
                    bucket: Some("media".into()),
                    region: Some("us-east-1".into()),
                    endpoint: Some("http://127.0.0.1:8014".into()),
                    ..ConnectorLocation::default()
                },
                credentials: Some(sealed.clone()),
            },
            Event::ConnectorUpdated {
                connector_id,
                name: Some("archive 2".into()),
                scopes: None,
                import_mode: Some(ImportMode::All),
                export_base_path: Some(None),
                credentials: Some(sealed.clone()),
            },
            Event::ConnectorTested { connector_id, success: false, error: Some("NoSuchBucket".into()) },
            Event::ConnectorDeleted { connector_id },
            Event::ImportJobCreated {
                job_id,
                connector_id,
                index_id,
                source_prefix: "videos/".into(),
                file_pattern: "*.{mp4,mov}".into(),
                recursive: true,
                import_mode: ImportMode::NewOnly,
            },
            Event::ImportFilesDiscovered {
                job_id,
                files: vec![
                    DiscoveredFile {
                        file_id: 0,
                        path: "videos/a.mp4".into(),
                        size_bytes: 1234,
                        etag: Some("\"e1\"".into()),
                        last_modified_ms: 1_764_000_000_500,
                        video_id: Some(video_id),
                        skip_reason: None,
                    },
                    DiscoveredFile {
                        file_id: 1,
                        path: "videos/b.txt".into(),
                        size_bytes: 3,
                        etag: None,
                        last_modified_ms: 1_764_000_000_600,
                        video_id: None,
                        skip_reason: Some("unsupported_format".into()),
                    },
                ],
            },
            Event::ImportScanCompleted { job_id },
            Event::ImportFileStarted { job_id, file_id: 0, attempt: 1 },
            Event::ImportFileImported { job_id, file_id: 0, video_id, bytes: 1234, sha256: hash },
            Event::ImportFileFailed {
                job_id,
                file_id: 0,
                attempt: 2,
                failure: FileFailure {
                    code: "source_object_missing".into(),
                    message: "NoSuchKey".into(),
                    retryable: false,
                },
            },
            Event::ImportJobCompleted { job_id },
            Event::ImportJobFailed { job_id, error: "listing failed".into() },
            Event::ImportJobCancelled { job_id },
            Event::ImportJobRetried { job_id, file_ids: vec![0, 7] },
            Event::VideoCreated {
                video_id,
                index_id,
                title: "a.mp4".into(),
                media_type: MediaType::Video,
                connector_id: Some(connector_id),
                source_path: "videos/a.mp4".into(),
                source_etag: Some("\"e1\"".into()),
                size_bytes: 1234,
                sha256: hash,
                media_path: "videos/vid_x/source.mp4".into(),
            },
            Event::DomainEventRaised {
                name: DomainEventName::MediaCreated,
                subject: "vid_x".into(),
                data_json: "{\"video_id\":\"vid_x\"}".into(),
            },
            Event::ImportJobCancelRequested { job_id },
            Event::ImportFileRetryScheduled {
                job_id,
                file_id: 3,
                attempt: 1,
                due_ms: 1_764_000_001_000,
                failure: FileFailure { code: "source_read_failed".into(), message: "timeout".into(), retryable: true },
            },
            Event::ImportFileRetryDue { job_id, file_id: 3, attempt: 1 },
            Event::IndexDescriptionSet { index_id, description: "Field recordings, 2024".into() },
            Event::WebhookCreated {
                webhook_id,
                name: "ops".into(),
                url: "https://hooks.example.com/spool".into(),
                events: vec![DomainEventName::ImportJobCompleted],
                index_ids: Some(vec![index_id]),
                metadata_json: Some("{\"team\":\"media\"}".into()),
                secret: sealed.clone(),
            },
            Event::WebhookUpdated {
                webhook_id,
                name: None,
                url: None,
                events: None,
                index_ids: None,
                metadata_json: Some(None),
                status: Some(WebhookStatus::Paused),
            },
            Event::WebhookSecretRotated { webhook_id, secret: sealed.clone(), grace_until_ms: 1_764_086_400_000 },
            Event::WebhookDeleted { webhook_id },
            Event::DeliveryCreated {
                delivery_id,
                webhook_id,
                event_type: DomainEventName::ImportJobCompleted,
                sequence: 1,
                index_id: Some(index_id),
                payload_json: "{\"event\":\"import_job.completed\"}".into(),
            },
            Event::DeliveryAttempted {
                delivery_id,
                webhook_id,
                attempt: 1,
                status_code: Some(503),
                response_excerpt: Some("busy".into()),
                error: None,
                duration_ms: 12,
                delivered: false,
                retry_at_ms: Some(1_764_000_005_000),
            },
            Event::DeliveryPending { delivery_id, webhook_id },
            Event::BulkRetryStarted {
                webhook_id,
                status: "failed".into(),
                from_ms: Some(1_764_000_000_000),
                to_ms: None,
            },
            Event::BulkRetryProgressed { webhook_id, after_ms: 1_764_000_000_007, after: delivery_id, retried: 3 },
            Event::BulkRetryFinished { webhook_id, retried: 3 },
            Event::VideoDeletionRequested { video_id, deletion_id },
            Event::VideoDrained { video_id, deletion_id },
            Event::VideoDeleted { video_id, deletion_id },
            Event::ImportFileProbed { job_id, file_id: 0, parts: vec![video_id, second_part] },
            Event::VideoImported {
                video_id,
                index_id,
                title: "clip.mp4 (part 1 of 2)".into(),
                media_type: MediaType::Video,
                connector_id: Some(connector_id),
                source_path: "videos/clip.mp4".into(),
                source_etag: Some("\"e1\"".into()),
                size_bytes: 52_428,
                sha256: [9; 32],
                media_path: "videos/06/vid_x.mp4".into(),
                facts,
                part: crate::PartRange { part_index: 0, part_count: 2, start_us: 0, end_us: 2_400_000_000 },
                parts: vec![video_id, second_part],
            },
            Event::ImportJobOpened {
                job_id,
                source: JobSource::Upload {
                    file_name: "clip.mp4".into(),
                    staged_key: "uploads/job_x".into(),
                    size_bytes: 52_428,
                    sha256: [7; 32],
                },
                index_id: Some(index_id),
                title: "A clip".into(),
            },
            Event::PromptCreated {
                prompt_id,
                user_id: "key_01".into(),
                name: "Scenes".into(),
                description: "".into(),
                prompt_text: "Describe the scene.".into(),
                json_schema: "{\"type\":\"object\"}".into(),
                video_level: Some(PromptVideoLevel {
                    instructions_text: "Summarise.".into(),
                    json_schema: "{\"type\":\"object\"}".into(),
                }),
                semantic: PromptSemantic {
                    disabled_segment_fields: vec!["raw".into()],
                    disabled_video_level_fields: vec![],
                },
            },
            Event::PromptUpdated {
                prompt_id,
                name: Some("Scenes v2".into()),
                description: None,
                prompt_text: None,
                json_schema: None,
                video_level: Some(None),
                semantic: None,
            },
            Event::PromptDeleted { prompt_id },
            Event::PromptRunCreated {
                run_id,
                prompt_id,
                prompt: RunPrompt {
                    name: "Facts".into(),
                    prompt_text: "Describe the segment.".into(),
                    json_schema: r#"{"type":"object"}"#.into(),
                    video_level: Some(PromptVideoLevel {
                        instructions_text: "Sum up.".into(),
                        json_schema: r#"{"type":"object"}"#.into(),
                    }),
                },
                target: RunTarget::Videos { video_ids: vec![video_id], index_id: Some(index_id) },
                settings: RunSettings {
                    video_segmentation: crate::run::Segmentation::Fixed,
                    audio_segmentation: crate::run::Segmentation::ContentAware,
                    video_segment_s: Some(10),
                    audio_segment_s: None,
                    processing_model: Some("probe".into()),
                    processor: "probe".into(),
                    enable_transcription: true,
                    enable_image_embedding: false,
                },
                executed_by: "key_x".into(),
            },
            Event::PromptRunVideosAdded { run_id, videos: vec![video_id, second_part], done: true },
            Event::PromptRunVideoPlanned {
                run_id,
                video: 1,
                segments: vec![
                    TimeRange { start_us: 0, end_us: 7_000_000 },
                    TimeRange { start_us: 7_000_000, end_us: 9_500_000 },
                ],
                method: "keyframes".into(),
            },
            Event::PromptTaskStarted { run_id, task: RunTask::Segment(3), attempt: 1 },
            Event::PromptTaskSucceeded {
                run_id,
                task: RunTask::Segment(3),
                attempt: 1,
                answer: TaskAnswer { metadata_json: r#"{"a":1}"#.into(), metadata_text: "a is 1".into() },
                usage: CallUsage { input_tokens: 120, output_tokens: 30, duration_ms: 42 },
            },
            Event::PromptTaskImageVector {
                run_id,
                task: RunTask::Segment(3),
                attempt: 1,
                vector_le: [0.5f32, -0.25].iter().flat_map(|x| x.to_le_bytes()).collect(),
            },
            Event::AutomationObjectsGone { automation_id, paths: vec![[3; 16], [9; 16]] },
            Event::AutomationRemoved { automation_id },
            Event::PromptTaskFailed {
                run_id,
                task: RunTask::Video(1),
                attempt: 2,
                failure: TaskFailure {
                    stage: crate::FailureStage::FieldExtraction,
                    code: "schema_mismatch".into(),
                    message: "\"a\" is a required property".into(),
                    retryable: true,
                    error_paths: vec!["/a".into()],
                },
                usage: Some(CallUsage { input_tokens: 1, output_tokens: 2, duration_ms: 3 }),
                retry_due_ms: Some(1_764_000_200_000),
            },
            Event::PromptTaskRetryDue { run_id, task: RunTask::Video(1), attempt: 2 },
            Event::PromptTaskRetryRequested { run_id, task: RunTask::Segment(3), retry_id },
            Event::PromptRunCancelRequested { run_id, requested_by: "key_x".into() },
            Event::PromptRunFinished { run_id, status: RunStatus::CompletedWithFailures, error: None },
            Event::ExportCreated {
                export_id,
                kind: ExportKind::Index,
                index_id: Some(index_id),
                run_ids: vec![run_id],
                destination: ExportDestination::Connector {
                    connector_id,
                    base_path: "exports/spool".into(),
                    subpath: "weekly".into(),
                    object_path: "exports/spool/weekly/exp_x.json".into(),
                    uri: "s3://media/exports/spool/weekly/exp_x.json".into(),
                },
                user_id: "key_x".into(),
            },
            Event::ExportStarted { export_id, attempt: 1 },
            Event::ExportGenerated { export_id, attempt: 1, size_bytes: 4096, sha256: hash },
            Event::ExportCompleted { export_id, attempt: 1 },
            Event::ExportFailed {
                export_id,
                attempt: 1,
                error: "the connector refused the write".into(),
                retry_due_ms: Some(1_764_000_300_000),
            },
            Event::ExportRetryDue { export_id, attempt: 1 },
            Event::ExportUploadStarted { export_id, attempt: 2, upload_id: "2~abcDEF".into() },
            Event::ExportPartWritten { export_id, part: 0, content_id: "\"9b2cf535f27731c974343645a3985328\"".into() },
            Event::AutomationSaved {
                automation_id,
                index_id,
                config: AutomationConfig::Import {
                    enabled: true,
                    connector_id,
                    source_prefix: "incoming/daily/".into(),
                    file_pattern: "*.mp4".into(),
                    recursive: true,
                    debounce_ms: 600_000,
                    prompt_id,
                    preset: RunSettings {
                        video_segmentation: crate::run::Segmentation::Smart,
                        audio_segmentation: crate::run::Segmentation::ContentAware,
                        video_segment_s: None,
                        audio_segment_s: None,
                        processing_model: None,
                        processor: "probe".into(),
                        enable_transcription: true,
                        enable_image_embedding: true,
                    },
                },
            },
            Event::AutomationPaused { automation_id },
            Event::AutomationResumed { automation_id },
            Event::AutomationExported { automation_id, run_id, export_id: Some(export_id), error: None },
            Event::AutomationWatchDue { automation_id },
            Event::AutomationObjectsFound {
                automation_id,
                objects: vec![WatchedObject {
                    path: "incoming/daily/a.mp4".into(),
                    size_bytes: 1_048_576,
                    etag: Some("\"9b2cf535f27731c974343645a3985328\"".into()),
                    last_modified_ms: 1_764_000_000_000,
                }],
            },
            Event::AutomationListed { automation_id, objects: 1, error: None, next_listing_ms: 1_764_000_060_000 },
            Event::AutomationImportStarted { automation_id, job_id: Some(job_id), files: 1, error: None },
            Event::AutomationRunStarted { automation_id, job_id, run_id: Some(run_id), error_code: None, error: None },
            Event::ImportScanRetryScheduled {
                job_id,
                attempt: 1,
                due_ms: 1_764_000_002_000,
                error: "listing the source failed: connection refused".into(),
            },
            Event::ImportScanRetryDue { job_id, attempt: 1 },
            Event::CatalogFollowed {
                through_seq: 42,
                events: vec![MirroredEvent {
                    seq: 41,
                    at_ms: 1_764_000_000_100,
                    stream: prompt_id.to_string(),
                    event: Event::PromptDeleted { prompt_id },
                }],
            },
            Event::DomainEventPublished {
                event_id: "evt_01KBRYZ5M0000000000000000S".into(),
                name: DomainEventName::MediaCreated,
                index_id: Some(index_id),
                data_json: r#"{"video_id":"vid_x"}"#.into(),
            },
            Event::PartitionIngested { partition: 3, through_seq: 77 },
            Event::VideoDeletionStarted {
                video_id,
                deletion_id,
                index_id,
                created_at_ms: 1_764_000_000_000,
                media_ms: 2_500,
            },
            Event::PromptRunVideosListed {
                run_id,
                videos: vec![(video_id, MediaType::Video), (second_part, MediaType::Image)],
                after: Some((1_764_000_000_000, second_part)),
                done: false,
            },
        ]
    }
}
