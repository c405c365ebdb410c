//! Which partition of a partitioned cluster answers a request (`engine-spec/cluster.md`,
//! "Partitions"): a pure function of the method and the path, so every node routes alike.
//!
//! - Resources of an index (the index, its videos, import jobs, prompt runs, exports and
//!   automations) are answered by the partition their id was made in (`spool_model::partition_of`).
//! - `POST /indexes` makes a new index in a partition the node picks (the idempotency key's
//!   hash when there is one, so a retry through any node reaches the same partition).
//! - `GET /indexes`, `/import-jobs`, `/prompt-runs` and `/exports` gather every partition's
//!   list and merge them in the list's order.
//! - `POST /import-jobs`, `/prompt-runs/execute|estimate`, `/videos` and `/videos/batch…` go to
//!   the partition their JSON body names (`by_body`).
//! - Everything else is the catalog's (partition 0): API keys, connectors, prompts, webhooks and
//!   their deliveries, the admin routes.

use axum::http::Method;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Partition(i32),
    /// `POST /indexes`: a partition picked for the new index.
    NewIndex,
    /// A list over every index partition, merged.
    Gather(Gathered),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gathered {
    /// `GET /indexes`: oldest first (`created_at`, then id), every one.
    Indexes,
    /// `GET /import-jobs`: newest first, `limit` (100).
    ImportJobs,
    /// `GET /prompt-runs`: newest first, `limit` (200).
    PromptRuns,
    /// `GET /exports`: newest first, `limit` (50).
    Exports,
    /// `GET /usage…`: every partition's counters, added up.
    Usage,
    /// `GET /console/overview`: every partition's counts added up, the newest failures of all.
    ConsoleOverview,
    /// `GET /console/lists/{kind}`: every partition's page merged by their cursors.
    ConsoleList,
    /// `GET /console/changes` and `GET /admin/log/tail`: every partition's server-sent events,
    /// each marked with its partition, as they arrive.
    Events,
}

impl Gathered {
    /// The id field, whether newest first, and the default `limit` (none: every item).
    pub fn order(self) -> (&'static str, bool, Option<usize>) {
        match self {
            Gathered::Indexes => ("index_id", false, None),
            Gathered::ImportJobs => ("job_id", true, Some(100)),
            Gathered::PromptRuns => ("run_id", true, Some(200)),
            Gathered::Exports => ("export_id", true, Some(50)),
            Gathered::Usage | Gathered::ConsoleOverview | Gathered::ConsoleList | Gathered::Events => ("", false, None),
        }
    }
}

/// A request whose partition is named in its JSON body (`index_id`, `target.index_id`, the
/// first of `video_ids` or `target.video_ids`, the video of a `video_uri` or `gcs_uri`): the node reads the body (at most
/// [`ROUTED_BODY_BYTES_MAX`]) to route it.
pub fn routed_by_body(method: &Method, path: &str) -> bool {
    method == Method::POST
        && matches!(
            path.strip_prefix("/api/v2").unwrap_or(""),
            "/import-jobs"
                | "/videos/signed-url"
                | "/prompt-runs/execute"
                | "/prompt-runs/estimate"
                | "/videos"
                | "/videos/batch"
                | "/videos/batch/status"
                | "/videos/batch/segments"
                | "/search/multi-run"
                | "/workflow/process"
                | "/workflow/search"
        )
}

/// The largest body read to route a request (a larger one is answered 413).
pub const ROUTED_BODY_BYTES_MAX: usize = spool_api::BODY_BYTES_MAX;

/// The partition a JSON body names (see [`routed_by_body`]); the catalog when it names none.
pub fn by_body(body: &[u8], partitions: u16) -> Route {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return Route::Partition(0) };
    // A list's first id, or the id itself (the workflow routes take either).
    let first = |v: &serde_json::Value, key: &str| {
        let x = v.get(key)?;
        x.as_str().or_else(|| x.get(0).and_then(|y| y.as_str())).map(str::to_string)
    };
    let first_video = |v: &serde_json::Value| first(v, "video_ids");
    let named = v
        .get("index_id")
        .and_then(|x| x.as_str().map(str::to_string))
        .or_else(|| v.get("target").and_then(|t| t.get("index_id")).and_then(|x| x.as_str().map(str::to_string)))
        .or_else(|| first_video(&v))
        .or_else(|| v.get("target").and_then(first_video))
        // The workflow's and the multi-run search's runs and jobs.
        .or_else(|| first(&v, "import_job_id"))
        .or_else(|| first(&v, "prompt_run_ids"))
        .or_else(|| first(&v, "run_ids"))
        // `POST /videos/batch/segments` with `targets` (the SDK's run-scoped form).
        .or_else(|| {
            let t = v.get("targets").and_then(|a| a.get(0))?;
            t.get("video_id").and_then(|x| x.as_str().map(str::to_string))
        })
        .or_else(|| {
            // `spool://media/videos/<shard>/<video id>[.<ext>]`
            let uri = v.get("video_uri").or_else(|| v.get("gcs_uri")).and_then(|x| x.as_str())?;
            let file = uri.rsplit('/').next()?;
            file.split('.').next().filter(|id| id.starts_with("vid_")).map(str::to_string)
        });
    match named {
        Some(id) => by_id(&id, partitions),
        None => Route::Partition(0),
    }
}

