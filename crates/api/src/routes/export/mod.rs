//! Exports (contract §2.4, §1.8, §1.9, §6.2): create (an index, or one prompt run), retrieve,
//! list, download-url and download. The artifact is made by the export machine's executor and
//! kept in the data directory; the download streams it with an explicit `Content-Length`.

use super::{json, run_command, view_reply};
use crate::body::{JsonBody, PathParam, Query, idempotency_key};
use crate::{ApiError, AppState, Principal};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use spool_core::machines::export::{ExportCommand, ExportStatus, view};
use spool_core::{Command, Outcome};
use spool_model::{ConnectorId, ExportDestination, ExportId, ExportKind, PromptRunId, Scope};

use super::ops_prelude::*;

/// This machine's `/api/v2` routes (`crate::routes::api_ops`).
pub(crate) fn ops() -> Vec<Op> {
    use Resp::*;
    vec![
        op!(get "/exports" list, "listExports", "exports", Array("Export"), query = &[LIMIT_100]),
        op!(post "/exports/index/{index_id}" create_index, "createIndexExport", "exports", Model("ExportCreateResult"), ok = 202, body = optional_body("CreateExport")),
        op!(post "/exports/prompt-run/{run_id}" create_run, "createPromptRunExport", "exports", Model("ExportCreateResult"), ok = 202, body = optional_body("CreateExport")),
        op!(get "/exports/{export_id}" retrieve, "getExport", "exports", Model("Export")),
        op!(post "/exports/{export_id}/download-url" download_url, "createExportDownloadUrl", "exports", Model("ExportDownloadUrlResult")),
        op!(get "/exports/{export_id}/download" download, "downloadExport", "exports", AnyJson, query = &[q("token", QKind::Str)]),
    ]
}

/// How long a minted download URL works.
pub const DOWNLOAD_TOKEN_TTL_SECS: u64 = 15 * 60;
const TOKEN_PURPOSE: &str = "export-download/v1";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[serde(default)]
    prompt_run_ids: Option<Vec<String>>,
    #[serde(default)]
    destination_connector_id: Option<String>,
    #[serde(default)]
    destination_subpath: Option<String>,
}

/// An export's JSON with its `waiting_on` (why it is not moving; only while it has not ended).
fn export_view(st: &spool_core::State, e: &spool_core::machines::export::Export) -> serde_json::Value {
    let mut v = view::export(e);
    if let Some(w) = spool_core::waiting::of_export(st, e) {
        v["waiting_on"] = w.json();
    }
    v
}

fn render(st: &spool_core::State, out: Outcome) -> spool_runtime::Reply {
    let v = match out {
        Outcome::Export(id) => st.exports.get(&id).map(|e| {
            let mut v = export_view(st, e);
            v["status"] = json!(e.status.as_str());
            v
        }),
        _ => None,
    };
    view_reply(StatusCode::ACCEPTED, v)
}

async fn create(
    app: AppState,
    who: Principal,
    headers: HeaderMap,
    kind: ExportKind,
    target: String,
    body: JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    who.require(Scope::Write)?;
    let path = match kind {
        ExportKind::Index => format!("/exports/index/{target}"),
        ExportKind::PromptRun => format!("/exports/prompt-run/{target}"),
    };
    let idem = idempotency_key(&headers, &who, "POST", &path, &body.canonical)?;
    let b = body.value;
    if kind == ExportKind::PromptRun && b.prompt_run_ids.is_some() {
        return Err(ApiError::validation("prompt_run_ids", "is for index exports; a run export packages its own run"));
    }
    let mut run_ids = Vec::new();
    for r in b.prompt_run_ids.unwrap_or_default() {
        run_ids.push(r.parse::<PromptRunId>().map_err(|_| ApiError::not_found("prompt_run", &r))?);
    }
    let connector_id = match b.destination_connector_id.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => Some(c.parse::<ConnectorId>().map_err(|_| ApiError::not_found("connector", c))?),
        None => None,
    };
    let cmd = ExportCommand::CreateExport {
        kind,
        target,
        run_ids,
        connector_id,
        subpath: b.destination_subpath,
        user_id: who.id.clone(),
    };
    run_command(&app, Command::Export(cmd), idem, Vec::new(), render).await
}

pub async fn create_index(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(raw): PathParam,
    body: JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    create(app, who, headers, ExportKind::Index, raw, body).await
}

pub async fn create_run(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    PathParam(raw): PathParam,
    body: JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    create(app, who, headers, ExportKind::PromptRun, raw, body).await
}

pub async fn retrieve(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    super::show(&app, "export", &raw, |st, id: ExportId| st.exports.get(&id).map(|e| export_view(st, e)))
}

