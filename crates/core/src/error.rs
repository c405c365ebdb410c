/// Why a command was refused. Each maps to one stable API error code (`engine-spec/errors.md`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
pub enum DomainError {
    /// 404 `resource_<kind>_not_found`.
    #[error("{kind} {id} was not found")]
    NotFound { kind: &'static str, id: String },
    /// 422 `validation_error`, naming the field.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// 409 `invalid_state`.
    #[error("{0}")]
    InvalidState(String),
    /// 422 with its own stable code (e.g. `connector_scope_missing`).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
}

impl DomainError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        DomainError::Invalid { field, message: message.into() }
    }
}
