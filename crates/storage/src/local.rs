//! Local folders, confined to their root.
//!
//! object_store's `LocalFileSystem` follows symbolic links while listing and opening, so a link
//! inside a root (`etc -> /etc`, `passwd.mp4 -> /etc/passwd`) would let a connector read the
//! whole machine. Spool therefore lists and reads local roots itself:
//! - directories reached through a symbolic link are never entered;
//! - a symbolically linked file is listed only when its target lies inside the root; links to
//!   outside are left out of listings (browse and import scans never see them);
//! - opening a file resolves the file actually opened (`/proc/self/fd`) and refuses it when it
//!   is outside the root, so a link swapped in after the listing is refused too
//!   (`path_outside_root`).
//!
//! Roots are checked when a connector is created and again whenever its store is built: a root
//! must be a folder under one of the operator's `SPOOL_LOCAL_ROOTS`, and must neither equal,
//! contain nor lie inside Spool's data directory.

use crate::{StorageEnv, StoreError};
use futures::StreamExt;
use object_store::ObjectMeta;
use object_store::path::Path;
use std::path::{Path as FsPath, PathBuf};

/// Entries buffered between the blocking directory walk and its consumer.
const WALK_CHANNEL_ENTRIES: usize = 1024;
/// Bytes read from a local file per chunk.
pub const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Check a local root against the operator's settings; returns its canonical form.
pub fn check_local_root(raw: &str, env: &StorageEnv) -> Result<PathBuf, StoreError> {
    let bad = |message: &str| StoreError::Invalid { field: "root", message: message.to_string() };
    if raw.contains('\0') {
        return Err(bad("must not contain NUL characters"));
    }
    let canonical = std::fs::canonicalize(raw).map_err(|_| bad("does not exist or cannot be read"))?;
    if !canonical.is_dir() {
        return Err(bad("is not a folder"));
    }
    if !env.local_roots.iter().any(|allowed| canonical.starts_with(allowed)) {
        return Err(bad(
            "is not under any of the folders the operator allows (SPOOL_LOCAL_ROOTS / storage.local_roots)",
        ));
    }
    if let Some(data) = &env.data_dir
        && (canonical.starts_with(data) || data.starts_with(&canonical))
    {
        return Err(bad("must not be, contain or lie inside Spool's data directory"));
    }
    Ok(canonical)
}

/// Where a key of a local root is on disk, when the key is a plain relative path.
fn join(root: &FsPath, key: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    for part in key.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

/// The object key of a file below the root, when it has one object_store accepts as is.
fn key_of(root: &FsPath, path: &FsPath) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?.to_str()?;
    let parsed = Path::parse(rel).ok()?;
    (parsed.as_ref() == rel).then(|| rel.to_string())
}

/// Metadata of a listed entry, or `None` when it must not be listed (a link to outside the
/// root, a link to a folder, anything that is not a regular file).
fn listed(root: &FsPath, entry: &walkdir::DirEntry) -> Option<ObjectMeta> {
    let key = key_of(root, entry.path())?;
    if key.contains('#') {
        // object_store's staging names for half-written uploads.
        return None;
    }
    let meta = if entry.path_is_symlink() {
        let target = std::fs::canonicalize(entry.path()).ok()?;
        if !target.starts_with(root) {
            return None;
        }
        std::fs::metadata(&target).ok()?
    } else {
        entry.metadata().ok()?
    };
    if !meta.is_file() {
        return None;
    }
    let modified = meta.modified().ok().map(chrono::DateTime::<chrono::Utc>::from).unwrap_or_default();
    let e_tag = {
        use std::os::unix::fs::MetadataExt;
        Some(format!("{:x}-{:x}-{:x}", meta.ino(), modified.timestamp_nanos_opt().unwrap_or(0), meta.len()))
    };
    Some(ObjectMeta { location: Path::from(key), last_modified: modified, size: meta.len(), e_tag, version: None })
}

