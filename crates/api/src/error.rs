use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use spool_core::DomainError;
use spool_runtime::RuntimeError;

tokio::task_local! {
    /// The id of the request being served (set by the request-id middleware).
    pub(crate) static REQUEST_ID: String;
}

pub(crate) fn current_request_id() -> String {
    REQUEST_ID.try_with(|r| r.clone()).unwrap_or_else(|_| "req_unknown".into())
}

/// An API failure with a stable code (`engine-spec/errors.md`).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds for `Retry-After` (429 and "in progress" conflicts).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: json!({}), retry_after: None }
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_error", format!("{field}: {message}"))
            .details(json!({ "field": field, "reason": message }))
    }

    pub fn not_found(kind: &str, id: &str) -> Self {
        let code = spool_core::error::not_found_code(kind);
        ApiError::new(StatusCode::NOT_FOUND, code, format!("{} {id} was not found", kind.replace('_', " ")))
            .details(json!({ "resource": kind, "id": id }))
    }

    pub fn unauthenticated(code: &'static str, message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound { kind, id } => ApiError::not_found(kind, &id),
            DomainError::Invalid { field, message } => ApiError::validation(field, message),
            DomainError::InvalidState(m) | DomainError::Stale(m) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_state", m)
            }
            DomainError::Unprocessable { code, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Domain(d) => d.into(),
            RuntimeError::IdempotencyMismatch => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_request_mismatch",
                "this Idempotency-Key was used with a different request; use a new key",
            ),
            RuntimeError::IdempotencyInProgress => {
                let mut e = ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_request_in_progress",
                    "a request with this Idempotency-Key is still running; retry shortly",
                );
                e.retry_after = Some(1);
                e
            }
            RuntimeError::Stopped => {
                let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine_stopped", e.to_string());
                e.retry_after = Some(5);
                e
            }
            RuntimeError::ShuttingDown => {
                let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e.to_string());
                e.retry_after = Some(5);
                e
            }
            RuntimeError::IdempotencyUnreadable => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_record_unreadable",
                "the stored answer of this Idempotency-Key can no longer be read; use a new key",
            ),
            RuntimeError::Keyring(k) => {
                tracing::error!(error = %k, "keyring error while serving a request");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "keyring_error", "a stored secret could not be used")
            }
            RuntimeError::Poisoned { code: "decision_too_large", message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "decision_too_large", message)
            }
            RuntimeError::Poisoned { message, .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
            RuntimeError::Log(l) => {
                tracing::error!(error = %l, "log error while serving a request");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the event log could not be written; nothing was changed",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
                "request_id": current_request_id(),
            }
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
        }
        // A refusal made from the request's head (401, 429) leaves its body unread, and the
        // server then closes the connection: said in the answer, so a client does not send its
        // next request on it as it closes (the SDK read that race as "Request failed.").
        if matches!(self.status, StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS) {
            resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        }
        resp
    }
}
