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
use std::sync::Arc;

/// The folder of kept artifacts inside the data directory.
pub const EXPORTS_DIR: &str = "exports";
/// Default bound of a download export's artifact (`SPOOL_EXPORT_DOWNLOAD_MAX_BYTES`): 64 MiB, the
/// SDK's own bound.
pub const EXPORT_DOWNLOAD_MAX_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Videos read per hold of the state lock while an artifact is made.
const ARTIFACT_VIDEOS_PER_READ: usize = 100;
/// Parts of one multipart upload on their way to the store at once.
pub const EXPORT_PARTS_IN_FLIGHT_MAX: usize = 4;
/// Artifacts above this go up as a multipart upload.
const SINGLE_PUT_BYTES_MAX: u64 = 16 * 1024 * 1024;

enum Failure {
    Retry(String),
    Fatal(String),
}

impl Runtime {
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
        // A failure the core will not retry (fatal, or the last attempt) first aborts a begun
        // multipart upload, then is recorded: once the export reads `failed`, nothing of it is
        // left open in the bucket. (A crash between the two leaves a retry that finds the upload
        // gone and begins another.)
        if let ExportCommand::RecordExportFailed { retryable, .. } = &cmd
            && (!retryable || attempt >= spool_core::machines::export::EXPORT_ATTEMPTS_MAX)
        {
            self.abort_upload(&e).await;
        }
        self.execute(Command::Export(cmd)).await.map(|_| ())
    }

    /// Abort the export's multipart upload, if one was begun. Best effort: a failure to abort is
    /// logged (the upload then stays until the bucket's own lifecycle rules remove it).
    async fn abort_upload(self: &Arc<Self>, e: &Export) {
        let Some(upload_id) = self.read(|st| st.exports.get(&e.export_id).and_then(|x| x.upload_id.clone())) else {
            return;
        };
        let ExportDestination::Connector { connector_id, object_path, .. } = &e.destination else { return };
        let Ok(store) = self.connector_store(connector_id) else { return };
        let (Some(mp), Ok(location)) = (store.multipart.clone(), object_store::path::Path::parse(object_path)) else {
            return;
        };
        if let Err(err) = mp.abort_multipart(&location, &upload_id).await {
            tracing::warn!(export_id = %e.export_id, error = %store.describe(&err), "aborting the failed export's upload failed");
        }
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
                // Made on another node of a cluster: the shared store's copy.
                let _ = self.export_artifact_local(&e.export_id).await;
                let p = path.clone();
                tokio::task::spawn_blocking(move || check_kept(&p, size, &sha)).await.unwrap_or(false)
            }
            _ => false,
        };
        if !kept {
            let (size, sha) = self.make_artifact(e, bound).await?;
            // In the shared store before the event that records it (any node can then serve it).
            self.publish_artifact(&e.export_id)
                .await
                .map_err(|err| Failure::Retry(format!("putting the artifact in the shared store: {err}")))?;
            let cmd =
                ExportCommand::RecordExportGenerated { export_id: e.export_id, attempt, size_bytes: size, sha256: sha };
            self.execute(Command::Export(cmd)).await.map_err(|err| Failure::Retry(err.to_string()))?;
        }
        let ExportDestination::Connector { connector_id, object_path, .. } = &e.destination else { return Ok(()) };
        let store = self.connector_store(connector_id).map_err(Failure::Fatal)?;
        let location = object_store::path::Path::parse(object_path)
            .map_err(|err| Failure::Fatal(format!("the destination path {object_path:?} is not valid: {err}")))?;
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|err| Failure::Retry(format!("reading the artifact: {err}")))?
            .len();
        let part_bytes = self.cfg.export_part_bytes.max(1);
        if let Some(root) = store.local_root.clone() {
            let object = object_path.clone();
            return tokio::task::spawn_blocking(move || local_put(&root, &object, &path))
                .await
                .map_err(|err| Failure::Retry(format!("the local write stopped: {err}")))?;
        }
        match store.multipart.clone() {
            Some(mp) if size > part_bytes => self.upload_parts(e, attempt, &store, mp, &location, &path, size).await,
            _ => put_file(&store, &location, &path).await,
        }
    }

    /// A multipart upload whose id and every part's id are recorded as they are made: after a
    /// crash (or a failed attempt) it goes on from the next part, reading the same kept bytes, so
    /// the object is byte-identical to an uninterrupted upload.
    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        self: &Arc<Self>,
        e: &Export,
        attempt: u32,
        store: &spool_storage::Store,
        mp: Arc<dyn object_store::multipart::MultipartStore>,
        location: &object_store::path::Path,
        file: &std::path::Path,
        size: u64,
    ) -> Result<(), Failure> {
        use object_store::ObjectStoreExt;
        let export_id = e.export_id;
        let part_bytes = self.cfg.export_part_bytes.max(1);
        let parts_total = size.div_ceil(part_bytes);
        let record = |cmd: ExportCommand| async move {
            self.execute(Command::Export(cmd)).await.map(|_| ()).map_err(|err| Failure::Retry(err.to_string()))
        };
        let recorded = || self.read(|st| st.exports.get(&export_id).map(|x| (x.upload_id.clone(), x.parts.clone())));
        let (upload_id, done) = recorded().unwrap_or_default();
        let (upload_id, done) = match upload_id {
            Some(id) => (id, done.len() as u64),
            None => {
                let id = mp.create_multipart(location).await.map_err(|err| classify(store, err))?;
                record(ExportCommand::RecordUploadStarted { export_id, attempt, upload_id: id.clone() }).await?;
                (id, 0)
            }
        };
        // Parts go up `EXPORT_PARTS_IN_FLIGHT_MAX` at a time, each read from the kept artifact
        // by its own task; they are recorded in order as they finish in order, so the recorded
        // parts are always a prefix: a resumed upload sends the parts after it again (a part
        // sent twice replaces itself at the store).
        let mut sends = spool_storage::InOrder::<PartSent>::default();
        let mut next = done;
        // The part taken next from `sends` (they come back in the order they went).
        let mut part = done;
        loop {
            while next < parts_total && sends.len() < EXPORT_PARTS_IN_FLIGHT_MAX {
                let (mp, location, upload_id, file) =
                    (mp.clone(), location.clone(), upload_id.clone(), file.to_path_buf());
                let index = next;
                sends.spawn(async move {
                    let at = index * part_bytes;
                    let len = part_bytes.min(size - at);
                    let bytes = tokio::task::spawn_blocking(move || read_part(&file, at, len))
                        .await
                        .map_err(|err| err.to_string())
                        .and_then(|r| r.map_err(|err| err.to_string()));
                    match bytes {
                        Ok(bytes) => Ok(mp
                            .put_part(&location, &upload_id, spool_model::num::sat_usize(index), bytes.into())
                            .await),
                        Err(err) => Err(format!("reading the artifact: {err}")),
                    }
                });
                next += 1;
            }
            let Some(send) = sends.take_oldest() else { break };
            // Tests: each part's record waits 150 ms, so a kill timed on the recorded parts
            // lands between two of them (the sends themselves overlap).
            if spool_model::failpoint("export_part_slow") {
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            }
            let sent = send.await.map_err(|err| Failure::Retry(format!("a part's upload stopped: {err}")))?;
            match sent.map_err(Failure::Retry)? {
                Ok(id) => {
                    let cmd = ExportCommand::RecordPartWritten {
                        export_id,
                        attempt,
                        part: spool_model::num::sat_u32(part),
                        content_id: id.content_id,
                    };
                    record(cmd).await?;
                    part += 1;
                    if spool_model::failpoint("export_fatal_after_first_part") {
                        return Err(Failure::Fatal("failpoint export_fatal_after_first_part".into()));
                    }
                }
                Err(object_store::Error::NotFound { .. }) => {
                    // The store dropped the upload (expired, or aborted): a new one, from part 0.
                    let id = mp.create_multipart(location).await.map_err(|err| classify(store, err))?;
                    record(ExportCommand::RecordUploadStarted { export_id, attempt, upload_id: id }).await?;
                    return Err(Failure::Retry("the multipart upload was gone at the store; it starts again".into()));
                }
                Err(err) => return Err(classify(store, err)),
            }
        }
        let parts: Vec<object_store::multipart::PartId> = recorded()
            .map(|(_, p)| p)
            .unwrap_or_default()
            .into_iter()
            .map(|content_id| object_store::multipart::PartId { content_id })
            .collect();
        match mp.complete_multipart(location, &upload_id, parts).await {
            Ok(_) => Ok(()),
            Err(err) => {
                // Completed before a crash (the outcome was not recorded): the object is there.
                match store.inner.head(location).await {
                    Ok(meta) if meta.size == size => Ok(()),
                    Ok(meta) => Err(Failure::Retry(format!(
                        "completing the upload failed ({}); the object holds {} of {size} bytes",
                        store.describe(&err),
                        meta.size
                    ))),
                    Err(head) => {
                        // The store no longer knows the upload and holds no object (a complete
                        // cut short): a new upload, from part 0, on the next attempt.
                        if matches!(
                            err,
                            object_store::Error::NotFound { .. } | object_store::Error::PermissionDenied { .. }
                        ) || store.describe(&err).contains("AccessDenied")
                            || store.describe(&err).contains("NoSuchUpload")
                        {
                            let id = mp.create_multipart(location).await.map_err(|err| classify(store, err))?;
                            record(ExportCommand::RecordUploadStarted { export_id, attempt, upload_id: id }).await?;
                        }
                        Err(Failure::Retry(format!(
                            "completing the upload failed ({}); the object is not there ({}); it goes up again",
                            store.describe(&err),
                            store.describe(&head)
                        )))
                    }
                }
            }
        }
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
        let tmp_left = tmp.clone();
        let made = tokio::task::spawn_blocking(move || -> Result<(u64, [u8; 32]), Failure> {
            let io = |err: std::io::Error| Failure::Retry(format!("writing the artifact: {err}"));
            let file = std::fs::File::create(&tmp).map_err(io)?;
            let mut w = Hashing { inner: std::io::BufWriter::new(file), hash: sha2::Sha256::new(), written: 0, bound };
            let (head, ids) = rt.read(|st| (ex::view::artifact_head(st, &e), ex::view::video_ids(st, &e)));
            let ids = match ids {
                Ok(ids) => ids,
                Err(index_id) => rt
                    .index_video_ids(&index_id)
                    .map_err(|e| Failure::Retry(format!("reading the index's videos: {e}")))?,
            };
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
                let rows = rt.video_rows(chunk.iter().copied())
                    .map_err(|e| Failure::Retry(format!("reading the videos' rows: {e}")))?;
                // Their runs' answers are rows too (`run_answers`), read for the tasks that have
                // succeeded when the chunk is written.
                let docs: Vec<String> = rt
                    .read_with_answers(
                        |st| ex::view::artifact_answer_keys(&ex::view::runs(st, &e), chunk),
                        |st, answers| {
                            let rows = spool_core::ViewRows { videos: &rows, answers };
                            let runs = ex::view::runs(st, &e);
                            chunk
                                .iter()
                                .filter_map(|id| ex::view::artifact_video(st, &runs, id, &rows))
                                .map(|v| serde_json::to_string(&v).unwrap_or_default())
                                .collect()
                        },
                    )
                    .map_err(|e| Failure::Retry(format!("reading the runs' answers: {e}")))?;
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
        .map_err(|err| Failure::Retry(format!("the artifact writer stopped: {err}")))
        .and_then(|r| r);
        if made.is_err() {
            // Nothing half-made is kept (an over-bound attempt could leave its bound's worth).
            let _ = std::fs::remove_file(&tmp_left);
        }
        made
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

/// What one part's upload came to (or why its bytes could not be read).
type PartSent = Result<Result<object_store::multipart::PartId, object_store::Error>, String>;

/// `len` bytes of the kept artifact from `at`.
fn read_part(file: &std::path::Path, at: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file)?;
    let mut buf = vec![0u8; spool_model::num::sat_usize(len)];
    f.read_exact_at(&mut buf, at)?;
    Ok(buf)
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

/// Write the artifact into a local connector's folder without following a link: each folder
/// on the way is checked (a symbolic link, or anything not a folder, is refused) or created,
/// and the file goes in as a temporary name renamed into place, so nothing half-written is
/// ever visible under the final name.
fn local_put(root: &std::path::Path, object_path: &str, src: &std::path::Path) -> Result<(), Failure> {
    let refuse = |what: String| Failure::Fatal(format!("the connector refused the write: {what}"));
    let segments: Vec<&str> = object_path.split('/').filter(|s| !s.is_empty()).collect();
    let Some((name, folders)) = segments.split_last() else { return Err(refuse("an empty destination path".into())) };
    let mut dir = root.to_path_buf();
    for seg in folders {
        dir.push(seg);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(format!(
                    "{seg:?} on the destination path is a symbolic link; exports never follow links"
                )));
            }
            // Perhaps fixed by the operator before the next attempt: retried.
            Ok(m) if !m.is_dir() => {
                return Err(Failure::Retry(format!(
                    "writing to the connector failed: {seg:?} on the destination path is not a folder"
                )));
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&dir).map_err(|err| refuse(format!("creating {seg:?}: {}", err.kind())))?;
            }
            Err(err) => return Err(refuse(format!("{seg:?}: {}", err.kind()))),
        }
    }
    let target = dir.join(name);
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(refuse("the destination file is a symbolic link".into()));
    }
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let io = |err: std::io::Error| Failure::Retry(format!("writing to the connector's folder: {}", err.kind()));
    let mut from = std::fs::File::open(src).map_err(io)?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .or_else(|_| {
            let _ = std::fs::remove_file(&tmp);
            std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)
        })
        .map_err(io)?;
    let copied = std::io::copy(&mut from, &mut to).and_then(|_| to.sync_all());
    if let Err(err) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(err));
    }
    std::fs::rename(&tmp, &target).map_err(|err| {
        let _ = std::fs::remove_file(&tmp);
        io(err)
    })?;
    Ok(())
}

