//! The export machine's executor: make the artifact once (`<data-dir>/exports/<id>.json`,
//! written to a temporary file, fsynced, renamed; its size and SHA-256 recorded), then deliver
//! it: a download export is done; a connector export is written through object_store (one put,
//! or a multipart upload for large artifacts). Transient storage failures are retried on
//! durable timers by the core.

use crate::Runtime;
use sha2::Digest;
use spool_core::machines::export::{self as ex, Export};
use spool_core::{Command, DomainError, ExportCommand};
use spool_model::{ExportDestination, ExportId};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// The folder of kept artifacts inside the data directory.
pub const EXPORTS_DIR: &str = "exports";
/// Default bound of a download export's artifact (`SPOOL_EXPORT_DOWNLOAD_MAX_BYTES`): 64 MiB, the
/// SDK's own bound.
pub const EXPORT_DOWNLOAD_MAX_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Videos read per hold of the state lock while an artifact is made.
const ARTIFACT_VIDEOS_PER_READ: usize = 100;
/// Artifacts above this go up as a multipart upload.
const SINGLE_PUT_BYTES_MAX: u64 = 16 * 1024 * 1024;

enum Failure {
    Retry(String),
    Fatal(String),
}

impl Runtime {
    /// Where an export's artifact is kept.
    pub fn export_artifact(&self, id: &ExportId) -> PathBuf {
        self.cfg.data_dir.join(EXPORTS_DIR).join(format!("{id}.json"))
    }

    pub(super) async fn run_export(
        self: &Arc<Self>,
        export_id: &ExportId,
        attempt: u32,
    ) -> Result<(), crate::RuntimeError> {
        match self.execute(Command::Export(ExportCommand::StartExport { export_id: *export_id, attempt })).await {
            Ok(_) => {}
            Err(crate::RuntimeError::Domain(DomainError::Stale(_))) => return Ok(()),
            Err(e) => return Err(e),
        }
        let Some(e) = self.read(|st| st.exports.get(export_id).cloned()) else { return Ok(()) };
        let result = self.deliver_export(&e, attempt).await;
        let cmd = match result {
            Ok(()) => ExportCommand::RecordExportCompleted { export_id: *export_id, attempt },
            Err(Failure::Retry(error)) => {
                ExportCommand::RecordExportFailed { export_id: *export_id, attempt, error, retryable: true }
            }
            Err(Failure::Fatal(error)) => {
                ExportCommand::RecordExportFailed { export_id: *export_id, attempt, error, retryable: false }
            }
        };
        self.execute(Command::Export(cmd)).await.map(|_| ())
    }

    async fn deliver_export(self: &Arc<Self>, e: &Export, attempt: u32) -> Result<(), Failure> {
        let path = self.export_artifact(&e.export_id);
        let bound = match e.destination {
            ExportDestination::Download => Some(self.cfg.export_download_max_bytes),
            ExportDestination::Connector { .. } => None,
        };
        // The artifact is made once: a resumed or retried export reads the kept bytes (checked
        // against the recorded size and hash).
        let kept = match (e.size_bytes, e.sha256) {
            (Some(size), Some(sha)) => {
                let p = path.clone();
                tokio::task::spawn_blocking(move || check_kept(&p, size, &sha)).await.unwrap_or(false)
            }
            _ => false,
        };
        if !kept {
            let (size, sha) = self.make_artifact(e, bound).await?;
            let cmd =
                ExportCommand::RecordExportGenerated { export_id: e.export_id, attempt, size_bytes: size, sha256: sha };
            self.execute(Command::Export(cmd)).await.map_err(|err| Failure::Retry(err.to_string()))?;
        }
        let ExportDestination::Connector { connector_id, object_path, .. } = &e.destination else { return Ok(()) };
        let store = self.connector_store(connector_id).map_err(Failure::Fatal)?;
        let location = object_store::path::Path::parse(object_path)
            .map_err(|err| Failure::Fatal(format!("the destination path {object_path:?} is not valid: {err}")))?;
        put_file(&store, &location, &path).await
    }

