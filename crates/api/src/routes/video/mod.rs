//! Videos (contract §2.7): one video, and an index's videos as a cursor page.

pub(crate) mod media;
pub mod upload;
pub(crate) mod views;

use super::import_job::{decode_video_cursor, encode_cursor};
use super::json;
use crate::body::{PathParam, Query};
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use spool_model::{IndexId, Scope, VideoId};

use super::ops_prelude::*;

/// This machine's `/api/v2` routes (`crate::routes::api_ops`).
pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(get "/indexes/{index_id}/videos" index_videos, "listIndexVideos", "indexes", Page("Video"), query = &[LIMIT_100, CURSOR]),
        op!(get "/videos/{video_id}" video, "getVideo", "videos", Model("Video")),
        op!(delete "/videos/{video_id}" delete, "deleteVideo", "videos", Model("VideoDeletionResponse"), ok = 202),
        op!(get "/videos/{video_id}/deletion" deletion, "getVideoDeletion", "videos", Model("VideoDeletionResponse")),
        op!(get "/videos/{video_id}/segments" segments, "listVideoSegments", "videos", Page("Segment"),
                query = &[LIMIT_100, CURSOR, q("run_id", QKind::Str), q("latest_run", QKind::Bool)]),
        op!(post "/videos/batch/status" batch_status, "batchVideoStatus", "videos", Array("VideoStatus"), body = json_body("VideoIds")),
        op!(post "/videos" upload::create, "registerVideo", "videos", Model("ImportJob"), ok = 202, body = json_body("Object")),
        Op {
            route: axum::routing::post(upload::upload).layer(axum::extract::DefaultBodyLimit::disable()),
            ..op!(post "/videos/upload" upload::upload, "uploadVideo", "videos", Model("ImportJob"), ok = 202, body = Body::Multipart)
        },
        op!(post "/videos/signed-url" media::signed_url, "signVideoUrl", "videos", Model("SignedUrl"), body = json_body("SignedUrlRequest")),
        op!(post "/videos/batch" media::batch, "batchVideos", "videos", Array("VideoWithDetails"), body = json_body("VideoIds")),
        op!(post "/videos/batch/segments" media::batch_segments, "batchVideoSegments", "videos", Array("VideoSegments"), body = json_body("BatchSegments")),
        op!(get "/playground/videos" playground, "listPlaygroundVideos", "videos", Page("Video"), query = &[LIMIT_100, CURSOR]),
    ]
}

pub async fn video(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let id: VideoId = raw.parse().map_err(|_| ApiError::not_found("video", &raw))?;
    let v = super::with_video_rows(&app, |_| vec![id], |st, rows| {
        let (v, row) = super::shown(st, rows, &id)?;
        Some(views::video(&v, &row, st))
    })?;
    let v = v.ok_or_else(|| ApiError::not_found("video", &raw))?;
    Ok(json(StatusCode::OK, &v))
}

/// `GET /indexes/{id}/videos`: the cursor page envelope, in (created_at, id) order.
pub async fn index_videos(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let index_id: IndexId = raw.parse().map_err(|_| ApiError::not_found("index", &raw))?;
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 50, 1, 100)?);
    let from = decode_video_cursor(q.get("cursor"))?;
    let keys = page_keys(&app, &index_id, limit, from)?;
    let rows = app.rt.video_rows(keys.iter().take(limit).map(|(_, id)| *id))?;
    let page = app.rt.read(|st| {
        st.live_index(&index_id)?;
        Some(video_page(st, &index_id, limit, &keys, &rows))
    });
    let page = page.ok_or_else(|| ApiError::not_found("index", &raw))?;
    Ok(json_bytes(StatusCode::OK, page))
}

/// The (created, id) keys of a page from `from` on, `limit + 1` of them when there are so many
/// (the last is the next page's cursor), from the `index_videos` table: taken first, the
/// videos' rows are read for them.
fn page_keys(
    app: &AppState,
    index_id: &IndexId,
    limit: usize,
    from: Option<(u64, VideoId)>,
) -> Result<Vec<(u64, VideoId)>, ApiError> {
    // The cursor is the page's first key: the table is read after the key just before it.
    let after = from.and_then(|(c, v)| match v.0.0.checked_sub(1) {
        Some(prev) => Some((c, VideoId(ulid::Ulid(prev)))),
        None => c.checked_sub(1).map(|c| (c, VideoId(ulid::Ulid(u128::MAX)))),
    });
    Ok(app.rt.index_videos(index_id, after, limit + 1)?)
}

