//! API keys (contract §2.10), admin only. The secret is shown once, in the answer to create and
//! rotate; only its SHA-256 is stored in the log. A create with an `Idempotency-Key` stores its
//! answer (which holds the secret) sealed by the keyring, so a retry gets the same key back.

pub(crate) mod views;

use super::{json, reply, run_command, view_reply};
use crate::body::{JsonBody, PathParam, idempotency_key};
use crate::{ApiError, AppState, Principal};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use spool_core::{Command, Outcome};
use spool_model::{ApiKeyId, Scope};

use super::ops_prelude::*;

/// This machine's `/api/v2` routes (`crate::routes::api_ops`).
pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(post "/api-keys" create, "createApiKey", "api-keys", Model("ApiKeyWithSecret"), ok = 201, body = json_body("CreateApiKey")),
        op!(get "/api-keys" list, "listApiKeys", "api-keys", Array("ApiKey")),
        op!(get "/api-keys/{key_id}" retrieve, "getApiKey", "api-keys", Model("ApiKey")),
        op!(delete "/api-keys/{key_id}" delete, "deleteApiKey", "api-keys", Model("DeleteResponse")),
        op!(post "/api-keys/{key_id}/revoke" revoke, "revokeApiKey", "api-keys", Model("ApiKey")),
        op!(post "/api-keys/{key_id}/rotate" rotate, "rotateApiKey", "api-keys", Model("ApiKeyWithSecret")),
    ]
}

/// Prefix of every secret Spool issues.
pub const SECRET_PREFIX: &str = "sk_live_";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    expires_in_days: Option<i64>,
}

fn parse_id(raw: &str) -> Result<ApiKeyId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("api_key", raw))
}

fn parse_scopes(raw: Option<Vec<String>>) -> Result<Vec<Scope>, ApiError> {
    let raw = raw.unwrap_or_else(|| vec!["read".into()]);
    raw.iter()
        .map(|s| match s.as_str() {
            "read" | "search" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(ApiError::validation(
                "scopes",
                format!("unknown scope {other:?}; use read, write, admin or search"),
            )),
        })
        .collect()
}

pub async fn create(
    State(app): State<AppState>,
    who: Principal,
    headers: axum::http::HeaderMap,
    body: JsonBody<CreateKey>,
) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let idem = idempotency_key(&headers, &who, "POST", "/api-keys", &body.canonical)?.map(|mut k| {
        k.seal = true;
        k
    });
    let b = body.value;
    let scopes = parse_scopes(b.scopes)?;
    let expires_in_days = match b.expires_in_days {
        None => None,
        Some(d) => {
            Some(u32::try_from(d).map_err(|_| ApiError::validation("expires_in_days", "must be between 1 and 365"))?)
        }
    };
    let secret = app.rt.ids().secret(SECRET_PREFIX);
    let now = app.rt.now_ms();
    let cmd = Command::ApiKey(spool_core::ApiKeyCommand::CreateApiKey {
        name: b.name,
        scopes,
        expires_in_days,
        secret: spool_core::Secret(secret.clone()),
    });
    let render = move |st: &spool_core::State, out: Outcome| {
        let key = match out {
            Outcome::ApiKey(id) => st.api_keys.get(&id),
            _ => None,
        };
        view_reply(StatusCode::CREATED, key.map(|k| views::api_key_with_secret(k, &secret, now)))
    };
    run_command(&app, cmd, idem, Vec::new(), render).await
}

pub async fn list(State(app): State<AppState>, who: Principal) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let now = app.rt.now_ms();
    let items: Vec<serde_json::Value> = app.rt.read(|st| {
        st.api_keys
            .values()
            .map(|k| views::api_key(k, app.rt.key_last_used(&k.key_id, k.last_used_at_ms), now))
            .collect()
    });
    Ok(json(StatusCode::OK, &serde_json::Value::Array(items)))
}

pub async fn retrieve(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let id = parse_id(&raw)?;
    let now = app.rt.now_ms();
    let v = app
        .rt
        .read(|st| {
            st.api_keys.get(&id).map(|k| views::api_key(k, app.rt.key_last_used(&k.key_id, k.last_used_at_ms), now))
        })
        .ok_or_else(|| ApiError::not_found("api_key", &raw))?;
    Ok(json(StatusCode::OK, &v))
}

pub async fn revoke(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let id = parse_id(&raw)?;
    let now = app.rt.now_ms();
    let (r, _) = app
        .rt
        .execute_with(
            Command::ApiKey(spool_core::ApiKeyCommand::RevokeApiKey { key_id: id }),
            None,
            Vec::new(),
            move |st, _| {
                view_reply(StatusCode::OK, st.api_keys.get(&id).map(|k| views::api_key(k, k.last_used_at_ms, now)))
            },
        )
        .await?;
    Ok(reply(r))
}

pub async fn rotate(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let id = parse_id(&raw)?;
    let secret = app.rt.ids().secret(SECRET_PREFIX);
    let now = app.rt.now_ms();
    let (r, _) = app
        .rt
        .execute_with(
            Command::ApiKey(spool_core::ApiKeyCommand::RotateApiKey {
                key_id: id,
                secret: spool_core::Secret(secret.clone()),
            }),
            None,
            Vec::new(),
            move |st, _| {
                view_reply(StatusCode::OK, st.api_keys.get(&id).map(|k| views::api_key_with_secret(k, &secret, now)))
            },
        )
        .await?;
    Ok(reply(r))
}

pub async fn delete(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Admin)?;
    let id = parse_id(&raw)?;
    app.rt.execute(Command::ApiKey(spool_core::ApiKeyCommand::DeleteApiKey { key_id: id })).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "message": format!("API key {id} deleted") })))
}
