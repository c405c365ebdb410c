use super::{FileStatus, IMPORT_EFFECTS_PER_JOB_MAX, finish_due};
use crate::{State, WorkKey};
use serde::Serialize;
use spool_model::{Event, ImportJobId};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ImportEffect {
    /// List the job's source, page by page; answer `RecordScanPage`… then `RecordScanCompleted`
    /// (or `RecordScanFailed`, `RecordImportJobFailed`).
    ScanImport { job_id: ImportJobId },
    /// Copy one file into the media store: `StartImportFile`, then `RecordFileImported` or
    /// `RecordFileFailed` for the same attempt.
    ImportFile { job_id: ImportJobId, file_id: u32, attempt: u32 },
    /// The job is done (or cancelled with nothing running): `RecordImportJobFinished`.
    FinishImportJob { job_id: ImportJobId },
}

impl ImportEffect {
    pub fn work_key(&self) -> WorkKey {
        match self {
            ImportEffect::ScanImport { job_id }
            | ImportEffect::ImportFile { job_id, .. }
            | ImportEffect::FinishImportJob { job_id } => WorkKey::Import(*job_id),
        }
    }
}

/// The job whose effects this event can change.
pub fn work_key(event: &Event) -> Option<WorkKey> {
    match event {
        Event::ImportJobCreated { job_id, .. }
        | Event::ImportJobOpened { job_id, .. }
        | Event::ImportFileProbed { job_id, .. }
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
        | Event::ImportScanRetryScheduled { job_id, .. }
        | Event::ImportScanRetryDue { job_id, .. }
        | Event::ImportJobCancelRequested { job_id } => Some(WorkKey::Import(*job_id)),
        _ => None,
    }
}

/// The effects one job needs now. Bounded: at most [`IMPORT_EFFECTS_PER_JOB_MAX`] copies are
/// offered, read from the job's per-status sets, whatever the size of the job.
pub fn effects_for(state: &State, id: ImportJobId) -> Vec<ImportEffect> {
    let mut out = Vec::new();
    let Some(j) = state.imports.get(&id) else { return out };
    if j.status.is_terminal() {
        return out;
    }
    if finish_due(j).is_some() {
        out.push(ImportEffect::FinishImportJob { job_id: id });
    }
    let live = j.takes_work();
    if live && !j.scan_done && !super::scan_retry_pending(state, j) {
        out.push(ImportEffect::ScanImport { job_id: id });
    }
    // A started copy is resumed (after a crash), also while a cancel waits for it.
    for file_id in j.files_in(FileStatus::Started).take(IMPORT_EFFECTS_PER_JOB_MAX) {
        let Some(f) = j.files.get(&file_id) else { continue };
        out.push(ImportEffect::ImportFile { job_id: id, file_id, attempt: f.attempts });
    }
    if live {
        let room = IMPORT_EFFECTS_PER_JOB_MAX.saturating_sub(j.running());
        for file_id in j.files_in(FileStatus::Pending).take(room) {
            let Some(f) = j.files.get(&file_id) else { continue };
            out.push(ImportEffect::ImportFile { job_id: id, file_id, attempt: f.attempts + 1 });
        }
    }
    out
}
