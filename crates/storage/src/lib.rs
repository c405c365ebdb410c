//! spool-storage: connectors' storage on `object_store` (S3 and S3-compatible stores, local
//! folders; GCS and Azure next), plus what connectors do with it: a connection test and a
//! bounded, glob-filtered browse.
//!
//! This crate knows `spool-model` only. Credentials arrive already opened (the runtime's
//! keyring opens them) and are never logged or returned in errors.

mod browse;
mod build;
mod copy;
mod local;
pub mod twin;

pub use browse::{
    BrowseError, BrowseRequest, CloudFile, WALK_LISTINGS, browse, check_pattern, content_type_for, matching,
    page_deadline, pattern_matches, walk_folders,
};
pub use build::{
    AzureAccess, Credentials, ENDPOINT_CHARS_MAX, StorageEnv, StoreError, azure_access, azure_builder, build_store,
    check_gcs_service_account, check_url, gcs_builder, normalize_endpoint, shared_store,
};
pub use copy::{
    COPY_RANGE_BYTES, COPY_RANGES_IN_FLIGHT_MAX, CopyError, InOrder, RANGED_COPY_BYTES_MIN, ScannedObject, copy_object,
    copy_then, ranged_to_local, scan_pages,
};
pub use local::{OpenError, check_local_root};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

/// A store and what the connector allows on it.
#[derive(Clone)]
pub struct Store {
    pub inner: Arc<dyn ObjectStore>,
    /// The same store's multipart uploads by id (S3, GCS, Azure; not local folders): what a
    /// resumable upload needs (its id and each part's id are recorded between parts).
    pub multipart: Option<Arc<dyn object_store::multipart::MultipartStore>>,
    /// For a local folder: its canonical root. Listing and reading then go through
    /// [`local`]'s confined walk and open, never following a link out of the root.
    pub local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("inner", &self.inner)
            .field("multipart", &self.multipart.is_some())
            .field("local_root", &self.local_root)
            .finish()
    }
}

impl Store {
    /// A local folder (which must exist), confined to itself.
    pub fn local(root: &std::path::Path) -> Result<Store, StoreError> {
        let root = std::fs::canonicalize(root).map_err(|e| StoreError::Build(format!("local folder: {}", e.kind())))?;
        let inner = object_store::local::LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| StoreError::Build(format!("local folder: {e}")))?;
        Ok(Store { inner: Arc::new(inner), multipart: None, local_root: Some(root) })
    }

    /// The same store under a folder of it (made when missing, for a local folder): the shared
    /// store's `media`, `uploads` and `exports`.
    pub fn under(&self, sub: &str) -> Result<Store, StoreError> {
        if let Some(root) = &self.local_root {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::Build(format!("local folder: {}", e.kind())))?;
            return Store::local(&dir);
        }
        let inner: Arc<dyn ObjectStore> = Arc::new(object_store::prefix::PrefixStore::new(self.inner.clone(), sub));
        Ok(Store { inner, multipart: None, local_root: None })
    }

    /// [`describe`], without the server's own paths (a local root is shown as `<root>`).
    pub fn describe(&self, e: &object_store::Error) -> String {
        let text = describe(e);
        match &self.local_root {
            Some(root) => redact_path(&text, root),
            None => text,
        }
    }
}

/// `text` with every mention of `root` replaced by `<root>`.
pub fn redact_path(text: &str, root: &std::path::Path) -> String {
    match root.to_str() {
        Some(r) if !r.is_empty() && r != "/" => text.replace(r, "<root>"),
        _ => text.to_string(),
    }
}

/// Run a connection test: one listing; for the export scope also a probe object written and
/// deleted under `export_base_path`. The error is a readable sentence, never credentials.
pub async fn test_connection(
    store: &Store,
    export: bool,
    export_base_path: Option<&str>,
    probe_id: &str,
) -> Result<(), String> {
    use futures::StreamExt;
    let mut listing = store.inner.list(None);
    if let Some(Err(e)) = listing.next().await {
        return Err(store.describe(&e));
    }
    drop(listing);
    if export {
        let name = format!(".spool-probe-{probe_id}");
        let path = match export_base_path {
            Some(base) => Path::from(format!("{base}/{name}")),
            None => Path::from(name),
        };
        store
            .inner
            .put(&path, PutPayload::from_static(b"spool connection test\n"))
            .await
            .map_err(|e| store.describe(&e))?;
        store.inner.delete(&path).await.map_err(|e| store.describe(&e))?;
    }
    Ok(())
}

/// A short description of a storage error: the service's code and message when it sent
/// XML or JSON, else the error's own text, bounded.
pub fn describe(e: &object_store::Error) -> String {
    let text = e.to_string();
    let pick = |tag: &str| -> Option<String> {
        let open = format!("<{tag}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{tag}>"))? + start;
        Some(text[start..end].to_string())
    };
    let out = match (pick("Code"), pick("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => match e {
            object_store::Error::NotFound { .. } => "not found (does the bucket exist?)".to_string(),
            _ => text,
        },
    };
    out.chars().take(500).collect()
}
