//! spool-log: the append-only event log, the only write path of Spool.
//!
//! [`EventLog`] is the trait the runtime uses; [`RedbLog`] is its embedded implementation.
//! One writer thread owns every write transaction and gathers concurrent appends into one
//! durable commit (group commit): throughput comes from batching fsyncs, and each appender is
//! answered only after the transaction that holds its events is durable.
//!
//! Architecture invariants:
//! - sequence numbers start at 1 and have no gaps; a failed commit leaves no trace;
//! - side records (idempotency records, snapshots) commit in the same transaction as the
//!   events they belong to, or not at all;
//! - a stream's version is the number of events in it; an append names the version it expects.

mod error;
mod mem_log;
mod pg_log;
mod pg_nodes;
mod redb_log;
mod shared_mem;
mod tail;

pub use error::Error;
pub use mem_log::MemLog;
pub use pg_log::{
    LEASE_TTL_DEFAULT, PG_READERS, PgLog, PgLogOptions, PgReaders, SNAPSHOT_CHUNK_BYTES, create_database, redact_url,
};
pub use pg_nodes::{Directory, Holder, NodeStatus, PARTITIONS_DEFAULT};
pub use redb_log::{
    LOG_FILE_NAME, LogStats, REST_QUICK_REPAIR_AFTER, RedbLog, RedbLogOptions, STREAM_INDEX_FLUSH_EVENTS,
};
pub use shared_mem::{LostAnswer, MemNode, SharedMemLog};
pub use tail::Tail;

use spool_model::{Envelope, Event};
use std::future::Future;

/// Appends waiting for the writer; a full queue makes appenders wait (back-pressure).
pub const APPEND_QUEUE_DEPTH_MAX: usize = 8192;
/// Requests gathered into one write transaction.
pub const GROUP_COMMIT_REQUESTS_MAX: usize = 1024;
/// Events gathered into one write transaction (a single larger request still commits alone).
pub const GROUP_COMMIT_EVENTS_MAX: usize = 16_384;
/// Events in one append request.
pub const APPEND_EVENTS_MAX: usize = 10_000;
/// Records returned by one read call.
pub const READ_BATCH_MAX: usize = 4096;

/// What an append expects of a stream's version (its number of events) before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must hold exactly this many events.
    Exact(u64),
}

/// An event before it has a place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub at_ms: u64,
    pub event: Event,
}

/// Events for one stream in one append.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream: String,
    pub expected: Expected,
    pub events: Vec<NewEvent>,
}

/// Tables beside the event stream that commit together with events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideTable {
    /// Idempotency records, keyed by the API's scoped key; values are opaque to the log.
    Idempotency,
    /// The keyring's data keys, keyed by owner, each wrapped by the master key. Deleting one
    /// in the same transaction as its owner's deletion event is crypto-shredding.
    DataKeys,
    /// A projection of the fold (`engine-spec/tables.md`): the immutable facts of imported
    /// videos, keyed by video id, and the projection's format under `~format`. Written by the
    /// sequencer in the same commit as the events they follow from; rebuildable from the log.
    Videos,
    /// A projection of the fold: import jobs' imported and skipped files, keyed
    /// `{job}/{i|s}/{file id}` (`engine-spec/tables.md`).
    JobFiles,
    /// A projection of the fold: the `new_only` keys of imported files (hex of their 16-byte
    /// key), values empty (`engine-spec/tables.md`).
    ImportKeys,
    /// A projection of the fold: each index's live videos in page order, keyed
    /// `{index}/{created_at_ms, 16 hex digits}/{video}`, values empty (`engine-spec/tables.md`).
    IndexVideos,
    /// A projection of the fold: delivered webhook deliveries, keyed by delivery id
    /// (`engine-spec/tables.md`).
    Deliveries,
    /// A projection of the fold: each webhook's delivered deliveries newest first, keyed
    /// `{webhook}/{inverted created_at_ms}/{inverted id}`, values empty (`engine-spec/tables.md`).
    WebhookDeliveries,
    /// A projection of the fold: prompt runs' task answers, keyed `{run}/s{segment}` or
    /// `{run}/v{video}` (`engine-spec/tables.md`).
    RunAnswers,
    /// A projection of the fold: prompt runs' processor calls, keyed `{run}/{number}`
    /// (`engine-spec/tables.md`).
    RunCalls,
}

impl SideTable {
    /// Every side table, in a fixed order (each log keeps one store per table).
    pub const ALL: [SideTable; 10] = [
        SideTable::Idempotency,
        SideTable::DataKeys,
        SideTable::Videos,
        SideTable::JobFiles,
        SideTable::ImportKeys,
        SideTable::IndexVideos,
        SideTable::Deliveries,
        SideTable::WebhookDeliveries,
        SideTable::RunAnswers,
        SideTable::RunCalls,
    ];
}

/// A write into a side table, made in the same transaction as the request's events.
#[derive(Debug, Clone)]
pub enum SideWrite {
    Put {
        table: SideTable,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        table: SideTable,
        key: String,
    },
    /// A snapshot: opaque bytes that stand for the fold of every event up to `at_seq`.
    Snapshot {
        name: String,
        at_seq: u64,
        bytes: Vec<u8>,
    },
}

/// One atomic append: every stream's events and every side write, or nothing.
#[derive(Debug, Clone, Default)]
pub struct AppendRequest {
    pub streams: Vec<StreamAppend>,
    pub side: Vec<SideWrite>,
}

impl AppendRequest {
    /// The common case: events for one stream.
    pub fn one(stream: impl Into<String>, expected: Expected, events: Vec<NewEvent>) -> Self {
        AppendRequest { streams: vec![StreamAppend { stream: stream.into(), expected, events }], side: Vec::new() }
    }

    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }
}

