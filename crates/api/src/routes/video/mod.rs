//! Videos (contract §2.7): one video, and an index's videos as a cursor page.

pub(crate) mod views;

use super::import_job::{decode_video_cursor, encode_cursor};
use super::json;
use crate::body::{PathParam, Query};
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use spool_model::{IndexId, Scope, VideoId};

pub async fn video(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let id: VideoId = raw.parse().map_err(|_| ApiError::not_found("video", &raw))?;
    let v = app
        .rt
        .read(|st| st.videos.get(&id).filter(|v| st.live_index(&v.index_id).is_some()).map(views::video))
        .ok_or_else(|| ApiError::not_found("video", &raw))?;
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
    let limit = q.int("limit", 50, 1, 100)? as usize;
    let from = decode_video_cursor(q.get("cursor"))?;
    let page = app.rt.read(|st| {
        st.live_index(&index_id)?;
        let empty = std::collections::BTreeSet::new();
        let all = st.index_videos.get(&index_id).unwrap_or(&empty);
        let start = from.unwrap_or((0, VideoId(ulid::Ulid::nil())));
        let mut keys = all.range(start..);
        let items: Vec<serde_json::Value> =
            keys.by_ref().take(limit).filter_map(|(_, id)| st.videos.get(id).map(views::video)).collect();
        let next = keys.next();
        Some(serde_json::json!({
            "data": items,
            "pagination": {
                "limit": limit,
                "has_more": next.is_some(),
                "next_cursor": next.map(|(ms, id)| encode_cursor(&format!("{ms}-{id}"))),
                "total": all.len(),
            }
        }))
    });
    let page = page.ok_or_else(|| ApiError::not_found("index", &raw))?;
    Ok(json(StatusCode::OK, &page))
}
