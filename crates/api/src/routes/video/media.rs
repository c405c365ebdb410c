//! Stored media over HTTP: `POST /videos/signed-url` mints a short-lived URL for a video's
//! `video_uri`; `GET /media/{path}` (outside `/api/v2`, no key: the URL is the capability)
//! serves the stored bytes with range requests. The same URLs go to processors.
//! Also the batch reads `POST /videos/batch` and `POST /videos/batch/segments`.

use super::views;
use crate::body::JsonBody;
use crate::{ApiError, AppState, Principal};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use spool_core::machines::prompt_run::PromptRun;
use spool_model::{Scope, VideoId};

/// How long a signed media URL reads: 15 minutes.
pub const SIGNED_URL_TTL_SECS: u64 = 15 * 60;
/// The key purpose signed media URLs are made with (a key derived from the master key).
const SIGNING_PURPOSE: &str = spool_runtime::MEDIA_SIGNING_PURPOSE;
/// The prefix of a stored video's `video_uri`.
pub const VIDEO_URI_PREFIX: &str = "spool://media/";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    gcs_uri: String,
    #[serde(default)]
    force_refresh: bool,
}

fn signature(app: &AppState, path: &str, expires: u64) -> String {
    hex::encode(app.rt.keyring().mac(SIGNING_PURPOSE, format!("{path}\n{expires}").as_bytes()))
}

/// The signature of a URL a key minted (`kid` in the URL): it also covers the key's id and its
/// hash as it is now, so the URL stops reading once that key is revoked, deleted, expired or
/// rotated (the hash never leaves the server). URLs the engine mints for processors carry no
/// `kid` and live their 15 minutes.
fn key_signature(app: &AppState, path: &str, expires: u64, kid: &str) -> Option<String> {
    let hash = crate::auth::active_key_hash(app, kid, app.rt.now_ms())?;
    let signed = format!("{path}\n{expires}\n{kid}\n{}", hex::encode(hash));
    Some(hex::encode(app.rt.keyring().mac(SIGNING_PURPOSE, signed.as_bytes())))
}

/// The base clients reach: `SPOOL_PUBLIC_URL`, else the request's own host over http.
fn public_base(app: &AppState, headers: &HeaderMap) -> String {
    if let Some(base) = &app.cfg.public_url {
        return base.trim_end_matches('/').to_string();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// `POST /videos/signed-url`: `{gcs_uri}` is a video's `video_uri`.
pub async fn signed_url(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<SignRequest>,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let uri = body.value.gcs_uri.trim().to_string();
    let _ = body.value.force_refresh; // every call mints a new URL
    let Some(path) = uri.strip_prefix(VIDEO_URI_PREFIX) else {
        return Err(ApiError::validation(
            "gcs_uri",
            format!("must be a video's video_uri ({VIDEO_URI_PREFIX}…); Spool signs only media it stores"),
        ));
    };
    let known = media_visible(&app, path)?;
    if !known {
        return Err(ApiError::not_found("media", &uri));
    }
    let expires = app.rt.now_ms() / 1000 + SIGNED_URL_TTL_SECS;
    let kid = who.id.clone();
    let sig = key_signature(&app, path, expires, &kid)
        .ok_or_else(|| ApiError::unauthenticated("authentication_invalid_api_key", "the API key is no longer valid"))?;
    let url = format!("{}/media/{path}?expires={expires}&kid={kid}&sig={sig}", public_base(&app, &headers));
    let v = serde_json::json!({
        "signed_url": url,
        "expires_at": spool_model::time::rfc3339_ms(expires * 1000),
    });
    Ok(super::json(StatusCode::OK, &v))
}

/// Whether a stored object belongs to a visible video (or part): the path's file name is the
/// object's first video, whose row lists its parts, so this is one row read and O(parts) lookups.
fn media_visible(app: &AppState, path: &str) -> Result<bool, ApiError> {
    let stem = path.rsplit('/').next().unwrap_or("").split('.').next().unwrap_or("");
    let Ok(id) = stem.parse::<VideoId>() else { return Ok(false) };
    let Some(row) = app.rt.video_row(&id)? else { return Ok(false) };
    if row.media_path != path {
        return Ok(false);
    }
    // Every part is in the row's index: a part is visible when its deletion has not started.
    Ok(app.rt.read(|st| {
        st.video_of(id, &row).visible(st)
            || spool_core::parts_of_file(&id, &row, None)
                .iter()
                .any(|p| st.video_shown(p, &row.index_id))
    }))
}

fn media_error(status: StatusCode, code: &'static str, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// A single byte range of a `Range` header over `len` bytes: `Ok(None)` for the whole file,
/// `Err(())` when unsatisfiable.
fn parse_range(h: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = h else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        // Several ranges: answered whole (allowed by RFC 9110).
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.checked_sub(1).ok_or(())?)
        }
        (s, "") => (s.parse().map_err(|_| ())?, len.checked_sub(1).ok_or(())?),
        (s, e) => {
            let (s, e): (u64, u64) = (s.parse().map_err(|_| ())?, e.parse().map_err(|_| ())?);
            (s, e.min(len.saturating_sub(1)))
        }
    };
    if start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn content_type(path: &str) -> &'static str {
    match spool_core::imports::extension(path).as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "avi" => "video/x-msvideo",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "ogg" => "audio/ogg",
        "m4a" | "aac" => "audio/aac",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        _ => "application/octet-stream",
    }
}

