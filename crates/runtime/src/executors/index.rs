//! The index machine's executor: drain (fail the index's running jobs) and purge (delete its
//! videos' media).

use crate::Runtime;
use spool_core::Command;
use spool_model::ImportJobId;
use std::sync::Arc;

impl Runtime {
    /// Stop the index's running work: its import jobs fail ("index deleted"), then the index
    /// is drained.
    pub(super) async fn drain_index(
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
    pub(super) async fn purge_index(
        self: &Arc<Self>,
        index_id: &spool_model::IndexId,
        deletion_id: &spool_model::DeletionId,
    ) -> Result<(), crate::RuntimeError> {
        use object_store::ObjectStoreExt;
        // Page by page of its `index_videos` keys: the memory of a page, whatever the index's size.
        let mut after = None;
        loop {
            let page = self.index_videos(index_id, after, spool_log::READ_BATCH_MAX)?;
            let paths: Vec<String> =
                self.video_rows(page.iter().map(|(_, v)| *v))?.into_values().map(|r| r.media_path.clone()).collect();
            for path in paths {
                match self.executors.media.inner.delete(&object_store::path::Path::from(path.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(crate::RuntimeError::Log(spool_log::Error::Storage(format!(
                            "deleting {path}: {e}"
                        ))));
                    }
                }
            }
            if page.len() < spool_log::READ_BATCH_MAX {
                break;
            }
            after = page.last().copied();
        }
        self.execute(Command::Index(spool_core::IndexCommand::RecordIndexPurged {
            index_id: *index_id,
            deletion_id: *deletion_id,
        }))
        .await
        .map(|_| ())
    }
}

impl super::Execute for spool_core::IndexEffect {
    async fn run(&self, rt: &Arc<Runtime>) -> Result<(), crate::RuntimeError> {
        match self {
            spool_core::IndexEffect::DrainIndex { index_id, deletion_id } => {
                rt.drain_index(index_id, deletion_id).await
            }
            spool_core::IndexEffect::PurgeIndex { index_id, deletion_id } => {
                rt.purge_index(index_id, deletion_id).await
            }
        }
    }
}
