//! spool-model: the vocabulary every other crate speaks.
//!
//! Prefixed ULID ids, the persisted [`Event`] enum, the versioned [`Envelope`] and its codec.
//! Everything that is written to the log is defined here, and decoding of older
//! `format_version`s happens here alone, so no other crate ever sees an old shape.
//!
//! Architecture invariant: persisted enums only grow at their end. bincode writes the variant
//! index, so inserting or reordering a variant silently changes the meaning of stored bytes;
//! the golden files in `fixtures/events/` catch that.

pub mod codec;
pub mod event;
pub mod ids;
pub mod media;
pub mod names;
pub mod num;
pub mod run;
pub mod sealed;
pub mod time;

pub use codec::{CodecError, Envelope, FORMAT_VERSION, decode_envelope, encode_envelope};
pub use event::{
    AutomationConfig, ConnectorLocation, ConnectorScope, DeletionStage, DiscoveredFile, Event, ExportDestination,
    ExportKind, FileFailure, ImportMode, JobSource, MediaType, MirroredEvent, PromptSemantic, PromptVideoLevel,
    Provider, Scope, WatchedObject, mirrored_to_partitions,
};
pub use ids::*;
pub use media::{MediaFacts, PartRange, StreamFacts, StreamKind};
pub use names::{DomainEventName, FailureStage, RunStatus, WebhookStatus};
pub use run::{
    CallUsage, RunPrompt, RunSettings, RunTarget, RunTask, Segmentation, TaskAnswer, TaskFailure, TimeRange,
};
pub use sealed::Sealed;
pub mod rules;

/// Fault injection for tests: `SPOOL_FAILPOINTS=name,name` (or [`enable_failpoint`], for tests
/// in the same process) makes [`failpoint`] answer true for those names, in debug builds only (a
/// release build never reads the variable). Tests use it to make a request handler or an effect
/// executor fail or panic and check that Spool stays up.
pub fn failpoint(name: &str) -> bool {
    if !cfg!(debug_assertions) {
        return false;
    }
    failpoints().read().unwrap_or_else(|p| p.into_inner()).iter().any(|p| p == name)
}

/// Turn a failpoint on for the rest of this process (debug builds).
pub fn enable_failpoint(name: &str) {
    failpoints().write().unwrap_or_else(|p| p.into_inner()).push(name.to_string());
}

// Test fault injection (debug builds): read once from the environment, by this function alone.
#[allow(clippy::disallowed_methods)]
fn failpoints() -> &'static std::sync::RwLock<Vec<String>> {
    static POINTS: std::sync::OnceLock<std::sync::RwLock<Vec<String>>> = std::sync::OnceLock::new();
    POINTS.get_or_init(|| {
        std::sync::RwLock::new(
            std::env::var("SPOOL_FAILPOINTS")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        )
    })
}

/// The message a panic carried (for the runtime's caught panics and the probe's demuxers).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
