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
pub mod sealed;
pub mod time;

pub use codec::{CodecError, Envelope, FORMAT_VERSION, decode_envelope, encode_envelope};
pub use event::{
    ConnectorLocation, ConnectorScope, DeletionStage, DiscoveredFile, Event, FileFailure, ImportMode, MediaType,
    Provider, Scope,
};
pub use ids::*;
pub use sealed::Sealed;
