//! The folded state. Collections are BTreeMaps so iteration (and snapshots) are deterministic.

use serde::{Deserialize, Serialize};
use spool_model::{ApiKeyId, ConnectorId, ImportJobId, IndexId, VideoId};
use std::collections::{BTreeMap, BTreeSet};

pub use crate::machines::api_key::ApiKey;
pub use crate::machines::connector::{Connector, ConnectorTest};
pub use crate::machines::index::{Deletion, Index};

/// Bumped whenever the shape of [`State`] changes: an older snapshot is then ignored and the
/// state is rebuilt from the log.
pub const STATE_FORMAT: u32 = 36;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The sequence number of the last folded event.
    pub applied_seq: u64,
    pub indexes: BTreeMap<IndexId, Index>,
    /// Indexes whose deletion is not finished: the work `pending_effects` looks at.
    pub deleting: BTreeSet<IndexId>,
    pub api_keys: BTreeMap<ApiKeyId, ApiKey>,
    /// SHA-256 of the current secret → key.
    pub key_by_hash: BTreeMap<[u8; 32], ApiKeyId>,
    /// Keys ever created (deleted ones included): the first start creates an admin key only
    /// when this is 0.
    pub api_keys_created: u64,
    /// Connectors, deleted ones kept as tombstones so a repeated DELETE answers the same.
    pub connectors: BTreeMap<ConnectorId, Connector>,
    pub imports: BTreeMap<ImportJobId, crate::machines::import_job::ImportJob>,
    /// Jobs with work left (scanning, open files, or cancelled with copies still running).
    pub active_imports: BTreeSet<ImportJobId>,
    /// Jobs by (created_at, id), all of them and per status: `GET /import-jobs` pages from these.
    pub imports_by_created: BTreeSet<(u64, ImportJobId)>,
    pub imports_by_status: crate::workset::StatusSets<crate::machines::import_job::JobStatus, (u64, ImportJobId)>,
    /// How many live videos an index has (its pages are the `index_videos` table): a page's
    /// `total` and a run's estimate in O(1).
    pub index_counts: BTreeMap<IndexId, u64>,
    /// The milliseconds of media of an index's live videos: the estimate of a run over an
    /// index in O(1).
    pub index_media_ms: BTreeMap<IndexId, u64>,
    /// Durable timers, by (due, timer): derived from the events that set and clear them, so
    /// they survive restarts; the runtime fires the due ones as `FireTimer` commands.
    pub timers: BTreeSet<(u64, Timer)>,
    pub timer_due: BTreeMap<Timer, u64>,
    /// Webhooks (deleted ones kept as tombstones), and their deliveries not delivered (a
    /// delivered one is a row of the `deliveries` table: `engine-spec/tables.md`).
    pub webhooks: BTreeMap<spool_model::WebhookId, crate::machines::webhook::Webhook>,
    /// Webhooks by what they are subscribed to: (event name, an index it is limited to or `None`
    /// for every index, webhook), for each webhook not deleted. A domain event's deliveries read
    /// the entries of its name: O(matching webhooks · log n), not a walk of every webhook.
    pub subscriptions: BTreeSet<(spool_model::DomainEventName, Option<IndexId>, spool_model::WebhookId)>,
    pub deliveries: BTreeMap<spool_model::DeliveryId, crate::machines::webhook::Delivery>,
    /// Webhooks with pending deliveries: the work `pending_effects` looks at.
    pub webhooks_with_work: BTreeSet<spool_model::WebhookId>,
    /// Every video whose deletion started, with it (finished ones too: a video is visible
    /// while it has none, and a repeated DELETE answers the same): about 100 bytes per deleted
    /// video. A video itself is a row of the `videos` table (`engine-spec/tables.md`).
    pub video_deletions: BTreeMap<VideoId, crate::Deletion>,
    /// Videos whose deletion is not finished.
    pub videos_deleting: BTreeSet<VideoId>,
    /// Prompts (deleted ones kept as tombstones).
    pub prompts: BTreeMap<spool_model::PromptId, crate::machines::prompt::Prompt>,
    /// Prompt runs, by id, by (created_at, id), and per index; the runs that have not ended
    /// (the work `pending_effects` looks at); the runs each video is in, oldest first.
    pub prompt_runs: BTreeMap<spool_model::PromptRunId, crate::machines::prompt_run::PromptRun>,
    pub runs_by_created: BTreeSet<(u64, spool_model::PromptRunId)>,
    pub runs_by_index: BTreeMap<IndexId, BTreeSet<(u64, spool_model::PromptRunId)>>,
    pub active_runs: BTreeSet<spool_model::PromptRunId>,
    pub video_runs: BTreeMap<VideoId, Vec<spool_model::PromptRunId>>,
    /// Exports by id and by (created_at, id); the ones that have not ended.
    pub exports: BTreeMap<spool_model::ExportId, crate::machines::export::Export>,
    pub exports_by_created: BTreeSet<(u64, spool_model::ExportId)>,
    pub active_exports: BTreeSet<spool_model::ExportId>,
    /// Automations by id, by (index, kind), and those with runs waiting to be exported.
    pub automations: BTreeMap<spool_model::AutomationId, crate::machines::automation::Automation>,
    pub automation_by_index:
        BTreeMap<(IndexId, crate::machines::automation::AutomationKind), spool_model::AutomationId>,
    pub automations_with_work: BTreeSet<spool_model::AutomationId>,
    /// Import automations by the prompt their preset names: the prompt is in use.
    pub automations_by_prompt: BTreeSet<(spool_model::PromptId, spool_model::AutomationId)>,
    /// The import jobs automations made, and what became of each (its `execution`).
    pub automation_jobs: BTreeMap<ImportJobId, crate::machines::automation::JobExecution>,
    /// In an index partition of a partitioned cluster: the catalog's events are followed through
    /// this sequence number (`machines/catalog`). 0 elsewhere.
    pub catalog_seq: u64,
    /// In the catalog of a partitioned cluster: each index partition's log is ingested (its
    /// published domain events delivered) through this sequence number.
    pub ingested: BTreeMap<u16, u64>,
    /// Usage counters by calendar month (UTC), for the `usage` resource (`crate::usage`).
    pub usage: crate::usage::Usage,
    /// Rows for decisions and the rows the fold emitted (`crate::rows`): never snapshotted.
    #[serde(skip)]
    pub rows: crate::rows::Rows,
}

