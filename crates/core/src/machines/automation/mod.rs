//! The automation machine (engine-spec/machines/automation.md): an index's import automation
//! (a watched prefix, debounced imports, a prompt run with a preset) and its export automation
//! (every run of the index that ends completed, or completed with failures, exported once to a
//! destination connector). Both are saved whole, paused and resumed keeping their
//! configuration. The import automation lists its location on a durable watch timer, compares
//! each page with its manifest, and imports what it found once a durable debounce timer expires.

mod decide;
pub mod effects;
mod evolve;
pub mod view;

pub use decide::*;
pub use effects::{AutomationEffect, effects_for, work_key};
pub use evolve::evolve;

use crate::machines::import_job::PathKey;
use serde::{Deserialize, Serialize};
use spool_model::{
    AutomationConfig, AutomationId, ExportId, ImportJobId, IndexId, PromptId, PromptRunId, WatchedObject,
};
use std::collections::{BTreeMap, BTreeSet};

/// A debounce that objects keep re-arming fires at the latest this many intervals after the
/// first object it waits for was found (a bucket written to every few minutes still imports).
pub const DEBOUNCE_MAX_WAIT_FACTOR: u64 = 4;

/// When the debounce of objects first found at `since` fires, when the latest was found at
/// `at`: one interval after the latest, but never past `since` + the maximum wait.
pub fn debounce_due(at: u64, since: u64, debounce_ms: u64) -> u64 {
    at.saturating_add(debounce_ms).min(since.saturating_add(debounce_ms.saturating_mul(DEBOUNCE_MAX_WAIT_FACTOR)))
}

/// The debounce intervals an import automation may use: 5m, 10m, 1h, 1d.
pub const DEBOUNCE_INTERVALS: [(&str, u64); 4] =
    [("5m", 300_000), ("10m", 600_000), ("1h", 3_600_000), ("1d", 86_400_000)];
/// Runs exported at once per automation.
pub const AUTOMATION_EXPORTS_OFFERED_MAX: usize = 8;
/// How often an import automation lists its location, unless the runtime is told otherwise
/// (`SPOOL_AUTOMATION_WATCH_INTERVAL`).
pub const WATCH_INTERVAL_DEFAULT_MS: u64 = 60_000;
/// Objects in one `ImportFilesDiscovered` of an automation's job (the scan's page size).
pub const FOUND_FILES_PER_EVENT: usize = crate::machines::import_job::SCAN_PAGE_OBJECTS_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AutomationKind {
    Import,
    Export,
}

