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
///
/// `size_hint` is the object's size as listed: an object of another store at least
/// [`RANGED_COPY_BYTES_MIN`] large comes in ranges fetched in parallel ([`ranged_to_local`]).
pub async fn copy_then<T: Send + 'static>(
    src: &Store,
    src_path: &str,
    dst: &Store,
    dst_path: &str,
    size_hint: Option<u64>,
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
    // At most `RANGED_COPIES_MAX` ranged copies at once (each holds up to four ranges in
    // memory); past that a large object streams as any other.
    let ranged = match size_hint {
        Some(n) if n >= RANGED_COPY_BYTES_MIN => RANGED_COPIES.try_acquire().ok(),
        _ => None,
    };
    let copied = match ranged {
        Some(_permit) => ranged_to_local(src, src_path, &dst_root, dst_path).await?,
        None => copy_object(src, src_path, dst, dst_path).await?,
    };
    let path = dst_root.join(dst_path);
    let t = tokio::task::spawn_blocking(move || after(&path)).await.map_err(|_| failed())?;
    Ok((copied, t))
}

/// Objects of another store at least this large are copied in ranges fetched in parallel.
pub const RANGED_COPY_BYTES_MIN: u64 = 64 * 1024 * 1024;
/// Bytes of one range of a ranged copy.
pub const COPY_RANGE_BYTES: u64 = 16 * 1024 * 1024;
/// Ranges of one copy in flight at once: memory holds at most this many ranges.
pub const COPY_RANGES_IN_FLIGHT_MAX: usize = 4;
/// Ranged copies at once in this process (memory: this × `COPY_RANGES_IN_FLIGHT_MAX` ×
/// `COPY_RANGE_BYTES` = 128 MiB at most); other large objects stream.
pub const RANGED_COPIES_MAX: usize = 2;
static RANGED_COPIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(RANGED_COPIES_MAX);

/// Copy a large object of another store into a local folder in ranges of
/// [`COPY_RANGE_BYTES`], [`COPY_RANGES_IN_FLIGHT_MAX`] fetched at once, each asked with the
/// object's ETag (`If-Match`: an object replaced during the copy fails it, retryable, instead of
/// mixing two versions). The ranges are hashed and written in order to a staging name of the
/// destination (`…#spool-<ulid>`, as [`local_to_local`]), renamed into place when complete.
pub async fn ranged_to_local(
    src: &Store,
    src_path: &str,
    dst_root: &std::path::Path,
    dst_key: &str,
) -> Result<(u64, [u8; 32]), CopyError> {
    let read_err = |e: object_store::Error| read_error(src, e);
    let write_err = |e: std::io::Error| CopyError {
        code: "media_store_write_failed",
        message: format!("the media store cannot be written ({})", e.kind()),
        retryable: true,
    };
    let (dst, staging) = destination(dst_root, dst_key)?;
    let location = Path::from(src_path);
    let meta = src.inner.head(&location).await.map_err(read_err)?;
    let size = meta.size;
    let file = {
        let (dst, staging) = (dst.clone(), staging.clone());
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = dst.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::File::create(&staging)
        })
        .await
        .map_err(|_| CopyError { code: "internal_error", message: "the copy task failed".into(), retryable: true })?
        .map_err(write_err)?
    };
    let copied = async {
        let mut file = Some(file);
        let mut hasher = Some(sha2::Sha256::new());
        let mut ranges = InOrder::default();
        let mut next = 0u64;
        let mut written = 0u64;
        loop {
            while next < size && ranges.len() < COPY_RANGES_IN_FLIGHT_MAX {
                let end = (next + COPY_RANGE_BYTES).min(size);
                // The ETag, else the version, else the modification time: the object read is
                // the one the HEAD saw.
                let options = object_store::GetOptions {
                    if_match: meta.e_tag.clone(),
                    version: meta.version.clone(),
                    if_unmodified_since: if meta.e_tag.is_none() && meta.version.is_none() {
                        Some(meta.last_modified)
                    } else {
                        None
                    },
                    range: Some(object_store::GetRange::Bounded(next..end)),
                    ..Default::default()
                };
                let (inner, location) = (src.inner.clone(), location.clone());
                ranges.spawn(async move {
                    let got = inner.get_opts(&location, options).await?;
                    got.bytes().await
                });
                next = end;
            }
            let Some(fetch) = ranges.take_oldest() else { break };
            let bytes = fetch
                .await
                .map_err(|_| CopyError {
                    code: "internal_error",
                    message: "a range's fetch failed".into(),
                    retryable: true,
                })?
                .map_err(read_err)?;
            if bytes.is_empty() {
                return Err(CopyError {
                    code: "source_read_failed",
                    message: "the object ended before its listed size".into(),
                    retryable: true,
                });
            }
            written += bytes.len() as u64;
            // Hash and write off the async workers, while the next ranges arrive.
            let (mut f, mut h) = (file.take(), hasher.take());
            let done = tokio::task::spawn_blocking(move || {
                use std::io::Write;
                if let (Some(f), Some(h)) = (f.as_mut(), h.as_mut()) {
                    h.update(&bytes);
                    f.write_all(&bytes)?;
                }
                Ok::<_, std::io::Error>((f, h))
            })
            .await
            .map_err(|_| CopyError { code: "internal_error", message: "the copy task failed".into(), retryable: true })?
            .map_err(write_err)?;
            (file, hasher) = done;
        }
        if written != size {
            return Err(CopyError {
                code: "source_read_failed",
                message: format!("read {written} bytes of an object of {size}"),
                retryable: true,
            });
        }
        drop(file);
        Ok((written, hasher.map(|h| h.finalize().into()).unwrap_or_default()))
    }
    .await;
    let placed = match copied {
        Ok(sum) => {
            let (from, to) = (staging.clone(), dst.clone());
            match tokio::task::spawn_blocking(move || std::fs::rename(&from, &to)).await {
                Ok(Ok(())) => Ok(sum),
                Ok(Err(e)) => Err(write_err(e)),
                Err(_) => {
                    Err(CopyError { code: "internal_error", message: "the copy task failed".into(), retryable: true })
                }
            }
        }
        Err(e) => Err(e),
    };
    if placed.is_err() {
        let _ = tokio::fs::remove_file(&staging).await;
    }
    placed
}

