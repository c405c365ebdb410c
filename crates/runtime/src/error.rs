//! The runtime's errors and rendered answers (shared by the runtime and the sequencer).

use crate::keyring::KeyringError;
use spool_core::DomainError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    #[error("a request with this idempotency key is still running")]
    IdempotencyInProgress,
    #[error("the engine's sequencer has stopped")]
    Stopped,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the stored answer of this idempotency key can no longer be read; use a new key")]
    IdempotencyUnreadable,
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Log(#[from] spool_log::Error),
    /// The command could not be decided: its decision panicked or passed a bound
    /// ([`crate::DECISION_EVENTS_MAX`]). Only this command fails; the batch's others go on.
    #[error("{message}")]
    Poisoned { code: &'static str, message: String },
}

/// A rendered answer: what the API sends, and what an idempotency record stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

pub use spool_model::panic_message;
