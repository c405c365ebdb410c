//! spool-core: the deterministic state machines. No IO, no clock, no async; everything
#![recursion_limit = "256"]
//! non-deterministic (the time, new ids, secrets) arrives in [`Ctx`] or in the command.
//!
//! The loop: `decide(&state, &command, &mut ctx)` returns events (or a domain error);
//! the runtime appends them durably; `evolve` folds each envelope into the state;
//! `pending_effects(&state)` says what must happen next. Effect outcomes come back as commands.

pub mod command;
pub mod decide;
pub mod effect;
pub mod error;
pub mod evolve;
pub mod machines;
pub mod rows;
pub mod sim;
pub mod state;
pub mod usage;
pub mod waiting;
pub mod workset;

/// The import job machine under its older path.
pub use machines::import_job as imports;

pub use command::{Command, EngineCommand, Secret};
pub use decide::{Decision, Outcome, StreamEvents, decide, outbox, outbox_rows, publish};
pub use effect::{Effect, WorkKey, also_touches, effects_for, pending_effects, work_key};
pub use error::DomainError;
pub use evolve::{evolve, replay};
pub use machines::api_key::ApiKeyCommand;
pub use machines::automation::{AutomationCommand, AutomationEffect};
pub use machines::connector::ConnectorCommand;
pub use machines::export::{ExportCommand, ExportEffect};
pub use machines::import_job::{ImportCommand, ImportEffect};
pub use machines::index::{IndexCommand, IndexEffect};
pub use machines::prompt_run::{PromptRunCommand, PromptRunEffect};
pub use machines::video::{Video, VideoCommand, VideoEffect, VideoRow, media_unshared, parts_of_file};
pub use machines::webhook::{WebhookCommand, WebhookEffect};
pub use machines::{Machine, NoEffect};
pub use rows::{AnswerKey, Answers, RowSource, RowWrite, Rows, ViewRows};
pub use state::*;

use ulid::Ulid;

/// What a decision may use besides the state: the time and a source of new ids.
/// The runtime fills it from its clock and entropy; tests fill it with fixed values.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub now_ms: u64,
    /// Random bits for new ids; each new id consumes the next value.
    pub entropy: u128,
    issued: u128,
    /// The partition of a partitioned cluster deciding: every new id carries it in its low bits
    /// (`spool_model::partition_of`), so any node routes a request by its id alone.
    partition: Option<u16>,
}

impl Ctx {
    pub fn new(now_ms: u64, entropy: u128) -> Self {
        Ctx { now_ms, entropy, issued: 0, partition: None }
    }

    /// The same, deciding for `partition` of a partitioned cluster.
    pub fn in_partition(mut self, partition: Option<u16>) -> Self {
        self.partition = partition;
        self
    }

    /// A new ULID at `now_ms`. Deterministic for a given (now, entropy, partition).
    pub fn new_ulid(&mut self) -> Ulid {
        let r = self.entropy.wrapping_add(self.issued.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835));
        self.issued += 1;
        let u = Ulid::from_parts(self.now_ms, r);
        match self.partition {
            Some(p) => spool_model::with_partition(u, p),
            None => u,
        }
    }
}

/// SHA-256 of an API key secret: the only form in which a key is stored.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}