/// The partition of a public id (`idx_…`, `vid_…`, `job_…`, `run_…`, `exp_…`, `auto_…`), when
/// it names an index partition of a cluster of `partitions`; an id that does not (unknown,
/// made up) goes to the catalog, which answers that it does not exist.
fn by_id(raw: &str, partitions: u16) -> Route {
    let Some((_, ulid)) = raw.split_once('_') else { return Route::Partition(0) };
    match ulid.parse::<ulid::Ulid>() {
        Ok(u) => {
            let p = spool_model::partition_of(u);
            if p >= 1 && p <= partitions { Route::Partition(i32::from(p)) } else { Route::Partition(0) }
        }
        Err(_) => Route::Partition(0),
    }
}

pub fn route(method: &Method, path: &str, partitions: u16) -> Route {
    if partitions == 0 {
        return Route::Partition(0);
    }
    // A signed media URL (`/media/videos/<shard>/<video id>[.<ext>]`): the video's partition.
    if let Some(media) = path.strip_prefix("/media/") {
        let file = media.rsplit('/').next().unwrap_or("");
        let id = file.split('.').next().unwrap_or("");
        return if id.starts_with("vid_") { by_id(id, partitions) } else { Route::Partition(0) };
    }
    let Some(rest) = path.strip_prefix("/api/v2/") else { return Route::Partition(0) };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["indexes"] if method == Method::GET => Route::Gather(Gathered::Indexes),
        ["import-jobs"] if method == Method::GET => Route::Gather(Gathered::ImportJobs),
        ["prompt-runs"] if method == Method::GET => Route::Gather(Gathered::PromptRuns),
        ["exports"] if method == Method::GET => Route::Gather(Gathered::Exports),
        ["indexes"] if method == Method::POST => Route::NewIndex,
        ["indexes", id, ..] => by_id(id, partitions),
        ["videos", id, ..] if id.starts_with("vid_") => by_id(id, partitions),
        ["import-jobs", id, ..] if id.starts_with("job_") => by_id(id, partitions),
        ["prompt-runs", id, ..] if id.starts_with("run_") => by_id(id, partitions),
        ["exports", "index", id, ..] | ["exports", "prompt-run", id, ..] => by_id(id, partitions),
        ["exports", id, ..] if id.starts_with("exp_") => by_id(id, partitions),
        ["search", "filter", id] if *id != "playground" => by_id(id, partitions),
        // A stream's events are in its aggregate's partition (the console's timelines).
        ["admin", "streams" | "replay" | "bundles", id] => by_id(id, partitions),
        ["usage", ..] if method == Method::GET => Route::Gather(Gathered::Usage),
        ["console", "overview"] if method == Method::GET => Route::Gather(Gathered::ConsoleOverview),
        ["console", "lists", _] if method == Method::GET => Route::Gather(Gathered::ConsoleList),
        ["console", "changes"] | ["admin", "log", "tail"] if method == Method::GET => Route::Gather(Gathered::Events),
        _ => Route::Partition(0),
    }
}

/// A ranked search of an index (`POST /indexes/{id}/search`, `…/image-search` or
/// `…/multimodal-search`): its index id and the route's last segment. Its `index_ids` may name
/// indexes of other partitions: the node then asks each partition and merges (`node.rs`).
pub fn index_search<'a>(method: &Method, path: &'a str) -> Option<(&'a str, &'static str)> {
    if method != Method::POST {
        return None;
    }
    let rest = path.strip_prefix("/api/v2/indexes/")?;
    let (id, what) = rest.split_once('/')?;
    match what {
        "search" => Some((id, "search")),
        "image-search" => Some((id, "image-search")),
        "multimodal-search" => Some((id, "multimodal-search")),
        _ => None,
    }
}