/// `GET /media/{path}?expires=&sig=`: the stored bytes, whole or one range.
pub async fn serve(
    State(app): State<AppState>,
    Path(path): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = match crate::body::Query::parse(q.as_deref()) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let forbidden =
        || media_error(StatusCode::FORBIDDEN, "signature_invalid", "the URL is not a valid signed media URL");
    let (Some(expires), Some(sig)) = (q.get("expires").and_then(|e| e.parse::<u64>().ok()), q.get("sig")) else {
        return forbidden();
    };
    let want = match q.get("kid") {
        Some(kid) => key_signature(&app, &path, expires, kid).unwrap_or_default(),
        None => signature(&app, &path, expires),
    };
    if want.is_empty() || !constant_eq(want.as_bytes(), sig.as_bytes()) {
        return forbidden();
    }
    if app.rt.now_ms() / 1000 > expires {
        return media_error(StatusCode::FORBIDDEN, "signature_expired", "the signed URL has expired; mint a new one");
    }
    if path.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return forbidden();
    }
    // A URL minted before its video was deleted reads nothing.
    match media_visible(&app, &path) {
        Ok(true) => {}
        Ok(false) => return media_error(StatusCode::NOT_FOUND, "not_found", "the media is gone"),
        Err(e) => return e.into_response(),
    }
    let range = headers.get(header::RANGE).and_then(|r| r.to_str().ok());
    let Some(root) = app.rt.media_dir() else {
        return serve_shared(&app, &path, range).await;
    };
    let file = match tokio::fs::File::open(root.join(&path)).await {
        Ok(f) => f,
        Err(_) => return media_error(StatusCode::NOT_FOUND, "not_found", "the media is gone"),
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(_) => return media_error(StatusCode::NOT_FOUND, "not_found", "the media is gone"),
    };
    let Some((status, start, end)) = answered_range(range, len) else { return unsatisfiable(len) };
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = file;
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return media_error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "the media cannot be read");
    }
    let n = if len == 0 { 0 } else { end - start + 1 };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file.take(n)));
    media_response(&path, status, (start, end, len), body)
}