/// `GET /exports?limit=`: a bare array, newest first.
pub async fn list(State(app): State<AppState>, who: Principal, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let q = Query::parse(q.as_deref())?;
    let limit = spool_model::num::sat_usize(q.int("limit", 50, 1, 100)?);
    let v = app.rt.read(|st| {
        serde_json::Value::Array(
            st.exports_by_created
                .iter()
                .rev()
                .take(limit)
                .filter_map(|(_, id)| st.exports.get(id))
                .map(|e| export_view(st, e))
                .collect(),
        )
    });
    Ok(json(StatusCode::OK, &v))
}

fn mac(app: &AppState, payload: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(app.rt.keyring().mac(TOKEN_PURPOSE, payload.as_bytes()))
}

/// `v1.<base64url payload>.<base64url HMAC>`; the payload is `<export id>|<principal>|<expiry>`,
/// and the HMAC covers it and the hash of the minting key as it is now, so a token stops
/// opening anything when that key is rotated (or `SPOOL_API_KEY` changes), without the hash
/// ever being in the token.
pub fn mint_token(app: &AppState, export_id: &ExportId, principal: &str, expires: u64) -> String {
    let payload = format!("{export_id}|{principal}|{expires}");
    let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.as_bytes());
    let bound =
        crate::auth::active_key_hash(app, principal, app.rt.now_ms()).map(|h| mac(app, &bound_payload(&payload, &h)));
    format!("v1.{p}.{}", bound.unwrap_or_default())
}

/// What the token's HMAC covers: the payload and the minting key's hash.
fn bound_payload(payload: &str, key_hash: &[u8; 32]) -> String {
    format!("{payload}|{}", hex::encode(key_hash))
}

/// The export a token opens, if it is this server's, unexpired, for this export, and minted by
/// a key that is still active and unrotated (a revoked, deleted, expired or rotated key's tokens
/// open nothing; so do `SPOOL_API_KEY`'s once the variable is unset or changed).
fn check_token(app: &AppState, export_id: &ExportId, token: &str) -> bool {
    let now_ms = app.rt.now_ms();
    token_principal(token, export_id, now_ms / 1000, |payload| {
        let who = payload.split('|').nth(1).unwrap_or_default();
        // No active key: an empty MAC, which no token carries.
        crate::auth::active_key_hash(app, who, now_ms)
            .map(|h| mac(app, &bound_payload(payload, &h)))
            .unwrap_or_default()
    })
    .is_some()
}

#[cfg(test)]
fn token_opens(token: &str, export_id: &ExportId, now_s: u64, mac: impl Fn(&str) -> String) -> bool {
    token_principal(token, export_id, now_s, mac).is_some()
}

