//! The automation machine (engine-spec/machines/automation.md): an index's import automation
//! (a watched prefix, debounced imports, a prompt run with a preset) and its export automation
//! (every run of the index that ends completed, or completed with failures, exported once to a
//! destination connector). Both are saved whole, paused and resumed keeping their
//! configuration. The export automation runs; the import automation's watch is not built yet
//! (its configuration is stored and checked).

mod decide;
pub mod effects;
mod evolve;
pub mod view;

pub use decide::*;
pub use effects::{AutomationEffect, effects_for, work_key};
pub use evolve::evolve;

use serde::{Deserialize, Serialize};
use spool_model::{AutomationConfig, AutomationId, ExportId, IndexId, PromptRunId};
use std::collections::BTreeSet;

/// The debounce intervals an import automation may use: 5m, 10m, 1h, 1d.
pub const DEBOUNCE_INTERVALS: [(&str, u64); 4] =
    [("5m", 300_000), ("10m", 600_000), ("1h", 3_600_000), ("1d", 86_400_000)];
/// Runs exported at once per automation.
pub const AUTOMATION_EXPORTS_OFFERED_MAX: usize = 8;

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
}
