//! Streaming copies into the media store and paged scans for imports.

use crate::{BrowseError, BrowseRequest, Store};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use sha2::Digest;

/// Why a copy failed, in the shape import jobs record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyError {
    pub code: &'static str,
    pub message: String,
    pub retryable: bool,
}

/// [`copy_object`], then `after` on the stored file (the destination must be a local folder),
/// in the same blocking task when both sides are folders: one hop per file instead of two.
pub async fn copy_then<T: Send + 'static>(
    src: &Store,
    src_path: &str,
    dst: &Store,
    dst_path: &str,
    after: impl FnOnce(&std::path::Path) -> T + Send + 'static,
) -> Result<((u64, [u8; 32]), T), CopyError> {
    let Some(dst_root) = dst.local_root.clone() else {
        return Err(CopyError {
            code: "internal_error",
            message: "the destination is not a folder".into(),
            retryable: false,
        });
    };
    let failed = || CopyError { code: "internal_error", message: "the copy task failed".into(), retryable: true };
    if let Some(src_root) = src.local_root.clone() {
        let (src_path, dst_path) = (src_path.to_string(), dst_path.to_string());
        return tokio::task::spawn_blocking(move || {
            let copied = local_to_local(&src_root, &src_path, &dst_root, &dst_path)?;
            Ok((copied, after(&dst_root.join(&dst_path))))
        })
        .await
        .unwrap_or_else(|_| Err(failed()));
    }
    let copied = copy_object(src, src_path, dst, dst_path).await?;
    let path = dst_root.join(dst_path);
    let t = tokio::task::spawn_blocking(move || after(&path)).await.map_err(|_| failed())?;
    Ok((copied, t))
}

/// Stream `src_path` of `src` into `dst_path` of `dst`, never holding the whole object: the
/// bytes go through in chunks, hashed (SHA-256) and counted on the way. The destination
/// appears only when complete (multipart upload; on a local folder, a rename).
pub async fn copy_object(
    src: &Store,
    src_path: &str,
    dst: &Store,
    dst_path: &str,
) -> Result<(u64, [u8; 32]), CopyError> {
    let read_err = |e: object_store::Error| match e {
        object_store::Error::NotFound { .. } => {
            CopyError { code: "source_object_missing", message: src.describe(&e), retryable: false }
        }
        other => CopyError { code: "source_read_failed", message: src.describe(&other), retryable: true },
    };
    let write_err = |e: object_store::Error| CopyError {
        code: "media_store_write_failed",
        message: dst.describe(&e),
        retryable: true,
    };
    if let (Some(src_root), Some(dst_root)) = (&src.local_root, &dst.local_root) {
        // Folder to folder: one blocking task reads, hashes and writes (no hop per chunk).
        let (src_root, dst_root) = (src_root.clone(), dst_root.clone());
        let (src_path, dst_path) = (src_path.to_string(), dst_path.to_string());
        return tokio::task::spawn_blocking(move || local_to_local(&src_root, &src_path, &dst_root, &dst_path))
            .await
            .unwrap_or_else(|_| {
                Err(CopyError { code: "internal_error", message: "the copy task failed".into(), retryable: true })
            });
    }
    let mut stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, CopyError>> = match &src.local_root {
        Some(root) => local_stream(root, src_path)?,
        None => {
            let got = src.inner.get(&Path::from(src_path)).await.map_err(read_err)?;
            let src = src.clone();
            got.into_stream()
                .map(move |c| {
                    c.map_err(|e| CopyError { code: "source_read_failed", message: src.describe(&e), retryable: true })
                })
                .boxed()
        }
    };
    let upload = dst.inner.put_multipart(&Path::from(dst_path)).await.map_err(write_err)?;
    let mut writer = WriteMultipart::new(upload);
    let mut hasher = sha2::Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        // Waits when too many parts are in flight: memory stays bounded.
        if let Err(e) = writer.wait_for_capacity(8).await {
            return Err(write_err(e));
        }
        writer.write(&chunk);
    }
    writer.finish().await.map_err(write_err)?;
    Ok((bytes, hasher.finalize().into()))
}