/// Who minted the token, when it is this server's (`mac`), unexpired at `now_s` and for this
/// export.
fn token_principal(token: &str, export_id: &ExportId, now_s: u64, mac: impl Fn(&str) -> String) -> Option<String> {
    let mut parts = token.split('.');
    let (Some("v1"), Some(p), Some(m), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok().and_then(|b| String::from_utf8(b).ok())?;
    let expected = mac(&payload);
    // Constant-time enough: both are fixed-length base64 of a MAC.
    if expected.is_empty()
        || expected.len() != m.len()
        || !expected.bytes().zip(m.bytes()).fold(true, |ok, (a, b)| ok & (a == b))
    {
        return None;
    }
    let mut f = payload.split('|');
    let (Some(id), Some(who), Some(exp)) = (f.next(), f.next(), f.next()) else { return None };
    (id == export_id.to_string() && exp.parse::<u64>().is_ok_and(|e| e >= now_s)).then(|| who.to_string())
}

/// `POST /exports/{id}/download-url`: a bearer URL, minted only when the public base URL is
/// https and the export is a completed download (else `download_url: null`).
pub async fn download_url(
    State(app): State<AppState>,
    who: Principal,
    PathParam(raw): PathParam,
) -> Result<Response, ApiError> {
    who.require(Scope::Read)?;
    let id: ExportId = raw.parse().map_err(|_| ApiError::not_found("export", &raw))?;
    let e = app.rt.read(|st| st.exports.get(&id).cloned()).ok_or_else(|| ApiError::not_found("export", &raw))?;
    let base = app
        .cfg
        .public_url
        .as_deref()
        .map(|b| b.trim_end_matches('/').to_string())
        .filter(|b| b.starts_with("https://"));
    let url = match (base, view::download_path(&e)) {
        (Some(base), Some(path)) => {
            let token = mint_token(&app, &id, &who.id, app.rt.now_ms() / 1000 + DOWNLOAD_TOKEN_TTL_SECS);
            Some(format!("{base}{path}?token={token}"))
        }
        _ => None,
    };
    let connector = match &e.destination {
        ExportDestination::Connector { connector_id, .. } => Some(connector_id.to_string()),
        ExportDestination::Download => None,
    };
    let v = json!({
        "export_id": id.to_string(),
        "status": e.status.as_str(),
        "destination_type": view::destination_type(&e),
        "destination_connector_id": connector,
        "download_url": url,
        "expires_in_seconds": url.as_ref().map(|_| DOWNLOAD_TOKEN_TTL_SECS),
    });
    Ok(json(StatusCode::OK, &v))
}

/// `GET /exports/{id}/download[?token=]`: the kept artifact, `application/json`, with its
/// `Content-Length`, never compressed. With a minted token no key is needed.
pub async fn download(State(app): State<AppState>, req: axum::extract::Request) -> Result<Response, ApiError> {
    use axum::extract::FromRequestParts;
    let (mut parts, _) = req.into_parts();
    let PathParam(raw) = PathParam::from_request_parts(&mut parts, &app).await?;
    let id: ExportId = raw.parse().map_err(|_| ApiError::not_found("export", &raw))?;
    let q = Query::parse(parts.uri.query())?;
    match q.get("token").filter(|t| !t.is_empty()) {
        Some(t) => {
            if !check_token(&app, &id, t) {
                return Err(ApiError::unauthenticated(
                    "download_token_invalid",
                    "the download token is not valid or has expired",
                ));
            }
        }
        None => {
            let who = Principal::from_request_parts(&mut parts, &app).await?;
            who.require(Scope::Read)?;
        }
    }
    let e = app.rt.read(|st| st.exports.get(&id).cloned()).ok_or_else(|| ApiError::not_found("export", &raw))?;
    if !matches!(e.destination, ExportDestination::Download) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "export_not_downloadable",
            "this export was written to its connector (destination_uri); it has no download",
        ));
    }
    if e.status != ExportStatus::Completed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "export_not_ready",
            format!("the export is {}", e.status.as_str()),
        ));
    }
    // Made on another node of a cluster: the shared store's copy (`SPOOL_MEDIA_URL`).
    let path =
        app.rt.export_artifact_local(&id).await.ok_or_else(|| ApiError::internal("the export's artifact is missing"))?;
    let file =
        tokio::fs::File::open(&path).await.map_err(|_| ApiError::internal("the export's artifact is missing"))?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    if Some(len) != e.size_bytes {
        return Err(ApiError::internal("the export's artifact does not have its recorded size"));
    }
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CONTENT_ENCODING, "identity".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{id}.json\"")),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod props {
    //! Property tests of download tokens (proptest): any string is refused without a panic; a
    //! minted token opens its export until it expires, and no other; one changed character of
    //! it opens nothing.
    use super::*;
    use proptest::prelude::*;

    /// A stand-in for the keyring's MAC: a keyed hash of the payload.
    fn test_mac(payload: &str) -> String {
        use sha2::Digest;
        let d = sha2::Sha256::digest([b"test key|".as_slice(), payload.as_bytes()].concat());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
    }

    fn mint(id: &ExportId, who: &str, exp: u64) -> String {
        let payload = format!("{id}|{who}|{exp}");
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.as_bytes());
        format!("v1.{p}.{}", test_mac(&payload))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn any_string_is_refused_never_a_panic(token in ".{0,200}", dotted in "v1\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,60}") {
            let id = ExportId(ulid::Ulid::from_parts(1, 2));
            prop_assert!(!token_opens(&token, &id, 0, test_mac));
            prop_assert!(!token_opens(&dotted, &id, 0, test_mac));
        }

        #[test]
        fn a_minted_token_opens_its_export_until_expiry_and_a_changed_one_nothing(
            who in "[a-z_0-9:]{1,40}",
            exp in 1u64..4_000_000_000,
            now in 0u64..4_000_000_000,
            at in any::<prop::sample::Index>(),
            other in any::<char>(),
        ) {
            let id = ExportId(ulid::Ulid::from_parts(1, 2));
            let token = mint(&id, &who, exp);
            prop_assert_eq!(token_opens(&token, &id, now, test_mac), exp >= now);
            prop_assert!(!token_opens(&token, &ExportId(ulid::Ulid::from_parts(1, 3)), 0, test_mac));
            let mut chars: Vec<char> = token.chars().collect();
            let i = at.index(chars.len());
            if chars[i] != other {
                chars[i] = other;
                let changed: String = chars.into_iter().collect();
                prop_assert!(!token_opens(&changed, &id, 0, test_mac), "{changed} opened");
            }
        }
    }
}
