//! The export machine (engine-spec/machines/export.md): the results of an index (its runs, or
//! some of them) or of one prompt run, packaged as one JSON document that is made once, kept,
//! and then offered as a download or written to a connector inside its `export_base_path`.
//! `pending → processing → completed | failed`; transient storage failures come back on durable
//! timers.

mod decide;
mod effects;
mod evolve;
pub mod view;

pub use decide::*;
pub use effects::{ExportEffect, effects_for, work_key};
pub use evolve::evolve;

use serde::{Deserialize, Serialize};
use spool_model::{ConnectorId, ExportDestination, ExportId, ExportKind, IndexId, PromptRunId};

/// Attempts of an export before a retryable failure fails it.
pub const EXPORT_ATTEMPTS_MAX: u32 = 3;
/// Wait before attempt n+1 after a retryable failure of attempt n (index n-1), ±20%.
pub const EXPORT_RETRY_BACKOFF_MS: [u64; 2] = [2_000, 10_000];
/// Size of one part of a multipart upload (the last may be smaller; S3 wants at least 5 MiB
/// for every other part). `SPOOL_EXPORT_PART_BYTES` changes it, for tests.
pub const EXPORT_PART_BYTES_DEFAULT: u64 = 8 * 1024 * 1024;
/// Longest `destination_subpath`.
pub const SUBPATH_CHARS_MAX: usize = 512;
/// Runs named by one index export.
pub const EXPORT_RUN_IDS_MAX: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportCommand {
    CreateExport {
        kind: ExportKind,
        /// The index (`Index`) or the run (`PromptRun`), as the path named it.
        target: String,
        run_ids: Vec<PromptRunId>,
        connector_id: Option<ConnectorId>,
        subpath: Option<String>,
        user_id: String,
    },
    StartExport {
        export_id: ExportId,
        attempt: u32,
    },
    RecordExportGenerated {
        export_id: ExportId,
        attempt: u32,
        size_bytes: u64,
        sha256: [u8; 32],
    },
    RecordExportCompleted {
        export_id: ExportId,
        attempt: u32,
    },
    RecordExportFailed {
        export_id: ExportId,
        attempt: u32,
        error: String,
        retryable: bool,
    },
    RecordUploadStarted {
        export_id: ExportId,
        attempt: u32,
        upload_id: String,
    },
    RecordPartWritten {
        export_id: ExportId,
        attempt: u32,
        part: u32,
        content_id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ExportStatus {
    Pending,
    Processing,
    Completed,
    Failed,
}

impl ExportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportStatus::Pending => "pending",
            ExportStatus::Processing => "processing",
            ExportStatus::Completed => "completed",
            ExportStatus::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, ExportStatus::Completed | ExportStatus::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    pub export_id: ExportId,
    pub kind: ExportKind,
    pub index_id: Option<IndexId>,
    /// The run of a run export; the runs an index export was limited to (empty: all).
    pub run_ids: Vec<PromptRunId>,
    pub destination: ExportDestination,
    pub user_id: String,
    pub status: ExportStatus,
    /// Started attempts; `waiting`: a retry timer is set.
    pub attempts: u32,
    pub waiting: bool,
    /// The attempt the next effect runs: the started one (resumed after a crash), or the one
    /// after a failure once its timer fired.
    pub next_attempt: u32,
    pub available_at_ms: u64,
    pub created_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    pub completed_at_ms: Option<u64>,
    pub size_bytes: Option<u64>,
    pub sha256: Option<[u8; 32]>,
    /// The last failure (kept while a retry waits), and the final one.
    pub error: Option<String>,
    /// A multipart upload to the connector: its id and the ids of the parts stored, in order.
    pub upload_id: Option<String>,
    pub parts: Vec<String>,
}

impl Export {
    /// The target's id as the API shows it.
    pub fn target_id(&self) -> String {
        match self.kind {
            ExportKind::Index => self.index_id.map(|i| i.to_string()).unwrap_or_default(),
            ExportKind::PromptRun => self.run_ids.first().map(|r| r.to_string()).unwrap_or_default(),
        }
    }

    /// Whether an attempt runs (or may start) now.
    pub fn running(&self) -> bool {
        self.status == ExportStatus::Processing && !self.waiting
    }
}

/// Where an export's artifact is kept, inside the data directory.
pub fn artifact_path(export_id: &ExportId) -> String {
    format!("exports/{export_id}.json")
}

/// This machine in the registry (`crate::machines::for_each_machine!`).
pub struct Machine;

impl super::Machine for Machine {
    type Command = ExportCommand;
    type Effect = ExportEffect;
    type Key = spool_model::ExportId;

    fn decide(
        state: &crate::State,
        cmd: &ExportCommand,
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

    fn effects_for(state: &crate::State, key: spool_model::ExportId) -> Vec<ExportEffect> {
        effects_for(state, key)
    }

    fn with_work(state: &crate::State) -> Vec<spool_model::ExportId> {
        state.active_exports.iter().copied().collect()
    }

    fn fire(
        state: &crate::State,
        timer: &crate::Timer,
        _ctx: &mut crate::Ctx,
    ) -> Option<Result<crate::Decision, crate::DomainError>> {
        match timer {
            crate::Timer::ExportRetry { .. } => Some(fire_retry(state, timer)),
            _ => None,
        }
    }
}