fn open_error(e: crate::local::OpenError) -> CopyError {
    use crate::local::OpenError;
    match e {
        OpenError::Missing => {
            CopyError { code: "source_object_missing", message: "the file is gone".into(), retryable: false }
        }
        OpenError::OutsideRoot => CopyError {
            code: "path_outside_root",
            message: "the file resolves to a location outside the connector's root; it is not read".into(),
            retryable: false,
        },
        OpenError::NotAFile => {
            CopyError { code: "source_not_a_file", message: "the path is not a regular file".into(), retryable: false }
        }
        OpenError::Unreadable(kind) => CopyError {
            code: "source_read_failed",
            message: format!("the file cannot be read ({kind})"),
            retryable: true,
        },
    }
}

/// Copy a file of one local root into another, confined on both sides: the destination is
/// written under a staging name of its own (`…#spool-<ulid>`, swept at start if a crash leaves it) and renamed
/// into place when complete.
fn local_to_local(
    src_root: &std::path::Path,
    src_key: &str,
    dst_root: &std::path::Path,
    dst_key: &str,
) -> Result<(u64, [u8; 32]), CopyError> {
    use std::io::{Read, Write};
    let mut file = crate::local::open(src_root, src_key).map_err(open_error)?;
    let write_err = |e: std::io::Error| CopyError {
        code: "media_store_write_failed",
        message: format!("the media store cannot be written ({})", e.kind()),
        retryable: true,
    };
    if dst_key.split('/').any(|p| p.is_empty() || p == "." || p == ".." || p.contains('#')) {
        return Err(CopyError { code: "internal_error", message: "bad destination key".into(), retryable: false });
    }
    let dst = dst_root.join(dst_key);
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    // A staging name of its own: two copies to one destination (two nodes fetching one
    // artifact into a shared folder) never write one file.
    let staging = {
        let mut name = dst.as_os_str().to_owned();
        name.push(format!("#spool-{}", ulid::Ulid::new()));
        std::path::PathBuf::from(name)
    };
    let mut out = std::fs::File::create(&staging).map_err(write_err)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; crate::local::READ_CHUNK_BYTES.min(64 * 1024)];
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&staging);
                return Err(CopyError {
                    code: "source_read_failed",
                    message: format!("the file cannot be read ({})", e.kind()),
                    retryable: true,
                });
            }
        };
        hasher.update(&buf[..n]);
        bytes += n as u64;
        if let Err(e) = out.write_all(&buf[..n]) {
            let _ = std::fs::remove_file(&staging);
            return Err(write_err(e));
        }
    }
    drop(out);
    std::fs::rename(&staging, &dst).map_err(write_err)?;
    Ok((bytes, hasher.finalize().into()))
}

/// A file of a local root as a stream of chunks, opened through the confined [`crate::local::open`].
fn local_stream(
    root: &std::path::Path,
    key: &str,
) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes, CopyError>>, CopyError> {
    let file = crate::local::open(root, key).map_err(open_error)?;
    let file = tokio::fs::File::from_std(file);
    Ok(futures::stream::unfold(Some(file), |state| async move {
        use tokio::io::AsyncReadExt;
        let mut file = state?;
        let mut buf = vec![0u8; crate::local::READ_CHUNK_BYTES];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((
                Err(CopyError {
                    code: "source_read_failed",
                    message: format!("the file cannot be read ({})", e.kind()),
                    retryable: true,
                }),
                None,
            )),
        }
    })
    .boxed())
}

/// One object of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedObject {
    pub path: String,
    pub size_bytes: u64,
    pub etag: Option<String>,
    pub last_modified_ms: u64,
}

/// List the objects an import takes (prefix, glob, recursive — the browse rules) and hand them
/// over in pages of at most `page_size`, without holding more than one page.
pub async fn scan_pages<F, Fut>(
    store: &Store,
    req: &BrowseRequest,
    page_size: usize,
    mut on_page: F,
) -> Result<(), BrowseError>
where
    F: FnMut(Vec<ScannedObject>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut page = Vec::with_capacity(page_size);
    let mut stream = crate::browse::matching(store, req)?;
    while let Some(item) = stream.next().await {
        let meta = item?;
        page.push(ScannedObject {
            path: meta.location.to_string(),
            size_bytes: meta.size,
            etag: meta.e_tag.clone(),
            last_modified_ms: spool_model::num::non_negative(meta.last_modified.timestamp_millis()),
        });
        if page.len() >= page_size {
            on_page(std::mem::take(&mut page)).await.map_err(BrowseError::Storage)?;
        }
    }
    if !page.is_empty() {
        on_page(page).await.map_err(BrowseError::Storage)?;
    }
    Ok(())
}
