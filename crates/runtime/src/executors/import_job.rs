//! The import job machine's executor: scan (list the source in pages) and copy one file into
//! the media store; its import slots bound the copies running at once over all jobs.

use crate::Runtime;
use spool_core::imports::{ListedObject, SCAN_PAGE_OBJECTS_MAX};
use spool_core::{Command, DomainError, ImportEffect};
use spool_model::{ConnectorId, FileFailure, ImportJobId};
use spool_storage::BrowseRequest;
use std::sync::Arc;

/// Copies at once over all jobs (`SPOOL_IMPORT_CONCURRENCY`).
pub(crate) struct ImportExecutor {
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// What a scan reads of its job.
struct ScanSpec {
    index_id: spool_model::IndexId,
    connector_id: ConnectorId,
    source_prefix: String,
    file_pattern: String,
    recursive: bool,
}

/// The commands that record an import effect given up after repeated panics.
pub(crate) fn give_up(effect: &ImportEffect, message: String) -> Vec<Command> {
    use spool_core::ImportCommand;
    match effect {
        ImportEffect::ScanImport { job_id } | ImportEffect::FinishImportJob { job_id } => {
            vec![Command::Import(ImportCommand::RecordImportJobFailed { job_id: *job_id, error: message })]
        }
        ImportEffect::ImportFile { job_id, file_id, attempt } => {
            // The attempt may not have started when the executor panicked.
            let failure = FileFailure { code: "internal_error".into(), message, retryable: false };
            vec![
                Command::Import(ImportCommand::StartImportFile {
                    job_id: *job_id,
                    file_id: *file_id,
                    attempt: *attempt,
                }),
                Command::Import(ImportCommand::RecordFileFailed {
                    job_id: *job_id,
                    file_id: *file_id,
                    attempt: *attempt,
                    failure,
                }),
            ]
        }
    }
}

impl Runtime {
    pub(super) async fn scan(self: &Arc<Self>, job_id: &ImportJobId) -> Result<(), crate::RuntimeError> {
        // The few fields the scan needs, not a copy of the job (which holds every file).
        let Some(job) = self.read(|st| {
            st.imports.get(job_id).map(|j| ScanSpec {
                index_id: j.index_id,
                connector_id: j.connector_id,
                source_prefix: j.source_prefix.clone(),
                file_pattern: j.file_pattern.clone(),
                recursive: j.recursive,
            })
        }) else {
            return Ok(());
        };
        let fail = |error: String| {
            Command::Import(spool_core::ImportCommand::RecordImportJobFailed { job_id: *job_id, error })
        };
        if self.read(|st| st.live_index(&job.index_id).is_none()) {
            self.execute(fail(format!("index {} is gone", job.index_id))).await?;
            return Ok(());
        }
        let store = match self.connector_store(&job.connector_id) {
            Ok(s) => s,
            Err(e) => {
                self.execute(fail(e)).await?;
                return Ok(());
            }
        };
        if spool_model::failpoint("scan_panic") {
            panic!("failpoint scan_panic");
        }
        let req = BrowseRequest {
            prefix: job.source_prefix.clone(),
            pattern: job.file_pattern.clone(),
            recursive: job.recursive,
            max_entries: usize::MAX,
        };
        let rt = self.clone();
        let scanned = spool_storage::scan_pages(&store, &req, SCAN_PAGE_OBJECTS_MAX, |page| {
            let rt = rt.clone();
            async move {
                let objects = page
                    .into_iter()
                    .map(|o| ListedObject {
                        path: o.path,
                        size_bytes: o.size_bytes,
                        etag: o.etag,
                        last_modified_ms: o.last_modified_ms,
                    })
                    .collect();
                rt.execute(Command::Import(spool_core::ImportCommand::RecordScanPage { job_id: *job_id, objects }))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        match scanned {
            Ok(()) => self
                .execute(Command::Import(spool_core::ImportCommand::RecordScanCompleted { job_id: *job_id }))
                .await
                .map(|_| ()),
            Err(e) => self.execute(fail(format!("listing the source failed: {e}"))).await.map(|_| ()),
        }
    }

    pub(super) async fn import_file(
        self: &Arc<Self>,
        job_id: &ImportJobId,
        file_id: u32,
        attempt: u32,
    ) -> Result<(), crate::RuntimeError> {
        let Ok(_slot) = self.executors.imports.slots.clone().acquire_owned().await else { return Ok(()) };
        match self
            .execute(Command::Import(spool_core::ImportCommand::StartImportFile { job_id: *job_id, file_id, attempt }))
            .await
        {
            Ok(_) => {}
            // The job was cancelled or ended, or the attempt is stale: nothing to do. Any other
            // refusal is a bug and is reported as the error it is.
            Err(crate::RuntimeError::Domain(DomainError::Stale(_))) => return Ok(()),
            Err(e) => return Err(e),
        }
        let Some((connector_id, file)) = self.read(|st| {
            st.imports.get(job_id).and_then(|j| j.files.get(file_id as usize).map(|f| (j.connector_id, f.file.clone())))
        }) else {
            return Ok(());
        };
        let Some(video_id) = file.video_id else { return Ok(()) };
        let outcome = if spool_model::failpoint("import_copy_fails_first_attempt") && attempt == 1 {
            Err(FileFailure {
                code: "source_read_failed".into(),
                message: "failpoint import_copy_fails_first_attempt".into(),
                retryable: true,
            })
        } else {
            match self.connector_store(&connector_id) {
                Err(e) => Err(FileFailure { code: "connector_unavailable".into(), message: e, retryable: true }),
                Ok(src) => {
                    let dst_path = spool_core::imports::media_path(&video_id, &file.path);
                    spool_storage::copy_object(&src, &file.path, &self.executors.media, &dst_path)
                        .await
                        .map_err(|e| FileFailure { code: e.code.into(), message: e.message, retryable: e.retryable })
                }
            }
        };
        let copied = outcome.is_ok();
        let cmd = match outcome {
            Ok((bytes, sha256)) => Command::Import(spool_core::ImportCommand::RecordFileImported {
                job_id: *job_id,
                file_id,
                attempt,
                bytes,
                sha256,
            }),
            Err(failure) => Command::Import(spool_core::ImportCommand::RecordFileFailed {
                job_id: *job_id,
                file_id,
                attempt,
                failure,
            }),
        };
        self.execute(cmd).await?;
        // A copy that finished after its job ended (the index was deleted meanwhile) is not
        // recorded: remove what it wrote, so no media outlives its index.
        if copied {
            let kept = self.read(|st| {
                st.imports
                    .get(job_id)
                    .and_then(|j| j.files.get(file_id as usize))
                    .is_some_and(|f| f.status == spool_core::imports::FileStatus::Imported && f.attempts == attempt)
            });
            if !kept {
                use object_store::ObjectStoreExt;
                let dst = object_store::path::Path::from(spool_core::imports::media_path(&video_id, &file.path));
                match self.executors.media.inner.delete(&dst).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => tracing::warn!(error = %e, "an unrecorded copy could not be removed"),
                }
            }
        }
        Ok(())
    }
}