/// Tasks run side by side and taken in the order they were spawned (a copy's ranges, an
/// export's parts); dropping the queue aborts the ones not taken, so a failure stops the rest.
pub struct InOrder<T>(std::collections::VecDeque<tokio::task::JoinHandle<T>>);

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder(std::collections::VecDeque::new())
    }
}

impl<T: Send + 'static> InOrder<T> {
    pub fn spawn(&mut self, task: impl std::future::Future<Output = T> + Send + 'static) {
        self.0.push_back(tokio::spawn(task));
    }

    /// The oldest task not yet taken.
    pub fn take_oldest(&mut self) -> Option<tokio::task::JoinHandle<T>> {
        self.0.pop_front()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> Drop for InOrder<T> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A source object's read failure, as imports record it.
fn read_error(src: &Store, e: object_store::Error) -> CopyError {
    match e {
        object_store::Error::NotFound { .. } => {
            CopyError { code: "source_object_missing", message: src.describe(&e), retryable: false }
        }
        other => CopyError { code: "source_read_failed", message: src.describe(&other), retryable: true },
    }
}

/// A destination key under a local root, checked (no empty, `.`, `..` or `#` segment), and a
/// staging name of its own beside it (`…#spool-<ulid>`): two copies to one destination (two
/// nodes fetching one artifact into a shared folder) never write one file.
fn destination(
    dst_root: &std::path::Path,
    dst_key: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf), CopyError> {
    if dst_key.split('/').any(|p| p.is_empty() || p == "." || p == ".." || p.contains('#')) {
        return Err(CopyError { code: "internal_error", message: "bad destination key".into(), retryable: false });
    }
    let dst = dst_root.join(dst_key);
    let mut name = dst.as_os_str().to_owned();
    name.push(format!("#spool-{}", ulid::Ulid::new()));
    Ok((dst, std::path::PathBuf::from(name)))
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
    let read_err = |e: object_store::Error| read_error(src, e);
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
    let (dst, staging) = destination(dst_root, dst_key)?;
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
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