/// A durable timer: what to wake, decided by a machine and recorded in its event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Timer {
    /// Retry `attempt + 1` of a job's file after a retryable failure of `attempt`.
    ImportFileRetry { job_id: ImportJobId, file_id: u32, attempt: u32 },
    /// Listing `attempt + 1` of a connector job's source after a transient failure.
    ImportScanRetry { job_id: ImportJobId, attempt: u32 },
    /// Attempt `attempt + 1` of a webhook delivery.
    DeliveryRetry { delivery_id: spool_model::DeliveryId, attempt: u32 },
    /// Attempt `attempt + 1` of a prompt run's task.
    PromptTaskRetry { run_id: spool_model::PromptRunId, task: spool_model::RunTask, attempt: u32 },
    /// Attempt `attempt + 1` of an export.
    ExportRetry { export_id: spool_model::ExportId, attempt: u32 },
    /// The next listing of an import automation's location.
    AutomationWatch { automation_id: spool_model::AutomationId },
    /// An import automation's debounce: the import of what it found.
    AutomationDebounce { automation_id: spool_model::AutomationId },
}

impl State {
    /// A connector that is not deleted.
    pub fn live_connector(&self, id: &ConnectorId) -> Option<&Connector> {
        self.connectors.get(id).filter(|c| c.is_live())
    }

