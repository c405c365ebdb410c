//! `pending_effects`: what must happen next, derived from the state alone. The runtime runs
//! each effect (at least once) and reports the outcome as a command; `decide` drops outcomes
//! that no longer fit, so a repeated effect is harmless.

use crate::State;
use crate::imports::{FileStatus, IMPORT_EFFECTS_PER_JOB_MAX};
use serde::Serialize;
use spool_model::{DeletionId, DeletionStage, Event, ImportJobId, IndexId};

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

/// The aggregate whose effects an event can change: after a batch the runtime offers the
/// effects of exactly these, so the work per event does not grow with the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum WorkKey {
    Index(IndexId),
    ImportJob(ImportJobId),
}

/// The aggregate with work that an event concerns, if any.
pub fn work_key(event: &Event) -> Option<WorkKey> {
    Some(match event {
        Event::IndexDeletionRequested { index_id, .. }
        | Event::IndexDrained { index_id, .. }
        | Event::IndexDeleted { index_id, .. } => WorkKey::Index(*index_id),
        Event::ImportJobCreated { job_id, .. }
        | Event::ImportFilesDiscovered { job_id, .. }
        | Event::ImportScanCompleted { job_id }
        | Event::ImportFileStarted { job_id, .. }
        | Event::ImportFileImported { job_id, .. }
        | Event::ImportFileFailed { job_id, .. }
        | Event::ImportJobCompleted { job_id }
        | Event::ImportJobFailed { job_id, .. }
        | Event::ImportJobCancelled { job_id }
        | Event::ImportJobRetried { job_id, .. }
        | Event::ImportFileRetryScheduled { job_id, .. }
        | Event::ImportFileRetryDue { job_id, .. }
        | Event::ImportJobCancelRequested { job_id } => WorkKey::ImportJob(*job_id),
        _ => return None,
    })
}

impl Effect {
    /// The aggregate this effect works for.
    pub fn work_key(&self) -> WorkKey {
        match self {
            Effect::DrainIndex { index_id, .. } | Effect::PurgeIndex { index_id, .. } => WorkKey::Index(*index_id),
            Effect::ScanImport { job_id } | Effect::ImportFile { job_id, .. } | Effect::FinishImportJob { job_id } => {
                WorkKey::ImportJob(*job_id)
            }
        }
    }
}

/// The effects one aggregate needs now. Bounded: at most [`IMPORT_EFFECTS_PER_JOB_MAX`] copies
/// of a job are offered, read from its per-status sets, whatever the size of the job.
pub fn effects_for(state: &State, key: WorkKey) -> Vec<Effect> {
    let mut out = Vec::new();
    match key {
        WorkKey::ImportJob(id) => {
            let Some(j) = state.imports.get(&id) else { return out };
            if j.status.is_terminal() {
                return out;
            }
            if crate::imports::finish_due(j).is_some() {
                out.push(Effect::FinishImportJob { job_id: id });
            }
            let live = j.takes_work();
            if live && !j.scan_done {
                out.push(Effect::ScanImport { job_id: id });
            }
            // A started copy is resumed (after a crash), also while a cancel waits for it.
            for file_id in j.files_in(FileStatus::Started).take(IMPORT_EFFECTS_PER_JOB_MAX) {
                let Some(f) = j.files.get(file_id as usize) else { continue };
                out.push(Effect::ImportFile { job_id: id, file_id, attempt: f.attempts });
            }
            if live {
                let room = IMPORT_EFFECTS_PER_JOB_MAX.saturating_sub(j.running());
                for file_id in j.files_in(FileStatus::Pending).take(room) {
                    let Some(f) = j.files.get(file_id as usize) else { continue };
                    out.push(Effect::ImportFile { job_id: id, file_id, attempt: f.attempts + 1 });
                }
            }
        }
        WorkKey::Index(id) => {
            let Some(d) = state.indexes.get(&id).and_then(|i| i.deletion.as_ref()) else { return out };
            match d.stage {
                DeletionStage::Draining => out.push(Effect::DrainIndex { index_id: id, deletion_id: d.deletion_id }),
                DeletionStage::Deleting => out.push(Effect::PurgeIndex { index_id: id, deletion_id: d.deletion_id }),
                DeletionStage::Deleted => {}
            }
        }
    }
    out
}

/// Every effect pending now: the effects of each aggregate in the work sets `evolve` keeps
/// (`State::active_imports`, `State::deleting`). Used at start; afterwards effects are offered
/// per touched aggregate ([`effects_for`]).
pub fn pending_effects(state: &State) -> Vec<Effect> {
    let mut out = Vec::new();
    for id in &state.active_imports {
        out.extend(effects_for(state, WorkKey::ImportJob(*id)));
    }
    for id in &state.deleting {
        out.extend(effects_for(state, WorkKey::Index(*id)));
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