/// The answer to a durable append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number of the first event (0 when the request had no events).
    pub first_seq: u64,
    /// Sequence number of the last event (the head before the request when it had none).
    pub last_seq: u64,
    /// Each stream's version after the append, in request order.
    pub versions: Vec<u64>,
}

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub at_seq: u64,
    pub bytes: Vec<u8>,
}

/// An append queued with [`EventLog::submit`]: resolves once the commit that holds it is
/// durable (or failed).
pub struct Submitted {
    rx: tokio::sync::oneshot::Receiver<Result<Appended, Error>>,
}

impl Submitted {
    pub(crate) fn new(rx: tokio::sync::oneshot::Receiver<Result<Appended, Error>>) -> Self {
        Submitted { rx }
    }
}

impl Future for Submitted {
    type Output = Result<Appended, Error>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// The event log. Reads are synchronous and short (bounded by [`READ_BATCH_MAX`]);
/// appends are asynchronous because they wait for a durable commit.
///
/// The contract every implementation keeps (`crates/log/tests/contract.rs` runs one suite on
/// each; `engine-spec/log-format.md`): sequence numbers from 1 without gaps; an append request
/// is all or nothing (its events, its side writes, its snapshot); appends submitted one after
/// the other commit in that order; a stream's `Expected` version is checked inside the commit;
/// a failed commit writes nothing and answers every request it held with the error.
/// A boxed append: [`EventLog`] is used as `dyn EventLog` by the runtime.
/// What `spool verify` reads besides the contract: the records as stored (before decoding) and
/// every stream's version, in name order. Implemented by the logs that persist.
pub trait RawLog: EventLog {
    /// Raw records from `from_seq`, at most `limit` (capped at [`READ_BATCH_MAX`]).
    fn read_raw(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Error>;
    /// Streams and their versions in name order after `after`, at most `limit`.
    fn streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, u64)>, Error>;
}

pub type Appending<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Appended, Error>> + Send + 'a>>;

pub trait EventLog: Send + Sync + 'static {
    /// Append durably; resolves after the commit that holds these events is on disk.
    fn append(&self, req: AppendRequest) -> Appending<'_>;
    /// Queue an append now, behind every append submitted before it, and return its
    /// completion: a caller that submits batch N+1 before N is durable (a pipelined sequencer)
    /// gets them committed in that order. May block the calling thread while the log's queue
    /// is full (back-pressure): call it from a thread that may block.
    fn submit(&self, req: AppendRequest) -> Submitted;
    /// The sequence number of the last durable event (0 for an empty log).
    fn head(&self) -> u64;
    /// Events with `seq >= from_seq`, at most `limit` (capped at [`READ_BATCH_MAX`]).
    fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<Envelope>, Error>;
    /// A stream's events from version `from_version` (0-based), at most `limit`.
    fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Envelope>, Error>;
    /// The stream's version (its number of events).
    fn stream_version(&self, stream: &str) -> Result<u64, Error>;
    /// A live tail from `from_seq`: it yields every durable event in order and then waits
    /// for new commits, without polling.
    fn tail(&self, from_seq: u64) -> Tail;
    /// The latest snapshot under `name`.
    fn snapshot(&self, name: &str) -> Result<Option<Snapshot>, Error>;
    /// A side record.
    fn side_get(&self, table: SideTable, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Side records in key order after `after` (from the first without it), at most `limit`
    /// (capped at [`READ_BATCH_MAX`]).
    fn side_scan(&self, table: SideTable, after: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// Several side records at once, in the order of `keys` (at most [`READ_BATCH_MAX`]): a page
    /// of rows in one read (one round trip on PostgreSQL).
    fn side_get_many(&self, table: SideTable, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        if keys.len() > READ_BATCH_MAX {
            return Err(Error::Invalid(format!("{} keys in one read; at most {READ_BATCH_MAX}", keys.len())));
        }
        keys.iter().map(|k| self.side_get(table, k)).collect()
    }
    /// The log's counters (commits, appends, events, failed commits), for `/metrics`.
    fn stats(&self) -> &LogStats;
    /// The partitions of a shared log and who holds them (`spool cluster status`); empty for a
    /// log of one process.
    fn partitions(&self) -> Result<Vec<PartitionStatus>, Error> {
        Ok(Vec::new())
    }
    /// Closing on a shared log: stop renewing this node's lease and hand it back, so that
    /// another node takes the partition at once. Nothing is appended after. No-op elsewhere.
    fn hand_back(&self) {}
    /// Whether this log still holds its partition at the epoch it took it at: on a shared log,
    /// what the partition's row says now (read *after* reading events, it says they were all
    /// written while this log held the partition); always on a log of one process.
    fn holds_partition(&self) -> Result<bool, Error> {
        Ok(true)
    }
    /// Events of another partition of a shared log with `seq >= from_seq`, at most `limit` (the
    /// catalog of a partitioned cluster reads the index partitions' published domain events).
    /// A log of one process has no other partition.
    fn read_partition(&self, partition: i32, _from_seq: u64, _limit: usize) -> Result<Vec<Envelope>, Error> {
        Err(Error::Invalid(format!("this log has no partition {partition}")))
    }
    /// The nodes of a shared log (`spool cluster status`); empty for a log of one process.
    fn nodes(&self) -> Result<Vec<NodeStatus>, Error> {
        Ok(Vec::new())
    }
}

/// One partition of a shared log, as the database says now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionStatus {
    pub partition: i32,
    pub epoch: u64,
    pub head: u64,
    pub commits: u64,
    /// The node holding its lease, if any.
    pub owner: Option<String>,
    /// Milliseconds until the lease expires (negative: expired), on the database's clock.
    pub lease_expires_in_ms: Option<i64>,
}
