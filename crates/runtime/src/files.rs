//! Files beside the log: media, staged uploads and export artifacts, in the data directory or,
//! with `SPOOL_MEDIA_URL`, in the object store every node of a cluster shares
//! (`engine-spec/cluster.md`, "Shared files"). With a shared store the data directory keeps
//! only scratch copies: a file is made and checked there (an upload as it arrives, media as it
//! is copied and probed, an artifact as it is written), then put in the shared store before
//! the event that names it is appended, and the scratch copy goes. A node that takes a
//! partition over finds every file the partition's events name.

use crate::Runtime;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use spool_core::State;
use spool_model::ExportId;
use std::path::{Path, PathBuf};

/// What became of a copy into the media store.
pub(crate) type Stored<T> = Result<((u64, [u8; 32]), T), spool_storage::CopyError>;

impl Runtime {
    /// Whether files live in a shared store (`SPOOL_MEDIA_URL`).
    pub fn files_shared(&self) -> bool {
        self.executors.exports.is_some()
    }

    /// Copy `src_path` of `src` into the media store at `dst_path`, with `check` run on the
    /// stored bytes as a local file (the probe). With a shared store the copy and the check
    /// happen in the scratch folder and the checked file then goes to the shared store (only
    /// when `check` accepts it: `keep`); the scratch copy is removed either way.
    pub(crate) async fn store_media<T: Send + 'static>(
        &self,
        src: &spool_storage::Store,
        src_path: &str,
        dst_path: &str,
        size_hint: Option<u64>,
        check: impl FnOnce(&Path) -> T + Send + 'static,
        keep: impl Fn(&T) -> bool,
    ) -> Stored<T> {
        let ex = &self.executors;
        if ex.media.local_root.is_some() {
            return spool_storage::copy_then(src, src_path, &ex.media, dst_path, size_hint, check).await;
        }
        let copied = spool_storage::copy_then(src, src_path, &ex.scratch, dst_path, size_hint, check).await;
        let out = match copied {
            Ok((sum, t)) if keep(&t) => {
                spool_storage::copy_object(&ex.scratch, dst_path, &ex.media, dst_path).await.map(|_| (sum, t))
            }
            other => other,
        };
        let _ = ex.scratch.inner.delete(&ObjectPath::from(dst_path)).await;
        out
    }

    /// A local file holding the stored media at `path` (for the boundary scan): the file
    /// itself in a media folder; with a shared store a scratch copy, removed when the answer
    /// is dropped.
    pub(crate) async fn media_local(&self, path: &str) -> Option<LocalCopy> {
        let ex = &self.executors;
        if let Some(root) = &ex.media.local_root {
            return Some(LocalCopy { path: root.join(path), remove: false });
        }
        let scratch_root = ex.scratch.local_root.clone()?;
        // No `#` or `%` in the name: object_store would encode it, and the file read would not
        // be the one written.
        let name = format!("scan/{}.scan", self.new_ulid());
        match spool_storage::copy_object(&ex.media, path, &ex.scratch, &name).await {
            Ok(_) => Some(LocalCopy { path: scratch_root.join(&name), remove: true }),
            Err(e) => {
                tracing::warn!(path, error = %e.message, "the media could not be read from the shared store");
                None
            }
        }
    }

    /// An upload staged at `local` (named `key`) goes to the shared store, and its local copy
    /// is removed. `Ok(false)`: no shared store, the local file is the staged upload.
    pub async fn publish_upload(&self, local: &Path, key: &str) -> Result<bool, String> {
        if !self.files_shared() {
            return Ok(false);
        }
        let ex = &self.executors;
        let dir = spool_storage::Store::local(&ex.uploads_dir).map_err(|e| e.to_string())?;
        let put = spool_storage::copy_object(&dir, key, &ex.uploads, key).await.map_err(|e| e.message);
        let _ = tokio::fs::remove_file(local).await;
        put.map(|_| true)
    }

    /// Remove a staged upload (gone already is fine).
    pub async fn remove_upload(&self, key: &str) {
        match self.executors.uploads.inner.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(key, error = %e, "a staged upload could not be removed"),
        }
    }

    /// The shared store's staged uploads that no open job names, made before this runtime
    /// became ready (`ready_ms`; a later one may be on its way to its job) and, in a
    /// partitioned cluster, of this partition, are removed.
    pub(crate) async fn sweep_shared_uploads(&self, needed: std::collections::BTreeSet<String>, ready_ms: u64) {
        use futures::StreamExt;
        if !self.files_shared() {
            return;
        }
        let mut listing = self.executors.uploads.inner.list(None);
        let mut orphans = Vec::new();
        while let Some(item) = listing.next().await {
            let meta = match item {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "the shared store's staged uploads could not be listed");
                    return;
                }
            };
            let key = meta.location.to_string();
            let Some(id) = key.strip_prefix("up_").and_then(|r| r.split('.').next()) else { continue };
            let Ok(id) = id.parse::<ulid::Ulid>() else { continue };
            let ours = self.cfg.partition_tag.is_none_or(|p| spool_model::partition_of(id) == p);
            if ours && id.timestamp_ms() < ready_ms && !needed.contains(&key) {
                orphans.push(key);
            }
        }
        drop(listing);
        for key in orphans {
            self.remove_upload(&key).await;
            tracing::info!(key, "removed a shared staged upload no job needs");
        }
    }

    /// Where an export's artifact is made (the data directory).
    pub fn export_artifact(&self, id: &ExportId) -> PathBuf {
        self.cfg.data_dir.join(crate::EXPORTS_DIR).join(format!("{id}.json"))
    }

    /// The artifact made at [`Runtime::export_artifact`] goes to the shared store (a no-op
    /// without one).
    pub(crate) async fn publish_artifact(&self, id: &ExportId) -> Result<(), String> {
        let Some(shared) = &self.executors.exports else { return Ok(()) };
        let dir =
            spool_storage::Store::local(&self.cfg.data_dir.join(crate::EXPORTS_DIR)).map_err(|e| e.to_string())?;
        let name = format!("{id}.json");
        spool_storage::copy_object(&dir, &name, shared, &name).await.map(|_| ()).map_err(|e| e.message)
    }

    /// A local copy of the export's artifact: the data directory's, or, with a shared store
    /// and none here (the export was made on another node), fetched from it. `None`: no
    /// artifact in either place.
    pub async fn export_artifact_local(&self, id: &ExportId) -> Option<PathBuf> {
        let path = self.export_artifact(id);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Some(path);
        }
        let shared = self.executors.exports.as_ref()?;
        let dir = self.cfg.data_dir.join(crate::EXPORTS_DIR);
        tokio::fs::create_dir_all(&dir).await.ok()?;
        let local = spool_storage::Store::local(&dir).ok()?;
        let name = format!("{id}.json");
        match spool_storage::copy_object(shared, &name, &local, &name).await {
            Ok(_) => Some(path),
            Err(e) => {
                if e.code != "source_object_missing" {
                    tracing::warn!(export_id = %id, error = %e.message, "the artifact could not be read from the shared store");
                }
                None
            }
        }
    }
}

/// Empty the data directory's scratch folder: called when a process that uses a shared store
/// starts, before it opens any partition (a copy a crash interrupted is not anybody's).
pub fn clear_scratch(data_dir: &Path) -> std::io::Result<()> {
    let dir = data_dir.join(crate::runtime::SCRATCH_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The staged uploads open jobs name.
pub(crate) fn needed_uploads(state: &State) -> std::collections::BTreeSet<String> {
    state
        .active_imports
        .iter()
        .filter_map(|id| state.imports.get(id))
        .filter_map(|j| match &j.source {
            Some(spool_model::JobSource::Upload { staged_key, .. }) => Some(staged_key.clone()),
            _ => None,
        })
        .collect()
}

/// A local file for a scan; a scratch copy is removed on drop.
pub(crate) struct LocalCopy {
    pub path: PathBuf,
    remove: bool,
}

impl Drop for LocalCopy {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