/// The stored bytes of a shared media store (`SPOOL_MEDIA_URL`): one ranged read of the object.
async fn serve_shared(app: &AppState, path: &str, range: Option<&str>) -> Response {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    let store = app.rt.media_store();
    let location = object_store::path::Path::from(path);
    let len = match store.inner.head(&location).await {
        Ok(meta) => meta.size,
        Err(object_store::Error::NotFound { .. }) => {
            return media_error(StatusCode::NOT_FOUND, "not_found", "the media is gone");
        }
        Err(e) => {
            tracing::warn!(path, error = %store.describe(&e), "the shared media store did not answer");
            return media_error(StatusCode::SERVICE_UNAVAILABLE, "media_store_unavailable", "the media store did not answer; try again");
        }
    };
    let Some((status, start, end)) = answered_range(range, len) else { return unsatisfiable(len) };
    let body = if len == 0 {
        axum::body::Body::empty()
    } else {
        let opts = object_store::GetOptions { range: Some((start..end + 1).into()), ..Default::default() };
        match store.inner.get_opts(&location, opts).await {
            Ok(got) => axum::body::Body::from_stream(got.into_stream().map(|c| c.map_err(std::io::Error::other))),
            Err(object_store::Error::NotFound { .. }) => {
                return media_error(StatusCode::NOT_FOUND, "not_found", "the media is gone");
            }
            Err(e) => {
                tracing::warn!(path, error = %store.describe(&e), "the shared media store did not answer");
                return media_error(StatusCode::SERVICE_UNAVAILABLE, "media_store_unavailable", "the media store did not answer; try again");
            }
        }
    };
    media_response(path, status, (start, end, len), body)
}

/// The status and byte span a `Range` header asks of `len` bytes (the whole: 200); `None`:
/// [`unsatisfiable`].
fn answered_range(range: Option<&str>, len: u64) -> Option<(StatusCode, u64, u64)> {
    match parse_range(range, len) {
        Ok(None) => Some((StatusCode::OK, 0, len.saturating_sub(1))),
        Ok(Some((s, e))) => Some((StatusCode::PARTIAL_CONTENT, s, e)),
        Err(()) => None,
    }
}