/// A cursor page of the videos of an index (or of the playground), in (created_at, id) order,
/// over the keys [`page_keys`] took: a video deleted since is left out, and the cursor stays.
/// Written straight to bytes (`spool_core::machines::video::view::VideoJson`): no `Value` per
/// video.
fn video_page(
    st: &spool_core::State,
    index_id: &IndexId,
    limit: usize,
    keys: &[(u64, VideoId)],
    rows: &super::VideoRows,
) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Page<'a> {
        data: Vec<spool_core::machines::video::view::VideoJson<'a>>,
        pagination: serde_json::Value,
    }
    let all = st.index_counts.get(index_id).copied().unwrap_or(0);
    let videos: Vec<(spool_core::Video, &spool_core::VideoRow)> = keys
        .iter()
        .take(limit)
        .filter_map(|(_, id)| {
            let row = rows.get(id)?;
            let v = st.video_of(*id, row);
            v.is_live().then_some((v, &**row))
        })
        .collect();
    let next = keys.get(limit);
    let page = Page {
        data: videos.iter().map(|(v, row)| spool_core::machines::video::view::of(v, row, st)).collect(),
        pagination: serde_json::json!({
            "limit": limit,
            "has_more": next.is_some(),
            "next_cursor": next.map(|(ms, id)| encode_cursor(&format!("{ms}-{id}"))),
            "total": all,
        }),
    };
    // About a kilobyte per video: written without growing the buffer. Plain data: serializing
    // it cannot fail.
    let mut out = Vec::with_capacity(1024 * (page.data.len() + 1));
    let _ = serde_json::to_writer(&mut out, &page);
    out
}

/// An answer of JSON bytes.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    use axum::response::IntoResponse;
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The visible videos among `ids`, in their order, with their rows (unknown or malformed ids
/// are left out).
pub(crate) fn visible_videos<'a>(
    st: &'a spool_core::State,
    rows: &'a super::VideoRows,
    ids: &'a [String],
) -> impl Iterator<Item = (spool_core::Video, std::sync::Arc<spool_core::VideoRow>)> + 'a {
    ids.iter().filter_map(|raw| raw.parse::<VideoId>().ok()).filter_map(move |id| super::shown(st, rows, &id))
}

fn parse_video(raw: &str) -> Result<VideoId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("video", raw))
}

fn deletion_view(st: &spool_core::State, id: &VideoId) -> Option<serde_json::Value> {
    let d = st.video_deletions.get(id)?;
    let mut out = serde_json::json!({
        "video_id": id.to_string(),
        "deletion_id": d.deletion_id.to_string(),
        "status": d.stage.as_str(),
    });
    if d.stage != spool_model::DeletionStage::Deleted {
        out["retry_after_seconds"] = serde_json::json!(1);
    }
    Some(out)
}

/// `DELETE /videos/{id}`: start (or resume) the deletion; its media-store object is removed.
pub async fn delete(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let id = parse_video(&raw)?;
    let cmd = spool_core::Command::Video(spool_core::VideoCommand::DeleteVideo { video_id: id });
    let (r, _) = app
        .rt
        .execute_with(cmd, None, Vec::new(), move |st, _| {
            super::view_reply(StatusCode::OK, deletion_view(st, &id))
        })
        .await?;
    Ok(super::reply(r))
}