/// A store error as an export failure: refusals are final, the rest is retried.
fn classify(store: &spool_storage::Store, err: object_store::Error) -> Failure {
    match err {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::NotFound { .. } => {
            Failure::Fatal(format!("the connector refused the write: {}", store.describe(&err)))
        }
        other => Failure::Retry(format!("writing to the connector failed: {}", store.describe(&other))),
    }
}

/// Upload the artifact to the connector in one go: one put up to `SINGLE_PUT_BYTES_MAX`, else a
/// streamed multipart upload (for stores without resumable uploads, such as local folders).
async fn put_file(
    store: &spool_storage::Store,
    location: &object_store::path::Path,
    file: &std::path::Path,
) -> Result<(), Failure> {
    use object_store::ObjectStoreExt;
    use tokio::io::AsyncReadExt;
    let classify = |err: object_store::Error| classify(store, err);
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

impl super::Execute for spool_core::ExportEffect {
    async fn run(&self, rt: &Arc<Runtime>) -> Result<(), crate::RuntimeError> {
        match self {
            spool_core::ExportEffect::RunExport { export_id, attempt } => rt.run_export(export_id, *attempt).await,
        }
    }

    fn give_up(&self, _code: &str, message: String) -> Vec<Command> {
        match self {
            spool_core::ExportEffect::RunExport { export_id, attempt } => vec![
                Command::Export(ExportCommand::StartExport { export_id: *export_id, attempt: *attempt }),
                Command::Export(ExportCommand::RecordExportFailed {
                    export_id: *export_id,
                    attempt: *attempt,
                    error: message,
                    retryable: false,
                }),
            ],
        }
    }
}
