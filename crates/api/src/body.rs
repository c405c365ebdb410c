//! Request bodies and query strings, parsed so that every failure is the contract's envelope:
//! 413 for a body over [`BODY_BYTES_MAX`], 422 `validation_error` naming the field otherwise.

use crate::{ApiError, AppState, BODY_BYTES_MAX, IDEMPOTENCY_KEY_CHARS_MAX, Principal};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use sha2::Digest;
use spool_runtime::IdemKey;

/// A JSON body of type `T`, and its canonical bytes (for idempotency fingerprints).
pub struct JsonBody<T> {
    pub value: T,
    pub canonical: Vec<u8>,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &AppState) -> Result<Self, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {BODY_BYTES_MAX} bytes"),
            )
            .details(serde_json::json!({ "max_bytes": BODY_BYTES_MAX }))
        };
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > BODY_BYTES_MAX as u64) {
            return Err(too_large());
        }
        let content_type =
            req.headers().get(axum::http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?").to_string());
        let bytes = axum::body::to_bytes(req.into_body(), BODY_BYTES_MAX).await.map_err(|_| too_large())?;
        let empty = bytes.iter().all(|b| b.is_ascii_whitespace());
        // A body is JSON only when it says so: `text/plain` (or none at all) is not parsed.
        if !empty && !content_type.as_deref().is_some_and(is_json_media_type) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with Content-Type: application/json",
            )
            .details(serde_json::json!({ "content_type": content_type, "expected": "application/json" })));
        }
        parse_json(if empty { b"{}" } else { &bytes })
    }
}

/// A JSON body as the handlers take it: valid JSON, an object, then the handler's type (an
/// error names the field: the missing one, or the path of a wrong type).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<JsonBody<T>, ApiError> {
    let raw: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::validation("body", format!("not valid JSON ({e})")))?;
    if !raw.is_object() {
        return Err(ApiError::validation("body", "must be a JSON object"));
    }
    let canonical = serde_json::to_vec(&raw).unwrap_or_default();
    let value = serde_path_to_error::deserialize::<_, T>(raw).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names a missing field in its message; a wrong type is named by the path.
        let field = if path == "." { inner.split('`').nth(1).unwrap_or("body").to_string() } else { path };
        ApiError::validation(&field, inner)
    })?;
    Ok(JsonBody { value, canonical })
}

/// `application/json`, or any `…/…+json`, with or without parameters.
fn is_json_media_type(v: &str) -> bool {
    let essence = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.contains('/') && essence.ends_with("+json"))
}

/// A path parameter. Unlike axum's own `Path`, a parameter that does not decode (say `%ff`,
/// not UTF-8) is answered in the envelope: 404, as for any id this server never issued.
pub struct PathParam(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParam(v)),
            Err(e) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "resource_not_found",
                "the path does not name a resource (it does not decode as UTF-8)",
            )
            .details(serde_json::json!({ "reason": e.body_text() }))),
        }
    }
}

/// Every parameter of a path with several (`/prompt-runs/{run_id}/videos/{video_id}/…`), in
/// order.
pub struct PathParams(pub Vec<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParams(v.into_iter().map(|(_, v)| v).collect())),
            Err(e) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "resource_not_found",
                "the path does not name a resource (it does not decode as UTF-8)",
            )
            .details(serde_json::json!({ "reason": e.body_text() }))),
        }
    }
}

/// Check a free-text field a user sends: at most `max` characters, no NUL or other control
/// characters (they end up in storage requests, logs and file names).
pub fn check_text(field: &'static str, v: &str, max: usize) -> Result<(), ApiError> {
    spool_model::rules::text(field, v, max).map_err(|e| ApiError::validation(e.field, e.message))
}

/// For `#[serde(default, deserialize_with = "present")]`: tells a present `null` (`Some(None)`)
/// from an absent field (`None`).
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(<Option<T> as serde::Deserialize>::deserialize(d)?))
}

/// Query parameters as a small map; each handler converts what it reads.
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or(""))
            .map(Query)
            .map_err(|e| ApiError::validation("query", e.to_string()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn int(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::validation(name, format!("must be an integer from {min} to {max} (got {v:?})"))),
            },
        }
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(v) => Err(ApiError::validation(name, format!("must be true or false (got {v:?})"))),
        }
    }
}

/// The request's `Idempotency-Key`, scoped to (principal, method, route) and fingerprinted
/// with a hash of the canonical body.
pub fn idempotency_key(
    headers: &axum::http::HeaderMap,
    who: &Principal,
    method: &str,
    route: &str,
    canonical_body: &[u8],
) -> Result<Option<IdemKey>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().map_err(|_| ApiError::validation("Idempotency-Key", "must be visible ASCII"))?.trim();
    if key.is_empty() || key.chars().count() > IDEMPOTENCY_KEY_CHARS_MAX {
        return Err(ApiError::validation(
            "Idempotency-Key",
            format!("must be 1 to {IDEMPOTENCY_KEY_CHARS_MAX} characters"),
        ));
    }
    let mut h = sha2::Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(route.as_bytes());
    h.update(b"\n");
    h.update(canonical_body);
    Ok(Some(IdemKey {
        scoped: format!("{}|{method}|{route}|{key}", who.id),
        fingerprint: h.finalize().into(),
        seal: false,
    }))
}

#[cfg(test)]
mod props {
    //! Property tests of query strings (proptest): any query parses or is a 422, and so does
    //! every typed read of it, never a panic.
    use super::*;
    use proptest::prelude::*;

    /// A body shaped like the handlers' (nested, optional, enums, unknown fields refused).
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        limit: Option<u32>,
        scopes: Vec<String>,
        mode: Option<Mode>,
        inner: Option<Inner>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        All,
        NewOnly,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        prompt_id: String,
        duration: Option<f64>,
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "[a-z_]{0,12}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from("new_only")),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("name".to_string()),
                        Just("limit".to_string()),
                        Just("scopes".to_string()),
                        Just("mode".to_string()),
                        Just("inner".to_string()),
                        Just("prompt_id".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn any_bytes_are_a_body_or_a_422_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Err(e) = parse_json::<Body>(&bytes) {
                prop_assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            }
        }

        #[test]
        fn any_json_is_a_body_or_a_422_naming_a_field(v in json_value()) {
            let bytes = serde_json::to_vec(&v).unwrap();
            match parse_json::<Body>(&bytes) {
                Ok(b) => prop_assert_eq!(serde_json::from_slice::<serde_json::Value>(&b.canonical).unwrap(), v),
                Err(e) => {
                    prop_assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
                    prop_assert!(e.details.get("field").and_then(|f| f.as_str()).is_some_and(|f| !f.is_empty()), "{:?}", e.details);
                }
            }
        }

        #[test]
        fn any_query_parses_or_is_refused_never_a_panic(raw in ".{0,200}", soup in "[a-z=&%0-9+;.-]{0,120}") {
            for q in [&raw, &soup] {
                if let Ok(q) = Query::parse(Some(q)) {
                    let _ = q.int("limit", 50, 1, 100);
                    let _ = q.bool("failed_only", false);
                    let _ = q.get("cursor");
                }
            }
        }
    }
}