/// 416 with the length the range missed.
fn unsatisfiable(len: u64) -> Response {
    (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{len}"))]).into_response()
}

fn media_response(path: &str, status: StatusCode, (start, end, len): (u64, u64, u64), body: axum::body::Body) -> Response {
    let n = if len == 0 { 0 } else { end - start + 1 };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type(path))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, n.to_string())
        .header(header::CACHE_CONTROL, "private, max-age=60");
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
    }
    resp.body(body).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Largest `video_ids` of `POST /videos/batch` (the SDK's bound).
pub const BATCH_RETRIEVE_MAX: usize = 100;
/// Largest `video_ids` / `targets` of `POST /videos/batch/segments` (the SDK's bound).
pub const BATCH_SEGMENTS_MAX: usize = 50;
/// Segments `POST /videos/batch/segments` gives per video (its first ones, in time order; the
/// rest through `GET /videos/{id}/segments`, whose pages are as large).
pub const BATCH_SEGMENTS_PER_VIDEO_MAX: u32 = 100;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchIds {
    video_ids: Vec<String>,
}

/// `POST /videos/batch`: `VideoWithDetails` of each known video (unknown ids are left out).
pub async fn batch(
    State(app): State<AppState>,
    who: Principal,
    body: JsonBody<BatchIds>,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let ids = &body.value.video_ids;
    if ids.is_empty() || ids.len() > BATCH_RETRIEVE_MAX {
        return Err(ApiError::validation("video_ids", format!("send 1 to {BATCH_RETRIEVE_MAX} ids")));
    }
    let wanted: Vec<VideoId> = ids.iter().filter_map(|raw| raw.parse().ok()).collect();
    let items: Vec<serde_json::Value> = crate::routes::with_video_rows(&app, |_| wanted, |st, rows| {
        super::visible_videos(st, rows, ids)
            .map(|(v, row)| {
                let mut j = views::video(&v, &row, st);
                j["gif_data"] = serde_json::Value::Null;
                j["first_thumbnail"] = serde_json::Value::Null;
                j
            })
            .collect()
    })?;
    Ok(super::json(StatusCode::OK, &serde_json::Value::Array(items)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    video_id: String,
    #[serde(default)]
    run_id: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSegments {
    #[serde(default)]
    video_ids: Option<Vec<String>>,
    #[serde(default)]
    targets: Option<Vec<Target>>,
}

/// `POST /videos/batch/segments`: `{video_ids}` or `{targets}`; each known video with its
/// segments (none until prompt runs exist).
pub async fn batch_segments(
    State(app): State<AppState>,
    who: Principal,
    body: JsonBody<BatchSegments>,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let targets: Vec<(String, Option<String>)> = match (body.value.video_ids, body.value.targets) {
        (Some(_), Some(_)) => return Err(ApiError::validation("targets", "send video_ids or targets, not both")),
        (Some(ids), None) => ids.into_iter().map(|i| (i, None)).collect(),
        (None, Some(t)) => t.into_iter().map(|t| (t.video_id, t.run_id)).collect(),
        (None, None) => return Err(ApiError::validation("video_ids", "send video_ids or targets")),
    };
    if targets.is_empty() || targets.len() > BATCH_SEGMENTS_MAX {
        return Err(ApiError::validation("video_ids", format!("send 1 to {BATCH_SEGMENTS_MAX} videos")));
    }
    let wanted: Vec<VideoId> = targets.iter().filter_map(|(raw, _)| raw.parse().ok()).collect();
    let rows = app.rt.video_rows(wanted)?;
    // Each visible video's segments in one run: the target's, else the video's latest (as `GET
    // /videos/{id}/segments`), at most BATCH_SEGMENTS_PER_VIDEO_MAX; none before its first run.
    // Their answers are rows (`run_answers`).
    type Target<'a> = (&'a str, Option<&'a str>, Option<(&'a PromptRun, u32)>);
    fn chosen<'a>(st: &'a spool_core::State, raw: &'a str, run: Option<&'a str>) -> Option<(&'a PromptRun, u32)> {
        let id: VideoId = raw.parse().ok()?;
        let r = match run {
            Some(run) => st.prompt_runs.get(&run.parse().ok()?)?,
            None => st.prompt_runs.get(st.video_runs.get(&id)?.last()?)?,
        };
        Some((r, *r.video_pos.get(&id)?))
    }
    let shown = |st: &'_ spool_core::State| -> Vec<(String, Option<String>)> {
        targets
            .iter()
            .filter(|(raw, _)| {
                raw.parse::<VideoId>().ok().is_some_and(|id| crate::routes::shown(st, &rows, &id).is_some())
            })
            .cloned()
            .collect()
    };
    let items = app.rt.read_with_answers(
        |st| {
            let mut keys = Vec::new();
            for (raw, run) in shown(st) {
                if let Some((r, n)) = chosen(st, &raw, run.as_deref()) {
                    let max = usize::try_from(BATCH_SEGMENTS_PER_VIDEO_MAX).unwrap_or(usize::MAX);
                    let mut own = Vec::new();
                    spool_core::machines::prompt_run::view::video_answer_keys(r, n, 0, max, &mut own);
                    // Only the first segments are shown (the video-level answer is not).
                    let end = r.videos.get(n as usize).map_or(0, |rv| rv.seg_first + BATCH_SEGMENTS_PER_VIDEO_MAX);
                    keys.extend(
                        own.into_iter()
                            .filter(|k| matches!(k.task, spool_model::RunTask::Segment(s) if s < end)),
                    );
                }
            }
            keys
        },
        |st, answers| {
            let shown = shown(st);
            let targets: Vec<Target<'_>> =
                shown.iter().map(|(raw, run)| (raw.as_str(), run.as_deref(), chosen(st, raw, run.as_deref()))).collect();
            targets
                .iter()
                .map(|(raw, run, chosen)| {
                    let segments: Vec<serde_json::Value> = match chosen {
                        Some((r, n)) => r
                            .videos
                            .get(*n as usize)
                            .map(|rv| {
                                let end = rv.seg_first + rv.seg_count.min(BATCH_SEGMENTS_PER_VIDEO_MAX);
                                (rv.seg_first..end)
                                    .filter_map(|s| spool_core::machines::prompt_run::view::segment(r, s, answers))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        None => Vec::new(),
                    };
                    let run_id = run.map(str::to_string).or_else(|| chosen.map(|(r, _)| r.run_id.to_string()));
                    serde_json::json!({ "video_id": raw, "run_id": run_id, "segments": segments })
                })
                .collect::<Vec<_>>()
        },
    )?;
    Ok(super::json(StatusCode::OK, &serde_json::Value::Array(items)))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Ok(Some((50, 99))));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=5-1"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=x-1"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
    }
}
