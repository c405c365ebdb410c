use super::*;
use crate::{State, WorkKey};
use spool_model::Event;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ExportEffect {
    /// Make the artifact (or reuse the one kept) and deliver it: `StartExport`, then
    /// `RecordExportGenerated`, then `RecordExportCompleted` or `RecordExportFailed`.
    RunExport { export_id: ExportId, attempt: u32 },
}

impl ExportEffect {
    pub fn work_key(&self) -> WorkKey {
        match self {
            ExportEffect::RunExport { export_id, .. } => WorkKey::Export(*export_id),
        }
    }
}

pub fn work_key(event: &Event) -> Option<WorkKey> {
    match event {
        Event::ExportCreated { export_id, .. }
        | Event::ExportStarted { export_id, .. }
        | Event::ExportGenerated { export_id, .. }
        | Event::ExportCompleted { export_id, .. }
        | Event::ExportFailed { export_id, .. }
        | Event::ExportRetryDue { export_id, .. }
        | Event::ExportUploadStarted { export_id, .. }
        | Event::ExportPartWritten { export_id, .. } => Some(WorkKey::Export(*export_id)),
        _ => None,
    }
}

/// One effect at most: the next attempt of a pending export, or the started one resumed.
pub fn effects_for(state: &State, id: ExportId) -> Vec<ExportEffect> {
    let Some(e) = state.exports.get(&id) else { return Vec::new() };
    if e.status.is_terminal() || e.waiting {
        return Vec::new();
    }
    vec![ExportEffect::RunExport { export_id: id, attempt: e.next_attempt }]
}
