use crate::Store;
use futures::StreamExt;
use globset::GlobMatcher;
use object_store::ObjectMeta;
use object_store::path::Path;
use spool_model::time::rfc3339_ms;

/// A browse: objects under `prefix` whose name below the prefix matches `pattern`.
#[derive(Debug, Clone)]
pub struct BrowseRequest {
    pub prefix: String,
    pub pattern: String,
    pub recursive: bool,
    /// Past this many matching entries the browse stops and answers `TooMany`.
    pub max_entries: usize,
}

/// The SDK's `CloudFile` (contract §2.2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CloudFile {
    pub path: String,
    pub name: String,
    pub size_bytes: u64,
    pub last_modified: String,
    pub extension: String,
    pub content_type: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    #[error("pattern: {0}")]
    BadPattern(String),
    #[error("more than {max} entries match; narrow the prefix or the pattern")]
    TooMany { max: usize },
    #[error("{0}")]
    Storage(String),
    /// The storage could not be reached or failed on its side (connection refused, timeout,
    /// 5xx after the client's own retries): worth listing again later.
    #[error("{0}")]
    Unreachable(String),
}

impl BrowseError {
    /// A listing error of `store`, classed: a transient one is [`BrowseError::Unreachable`].
    pub fn of(store: &Store, e: &object_store::Error) -> BrowseError {
        match e {
            object_store::Error::Generic { .. } => BrowseError::Unreachable(store.describe(e)),
            _ => BrowseError::Storage(store.describe(e)),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, BrowseError::Unreachable(_))
    }
}

/// A content type for common media and text extensions.
pub fn content_type_for(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "avi" => "video/x-msvideo",
        "mpg" | "mpeg" => "video/mpeg",
        "ts" => "video/mp2t",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "m4a" => "audio/mp4",
        "flac" => "audio/flac",
        "ogg" => "audio/ogg",
        "aac" => "audio/aac",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "json" => "application/json",
        "txt" => "text/plain",
        "csv" => "text/csv",
        _ => return None,
    })
}

fn to_file(meta: &ObjectMeta) -> CloudFile {
    let path = meta.location.to_string();
    let name = path.rsplit('/').next().unwrap_or("").to_string();
    let extension = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    };
    let ms = spool_model::num::non_negative(meta.last_modified.timestamp_millis());
    CloudFile {
        content_type: content_type_for(&extension).map(str::to_string),
        path,
        name,
        size_bytes: meta.size,
        last_modified: rfc3339_ms(ms),
        extension,
    }
}

/// Check a glob without using it.
pub fn check_pattern(pattern: &str) -> Result<(), BrowseError> {
    matcher(pattern).map(|_| ())
}

/// Whether one key (below the prefix) matches a pattern, by the rules `matching` uses. It
/// compiles the pattern on every call: for checks of one key and for the property tests.
pub fn pattern_matches(pattern: &str, key: &str) -> Result<bool, BrowseError> {
    Ok(matcher(pattern)?.is_none_or(|m| m.is_match(key)))
}

fn matcher(pattern: &str) -> Result<Option<GlobMatcher>, BrowseError> {
    spool_model::rules::glob_matcher(pattern).map_err(BrowseError::BadPattern)
}

/// The objects under the prefix that match the pattern, as a stream. Prefixes are string
/// prefixes, as S3 users expect: `videos/2024` matches `videos/2024/a.mp4` and
/// `videos/2024-01/b.mp4`. The pattern is matched against the part of the key below the prefix
/// (its file name when not recursive).
pub fn matching(
    store: &Store,
    req: &BrowseRequest,
) -> Result<futures::stream::BoxStream<'static, Result<ObjectMeta, BrowseError>>, BrowseError> {
    let glob = matcher(&req.pattern)?;
    let prefix = req.prefix.trim_start_matches('/').to_string();
    // object_store prefixes are whole path segments: list the deepest complete directory and
    // filter the rest of the prefix as a string.
    let dir = match prefix.rfind('/') {
        Some(i) => prefix[..i].to_string(),
        None => String::new(),
    };
    let rest_empty = prefix.len() == dir.len() || prefix.ends_with('/');
    let prefix_for_dirs = prefix.clone();
    let dir_path = if dir.is_empty() { None } else { Some(Path::from(dir)) };
    let recursive = req.recursive;
    let keep = move |meta: &ObjectMeta| -> bool {
        let key = meta.location.as_ref();
        let Some(below) = key.strip_prefix(prefix.as_str()) else { return false };
        let below = below.trim_start_matches('/');
        if below.is_empty() || (!recursive && below.contains('/')) {
            return false;
        }
        glob.as_ref().is_none_or(|g| g.is_match(below))
    };
    let stream = match &store.local_root {
        // Local folders: a confined walk, one level (or two, when the prefix ends inside a
        // folder name) when not recursive.
        Some(root) => {
            let depth = (!recursive).then_some(if rest_empty { 1 } else { 2 });
            crate::local::list(root.clone(), dir_path.map(|p| p.to_string()), depth)
                .filter_map(move |item| {
                    futures::future::ready(match item {
                        Ok(meta) if keep(&meta) => Some(Ok(meta)),
                        Ok(_) => None,
                        Err(e) => Some(Err(BrowseError::Storage(e))),
                    })
                })
                .boxed()
        }
        // One level of a bucket: delimiter listings (the folder the prefix ends in, and the
        // prefix itself when it may name a folder), never the whole subtree.
        None if !recursive => {
            let mut dirs = vec![dir_path.clone()];
            if !rest_empty {
                dirs.push(Some(Path::from(prefix_for_dirs.trim_end_matches('/'))));
            }
            let store = store.clone();
            futures::stream::iter(dirs)
                .then(move |d| {
                    let store = store.clone();
                    async move {
                        match store.inner.list_with_delimiter(d.as_ref()).await {
                            Ok(r) => r.objects.into_iter().map(Ok).collect::<Vec<_>>(),
                            Err(object_store::Error::NotFound { .. }) => Vec::new(),
                            Err(e) => vec![Err(BrowseError::of(&store, &e))],
                        }
                    }
                })
                .flat_map(futures::stream::iter)
                .filter(move |item| futures::future::ready(item.as_ref().map_or(true, &keep)))
                .boxed()
        }
        None => {
            let store = store.clone();
            store
                .inner
                .list(dir_path.as_ref())
                .filter_map(move |item| {
                    let out = match item {
                        Ok(meta) if keep(&meta) => Some(Ok(meta)),
                        Ok(_) => None,
                        Err(e) => Some(Err(BrowseError::of(&store, &e))),
                    };
                    futures::future::ready(out)
                })
                .boxed()
        }
    };
    Ok(stream.boxed())
}

/// List objects under the prefix (see [`matching`]), sorted by path. Holds at most
/// `max_entries` entries in memory; past that it answers `TooMany`.
pub async fn browse(store: &Store, req: &BrowseRequest) -> Result<Vec<CloudFile>, BrowseError> {
    let mut out = Vec::new();
    let mut stream = matching(store, req)?;
    while let Some(item) = stream.next().await {
        let meta = item?;
        if out.len() >= req.max_entries {
            return Err(BrowseError::TooMany { max: req.max_entries });
        }
        out.push(to_file(&meta));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
