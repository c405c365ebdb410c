//! spool-runtime: the imperative shell around the pure core.
//!
//! It owns the clock, the id source, the log and the folded state. A command is decided on
//! the current state, appended durably (optimistically, with each stream's expected version;
//! a conflict re-decides), folded by the single fold task in log order, and only then
//! answered, so a reader always sees its own writes. Effects that the state derives are run
//! with bounded concurrency after the events that scheduled them are durable; their outcomes
//! return as commands.

mod clock;
mod executors;
mod idem;
pub mod keyring;
mod runtime;
mod sequencer;
pub mod tools;

pub use clock::{Clock, IdSource, SeededIds, SystemClock, SystemIds, TestClock};
pub use idem::{IdemBody, IdemKey, IdemRecord};
pub use keyring::{Keyring, KeyringError, MasterKey};
pub use runtime::{
    IDEMPOTENCY_TTL_SECS_DEFAULT, IMPORT_CONCURRENCY_DEFAULT, MEDIA_DIR, Reply, Runtime, RuntimeConfig, RuntimeError,
    SNAPSHOT_NAME,
};
pub use sequencer::{Prepare, Work};
