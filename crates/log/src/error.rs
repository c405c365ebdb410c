use crate::Expected;
use spool_model::CodecError;
use std::path::PathBuf;

/// Everything that can go wrong in the log. Storage failures carry redb's message; they are
/// answered to every appender of the failed transaction and leave the log as it was.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stream {stream}: expected {expected:?}, but its version is {actual}")]
    Conflict { stream: String, expected: Expected, actual: u64 },
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error("the data directory {path} is held by another process (a running `spool serve`?)")]
    AlreadyOpen { path: PathBuf },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("record {seq} is damaged: {source}")]
    Corrupt { seq: u64, source: CodecError },
    #[error("event does not encode: {0}")]
    Encode(CodecError),
    #[error("the log is closed")]
    Closed,
    /// The partition was taken over: this writer's epoch is over and it may not append.
    #[error("fenced: {0}")]
    Fenced(String),
    /// Another node holds the partition's lease (an opening that does not wait).
    #[error("partition {0} is held by another node")]
    HeldElsewhere(i32),
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);
