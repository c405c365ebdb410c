//! `pending_effects`: what must happen next, derived from the state alone. The runtime runs
//! each effect (at least once) and reports the outcome as a command; `decide` drops outcomes
//! that no longer fit, so a repeated effect is harmless.

use crate::State;
use crate::imports::{FileStatus, IMPORT_EFFECTS_PER_JOB_MAX};
use serde::Serialize;
use spool_model::{DeletionId, DeletionStage, ImportJobId, IndexId};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Effect {
    /// Stop the index's running work; answer `RecordIndexDrained`.
    DrainIndex { index_id: IndexId, deletion_id: DeletionId },
    /// Remove what the index owns; answer `RecordIndexPurged`.
    PurgeIndex { index_id: IndexId, deletion_id: DeletionId },
    /// List the job's source, page by page; answer `RecordScanPage`… then `RecordScanCompleted`
    /// (or `RecordImportJobFailed`).
    ScanImport { job_id: ImportJobId },
    /// Copy one file into the media store: `StartImportFile`, then `RecordFileImported` or
    /// `RecordFileFailed` for the same attempt.
    ImportFile { job_id: ImportJobId, file_id: u32, attempt: u32 },
    /// The job is done (or cancelled with nothing running): `RecordImportJobFinished`.
    FinishImportJob { job_id: ImportJobId },
}

/// Effects for the aggregates that have work (kept in small sets by `evolve`, so this does not
/// scan everything).
pub fn pending_effects(state: &State) -> Vec<Effect> {
    let mut out = Vec::new();
    for id in &state.active_imports {
        let Some(j) = state.imports.get(id) else { continue };
        if crate::imports::finish_due(j).is_some() {
            out.push(Effect::FinishImportJob { job_id: *id });
        }
        let live = j.takes_work();
        if live && !j.scan_done {
            out.push(Effect::ScanImport { job_id: *id });
        }
        let mut offered = 0;
        for file_id in &j.open_files {
            if offered >= IMPORT_EFFECTS_PER_JOB_MAX {
                break;
            }
            let Some(f) = j.files.get(*file_id as usize) else { continue };
            let attempt = match f.status {
                FileStatus::Pending if live => f.attempts + 1,
                // A started copy is resumed (after a crash), also while a cancel waits for it.
                FileStatus::Started if !j.status.is_terminal() => f.attempts,
                _ => continue,
            };
            out.push(Effect::ImportFile { job_id: *id, file_id: *file_id, attempt });
            offered += 1;
        }
    }
    for id in &state.deleting {
        let Some(d) = state.indexes.get(id).and_then(|i| i.deletion.as_ref()) else { continue };
        match d.stage {
            DeletionStage::Draining => out.push(Effect::DrainIndex { index_id: *id, deletion_id: d.deletion_id }),
            DeletionStage::Deleting => out.push(Effect::PurgeIndex { index_id: *id, deletion_id: d.deletion_id }),
            DeletionStage::Deleted => {}
        }
    }
    out
}

/// Effects that concern one stream (for `spool replay`).
pub fn pending_effects_for(state: &State, stream: &str) -> Vec<Effect> {
    pending_effects(state)
        .into_iter()
        .filter(|e| match e {
            Effect::DrainIndex { index_id, .. } | Effect::PurgeIndex { index_id, .. } => index_id.to_string() == stream,
            Effect::ScanImport { job_id } | Effect::ImportFile { job_id, .. } | Effect::FinishImportJob { job_id } => {
                job_id.to_string() == stream
            }
        })
        .collect()
}