/// List the files under `dir` (a key prefix made of whole segments, or empty) of a local root,
/// down to `max_depth` levels (all when `None`), following no link out of the root. Streams;
/// the walk runs on a blocking thread.
pub fn list(
    root: PathBuf,
    dir: Option<String>,
    max_depth: Option<usize>,
) -> futures::stream::BoxStream<'static, Result<ObjectMeta, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<ObjectMeta, String>>(WALK_CHANNEL_ENTRIES);
    tokio::task::spawn_blocking(move || {
        let start = match dir.as_deref().filter(|d| !d.is_empty()) {
            Some(d) => match join(&root, d) {
                Some(p) => p,
                None => return,
            },
            None => root.clone(),
        };
        // A start folder reached through a link is not entered either; a missing prefix
        // folder lists nothing (as on S3), a missing root is an error.
        match std::fs::symlink_metadata(&start) {
            Ok(m) if m.is_dir() => {}
            _ if !root.is_dir() => {
                let _ = tx.blocking_send(Err("the connector's folder does not exist (any more)".to_string()));
                return;
            }
            _ => return,
        }
        let mut walk = walkdir::WalkDir::new(&start).follow_links(false).min_depth(1);
        if let Some(depth) = max_depth {
            walk = walk.max_depth(depth);
        }
        for entry in walk {
            let item = match entry {
                Ok(e) if e.file_type().is_dir() => continue,
                Ok(e) => match listed(&root, &e) {
                    Some(m) => Ok(m),
                    None => continue,
                },
                // An unreadable folder is an error of the listing, without the server's path.
                Err(e) => {
                    let at = e.path().and_then(|p| key_of(&root, p)).unwrap_or_default();
                    Err(format!("cannot read {at:?} in the local folder"))
                }
            };
            if tx.blocking_send(item).is_err() {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
}

/// Why a local file could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    Missing,
    OutsideRoot,
    NotAFile,
    Unreadable(String),
}

/// Open a file of a local root for reading, refusing anything whose real location (after every
/// link, resolved on the opened file itself) is outside the root.
pub fn open(root: &FsPath, key: &str) -> Result<std::fs::File, OpenError> {
    let path = join(root, key).ok_or(OpenError::Missing)?;
    let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => OpenError::Missing,
        _ => OpenError::Unreadable(e.kind().to_string()),
    })?;
    let real = {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .or_else(|_| std::fs::canonicalize(&path))
            .map_err(|e| OpenError::Unreadable(e.kind().to_string()))?
    };
    if !real.starts_with(root) {
        return Err(OpenError::OutsideRoot);
    }
    let meta = file.metadata().map_err(|e| OpenError::Unreadable(e.kind().to_string()))?;
    if !meta.is_file() {
        return Err(OpenError::NotAFile);
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(allowed: &FsPath, data: Option<&FsPath>) -> StorageEnv {
        StorageEnv {
            local_roots: vec![allowed.canonicalize().unwrap()],
            data_dir: data.map(|d| d.canonicalize().unwrap()),
            ..StorageEnv::default()
        }
    }

    #[tokio::test]
    async fn symlinks_out_of_a_local_root_are_not_listed_nor_opened() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
        std::fs::create_dir(outside.path().join("etc")).unwrap();
        std::fs::write(outside.path().join("etc/passwd"), b"root:x:0:0").unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        let root = root_dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.mp4"), b"inside").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/b.mp4"), b"inside too").unwrap();
        std::os::unix::fs::symlink(outside.path().join("etc"), root.join("etcdir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("passwd.mp4")).unwrap();
        std::os::unix::fs::symlink(root.join("a.mp4"), root.join("alias.mp4")).unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("loop")).unwrap();

        let mut keys: Vec<String> =
            list(root.clone(), None, None).map(|m| m.unwrap().location.to_string()).collect::<Vec<_>>().await;
        keys.sort();
        assert_eq!(keys, ["a.mp4", "alias.mp4", "sub/b.mp4"]);
        let top: Vec<String> =
            list(root.clone(), None, Some(1)).map(|m| m.unwrap().location.to_string()).collect::<Vec<_>>().await;
        assert!(!top.iter().any(|k| k.contains('/')), "one level lists no deeper: {top:?}");
        let via_link: Vec<_> = list(root.clone(), Some("etcdir".into()), None).collect::<Vec<_>>().await;
        assert!(via_link.is_empty());

        assert_eq!(open(&root, "passwd.mp4").err(), Some(OpenError::OutsideRoot));
        assert_eq!(open(&root, "etcdir/passwd").err(), Some(OpenError::OutsideRoot));
        assert_eq!(open(&root, "../x").err(), Some(OpenError::Missing));
        assert!(open(&root, "alias.mp4").is_ok());
        assert_eq!(open(&root, "sub").err(), Some(OpenError::NotAFile));
    }

    #[test]
    fn the_data_directory_is_never_a_local_root() {
        let allowed = tempfile::tempdir().unwrap();
        let data = allowed.path().join("spool-data");
        std::fs::create_dir_all(data.join("media")).unwrap();
        std::fs::create_dir_all(allowed.path().join("videos")).unwrap();
        let env = env(allowed.path(), Some(&data));
        for bad in [data.clone(), data.join("media"), allowed.path().to_path_buf()] {
            let err = check_local_root(bad.to_str().unwrap(), &env).unwrap_err();
            assert!(err.to_string().contains("data directory"), "{bad:?}: {err}");
        }
        assert!(check_local_root(allowed.path().join("videos").to_str().unwrap(), &env).is_ok());
        assert!(check_local_root("/", &env).unwrap_err().to_string().contains("SPOOL_LOCAL_ROOTS"));
        assert!(check_local_root("a\0b", &env).unwrap_err().to_string().contains("NUL"));
    }
}
