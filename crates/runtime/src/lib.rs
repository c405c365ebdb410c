//! spool-runtime: the imperative shell around the pure core.
//!
//! It owns the clock, the id source, the log and the folded state. Every command goes through
//! one sequencer (`sequencer.rs`), which decides batches in order, appends each batch in one
//! durable group commit and only then answers, so a reader always sees its own writes. Effects
//! that the state derives are run by the executors (`executors/<machine>.rs`) with bounded
//! concurrency after the events that scheduled them are durable; their outcomes, and the
//! durable timers when due, return as commands.

mod clock;
mod error;
mod executors;
mod files;
pub use files::clear_scratch;
pub mod announce;
pub mod fold;
mod follow;
mod gauges;
mod idem;
pub mod keyring;
pub mod rows;
mod runtime;
pub mod search;
mod sequencer;
pub mod tools;

pub use clock::{Clock, IdSource, SeededIds, SystemClock, SystemIds, TestClock};
pub use executors::export::{EXPORT_DOWNLOAD_MAX_BYTES_DEFAULT, EXPORT_PARTS_IN_FLIGHT_MAX, EXPORTS_DIR};
pub use executors::prompt_run::{
    EMBED_DIMS_MAX, EMBED_INPUTS_MAX, EMBED_RESPONSE_BYTES_DEFAULT, EmbedInput, EmbedderConfig,
    HTTP_PROCESSOR_CONCURRENCY_DEFAULT, HTTP_PROCESSOR_RESPONSE_BYTES_DEFAULT, HTTP_PROCESSOR_TIMEOUT_DEFAULT,
    PROBE_PROCESSOR, PostError, ProcessorConfig, ProcessorKind, ProcessorSettings, parse_vectors, sign_request,
};
pub use executors::webhook::{
    Secrets, Sent, WebhookSettings, check_target, new_secret, parse_duration, sha256_signature, standard_signature,
};
pub use idem::{IdemBody, IdemKey, IdemRecord};
pub use keyring::{Keyring, KeyringError, MasterKey};
pub use runtime::{
    CatalogLog, DECISION_EVENTS_MAX, IDEMPOTENCY_TTL_SECS_DEFAULT, IMPORT_CONCURRENCY_DEFAULT, MEDIA_DIR,
    MEDIA_SIGNING_PURPOSE, Reply, Runtime, RuntimeConfig, RuntimeError, SNAPSHOT_NAME, node_id_of, panic_message,
};
pub use sequencer::{
    PIPELINE_BATCHES_MAX, Prepare, Sequencer, SequencerConfig, SequencerHost, SequencerThreads, Submission, Work, inbox,
};
