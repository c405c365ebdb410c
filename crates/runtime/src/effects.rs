//! Executors: run an effect and report its outcome as commands. Effects run at least once;
//! `decide` drops outcomes that no longer fit, so running one twice is harmless.

use crate::Runtime;
use spool_core::imports::{ListedObject, SCAN_PAGE_OBJECTS_MAX};
use spool_core::{Command, DomainError, Effect};
use spool_model::{ConnectorId, FileFailure, ImportJobId};
use spool_storage::{BrowseRequest, Credentials, Store};
use std::sync::Arc;

/// What a scan reads of its job.
struct ScanSpec {
    index_id: spool_model::IndexId,
    connector_id: ConnectorId,
    source_prefix: String,
    file_pattern: String,
    recursive: bool,
}

impl Runtime {
    pub(crate) async fn run_effect(self: &Arc<Self>, effect: &Effect) {
        let result = match effect {
            Effect::DrainIndex { index_id, deletion_id } => self.drain_index(index_id, deletion_id).await,
            Effect::PurgeIndex { index_id, deletion_id } => self.purge_index(index_id, deletion_id).await,
            Effect::ScanImport { job_id } => self.scan(job_id).await,
            Effect::ImportFile { job_id, file_id, attempt } => self.import_file(job_id, *file_id, *attempt).await,
            Effect::FinishImportJob { job_id } => {
                self.execute(Command::RecordImportJobFinished { job_id: *job_id }).await.map(|_| ())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, ?effect, "effect outcome not recorded; it runs again later");
        }
    }

    /// Stop the index's running work: its import jobs fail ("index deleted"), then the index
    /// is drained.
    async fn drain_index(
        self: &Arc<Self>,
        index_id: &spool_model::IndexId,
        deletion_id: &spool_model::DeletionId,
    ) -> Result<(), crate::RuntimeError> {
        let jobs: Vec<ImportJobId> = self.read(|st| {
            st.active_imports
                .iter()
                .filter(|j| st.imports.get(j).is_some_and(|x| x.index_id == *index_id))
                .copied()
                .collect()
        });
        for job_id in jobs {
            self.execute(Command::RecordImportJobFailed { job_id, error: format!("index {index_id} was deleted") })
                .await?;
        }
        self.execute(Command::RecordIndexDrained { index_id: *index_id, deletion_id: *deletion_id }).await.map(|_| ())
    }

    /// Remove what the index owns from the media store (its videos' objects), then record the
    /// purge. Deleting is idempotent, so a purge that runs twice is harmless; a deletion that
    /// fails leaves the effect pending, to run again.
    async fn purge_index(
        self: &Arc<Self>,
        index_id: &spool_model::IndexId,
        deletion_id: &spool_model::DeletionId,
    ) -> Result<(), crate::RuntimeError> {
        use object_store::ObjectStoreExt;
        let paths: Vec<String> = self.read(|st| {
            st.index_videos
                .get(index_id)
                .into_iter()
                .flatten()
                .filter_map(|(_, v)| st.videos.get(v).map(|v| v.media_path.clone()))
                .collect()
        });
        for path in paths {
            match self.media.inner.delete(&object_store::path::Path::from(path.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(crate::RuntimeError::Log(spool_log::Error::Storage(format!("deleting {path}: {e}"))));
                }
            }
        }
        self.execute(Command::RecordIndexPurged { index_id: *index_id, deletion_id: *deletion_id }).await.map(|_| ())
    }

    /// A connector's credentials, opened by the keyring (none when it has none, or when its
    /// data key was shredded).
    pub fn open_credentials(&self, sealed: Option<&spool_model::Sealed>) -> Result<Credentials, String> {
        let Some(sealed) = sealed else { return Ok(Credentials::default()) };
        match self.keyring().open(sealed) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).map_err(|_| "stored credentials are damaged".to_string()),
            Ok(None) => Ok(Credentials::default()),
            Err(e) => Err(format!("credentials cannot be opened: {e}")),
        }
    }

    /// The store of a live connector, with its credentials opened (cached per connector and
    /// version, so a patch of credentials takes effect).
    pub fn connector_store(&self, id: &ConnectorId) -> Result<Store, String> {
        let conn = self.read(|st| st.live_connector(id).cloned()).ok_or_else(|| format!("connector {id} is gone"))?;
        let version = conn.updated_at_ms;
        if let Some((v, s)) = self.stores.lock().unwrap_or_else(|p| p.into_inner()).get(id)
            && *v == version
        {
            return Ok(s.clone());
        }
        let creds = self.open_credentials(conn.credentials.as_ref())?;
        let store = spool_storage::build_store(conn.provider, &conn.location, &creds, &self.cfg.storage)
            .map_err(|e| e.to_string())?;
        self.stores.lock().unwrap_or_else(|p| p.into_inner()).insert(*id, (version, store.clone()));
        Ok(store)
    }

    async fn scan(self: &Arc<Self>, job_id: &ImportJobId) -> Result<(), crate::RuntimeError> {
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
        let fail = |error: String| Command::RecordImportJobFailed { job_id: *job_id, error };
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
                rt.execute(Command::RecordScanPage { job_id: *job_id, objects })
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        match scanned {
            Ok(()) => self.execute(Command::RecordScanCompleted { job_id: *job_id }).await.map(|_| ()),
            Err(e) => self.execute(fail(format!("listing the source failed: {e}"))).await.map(|_| ()),
        }
    }

    async fn import_file(
        self: &Arc<Self>,
        job_id: &ImportJobId,
        file_id: u32,
        attempt: u32,
    ) -> Result<(), crate::RuntimeError> {
        let Ok(_slot) = self.import_slots.clone().acquire_owned().await else { return Ok(()) };
        match self.execute(Command::StartImportFile { job_id: *job_id, file_id, attempt }).await {
            Ok(_) => {}
            // The job was cancelled or the attempt is stale: nothing to do.
            Err(crate::RuntimeError::Domain(DomainError::InvalidState(_))) => return Ok(()),
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
                    spool_storage::copy_object(&src, &file.path, &self.media, &dst_path)
                        .await
                        .map_err(|e| FileFailure { code: e.code.into(), message: e.message, retryable: e.retryable })
                }
            }
        };
        let cmd = match outcome {
            Ok((bytes, sha256)) => Command::RecordFileImported { job_id: *job_id, file_id, attempt, bytes, sha256 },
            Err(failure) => Command::RecordFileFailed { job_id: *job_id, file_id, attempt, failure },
        };
        self.execute(cmd).await.map(|_| ())
    }
}