    /// Write the artifact: the head, then the videos a few at a time (the state lock is held
    /// per chunk, not for the whole document).
    async fn make_artifact(self: &Arc<Self>, e: &Export, bound: Option<u64>) -> Result<(u64, [u8; 32]), Failure> {
        let dir = self.cfg.data_dir.join(EXPORTS_DIR);
        std::fs::create_dir_all(&dir).map_err(|err| Failure::Retry(format!("{}: {err}", dir.display())))?;
        let tmp = dir.join(format!("{}.json.tmp", e.export_id));
        let done = self.export_artifact(&e.export_id);
        let rt = self.clone();
        let e = e.clone();
        tokio::task::spawn_blocking(move || -> Result<(u64, [u8; 32]), Failure> {
            let io = |err: std::io::Error| Failure::Retry(format!("writing the artifact: {err}"));
            let file = std::fs::File::create(&tmp).map_err(io)?;
            let mut w = Hashing { inner: std::io::BufWriter::new(file), hash: sha2::Sha256::new(), written: 0, bound };
            let (head, ids) = rt.read(|st| (ex::view::artifact_head(st, &e), ex::view::video_ids(st, &e)));
            let head = serde_json::to_string(&head).unwrap_or_else(|_| "{}".into());
            let head = head.strip_suffix('}').unwrap_or(&head);
            let too_big = |w: &Hashing| {
                Failure::Fatal(format!(
                    "the export is larger than the download bound of {} bytes (SPOOL_EXPORT_DOWNLOAD_MAX_BYTES); export it to a connector (destination_connector_id) instead, which has no such bound",
                    w.bound.unwrap_or(0)
                ))
            };
            let write = |w: &mut Hashing, bytes: &[u8]| -> Result<(), Failure> {
                w.write_all(bytes).map_err(|err| if err.kind() == std::io::ErrorKind::FileTooLarge { too_big(w) } else { io(err) })
            };
            write(&mut w, head.as_bytes())?;
            write(&mut w, if head.len() > 1 { b",\"videos\":[" } else { b"\"videos\":[" })?;
            let mut first = true;
            for chunk in ids.chunks(ARTIFACT_VIDEOS_PER_READ) {
                let docs: Vec<String> = rt.read(|st| {
                    chunk
                        .iter()
                        .filter_map(|id| ex::view::artifact_video(st, &e, id))
                        .map(|v| serde_json::to_string(&v).unwrap_or_default())
                        .collect()
                });
                for d in docs {
                    if !first {
                        write(&mut w, b",")?;
                    }
                    first = false;
                    write(&mut w, d.as_bytes())?;
                }
            }
            write(&mut w, b"]}")?;
            let (size, hash) = (w.written, w.hash.clone().finalize().into());
            let file = w.inner.into_inner().map_err(|err| io(err.into_error()))?;
            file.sync_all().map_err(io)?;
            drop(file);
            std::fs::rename(&tmp, &done).map_err(io)?;
            if let Some(parent) = done.parent()
                && let Ok(d) = std::fs::File::open(parent)
            {
                let _ = d.sync_all();
            }
            Ok((size, hash))
        })
        .await
        .map_err(|err| Failure::Retry(format!("the artifact writer stopped: {err}")))?
    }
}

/// A writer that hashes, counts and bounds what it writes.
struct Hashing {
    inner: std::io::BufWriter<std::fs::File>,
    hash: sha2::Sha256,
    written: u64,
    bound: Option<u64>,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bound.is_some_and(|b| self.written + buf.len() as u64 > b) {
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "over the bound"));
        }
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The kept artifact is whole: its size and SHA-256 are the recorded ones.
fn check_kept(path: &std::path::Path, size: u64, sha: &[u8; 32]) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    if f.metadata().map(|m| m.len()).ok() != Some(size) {
        return false;
    }
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).is_ok() && h.finalize().as_slice() == sha
}

/// Upload the artifact to the connector: one put up to `SINGLE_PUT_BYTES_MAX`, else a multipart
/// upload (aborted on failure, so nothing half-written stays visible).
async fn put_file(
    store: &spool_storage::Store,
    location: &object_store::path::Path,
    file: &std::path::Path,
) -> Result<(), Failure> {
    use object_store::ObjectStoreExt;
    use tokio::io::AsyncReadExt;
    let classify = |err: object_store::Error| match err {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::NotFound { .. } => {
            Failure::Fatal(format!("the connector refused the write: {}", store.describe(&err)))
        }
        other => Failure::Retry(format!("writing to the connector failed: {}", store.describe(&other))),
    };
    let size =
        tokio::fs::metadata(file).await.map_err(|err| Failure::Retry(format!("reading the artifact: {err}")))?.len();
    if size <= SINGLE_PUT_BYTES_MAX {
        let bytes =
            tokio::fs::read(file).await.map_err(|err| Failure::Retry(format!("reading the artifact: {err}")))?;
        store.inner.put(location, bytes.into()).await.map_err(classify)?;
        return Ok(());
    }
    let upload = store.inner.put_multipart(location).await.map_err(classify)?;
    let mut w = object_store::WriteMultipart::new(upload);
    let mut f =
        tokio::fs::File::open(file).await.map_err(|err| Failure::Retry(format!("reading the artifact: {err}")))?;
    let mut buf = vec![0u8; 8 * 1024 * 1024];
    loop {
        let n = f.read(&mut buf).await.map_err(|err| Failure::Retry(format!("reading the artifact: {err}")))?;
        if n == 0 {
            break;
        }
        w.wait_for_capacity(4).await.map_err(classify)?;
        w.write(&buf[..n]);
    }
    w.finish().await.map_err(classify)?;
    Ok(())
}
