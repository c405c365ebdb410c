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
    /// An effect's step that no longer fits: its attempt was superseded, its job was cancelled
    /// or ended. Executors drop it quietly; anything else they log as an error. (409
    /// `invalid_state` if it ever reaches the API.)
    #[error("stale: {0}")]
    Stale(String),
    /// 422 with its own stable code (e.g. `connector_scope_missing`).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
}

impl DomainError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        DomainError::Invalid { field, message: message.into() }
    }

    /// The stable API error code it maps to (`engine-spec/errors.md`), for records that keep
    /// a refusal (an automation's `blocked` execution).
    pub fn code(&self) -> String {
        match self {
            DomainError::NotFound { kind, .. } => not_found_code(kind).into(),
            DomainError::Invalid { .. } => "validation_error".into(),
            DomainError::InvalidState(_) | DomainError::Stale(_) => "invalid_state".into(),
            DomainError::Unprocessable { code, .. } => (*code).into(),
        }
    }
}

impl From<spool_model::rules::RuleError> for DomainError {
    fn from(e: spool_model::rules::RuleError) -> Self {
        DomainError::Invalid { field: e.field, message: e.message }
    }
}

macro_rules! not_found_registry {
    ($($module:ident $Var:ident),* $(,)?) => {
        /// The error code of an unknown resource of a kind (`errors.md`), from the kinds each
        /// machine owns ([`Machine::NOT_FOUND`](crate::machines::Machine::NOT_FOUND)): the one
        /// table the API and recorded refusals (an automation's `blocked` execution) share.
        /// Kinds without a code of their own (prompt runs, exports, segments, …) are
        /// `resource_not_found`.
        pub fn not_found_code(kind: &str) -> &'static str {
            use crate::machines::Machine;
            $(for (k, code) in <crate::machines::$module::Machine as Machine>::NOT_FOUND {
                if *k == kind {
                    return code;
                }
            })*
            "resource_not_found"
        }
    };
}
crate::for_each_machine!(not_found_registry);
