//! Indexes (contract §2.6).

pub(crate) mod views;

use super::{json, oldest_first, reply, run_command, view_reply};
use crate::body::{JsonBody, PathParam, Query, idempotency_key};
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use spool_core::{Command, Outcome};
use spool_model::{IndexId, Scope};

use super::ops_prelude::*;

/// This machine's `/api/v2` routes (`crate::routes::api_ops`).
pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(post "/indexes" create, "createIndex", "indexes", Model("Index"), ok = 201, body = json_body("CreateIndex")),
        op!(get "/indexes" list, "listIndexes", "indexes", Array("Index"), query = &[q("include_defaults", QKind::Bool)]),
        op!(get "/indexes/{index_id}" retrieve, "getIndex", "indexes", Model("Index")),
        op!(delete "/indexes/{index_id}" delete, "deleteIndex", "indexes", Model("IndexDeletionResponse")),
        op!(get "/indexes/{index_id}/deletion" deletion, "getIndexDeletion", "indexes", Model("IndexDeletionResponse")),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIndex {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

fn parse_id(raw: &str) -> Result<IndexId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("index", raw))
}

pub async fn create(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: JsonBody<CreateIndex>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let idem = idempotency_key(&headers, &who, "POST", "/indexes", &body.canonical)?;
    let cmd = Command::Index(spool_core::IndexCommand::CreateIndex {
        name: body.value.name,
        user_id: who.id.clone(),
        description: body.value.description,
    });
    let render = |st: &spool_core::State, out: Outcome| {
        let index = match out {
            Outcome::Index(id) => st.indexes.get(&id),
            _ => None,
        };
        view_reply(StatusCode::CREATED, index.map(views::index))
    };
    run_command(&app, cmd, idem, Vec::new(), render).await
}

pub async fn list(State(app): State<AppState>, who: Principal, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let q = Query::parse(q.as_deref())?;
    q.bool("include_defaults", true)?;
    Ok(oldest_first(app.rt.read(|st| {
        st.indexes
            .values()
            .filter(|i| i.is_live())
            .map(|i| (i.created_at_ms, i.index_id.to_string(), views::index(i)))
            .collect()
    })))
}

pub async fn retrieve(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    super::show(&app, "index", &raw, |st, id| st.live_index(&id).map(views::index))
}

pub async fn delete(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let id = parse_id(&raw)?;
    let (r, _) = app
        .rt
        .execute_with(
            Command::Index(spool_core::IndexCommand::DeleteIndex { index_id: id }),
            None,
            Vec::new(),
            move |st, _| view_reply(StatusCode::OK, st.indexes.get(&id).and_then(views::deletion)),
        )
        .await?;
    Ok(reply(r))
}

pub async fn deletion(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let id = parse_id(&raw)?;
    let v = app.rt.read(|st| st.indexes.get(&id).map(views::deletion));
    match v {
        None => Err(ApiError::not_found("index", &raw)),
        Some(None) => Err(ApiError::not_found("deletion", &raw)),
        Some(Some(v)) => Ok(json(StatusCode::OK, &v)),
    }
}