/// `GET /videos/{id}/deletion`.
pub async fn deletion(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    super::show(&app, "video", &raw, |st, id: VideoId| deletion_view(st, &id))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoIds {
    video_ids: Vec<String>,
}

/// Largest `video_ids` list of a batch call.
pub const BATCH_VIDEO_IDS_MAX: usize = 500;

/// `POST /videos/batch/status`: the status of each known video (unknown ids are left out).
pub async fn batch_status(
    State(app): State<AppState>,
    who: Principal,
    body: crate::body::JsonBody<VideoIds>,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let ids = &body.value.video_ids;
    if ids.len() > BATCH_VIDEO_IDS_MAX {
        return Err(ApiError::validation("video_ids", format!("at most {BATCH_VIDEO_IDS_MAX} ids")));
    }
    let wanted: Vec<VideoId> = ids.iter().filter_map(|raw| raw.parse().ok()).collect();
    let items: Vec<serde_json::Value> = super::with_video_rows(&app, |_| wanted, |st, rows| {
        visible_videos(st, rows, ids)
            .map(|(v, row)| {
                let full = views::video(&v, &row, st);
                serde_json::json!({ "video_id": v.video_id.to_string(), "status": full["status"], "processing_status": full["processing_status"] })
            })
            .collect()
    })?;
    Ok(json(StatusCode::OK, &serde_json::Value::Array(items)))
}

/// `GET /videos/{id}/segments`: the video's segments in one run, as a cursor page: the run
/// named by `run_id`, else its latest run (`latest_run=false` lists every run's segments, the
/// newest run first). Empty until the video is in a run.
pub async fn segments(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let id = parse_video(&raw)?;
    if !super::video_visible(&app, &id)? {
        return Err(ApiError::not_found("video", &raw));
    }
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 50, 1, 100)?);
    let latest = q.bool("latest_run", true)?;
    let run_id: Option<spool_model::PromptRunId> = match q.get("run_id").filter(|r| !r.is_empty()) {
        Some(r) => Some(r.parse().map_err(|_| ApiError::not_found("prompt_run", r))?),
        None => None,
    };
    // Cursor: `<run position>:<segment number>` (position in the video's runs, newest first).
    let from = match super::import_job::decode_cursor(q.get("cursor"))? {
        None => (0usize, 0u32),
        Some(k) => {
            let (a, b) = k
                .split_once(':')
                .ok_or_else(|| ApiError::validation("cursor", "is not a cursor this server issued"))?;
            (
                a.parse().map_err(|_| ApiError::validation("cursor", "is not a cursor this server issued"))?,
                b.parse().map_err(|_| ApiError::validation("cursor", "is not a cursor this server issued"))?,
            )
        }
    };
    // The video's runs as the first read names them (positions in the cursor refer to them).
    let run_ids: Vec<spool_model::PromptRunId> = app.rt.read(|st| match run_id {
        Some(r) => st.prompt_runs.get(&r).into_iter().filter(|r| r.video_pos.contains_key(&id)).map(|r| r.run_id).collect(),
        None => {
            let all = st.video_runs.get(&id).into_iter().flatten().rev().copied();
            if latest { all.take(1).collect() } else { all.collect() }
        }
    });
    let runs_of = |st: &spool_core::State| -> Vec<spool_model::PromptRunId> {
        run_ids.iter().filter(|r| st.prompt_runs.contains_key(r)).copied().collect()
    };
    // The page's succeeded segments' answers are rows (`run_answers`): at most `limit` of them,
    // from the cursor.
    let pick = |st: &spool_core::State| {
        let mut keys = Vec::new();
        for (pos, r) in runs_of(st).iter().filter_map(|r| st.prompt_runs.get(r)).enumerate().skip(from.0) {
            let Some(n) = r.video_pos.get(&id) else { continue };
            let start = if pos == from.0 { from.1 } else { 0 };
            spool_core::machines::prompt_run::view::video_answer_keys(r, *n, start, limit, &mut keys);
            keys.retain(|k| matches!(k.task, spool_model::RunTask::Segment(_)));
            if keys.len() >= limit {
                break;
            }
        }
        keys
    };
    let page = app.rt.read_with_answers(pick, |st, answers| {
        let runs: Vec<&spool_core::machines::prompt_run::PromptRun> =
            runs_of(st).iter().filter_map(|r| st.prompt_runs.get(r)).collect();
        let mut data = Vec::new();
        let mut next = None;
        'outer: for (pos, r) in runs.iter().enumerate().skip(from.0) {
            let Some(rv) = r.video_pos.get(&id).and_then(|n| r.videos.get(*n as usize)) else { continue };
            let start = if pos == from.0 { from.1.max(rv.seg_first) } else { rv.seg_first };
            for n in start..rv.seg_first + rv.seg_count {
                if data.len() == limit {
                    next = Some(format!("{pos}:{n}"));
                    break 'outer;
                }
                if let Some(s) = spool_core::machines::prompt_run::view::segment(r, n, answers) {
                    data.push(s);
                }
            }
        }
        serde_json::json!({
            "data": data,
            "pagination": {
                "limit": limit,
                "has_more": next.is_some(),
                "next_cursor": next.map(|k| super::import_job::encode_cursor(&k)),
            },
        })
    })?;
    Ok(json(StatusCode::OK, &page))
}

/// `GET /playground/videos`: uploads without an index, as a cursor page.
pub async fn playground(
    State(app): State<AppState>,
    who: Principal,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 50, 1, 100)?);
    let from = decode_video_cursor(q.get("cursor"))?;
    let pg = spool_core::imports::PLAYGROUND;
    let keys = page_keys(&app, &pg, limit, from)?;
    let rows = app.rt.video_rows(keys.iter().take(limit).map(|(_, id)| *id))?;
    let page = app.rt.read(|st| video_page(st, &pg, limit, &keys, &rows));
    Ok(json_bytes(StatusCode::OK, page))
}