impl AutomationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AutomationKind::Import => "import",
            AutomationKind::Export => "export",
        }
    }

    pub fn of(config: &AutomationConfig) -> AutomationKind {
        match config {
            AutomationConfig::Import { .. } => AutomationKind::Import,
            AutomationConfig::Export { .. } => AutomationKind::Export,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutomationCommand {
    /// PUT: replace the index's automation of this kind (created on first save).
    SaveAutomation {
        index_id: IndexId,
        config: AutomationConfig,
        paused: bool,
    },
    PauseAutomation {
        index_id: IndexId,
        kind: AutomationKind,
    },
    ResumeAutomation {
        index_id: IndexId,
        kind: AutomationKind,
    },
    /// Effect outcome: export one completed run of the index.
    ExportRun {
        automation_id: AutomationId,
        run_id: PromptRunId,
    },
    /// Effect outcome: one page of the import automation's listing, compared with its manifest.
    RecordWatchPage {
        automation_id: AutomationId,
        listing: u64,
        objects: Vec<WatchedObject>,
    },
    /// Effect outcome: the listing ended (`error` when it failed); the next is due `interval_ms`
    /// later, or, after failures in a row, later still ([`listing_delay_ms`]). `gone`: the
    /// manifest's keys the whole listing did not list (empty when it failed).
    RecordWatchListed {
        automation_id: AutomationId,
        listing: u64,
        objects: u64,
        error: Option<String>,
        interval_ms: u64,
        #[serde(default)]
        gone: Vec<PathKey>,
    },
    /// Effect outcome: an automation's import job ended; start the preset's prompt run.
    StartRun {
        automation_id: AutomationId,
        job_id: ImportJobId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Automation {
    pub automation_id: AutomationId,
    pub index_id: IndexId,
    pub config: AutomationConfig,
    pub paused_at_ms: Option<u64>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub last_triggered_at_ms: Option<u64>,
    pub last_export_id: Option<ExportId>,
    pub last_error: Option<String>,
    /// Completed runs waiting to be exported (held while paused).
    pub pending_runs: BTreeSet<PromptRunId>,
    /// Runs handled already: each is exported once.
    pub exported_runs: BTreeSet<PromptRunId>,
    /// Import: every object seen under the location, by path key → a key of its etag (or last
    /// modification) and size. A listed object whose entry is missing or differs is found.
    pub manifest: BTreeMap<PathKey, PathKey>,
    /// Import: the objects found since the last import, by path (the latest listing of each).
    pub found: BTreeMap<String, WatchedObject>,
    /// Import: when the first of `found` was found (the debounce never waits past this plus
    /// [`DEBOUNCE_MAX_WAIT_FACTOR`] intervals, however often objects keep arriving).
    #[serde(default)]
    pub found_since_ms: Option<u64>,
    /// Import: a listing is due (saved or resumed active, or the watch timer fired).
    pub listing_due: bool,
    /// Import: the number of the listing due, counted up each time one becomes due. A page or
    /// an end of an earlier listing (one still running when the location was saved anew, say)
    /// decides nothing.
    pub listing: u64,
    pub last_listed_at_ms: Option<u64>,
    /// Import: listings that failed in a row (0 after one that did not): each waits longer.
    #[serde(default)]
    pub listing_failures: u32,
    pub last_import_job_id: Option<ImportJobId>,
    /// Import: the automation's jobs that ended and wait for their prompt run.
    pub jobs_ended: BTreeSet<ImportJobId>,
}

/// What became of an automation's import job (the job's `execution`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExecution {
    pub automation_id: AutomationId,
    /// Decided: the run started (`run_id`), or it could not (`error_code`, `error`).
    pub decided: bool,
    pub run_id: Option<PromptRunId>,
    pub error_code: Option<String>,
    pub error: Option<String>,
}

impl JobExecution {
    /// `pending`, `submitted` or `blocked` (the SDK's `ImportExecution.status`).
    pub fn status(&self) -> &'static str {
        match (self.decided, self.run_id) {
            (false, _) => "pending",
            (true, Some(_)) => "submitted",
            (true, None) => "blocked",
        }
    }
}

impl Automation {
    pub fn kind(&self) -> AutomationKind {
        AutomationKind::of(&self.config)
    }

    pub fn enabled(&self) -> bool {
        match &self.config {
            AutomationConfig::Import { enabled, .. } | AutomationConfig::Export { enabled, .. } => *enabled,
        }
    }

    /// Configured to run and not paused.
    pub fn active(&self) -> bool {
        self.enabled() && self.paused_at_ms.is_none()
    }

    /// Something for `effects_for` to offer once the automation is active.
    pub fn has_work(&self) -> bool {
        !self.pending_runs.is_empty() || !self.jobs_ended.is_empty() || self.listing_due
    }

    /// The prompt an import automation's preset names.
    pub fn prompt_id(&self) -> Option<PromptId> {
        match &self.config {
            AutomationConfig::Import { prompt_id, .. } => Some(*prompt_id),
            AutomationConfig::Export { .. } => None,
        }
    }

    pub fn debounce_ms(&self) -> Option<u64> {
        match &self.config {
            AutomationConfig::Import { debounce_ms, .. } => Some(*debounce_ms),
            AutomationConfig::Export { .. } => None,
        }
    }
}

/// Manifest keys an `AutomationObjectsGone` carries at most.
pub const GONE_PATHS_PER_EVENT: usize = 4096;
/// The longest wait between listings after failures in a row (unless the interval is longer).
pub const LISTING_BACKOFF_MAX_MS: u64 = 60 * 60 * 1000;

/// When the next listing is due after one that ended with `failures` failed listings in a row
/// (this one included): the interval, doubled for each failure, at most
/// [`LISTING_BACKOFF_MAX_MS`] (or the interval, when that is longer).
pub fn listing_delay_ms(interval_ms: u64, failures: u32) -> u64 {
    let interval = interval_ms.max(1);
    let doubled = interval.saturating_mul(1u64 << failures.min(20));
    doubled.min(LISTING_BACKOFF_MAX_MS.max(interval))
}

/// The manifest's key of what an object is now: its etag (or, without one, its last
/// modification) and its size. A new version of an object changes it.
pub fn version_key(o: &WatchedObject) -> PathKey {
    let version = match &o.etag {
        Some(e) => format!("e{e}\u{0}{}", o.size_bytes),
        None => format!("m{}\u{0}{}", o.last_modified_ms, o.size_bytes),
    };
    crate::machines::import_job::path_key(&version)
}

/// This machine in the registry (`crate::machines::for_each_machine!`).
pub struct Machine;

impl super::Machine for Machine {
    type Command = AutomationCommand;
    type Effect = AutomationEffect;
    type Key = spool_model::AutomationId;
    const NOT_FOUND: &'static [(&'static str, &'static str)] = &[("automation", "automation_not_found")];

    fn decide(
        state: &crate::State,
        cmd: &AutomationCommand,
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

    fn effects_for(state: &crate::State, key: spool_model::AutomationId) -> Vec<AutomationEffect> {
        effects_for(state, key)
    }

    fn with_work(state: &crate::State) -> Vec<spool_model::AutomationId> {
        state.automations_with_work.iter().copied().collect()
    }

    fn touched_by(state: &crate::State, event: &spool_model::Event) -> Option<crate::WorkKey> {
        effects::touched_by(state, event)
    }

    fn fire(
        state: &crate::State,
        timer: &crate::Timer,
        ctx: &mut crate::Ctx,
    ) -> Option<Result<crate::Decision, crate::DomainError>> {
        match timer {
            crate::Timer::AutomationWatch { .. } => Some(fire_watch(state, timer)),
            crate::Timer::AutomationDebounce { .. } => Some(fire_debounce(state, timer, ctx)),
            _ => None,
        }
    }
}
