//! Who is calling: `X-API-Key` or `Authorization: Bearer`, checked against the hashes of live
//! keys (and `SPOOL_API_KEY` while it is set). Scopes are ordered admin > write > read.

use crate::{ApiError, AppState};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use spool_model::{ApiKeyId, Scope};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `env-admin` for `SPOOL_API_KEY`, else the key id.
    pub id: String,
    pub key_id: Option<ApiKeyId>,
    pub scope: Scope,
}

impl Principal {
    /// 403 unless the caller's scope is at least `needed`.
    pub fn require(&self, needed: Scope) -> Result<(), ApiError> {
        if self.scope >= needed {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "authorization_insufficient_scope",
            format!("this needs the {} scope; the key has {}", needed.as_str(), self.scope.as_str()),
        )
        .details(serde_json::json!({ "required_scope": needed.as_str(), "key_scope": self.scope.as_str() })))
    }
}

/// The SHA-256 hash of a principal's key while that key is active: `env-admin` is
/// `SPOOL_API_KEY` while it is set; a key id is that key unless revoked, deleted or expired.
/// Capabilities a key mints (download tokens, signed media URLs) bind this hash into their MAC,
/// so they stop opening anything once the key is revoked, deleted, expired or rotated.
pub fn active_key_hash(app: &AppState, principal: &str, now_ms: u64) -> Option<[u8; 32]> {
    if principal == "env-admin" {
        return app.cfg.env_admin_key_hash;
    }
    let id = principal.parse::<ApiKeyId>().ok()?;
    app.rt.read(|st| st.api_keys.get(&id).filter(|k| k.is_active(now_ms)).map(|k| k.key_hash))
}

fn credential(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get("x-api-key") {
        return v.to_str().ok().map(|s| s.trim().to_string());
    }
    let auth = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Some(secret) = credential(parts).filter(|s| !s.is_empty()) else {
            return Err(ApiError::unauthenticated(
                "authentication_required",
                "send an API key in X-API-Key or Authorization: Bearer",
            ));
        };
        let who = authenticate(app, &secret)?;
        // Counted per key once it is known (a bad key is refused before it counts).
        let path = parts.uri.path();
        if crate::rate_limit::counted(path) {
            let cat = crate::rate_limit::category_of(parts.method.as_str(), path);
            if let Err(retry_after) = app.cfg.limiter.check(&who.id, cat, app.rt.now_ms()) {
                let mut e = ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    format!("this key's {} rate limit is used up; retry in {retry_after} s", cat.as_str()),
                )
                .details(serde_json::json!({ "category": cat.as_str(), "retry_after": retry_after }));
                e.retry_after = Some(retry_after);
                return Err(e);
            }
        }
        Ok(who)
    }
}

/// The principal a credential names, or 401.
fn authenticate(app: &AppState, secret: &str) -> Result<Principal, ApiError> {
    {
        let hash = spool_core::hash_secret(secret);
        if app.cfg.env_admin_key_hash.is_some_and(|h| h == hash) {
            return Ok(Principal { id: "env-admin".into(), key_id: None, scope: Scope::Admin });
        }
        let now = app.rt.now_ms();
        let found =
            app.rt.read(|st| st.key_with_hash(&hash).filter(|k| k.is_active(now)).map(|k| (k.key_id, k.top_scope())));
        match found {
            Some((key_id, scope)) => {
                app.rt.note_key_use(key_id);
                Ok(Principal { id: key_id.to_string(), key_id: Some(key_id), scope })
            }
            None => Err(ApiError::unauthenticated(
                "authentication_invalid_api_key",
                "the API key is not valid (unknown, revoked or expired)",
            )),
        }
    }
}
