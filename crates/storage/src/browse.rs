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

/// Whether a listed object is one the browse answers: below the prefix (a string prefix), not
/// deeper than the first level when not recursive, its name below the prefix matching the
/// pattern.
fn keeper(req: &BrowseRequest) -> Result<impl Fn(&ObjectMeta) -> bool + Send + Sync + 'static, BrowseError> {
    let glob = matcher(&req.pattern)?;
    let prefix = req.prefix.trim_start_matches('/').to_string();
    let recursive = req.recursive;
    Ok(move |meta: &ObjectMeta| -> bool {
        let key = meta.location.as_ref();
        let Some(below) = key.strip_prefix(prefix.as_str()) else { return false };
        let below = below.trim_start_matches('/');
        if below.is_empty() || (!recursive && below.contains('/')) {
            return false;
        }
        glob.as_ref().is_none_or(|g| g.is_match(below))
    })
}

/// The objects under the prefix that match the pattern, as a stream. Prefixes are string
/// prefixes, as S3 users expect: `videos/2024` matches `videos/2024/a.mp4` and
/// `videos/2024-01/b.mp4`. The pattern is matched against the part of the key below the prefix
/// (its file name when not recursive).
pub fn matching(
    store: &Store,
    req: &BrowseRequest,
) -> Result<futures::stream::BoxStream<'static, Result<ObjectMeta, BrowseError>>, BrowseError> {
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
    let keep = keeper(req)?;
    let recursive = req.recursive;
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

/// Folder listings a recursive browse of a bucket runs at once.
pub const WALK_LISTINGS: usize = 16;

/// A recursive browse of a bucket as a walk of its folders, [`WALK_LISTINGS`] delimiter
/// listings at once, as rclone walks: a store whose flat listing costs the whole bucket on each
/// page (s3s-fs walks its folder tree for every page of 1,000) answers a folder's listing at
/// that folder's cost, and folders are listed side by side. The same objects as [`matching`]
/// (the same prefix and pattern rules), in no order; past `req.max_entries` kept objects it
/// answers `TooMany`. Holds the kept objects and the listings in flight (object_store collects
/// one folder's pages whole, so a folder of more objects than `max_entries` is held whole once
/// before the answer). A folder is walked only below the one listed (its name strictly longer),
/// so a key with an empty segment (`a//b`) cannot make the walk list one folder again: such
/// folders are left out. `seed`: the listing of the prefix's folder, when already made.
pub async fn walk_folders(
    store: &Store,
    req: &BrowseRequest,
    seed: Option<object_store::ListResult>,
) -> Result<Vec<ObjectMeta>, BrowseError> {
    use futures::stream::FuturesUnordered;
    let keep = keeper(req)?;
    let prefix = req.prefix.trim_start_matches('/').to_string();
    let dir = prefix.rfind('/').map(|i| Path::from(&prefix[..i]));
    let list = |d: Option<Path>| {
        let inner = store.inner.clone();
        async move {
            let r = inner.list_with_delimiter(d.as_ref()).await;
            (d, r)
        }
    };
    let mut pending = FuturesUnordered::new();
    let mut ready = Vec::new();
    match seed {
        Some(first) => ready.push((dir, Ok(first))),
        None => pending.push(list(dir)),
    }
    let mut queue = std::collections::VecDeque::new();
    let mut out = Vec::new();
    loop {
        let (listed, r) = match ready.pop() {
            Some(first) => first,
            None => match pending.next().await {
                Some(next) => next,
                None => break,
            },
        };
        let r = match r {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(BrowseError::of(store, &e)),
        };
        for meta in r.objects {
            if !keep(&meta) {
                continue;
            }
            if out.len() >= req.max_entries {
                return Err(BrowseError::TooMany { max: req.max_entries });
            }
            out.push(meta);
        }
        let floor = listed.as_ref().map_or(0, |p| p.as_ref().len());
        queue.extend(r.common_prefixes.into_iter().filter(|cp| {
            let folder = format!("{}/", cp.as_ref());
            cp.as_ref().len() > floor && (folder.starts_with(&prefix) || prefix.starts_with(&folder))
        }));
        while pending.len() < WALK_LISTINGS {
            let Some(d) = queue.pop_front() else { break };
            pending.push(list(Some(d)));
        }
    }
    Ok(out)
}

