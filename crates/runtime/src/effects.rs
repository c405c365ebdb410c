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
            Effect::Index(spool_core::IndexEffect::DrainIndex { index_id, deletion_id }) => {
                self.drain_index(index_id, deletion_id).await
            }
            Effect::Index(spool_core::IndexEffect::PurgeIndex { index_id, deletion_id }) => {
                self.purge_index(index_id, deletion_id).await
            }
            Effect::Import(spool_core::ImportEffect::ScanImport { job_id }) => self.scan(job_id).await,
            Effect::Import(spool_core::ImportEffect::ImportFile { job_id, file_id, attempt }) => {
                self.import_file(job_id, *file_id, *attempt).await
            }
            Effect::Import(spool_core::ImportEffect::FinishImportJob { job_id }) => self
                .execute(Command::Import(spool_core::ImportCommand::RecordImportJobFinished { job_id: *job_id }))
                .await
                .map(|_| ()),
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
            self.execute(Command::Import(spool_core::ImportCommand::RecordImportJobFailed {
                job_id,
                error: format!("index {index_id} was deleted"),
            }))
            .await?;
        }
        self.execute(Command::Index(spool_core::IndexCommand::RecordIndexDrained {
            index_id: *index_id,
            deletion_id: *deletion_id,
        }))
        .await
        .map(|_| ())
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
        self.execute(Command::Index(spool_core::IndexCommand::RecordIndexPurged {
            index_id: *index_id,
            deletion_id: *deletion_id,
        }))
        .await
        .map(|_| ())
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

    /// A connector's creation, its credentials sealed inside the sequencer with the connector's
    /// own data key (the key's side write commits with `ConnectorCreated`).
    pub fn create_connector(cmd: Command, credentials: Option<Credentials>) -> crate::Work {
        crate::Work::Prepared(Box::new(move |_st, keyring| {
            let mut cmd = cmd;
            let mut side = Vec::new();
            if let (
                Command::Connector(spool_core::ConnectorCommand::CreateConnector {
                    connector_id,
                    credentials: slot,
                    ..
                }),
                Some(creds),
            ) = (&mut cmd, credentials)
            {
                let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&creds).unwrap_or_default());
                let (sealed, put) = keyring.seal(&connector_id.to_string(), &bytes)?;
                *slot = Some(sealed);
                side.push(put);
            }
            Ok((cmd, side))
        }))
    }

    /// A connector's update whose credentials `patch` (fields left `None` or empty are kept) is
    /// merged into the stored credentials inside the sequencer, so concurrent patches never
    /// lose each other's fields; the merge is sealed again with the connector's data key.
    pub fn update_connector(cmd: Command, patch: Option<Credentials>) -> crate::Work {
        crate::Work::Prepared(Box::new(move |st, keyring| {
            let Some(patch) = patch else { return Ok((cmd, Vec::new())) };
            let Command::Connector(spool_core::ConnectorCommand::UpdateConnector {
                connector_id,
                name,
                scopes,
                import_mode,
                export_base_path,
                ..
            }) = cmd
            else {
                return Ok((cmd, Vec::new()));
            };
            let conn = st
                .live_connector(&connector_id)
                .ok_or_else(|| DomainError::NotFound { kind: "connector", id: connector_id.to_string() })?;
            let aws = patch.aws_access_key_id.is_some() || patch.aws_secret_access_key.is_some();
            let azure = patch.azure_account_key.is_some() || patch.azure_client_secret.is_some();
            let gcs = patch.gcs_service_account.is_some();
            let fits = match conn.provider {
                spool_model::Provider::S3 => !azure && !gcs,
                spool_model::Provider::Azure => !aws && !gcs,
                spool_model::Provider::Gcs => !aws && !azure,
                spool_model::Provider::Local => false,
            };
            if !fits {
                return Err(DomainError::invalid(
                    "credentials",
                    format!("these credentials do not fit a {} connector", conn.provider.as_str()),
                )
                .into());
            }
            let mut merged = match &conn.credentials {
                None => Credentials::default(),
                Some(sealed) => match keyring.open(sealed)? {
                    Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| {
                        crate::RuntimeError::Keyring(crate::KeyringError::Damaged("stored credentials".into()))
                    })?,
                    None => Credentials::default(),
                },
            };
            let keep = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
            if let Some(v) = keep(patch.aws_access_key_id) {
                merged.aws_access_key_id = Some(v);
            }
            if let Some(v) = keep(patch.aws_secret_access_key) {
                merged.aws_secret_access_key = Some(v);
            }
            if let Some(v) = keep(patch.azure_account_key) {
                merged.azure_account_key = Some(v);
            }
            if let Some(v) = keep(patch.azure_client_secret) {
                merged.azure_client_secret = Some(v);
            }
            if let Some(v) = keep(patch.gcs_service_account) {
                merged.gcs_service_account = Some(v);
            }
            let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&merged).unwrap_or_default());
            let (sealed, put) = keyring.seal(&connector_id.to_string(), &bytes)?;
            let cmd = Command::Connector(spool_core::ConnectorCommand::UpdateConnector {
                connector_id,
                name,
                scopes,
                import_mode,
                export_base_path,
                credentials: Some(sealed),
            });
            Ok((cmd, vec![put]))
        }))
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

    async fn import_file(
        self: &Arc<Self>,
        job_id: &ImportJobId,
        file_id: u32,
        attempt: u32,
    ) -> Result<(), crate::RuntimeError> {
        let Ok(_slot) = self.import_slots.clone().acquire_owned().await else { return Ok(()) };
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
                    spool_storage::copy_object(&src, &file.path, &self.media, &dst_path)
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
                match self.media.inner.delete(&dst).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => tracing::warn!(error = %e, "an unrecorded copy could not be removed"),
                }
            }
        }
        Ok(())
    }
}