/// A filter search of an index (`POST /search/filter/{id}`): its index id.
pub fn index_filter<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    let id = path.strip_prefix("/api/v2/search/filter/")?;
    (method == Method::POST && id != "playground" && !id.contains('/')).then_some(id)
}

/// The partition a public id names (the catalog, 0, for an id of none).
pub fn partition_of_id(raw: &str, partitions: u16) -> i32 {
    match by_id(raw, partitions) {
        Route::Partition(p) => p,
        _ => 0,
    }
}

/// `GET /workflow/search/page?cursor=`: the partition of the snapshot the cursor names (made by
/// the partition that answered the search, its id carrying the partition).
pub fn search_page(path: &str, query: Option<&str>, partitions: u16) -> Option<Route> {
    use base64::Engine;
    if path != "/api/v2/workflow/search/page" || partitions == 0 {
        return None;
    }
    let cursor = query?.split('&').find_map(|kv| kv.strip_prefix("cursor="))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let id = text.strip_prefix("v1:")?.split(':').next()?;
    let u = id.parse::<ulid::Ulid>().ok()?;
    let p = spool_model::partition_of(u);
    Some(if p <= partitions { Route::Partition(i32::from(p)) } else { Route::Partition(0) })
}

/// Changes of a catalog fact that index partitions fold (`spool_model::mirrored_to_partitions`):
/// an API key's revocation, rotation or deletion, a connector's or a prompt's change or
/// deletion. They are answered once every index partition followed them (`node.rs`,
/// `follow_barrier`). Creations need no wait: a partition that meets an unknown key, connector
/// or prompt reads the catalog at once.
pub fn changes_catalog_fact(method: &Method, path: &str) -> bool {
    if *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS {
        return false;
    }
    let Some(rest) = path.strip_prefix("/api/v2") else { return false };
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api-keys", id] | ["api-keys", id, "revoke" | "rotate"] => !id.is_empty(),
        ["connectors", id] => !id.is_empty() && !matches!(*id, "s3" | "local" | "azure" | "gcs"),
        ["prompts", id] => !id.is_empty() && *id != "test-schema",
        _ => false,
    }
}

/// A prompt's usage (`GET /prompts/{id}/usage`): the catalog's answer, with `is_in_use` true when
/// a run of any index partition uses the prompt; the node asks each of them (`node.rs`). Also
/// asked before a prompt is deleted without `force`. The prompt's id, when the path is one.
pub fn prompt_usage<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    if method != Method::GET {
        return None;
    }
    let rest = path.strip_prefix("/api/v2/prompts/")?;
    let id = rest.strip_suffix("/usage")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// `POST /exports/index/{id}`: the index's id (its body may name runs of other partitions).
pub fn index_export<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    if method != Method::POST {
        return None;
    }
    let id = path.strip_prefix("/api/v2/exports/index/")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// `DELETE /prompts/{id}` without `force=true`: the prompt's id.
pub fn prompt_delete_unforced<'a>(method: &Method, path: &'a str, query: Option<&str>) -> Option<&'a str> {
    if method != Method::DELETE {
        return None;
    }
    let id = path.strip_prefix("/api/v2/prompts/")?;
    let forced = query.is_some_and(|q| q.split('&').any(|kv| kv.eq_ignore_ascii_case("force=true")));
    (!id.is_empty() && !id.contains('/') && !forced).then_some(id)
}

/// Webhook routes whose body may name indexes (`index_ids`), checked in their partitions
/// before the catalog takes them.
pub fn names_indexes(method: &Method, path: &str) -> bool {
    let rest = path.strip_prefix("/api/v2/webhooks").unwrap_or("?");
    (method == Method::POST && rest.is_empty())
        || (method == Method::PATCH && rest.starts_with('/') && !rest[1..].contains('/'))
}

/// Index ids of one webhook looked up at most (more are the catalog's to refuse).
pub const INDEX_IDS_CHECKED_MAX: usize = 100;

/// The upload route, whose index is a multipart field (`index_id`) sent before the file.
pub fn is_upload(method: &Method, path: &str) -> bool {
    method == Method::POST && matches!(path, "/api/v2/videos/upload" | "/api/v2/workflow/upload")
}

/// The most of an upload's body read to find its `index_id` field.
pub const UPLOAD_PEEK_BYTES_MAX: usize = 64 << 10;

