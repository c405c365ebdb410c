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
    /// A URI job's one object.
    one_object: Option<String>,
}

/// The commands that record an import effect given up after repeated panics.
pub(crate) fn give_up(effect: &ImportEffect, code: &str, message: String) -> Vec<Command> {
    use spool_core::ImportCommand;
    match effect {
        ImportEffect::ScanImport { job_id } | ImportEffect::FinishImportJob { job_id } => {
            vec![Command::Import(ImportCommand::RecordImportJobFailed { job_id: *job_id, error: message })]
        }
        ImportEffect::ImportFile { job_id, file_id, attempt } => {
            // The attempt may not have started when the executor panicked.
            let failure = FileFailure { code: code.into(), message, retryable: false };
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
                one_object: match &j.source {
                    Some(spool_model::JobSource::Uri { path, .. }) => Some(path.clone()),
                    _ => None,
                },
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
        if let Some(path) = job.one_object {
            // A registered object (`POST /videos`): look it up, no listing.
            use object_store::ObjectStoreExt;
            return match store.inner.head(&object_store::path::Path::from(path.as_str())).await {
                Ok(meta) => {
                    let object = ListedObject {
                        path,
                        size_bytes: meta.size,
                        etag: meta.e_tag,
                        last_modified_ms: spool_model::num::non_negative(meta.last_modified.timestamp_millis()),
                    };
                    let page = spool_core::ImportCommand::RecordScanPage { job_id: *job_id, objects: vec![object] };
                    self.execute(Command::Import(page)).await?;
                    self.execute(Command::Import(spool_core::ImportCommand::RecordScanCompleted { job_id: *job_id }))
                        .await
                        .map(|_| ())
                }
                Err(object_store::Error::NotFound { .. }) => {
                    self.execute(fail(format!("the object {path:?} does not exist in the connector"))).await.map(|_| ())
                }
                Err(e) => {
                    // A storage that cannot be reached is asked again later, as a listing is.
                    let cmd = spool_core::ImportCommand::RecordScanFailed {
                        job_id: *job_id,
                        error: format!("looking up the object failed: {}", store.describe(&e)),
                        transient: matches!(e, object_store::Error::Generic { .. }),
                    };
                    self.execute(Command::Import(cmd)).await.map(|_| ())
                }
            };
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
            Err(e) => {
                let cmd = spool_core::ImportCommand::RecordScanFailed {
                    job_id: *job_id,
                    error: format!("listing the source failed: {e}"),
                    transient: e.is_transient(),
                };
                self.execute(Command::Import(cmd)).await.map(|_| ())
            }
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
        let Some((connector_id, file, staged)) = self.read(|st| {
            st.imports.get(job_id).and_then(|j| {
                let staged = match &j.source {
                    Some(spool_model::JobSource::Upload { staged_key, .. }) => Some(staged_key.clone()),
                    _ => None,
                };
                j.files.get(&file_id).map(|f| (j.connector_id, f.file.clone(), staged))
            })
        }) else {
            return Ok(());
        };
        let Some(video_id) = file.video_id else { return Ok(()) };
        let dst_path = spool_core::imports::media_path(&video_id, &file.path);
        let outcome = if spool_model::failpoint("import_copy_fails_first_attempt") && attempt == 1 {
            Err(FileFailure {
                code: "source_read_failed".into(),
                message: "failpoint import_copy_fails_first_attempt".into(),
                retryable: true,
            })
        } else {
            let source = match &staged {
                Some(key) => Ok((self.executors.uploads.clone(), key.clone())),
                None => self.connector_store(&connector_id).map(|s| (s, file.path.clone())).map_err(|e| FileFailure {
                    code: "connector_unavailable".into(),
                    message: e,
                    retryable: true,
                }),
            };
            match source {
                Err(f) => Err(f),
                Ok((src, src_path)) => {
                    // Copy and probe in one blocking task (for folders on both sides).
                    let ext = spool_core::imports::extension(&file.path);
                    let probe = move |stored: &std::path::Path| spool_media::probe_file(stored, &ext);
                    match self
                        .store_media(&src, &src_path, &dst_path, Some(file.size_bytes), probe, Result::is_ok)
                        .await
                    {
                        Err(e) => Err(FileFailure { code: e.code.into(), message: e.message, retryable: e.retryable }),
                        Ok(((bytes, sha256), Ok(facts))) => Ok((bytes, sha256, facts)),
                        Ok((_, Err(e))) => {
                            // Unreadable media is not kept.
                            self.remove_media(&dst_path).await;
                            Err(FileFailure {
                                code: e.code().into(),
                                message: e.to_string(),
                                retryable: matches!(e, spool_media::ProbeError::Io(_)),
                            })
                        }
                    }
                }
            }
        };
        let copied = outcome.is_ok();
        if copied && spool_model::failpoint("import_abort_after_copy") {
            // Debug builds: a crash between a finished copy and its record (the start-up
            // sweep's test).
            std::process::abort();
        }
        let cmd = match outcome {
            Ok((bytes, sha256, facts)) => Command::Import(spool_core::ImportCommand::RecordFileImported {
                job_id: *job_id,
                file_id,
                attempt,
                bytes,
                sha256,
                facts: Some(facts),
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
        let (finished, status) = self.read(|st| match st.imports.get(job_id) {
            Some(j) => {
                (j.finished_file(file_id), j.files.get(&file_id).filter(|f| f.attempts == attempt).map(|f| f.status))
            }
            None => (false, None),
        });
        // A file that has finished (left the job for its table) was imported into the very path
        // every attempt copies to: nothing of it is removed.
        if copied && !finished && status != Some(spool_core::imports::FileStatus::Imported) {
            self.remove_media(&dst_path).await;
        }
        // An upload's staged bytes are needed until its file is done.
        if let Some(key) = staged
            && (finished || status.is_none_or(|s| s.is_terminal()))
        {
            use object_store::ObjectStoreExt;
            let _ = self.executors.uploads.inner.delete(&object_store::path::Path::from(key.as_str())).await;
        }
        Ok(())
    }

    /// Remove an object of the media store (gone already is fine).
    pub(crate) async fn remove_media(&self, path: &str) {
        use object_store::ObjectStoreExt;
        match self.executors.media.inner.delete(&object_store::path::Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(error = %e, path, "media could not be removed"),
        }
    }
}

impl super::Execute for ImportEffect {
    async fn run(&self, rt: &Arc<Runtime>) -> Result<(), crate::RuntimeError> {
        match self {
            ImportEffect::ScanImport { job_id } => rt.scan(job_id).await,
            ImportEffect::ImportFile { job_id, file_id, attempt } => rt.import_file(job_id, *file_id, *attempt).await,
            ImportEffect::FinishImportJob { job_id } => rt
                .execute(Command::Import(spool_core::ImportCommand::RecordImportJobFinished { job_id: *job_id }))
                .await
                .map(|_| ()),
        }
    }

    fn give_up(&self, code: &str, message: String) -> Vec<Command> {
        give_up(self, code, message)
    }
}