/// Objects a flat listing's first page holds (S3's and object_store's page).
const FIRST_PAGE: usize = 1000;

/// How long a browse waits for the flat listing's first page once the prefix's folder is
/// listed, before it walks the folders instead: four times that folder's listing. A store whose
/// flat pages cost the whole bucket (s3s-fs walks its tree for each page of 1,000) answers a
/// folder in a fraction of a page's time, so walking pays; one whose requests cost the same
/// either way (moto filters every key on each) has its first page by then, and paging on wins
/// there, as fewer requests do.
pub fn page_deadline(folder_listing: std::time::Duration) -> std::time::Duration {
    folder_listing * 4
}

type Flat = futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>>;

/// Up to a page of a flat listing: the objects, whether the listing ended, and the rest.
async fn first_page(mut flat: Flat) -> (object_store::Result<(Vec<ObjectMeta>, bool)>, Flat) {
    let mut got = Vec::with_capacity(FIRST_PAGE);
    while got.len() < FIRST_PAGE {
        match flat.next().await {
            Some(Ok(meta)) => got.push(meta),
            Some(Err(e)) => return (Err(e), flat),
            None => return (Ok((got, true)), flat),
        }
    }
    (Ok((got, false)), flat)
}

/// A recursive browse of a bucket: the flat listing's first page and a delimiter listing of the
/// prefix's folder, side by side. A first page that is the last is all; one that comes first,
/// or within [`page_deadline`] of the folder's listing, is paged on from; otherwise the folders
/// are walked side by side ([`walk_folders`], seeded with the folder's listing) and the flat
/// listing is dropped.
async fn recursive_bucket(store: &Store, req: &BrowseRequest) -> Result<Vec<ObjectMeta>, BrowseError> {
    let prefix = req.prefix.trim_start_matches('/');
    let dir = prefix.rfind('/').map(|i| Path::from(&prefix[..i]));
    let keep = keeper(req)?;
    let push = |meta: ObjectMeta, out: &mut Vec<ObjectMeta>| {
        if !keep(&meta) {
            return Ok(());
        }
        if out.len() >= req.max_entries {
            return Err(BrowseError::TooMany { max: req.max_entries });
        }
        out.push(meta);
        Ok(())
    };
    let started = std::time::Instant::now();
    let page = first_page(store.inner.list(dir.as_ref()));
    let folder = store.inner.list_with_delimiter(dir.as_ref());
    tokio::pin!(page);
    tokio::pin!(folder);
    // Biased: a first page that is ready at once (a small listing) wins without the folder.
    let (first, mut flat) = tokio::select! {
        biased;
        got = &mut page => got,
        listed = &mut folder => {
            let listed = listed.map_err(|e| BrowseError::of(store, &e))?;
            let deadline = page_deadline(started.elapsed());
            match tokio::time::timeout(deadline.saturating_sub(started.elapsed()), &mut page).await {
                Ok(got) => got,
                Err(_) => return walk_folders(store, req, Some(listed)).await,
            }
        }
    };
    let (items, ended) = first.map_err(|e| BrowseError::of(store, &e))?;
    let mut out = Vec::new();
    for meta in items {
        push(meta, &mut out)?;
    }
    if !ended {
        while let Some(item) = flat.next().await {
            push(item.map_err(|e| BrowseError::of(store, &e))?, &mut out)?;
        }
    }
    Ok(out)
}

/// List objects under the prefix (see [`matching`]), sorted by path. Holds at most
/// `max_entries` entries in memory; past that it answers `TooMany`. A recursive browse of a
/// bucket may walk its folders side by side ([`recursive_bucket`]).
pub async fn browse(store: &Store, req: &BrowseRequest) -> Result<Vec<CloudFile>, BrowseError> {
    if req.recursive && store.local_root.is_none() {
        let mut out: Vec<CloudFile> = recursive_bucket(store, req).await?.iter().map(to_file).collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        return Ok(out);
    }
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