/// What the beginning of a multipart body says about its `index_id` field: `Some(Some(id))`
/// found, `Some(None)` the file part (or the end) came first (no index: the catalog's
/// playground), `None` not known yet (read more).
pub fn upload_index(prefix: &[u8], boundary: &str) -> Option<Option<String>> {
    let text = String::from_utf8_lossy(prefix);
    let delim = format!("--{boundary}");
    let mut parts = text.split(delim.as_str()).skip(1).peekable();
    while let Some(part) = parts.next() {
        let complete = parts.peek().is_some();
        let (head, value) = part.split_once("\r\n\r\n")?;
        let name = head
            .split(';')
            .find_map(|kv| kv.trim().strip_prefix("name="))
            .map(|n| n.split(['\r', '\n']).next().unwrap_or("").trim_matches('"').to_string());
        match name.as_deref() {
            Some("file") => return Some(None),
            Some("index_id") if complete => {
                let v = value.strip_suffix("\r\n").unwrap_or(value).trim();
                return Some(if v.is_empty() { None } else { Some(v.to_string()) });
            }
            Some("index_id") => return None,
            _ if !complete => return None,
            _ => {}
        }
    }
    if text.contains(&format!("{delim}--")) { Some(None) } else { None }
}

/// The index partition for a new index: the idempotency key's (so a retry through any node
/// lands where the first attempt did), else one picked at random.
pub fn new_index_partition(idempotency_key: Option<&str>, partitions: u16, random: u64) -> i32 {
    let n = u64::from(partitions.max(1));
    let h = match idempotency_key {
        Some(k) => {
            use sha2::Digest;
            let d = sha2::Sha256::digest(k.as_bytes());
            u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        }
        None => random,
    };
    i32::try_from(1 + h % n).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: &str, p: u16) -> String {
        let u = spool_model::with_partition(ulid::Ulid::from_parts(1_764_000_000_000, 0x1234_5678_9abc_def0), p);
        format!("{prefix}_{u}")
    }

    #[test]
    fn index_resources_go_to_the_partition_in_their_id() {
        let n = 4;
        for (path, p) in [
            (format!("/api/v2/indexes/{}", id("idx", 3)), 3),
            (format!("/api/v2/indexes/{}/videos", id("idx", 2)), 2),
            (format!("/api/v2/videos/{}", id("vid", 4)), 4),
            (format!("/api/v2/import-jobs/{}/files", id("job", 1)), 1),
            (format!("/api/v2/prompt-runs/{}/results", id("run", 2)), 2),
            (format!("/api/v2/exports/{}", id("exp", 3)), 3),
            (format!("/api/v2/exports/index/{}", id("idx", 4)), 4),
            (format!("/media/videos/01/{}.mp4", id("vid", 2)), 2),
        ] {
            assert_eq!(route(&Method::GET, &path, n), Route::Partition(p), "{path}");
        }
    }

    #[test]
    fn the_catalog_answers_the_rest_and_unknown_ids() {
        let n = 4;
        for path in [
            "/api/v2/connectors".to_string(),
            "/api/v2/api-keys".to_string(),
            format!("/api/v2/webhooks/{}", id("wh", 0)),
            "/api/v2/prompts".to_string(),
            "/api/v2/admin/cluster".to_string(),
            format!("/api/v2/indexes/{}", id("idx", 9)),
            "/api/v2/indexes/idx_not-an-id".to_string(),
            "/healthz".to_string(),
        ] {
            assert_eq!(route(&Method::GET, &path, n), Route::Partition(0), "{path}");
        }
        assert_eq!(route(&Method::GET, "/api/v2/indexes", n), Route::Gather(Gathered::Indexes));
        assert_eq!(route(&Method::POST, "/api/v2/indexes", n), Route::NewIndex);
        assert_eq!(route(&Method::GET, "/api/v2/indexes", 0), Route::Partition(0));
    }

    #[test]
    fn a_body_names_its_partition() {
        let n = 4;
        let idx = id("idx", 3);
        let vid = id("vid", 2);
        assert_eq!(by_body(format!(r#"{{"index_id":"{idx}"}}"#).as_bytes(), n), Route::Partition(3));
        assert_eq!(
            by_body(format!(r#"{{"target":{{"type":"index","index_id":"{idx}"}}}}"#).as_bytes(), n),
            Route::Partition(3)
        );
        assert_eq!(by_body(format!(r#"{{"video_ids":["{vid}"]}}"#).as_bytes(), n), Route::Partition(2));
        assert_eq!(
            by_body(format!(r#"{{"target":{{"type":"videos","video_ids":["{vid}"]}}}}"#).as_bytes(), n),
            Route::Partition(2)
        );
        assert_eq!(
            by_body(format!(r#"{{"video_uri":"spool://media/videos/01/{vid}.mp4"}}"#).as_bytes(), n),
            Route::Partition(2)
        );
        // A regression: the run-scoped form went to the catalog, which has no video.
        assert_eq!(
            by_body(format!(r#"{{"targets":[{{"video_id":"{vid}","run_id":"run_x"}}]}}"#).as_bytes(), n),
            Route::Partition(2)
        );
        // The workflow's and multi-run's bodies: a job, runs (a list or one id).
        let job = id("job", 4);
        let run = id("run", 1);
        assert_eq!(by_body(format!(r#"{{"import_job_id":"{job}"}}"#).as_bytes(), n), Route::Partition(4));
        assert_eq!(by_body(format!(r#"{{"prompt_run_ids":["{run}"]}}"#).as_bytes(), n), Route::Partition(1));
        assert_eq!(by_body(format!(r#"{{"prompt_run_ids":"{run}"}}"#).as_bytes(), n), Route::Partition(1));
        assert_eq!(by_body(format!(r#"{{"run_ids":["{run}"],"query":"x"}}"#).as_bytes(), n), Route::Partition(1));
        assert_eq!(by_body(format!(r#"{{"video_ids":"{vid}"}}"#).as_bytes(), n), Route::Partition(2));
        assert!(routed_by_body(&Method::POST, "/api/v2/workflow/search"));
        // A regression: the workflow's upload went to the catalog, which has no index.
        assert!(is_upload(&Method::POST, "/api/v2/workflow/upload"));
        assert_eq!(route(&Method::GET, "/api/v2/usage/history", n), Route::Gather(Gathered::Usage));
        assert_eq!(route(&Method::GET, "/api/v2/console/overview", n), Route::Gather(Gathered::ConsoleOverview));
        assert_eq!(route(&Method::GET, "/api/v2/console/lists/import-jobs", n), Route::Gather(Gathered::ConsoleList));
        assert_eq!(route(&Method::GET, "/api/v2/console/changes", n), Route::Gather(Gathered::Events));
        assert_eq!(route(&Method::GET, "/api/v2/admin/log/tail", n), Route::Gather(Gathered::Events));
        assert_eq!(route(&Method::GET, &format!("/api/v2/admin/streams/{}", id("job", 3)), n), Route::Partition(3));
        assert_eq!(route(&Method::GET, "/console/console.js", n), Route::Partition(0));
        let idx = id("idx", 3);
        assert_eq!(route(&Method::POST, &format!("/api/v2/search/filter/{idx}"), n), Route::Partition(3));
        assert_eq!(route(&Method::POST, "/api/v2/search/filter/playground", n), Route::Partition(0));
        {
            use base64::Engine;
            let snap = id("x", 3).split_once('_').map(|(_, u)| u.to_string()).unwrap_or_default();
            let c = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{snap}:10:10"));
            let q = format!("cursor={c}");
            assert_eq!(search_page("/api/v2/workflow/search/page", Some(&q), n), Some(Route::Partition(3)));
            assert_eq!(search_page("/api/v2/workflow/search/page", Some("cursor=garbage"), n), None);
        }
        assert_eq!(by_body(b"{}", n), Route::Partition(0));
        assert_eq!(by_body(b"not json", n), Route::Partition(0));
        assert!(routed_by_body(&Method::POST, "/api/v2/import-jobs"));
        assert!(!routed_by_body(&Method::GET, "/api/v2/import-jobs"));
    }

    #[test]
    fn an_upload_names_its_index_before_its_file() {
        let b = "XyZ";
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nclip\r\n--XyZ\r\nContent-Disposition: form-data; name=\"index_id\"\r\n\r\nidx_1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF";
        assert_eq!(upload_index(body.as_bytes(), b), Some(Some("idx_1".into())));
        assert_eq!(upload_index(&body.as_bytes()[..60], b), None, "the index part is not complete yet");
        let no_index = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF";
        assert_eq!(upload_index(no_index.as_bytes(), b), Some(None));
    }

    #[test]
    fn a_new_index_keeps_its_partition_across_retries() {
        let a = new_index_partition(Some("key-1"), 8, 1);
        assert_eq!(a, new_index_partition(Some("key-1"), 8, 999));
        assert!((1..=8).contains(&a));
        assert!((1..=8).contains(&new_index_partition(None, 8, u64::MAX)));
    }
}