    /// A live (not deleted, not being deleted) index.
    pub fn live_index(&self, id: &IndexId) -> Option<&Index> {
        self.indexes.get(id).filter(|i| i.is_live())
    }

    /// The key whose current secret has this SHA-256 (`hash_secret`), if any.
    pub fn key_with_hash(&self, hash: &[u8; 32]) -> Option<&ApiKey> {
        self.key_by_hash.get(hash).and_then(|id| self.api_keys.get(id))
    }

    /// An empty state whose fold keeps every row it emits (`crate::rows`): the simulator's,
    /// which has no tables.
    pub fn kept_rows() -> State {
        let mut st = State::default();
        st.rows.emit = true;
        st.rows.complete = true;
        st
    }

    /// The immutable facts of a video, when this state holds them (`crate::rows`).
    pub fn video_row(&self, id: &VideoId) -> Option<&crate::machines::video::VideoRow> {
        self.rows.videos.get(id).map(|(_, r)| &**r)
    }

    /// A video whose row this state holds (loaded for the decision that reads it,
    /// `crate::rows::Need::Videos`), with its deletion if one started.
    pub fn video(&self, id: &VideoId) -> Option<crate::machines::video::Video> {
        self.video_row(id).map(|row| self.video_of(*id, row))
    }

    /// The video of a row (read from the table or loaded), with its deletion if one started.
    pub fn video_of(&self, id: VideoId, row: &crate::machines::video::VideoRow) -> crate::machines::video::Video {
        crate::machines::video::Video::of(id, row, self.video_deletions.get(&id))
    }

    /// Whether a video of this index would be visible (no deletion started, in a live index or
    /// the playground), without its row.
    pub fn video_shown(&self, id: &VideoId, index_id: &IndexId) -> bool {
        !self.video_deletions.contains_key(id)
            && (*index_id == crate::machines::import_job::PLAYGROUND || self.live_index(index_id).is_some())
    }

    /// Set (or move) a timer.
    pub fn set_timer(&mut self, timer: Timer, due_ms: u64) {
        if let Some(old) = self.timer_due.insert(timer.clone(), due_ms) {
            self.timers.remove(&(old, timer.clone()));
        }
        self.timers.insert((due_ms, timer));
    }

    pub fn clear_timer(&mut self, timer: &Timer) {
        if let Some(due) = self.timer_due.remove(timer) {
            self.timers.remove(&(due, timer.clone()));
        }
    }

    /// The earliest timer.
    pub fn next_timer(&self) -> Option<&(u64, Timer)> {
        self.timers.first()
    }

    /// Encode for a snapshot: [`STATE_FORMAT`] (4 bytes), the CRC-32 of the body (4 bytes), the
    /// body (bincode).
    pub fn to_snapshot(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        let body = bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default();
        let mut out = STATE_FORMAT.to_le_bytes().to_vec();
        out.extend(crc32fast::hash(&body).to_le_bytes());
        out.extend(body);
        out
    }

    /// Decode a snapshot; `None` when it was written by another state format, or is damaged (its
    /// checksum differs, or it does not decode to its exact length): the state is then rebuilt
    /// from the log. The checksum is read first, so damaged bytes are never decoded (a damaged
    /// length field once made the decoder ask for terabytes and abort the process).
    pub fn from_snapshot(bytes: &[u8]) -> Option<State> {
        let (head, rest) = bytes.split_at_checked(4)?;
        if u32::from_le_bytes(head.try_into().ok()?) != STATE_FORMAT {
            return None;
        }
        let (crc, body) = rest.split_at_checked(4)?;
        if u32::from_le_bytes(crc.try_into().ok()?) != crc32fast::hash(body) {
            return None;
        }
        let (state, used) = bincode::serde::decode_from_slice::<State, _>(body, bincode::config::standard()).ok()?;
        (used == body.len()).then_some(state)
    }
}
