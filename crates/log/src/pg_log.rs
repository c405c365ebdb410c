//! The PostgreSQL log (`engine-spec/cluster.md`): the same contract as [`crate::RedbLog`] on a
//! database several nodes reach. One partition of the log per `PgLog`; its writer is the
//! partition's only writer, fenced by the partition's epoch.
//!
//! - Sequence numbers are assigned by the writer (it holds the partition), gap-free and in
//!   commit order, and the record embeds them (the record format is redb's).
//! - One transaction per group of appends, sent in one round trip: `BEGIN`, the fence (the
//!   partition's epoch and head are checked and moved inside the transaction, so a writer that
//!   lost the partition cannot write), the events with their stream versions (one statement for
//!   the whole group), the side writes, `COMMIT`, pipelined on one connection.
//! - A commit whose answer was lost (the connection dropped after `COMMIT` was sent) is settled
//!   from the database before anyone is answered: the partition's head says whether it landed.
//! - Snapshots are stored in chunks ([`SNAPSHOT_CHUNK_BYTES`]), since a field holds at most 1 GB.
//!
//! Reads are synchronous in the [`EventLog`] trait: they go to reader threads, each with its own
//! connection, over a channel.

use crate::{
    AppendRequest, Appended, Error, EventLog, Expected, LogStats, READ_BATCH_MAX, SideTable, SideWrite, Snapshot, Tail,
};
use spool_model::{Envelope, FORMAT_VERSION, decode_envelope, encode_envelope};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{Client, NoTls, Statement};

/// Bytes of one snapshot chunk row (a `bytea` holds at most 1 GB).
pub const SNAPSHOT_CHUNK_BYTES: usize = 64 << 20;
/// Reader threads (and connections) of one log.
pub const PG_READERS: usize = 2;
/// The log's tables, created at open when missing. Every table has the partition in its key.
const SCHEMA: &str = r#"
SET LOCAL client_min_messages = warning;
CREATE TABLE IF NOT EXISTS spool_meta (key text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE IF NOT EXISTS spool_partitions (
    partition int PRIMARY KEY,
    epoch bigint NOT NULL,
    head bigint NOT NULL
);
ALTER TABLE spool_partitions ADD COLUMN IF NOT EXISTS lease_owner text;
ALTER TABLE spool_partitions ADD COLUMN IF NOT EXISTS lease_expires timestamptz;
ALTER TABLE spool_partitions ADD COLUMN IF NOT EXISTS commits bigint NOT NULL DEFAULT 0;
DROP FUNCTION IF EXISTS spool_fence(int, bigint, bigint, bigint);
CREATE TABLE IF NOT EXISTS spool_events (
    partition int NOT NULL,
    seq bigint NOT NULL,
    stream text NOT NULL,
    version bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (partition, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS spool_events_stream ON spool_events (partition, stream, version);
CREATE TABLE IF NOT EXISTS spool_streams (
    partition int NOT NULL,
    stream text NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (partition, stream)
);
CREATE TABLE IF NOT EXISTS spool_snapshots (
    partition int NOT NULL,
    name text NOT NULL,
    chunk int NOT NULL,
    at_seq bigint NOT NULL,
    bytes bytea NOT NULL,
    PRIMARY KEY (partition, name, chunk)
);
CREATE TABLE IF NOT EXISTS spool_side (
    partition int NOT NULL,
    tbl smallint NOT NULL,
    -- Read in key order (`COLLATE "C"`, byte order, as redb's): the key's own collation, so the
    -- primary key's index serves the tables' range reads.
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (partition, tbl, key)
);
CREATE TABLE IF NOT EXISTS spool_nodes (
    node_id text PRIMARY KEY,
    advertise_url text NOT NULL,
    seen timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION spool_fence(p int, ep bigint, old_head bigint, new_head bigint, old_commits bigint)
RETURNS void AS $$
BEGIN
    UPDATE spool_partitions SET head = new_head, commits = commits + 1
        WHERE partition = p AND epoch = ep AND head = old_head AND commits = old_commits;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'spool: partition % is no longer held at epoch % and head %', p, ep, old_head
            USING ERRCODE = 'SP001';
    END IF;
END $$ LANGUAGE plpgsql;
"#;

/// The events of a group, their versions computed from `spool_streams` in the same statement.
const INSERT_EVENTS: &str = r#"
WITH req AS (
    SELECT r.seq, r.stream, r.record FROM unnest($2::bigint[], $3::text[], $4::bytea[]) AS r(seq, stream, record)
), counts AS (
    SELECT stream, count(*)::bigint AS n FROM req GROUP BY stream
), bumped AS (
    INSERT INTO spool_streams AS s (partition, stream, version)
    SELECT $1, stream, n FROM counts
    ON CONFLICT (partition, stream) DO UPDATE SET version = s.version + EXCLUDED.version
    RETURNING stream, version
), ins AS (
    INSERT INTO spool_events (partition, seq, stream, version, record)
    SELECT $1, r.seq, r.stream, b.version - c.n + row_number() OVER (PARTITION BY r.stream ORDER BY r.seq) - 1, r.record
    FROM req r JOIN bumped b USING (stream) JOIN counts c USING (stream)
    RETURNING 1
)
SELECT stream, version, (SELECT count(*) FROM ins) FROM bumped
"#;

fn side_code(t: SideTable) -> i16 {
    match t {
        SideTable::Idempotency => 1,
        SideTable::DataKeys => 2,
        SideTable::Videos => 3,
        SideTable::JobFiles => 4,
        SideTable::ImportKeys => 5,
        SideTable::IndexVideos => 6,
        SideTable::Deliveries => 7,
        SideTable::WebhookDeliveries => 8,
        SideTable::RunAnswers => 9,
        SideTable::RunCalls => 10,
    }
}

pub(crate) fn pg_err(e: tokio_postgres::Error) -> Error {
    pg_err_ref(&e)
}

fn pg_err_ref(e: &tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) if db.code().code() == "SP001" => Error::Fenced(db.message().to_string()),
        Some(db) => Error::Storage(format!("postgres: {}", db.message())),
        None => Error::Storage(format!("postgres: {e}")),
    }
}

/// Where a log lives: a database and one partition of it, and who holds it.
#[derive(Debug, Clone)]
pub struct PgLogOptions {
    /// `postgres://user@host:port/db`.
    pub url: String,
    pub partition: i32,
    /// This node's name in the lease (`SPOOL_NODE_ID`). A node reopening a partition it held
    /// takes it back at once (its earlier process is gone); another node waits for the lease
    /// to expire.
    pub node_id: String,
    /// How long a lease lasts unless renewed (`SPOOL_LEASE_TTL`), on the database's clock.
    pub lease_ttl: std::time::Duration,
    /// Wait while another node holds the lease (a standby); `false`: answer
    /// [`Error::HeldElsewhere`] at once.
    pub wait: bool,
    /// The node's reader pool, shared by every partition it holds ([`PgReaders`]); `None`:
    /// the log starts [`PG_READERS`] reader threads of its own.
    pub readers: Option<Arc<PgReaders>>,
}

impl PgLogOptions {
    /// Partition 0 of `url` for `node_id`, with the default lease.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> Self {
        PgLogOptions {
            url: url.into(),
            partition: 0,
            node_id: node_id.into(),
            lease_ttl: LEASE_TTL_DEFAULT,
            wait: true,
            readers: None,
        }
    }
}

/// Default of [`PgLogOptions::lease_ttl`].
pub const LEASE_TTL_DEFAULT: std::time::Duration = std::time::Duration::from_secs(10);

struct Job {
    req: AppendRequest,
    reply: oneshot::Sender<Result<Appended, Error>>,
}

enum Read {
    Partitions,
    Nodes,
    From(u64, usize),
    /// Another partition's events (the catalog ingests the index partitions' published events).
    PartitionFrom(i32, u64, usize),
    Raw(u64, usize),
    Streams(Option<String>, usize),
    Stream(String, u64, usize),
    Version(String),
    Snapshot(String),
    SideGet(SideTable, String),
    SideGetMany(SideTable, Vec<String>),
    SideScan(SideTable, Option<String>, usize),
}

enum ReadAnswer {
    Partitions(Vec<crate::PartitionStatus>),
    Nodes(Vec<crate::NodeStatus>),
    Envelopes(Vec<Envelope>),
    Raw(Vec<(u64, Vec<u8>)>),
    Streams(Vec<(String, u64)>),
    Version(u64),
    Snapshot(Option<Snapshot>),
    Side(Option<Vec<u8>>),
    SideMany(Vec<Option<Vec<u8>>>),
    Scan(Vec<(String, Vec<u8>)>),
}

type ReadJob = (i32, Read, std::sync::mpsc::Sender<Result<ReadAnswer, Error>>);

/// Reader threads, one connection each, that every partition a node holds shares: a node with
/// many partitions opens this many reading connections, not [`PG_READERS`] per partition
/// (PostgreSQL's `max_connections` is 100 by default). A read names its partition.
pub struct PgReaders {
    tx: Mutex<Option<std::sync::mpsc::Sender<ReadJob>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for PgReaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgReaders")
    }
}

impl PgReaders {
    /// `n` reader threads on `url` (each connects at its first read).
    pub fn start(url: &str, n: usize) -> Result<Arc<PgReaders>, Error> {
        let (tx, rx) = std::sync::mpsc::channel::<ReadJob>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let (url, rx) = (url.to_string(), rx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("spool-pg-reader-{i}"))
                    .spawn(move || reader_loop(&url, &rx))
                    .map_err(|e| Error::Storage(format!("cannot start a reader thread: {e}")))?,
            );
        }
        Ok(Arc::new(PgReaders { tx: Mutex::new(Some(tx)), threads: Mutex::new(threads) }))
    }

    fn sender(&self) -> Result<std::sync::mpsc::Sender<ReadJob>, Error> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(Error::Closed)
    }
}

impl Drop for PgReaders {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        for t in self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = t.join();
        }
    }
}

/// A log in PostgreSQL. Opening it takes its partition: the epoch moves on, and a writer of an
/// earlier epoch (another process that held it) can no longer append.
pub struct PgLog {
    lease: Arc<Lease>,
    tx: Option<mpsc::Sender<Job>>,
    /// Turns true, for good, when this node no longer holds the partition (a renewal found
    /// another epoch, or none succeeded within the lease's time): nothing is appended after.
    lost: watch::Receiver<bool>,
    /// The readers' queue, shared with tails: closing the log closes it for them too.
    reads: Arc<Mutex<Option<std::sync::mpsc::Sender<ReadJob>>>>,
    /// The readers (the node's pool, or the log's own), kept alive while the log is.
    _readers: Arc<PgReaders>,
    partition: i32,
    head: watch::Receiver<u64>,
    stats: Arc<LogStats>,
    epoch: u64,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A current-thread runtime for one of the log's threads.
fn thread_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Storage(format!("cannot start a log thread: {e}")))
}

/// Create the tables when missing, inside the caller's transaction. One creator at a time
/// (several nodes may start together): a transaction-scoped advisory lock serialises the
/// `CREATE`s only; nothing is ever fenced by it.
///
/// A log whose tables are at [`SCHEMA_VERSION`] is opened without any DDL: `ALTER TABLE` takes
/// the strongest lock on `spool_partitions`, and a node starting must never queue behind a
/// holder's open append transaction (nor, queued, hold every later append back).
pub(crate) async fn create_schema(t: &tokio_postgres::Transaction<'_>) -> Result<(), Error> {
    let exists: bool = t.query_one("SELECT to_regclass('spool_meta') IS NOT NULL", &[]).await.map_err(pg_err)?.get(0);
    if exists {
        let version: Option<i64> = t
            .query_opt("SELECT value FROM spool_meta WHERE key = 'schema_version'", &[])
            .await
            .map_err(pg_err)?
            .map(|r| r.get(0));
        if version.is_some_and(|v| v >= SCHEMA_VERSION) {
            return Ok(());
        }
    }
    t.batch_execute("SELECT pg_advisory_xact_lock(7370656)").await.map_err(pg_err)?;
    t.batch_execute(SCHEMA).await.map_err(pg_err)?;
    t.execute(
        "INSERT INTO spool_meta (key, value) VALUES ('schema_version', $1) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(pg_err)
    .map(|_| ())
}

/// The version of [`SCHEMA`]: moved whenever it changes.
const SCHEMA_VERSION: i64 = 2;

pub(crate) async fn connect(url: &str) -> Result<Client, Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(pg_err)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "a log connection ended");
        }
    });
    Ok(client)
}

impl PgLog {
    /// Open the log's partition in the database at `opts.url` (creating the tables when
    /// missing) and take it.
    pub fn open(opts: PgLogOptions) -> Result<Self, Error> {
        // On a thread of its own: the caller may be inside an async runtime.
        let setup = opts.clone();
        let (epoch, head_seq, commits) = std::thread::scope(|s| s.spawn(move || Self::take_partition(&setup)).join())
            .map_err(|_| Error::Storage("the log's setup panicked".into()))??;
        Self::start(opts, epoch, head_seq, commits)
    }

    /// Create the tables when missing and take the partition: its epoch moves on.
    fn take_partition(opts: &PgLogOptions) -> Result<(u64, u64, u64), Error> {
        let rt = thread_runtime()?;
        rt.block_on(async {
            let mut c = connect(&opts.url).await?;
            let t = c.transaction().await.map_err(pg_err)?;
            create_schema(&t).await?;
            let known: Option<i64> = t
                .query_opt("SELECT value FROM spool_meta WHERE key = 'format_version'", &[])
                .await
                .map_err(pg_err)?
                .map(|r| r.get(0));
            if known.unwrap_or(0) > i64::from(FORMAT_VERSION) {
                return Err(Error::Invalid(format!(
                    "the log was written by a newer Spool (format {}); this build writes format {FORMAT_VERSION}",
                    known.unwrap_or(0)
                )));
            }
            t.execute(
                "INSERT INTO spool_meta (key, value) VALUES ('format_version', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&i64::from(FORMAT_VERSION)],
            )
            .await
            .map_err(pg_err)?;
            // Inserted only when missing: an insert that meets the row would wait for a
            // holder's open transaction on it (a plain read does not).
            if t.query_opt("SELECT 1 FROM spool_partitions WHERE partition = $1", &[&opts.partition])
                .await
                .map_err(pg_err)?
                .is_none()
            {
                t.execute(
                    "INSERT INTO spool_partitions (partition, epoch, head) VALUES ($1, 0, 0) ON CONFLICT DO NOTHING",
                    &[&opts.partition],
                )
                .await
                .map_err(pg_err)?;
            }
            t.commit().await.map_err(pg_err)?;
            // Take the lease when it is free, expired or this node's; else wait (a standby).
            let ttl = opts.lease_ttl.as_secs_f64();
            // A paused holder may keep the partition's row locked inside its transaction: the
            // takeover does not wait behind it for ever (the server ends that session after a
            // lease's time: `idle_in_transaction_session_timeout`), it tries again.
            c.batch_execute(&format!("SET lock_timeout = {}", lease_poll(opts.lease_ttl).as_millis().max(1)))
                .await
                .map_err(pg_err)?;
            let mut waited = false;
            loop {
                let row = c
                    .query_opt(
                        "UPDATE spool_partitions SET epoch = epoch + 1, lease_owner = $2, \
                         lease_expires = now() + make_interval(secs => $3) \
                         WHERE partition = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires < now()) \
                         RETURNING epoch, head, commits",
                        &[&opts.partition, &opts.node_id, &ttl],
                    )
                    .await;
                let row = match row {
                    Ok(row) => row,
                    Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                        tracing::info!(
                            partition = opts.partition,
                            "the partition's row is locked by its holder; trying again"
                        );
                        None
                    }
                    Err(e) => return Err(pg_err(e)),
                };
                if let Some(row) = row {
                    let (epoch, head, commits): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
                    return Ok::<_, Error>((u64_of(epoch), u64_of(head), u64_of(commits)));
                }
                if !opts.wait {
                    return Err(Error::HeldElsewhere(opts.partition));
                }
                if !waited {
                    tracing::info!(
                        partition = opts.partition,
                        "another node holds the partition's lease; waiting for it to expire"
                    );
                    waited = true;
                }
                tokio::time::sleep(lease_poll(opts.lease_ttl).min(STANDBY_POLL_MAX)).await;
            }
        })
    }

    fn start(opts: PgLogOptions, epoch: u64, head_seq: u64, commits: u64) -> Result<Self, Error> {
        let (head_tx, head_rx) = watch::channel(head_seq);
        let (lost_tx, lost_rx) = watch::channel(false);
        let lease = Arc::new(Lease {
            stopping: std::sync::atomic::AtomicBool::new(false),
            ended: watch::channel(false).0,
            renewed: Mutex::new(std::time::Instant::now()),
            ttl: opts.lease_ttl,
            lost: lost_tx,
        });
        let (tx, rx) = mpsc::channel(crate::APPEND_QUEUE_DEPTH_MAX);
        let stats = Arc::new(LogStats::default());
        let mut threads = Vec::new();
        let w = Writer {
            url: opts.url.clone(),
            partition: opts.partition,
            epoch,
            head: head_seq,
            commits,
            resync: false,
            stats: stats.clone(),
            lease: lease.clone(),
        };
        {
            let (opts, lease) = (opts.clone(), lease.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("spool-pg-lease".into())
                    .spawn(move || renew_loop(&opts, epoch, &lease))
                    .map_err(|e| Error::Storage(format!("cannot start the lease thread: {e}")))?,
            );
        }
        threads.push(
            std::thread::Builder::new()
                .name("spool-pg-writer".into())
                .spawn(move || w.run(rx, head_tx))
                .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?,
        );
        let readers = match &opts.readers {
            Some(pool) => pool.clone(),
            None => PgReaders::start(&opts.url, PG_READERS)?,
        };
        Ok(PgLog {
            lease,
            tx: Some(tx),
            lost: lost_rx,
            reads: Arc::new(Mutex::new(Some(readers.sender()?))),
            _readers: readers,
            partition: opts.partition,
            head: head_rx,
            stats,
            epoch,
            threads,
        })
    }

    /// A partition's log for reading only (the offline tools): it takes no lease, moves no
    /// epoch and appends nothing; its head is the partition's when opened.
    pub fn open_reader(url: &str, partition: i32) -> Result<Self, Error> {
        Self::open_reader_on(url, partition, None)
    }

    /// [`PgLog::open_reader`] on a node's reader pool (`None`: a reader of its own).
    pub fn open_reader_on(url: &str, partition: i32, pool: Option<Arc<PgReaders>>) -> Result<Self, Error> {
        let u = url.to_string();
        let head = std::thread::scope(|s| {
            s.spawn(move || {
                let rt = thread_runtime()?;
                rt.block_on(async {
                    let c = connect(&u).await?;
                    let row = c
                        .query_opt("SELECT head FROM spool_partitions WHERE partition = $1", &[&partition])
                        .await
                        .map_err(|e| match e.as_db_error() {
                            Some(db) if db.code().code() == "42P01" => {
                                Error::Invalid("this database holds no Spool log (no spool_partitions table)".into())
                            }
                            _ => pg_err(e),
                        })?
                        .ok_or_else(|| Error::Invalid(format!("this database's log has no partition {partition}")))?;
                    Ok::<_, Error>(u64_of(row.get(0)))
                })
            })
            .join()
        })
        .map_err(|_| Error::Storage("opening the log panicked".into()))??;
        let (_head_tx, head_rx) = watch::channel(head);
        let (lost_tx, lost_rx) = watch::channel(true);
        let lease = Arc::new(Lease {
            stopping: std::sync::atomic::AtomicBool::new(true),
            ended: watch::channel(true).0,
            renewed: Mutex::new(std::time::Instant::now()),
            ttl: LEASE_TTL_DEFAULT,
            lost: lost_tx,
        });
        let readers = match pool {
            Some(p) => p,
            None => PgReaders::start(url, 1)?,
        };
        Ok(PgLog {
            lease,
            tx: None,
            lost: lost_rx,
            reads: Arc::new(Mutex::new(Some(readers.sender()?))),
            _readers: readers,
            partition,
            head: head_rx,
            stats: Arc::new(LogStats::default()),
            epoch: 0,
            threads: Vec::new(),
        })
    }

    /// Stop renewing and hand the lease back (waits up to two seconds for it): the log appends
    /// nothing more. `spool serve` calls it once its sequencer has stopped, on SIGTERM.
    pub fn hand_back(&self) {
        self.lease.stopping.store(true, Ordering::SeqCst);
        let mut ended = self.lease.ended.subscribe();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !*ended.borrow_and_update() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The epoch this log holds its partition at.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Turns true, for good, when the partition is lost (see [`PgLog`]).
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    fn read(&self, r: Read) -> Result<ReadAnswer, Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
            reads.as_ref().ok_or(Error::Closed)?.send((self.partition, r, tx)).map_err(|_| Error::Closed)?;
        }
        rx.recv().map_err(|_| Error::Closed)?
    }

    fn shutdown(&mut self) {
        self.lease.stopping.store(true, Ordering::SeqCst);
        self.tx.take();
        self.reads.lock().unwrap_or_else(|p| p.into_inner()).take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for PgLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The reader threads: one connection each, reconnecting after a failure.
fn reader_loop(url: &str, rx: &Mutex<std::sync::mpsc::Receiver<ReadJob>>) {
    let Ok(rt) = thread_runtime() else { return };
    let mut client: Option<Client> = None;
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok((partition, read, reply)) = job else { return };
        let answer = rt.block_on(async {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = Some(connect(url).await?);
            }
            let c = client.as_ref().ok_or(Error::Closed)?;
            answer_read(c, partition, read).await
        });
        if answer.is_err() {
            client = None;
        }
        let _ = reply.send(answer);
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

async fn answer_read(c: &Client, p: i32, read: Read) -> Result<ReadAnswer, Error> {
    let decode = |rows: Vec<tokio_postgres::Row>| -> Result<Vec<Envelope>, Error> {
        rows.iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                let bytes: &[u8] = r.get(1);
                decode_envelope(bytes).map_err(|source| Error::Corrupt { seq: u64_of(seq), source })
            })
            .collect()
    };
    let _ = p;
    Ok(match read {
        Read::Partitions => {
            let rows = c
                .query(
                    "SELECT partition, epoch, head, commits, lease_owner, \
                     (extract(epoch FROM lease_expires - now()) * 1000)::bigint \
                     FROM spool_partitions ORDER BY partition",
                    &[],
                )
                .await
                .map_err(pg_err)?;
            ReadAnswer::Partitions(
                rows.iter()
                    .map(|r| crate::PartitionStatus {
                        partition: r.get(0),
                        epoch: u64_of(r.get(1)),
                        head: u64_of(r.get(2)),
                        commits: u64_of(r.get(3)),
                        owner: r.get(4),
                        lease_expires_in_ms: r.get(5),
                    })
                    .collect(),
            )
        }
        Read::Nodes => {
            let rows = c
                .query(
                    "SELECT node_id, advertise_url, (extract(epoch FROM (now() - seen)) * 1000)::bigint \
                     FROM spool_nodes ORDER BY node_id",
                    &[],
                )
                .await
                .map_err(pg_err)?;
            ReadAnswer::Nodes(
                rows.iter()
                    .map(|r| crate::NodeStatus { node_id: r.get(0), advertise_url: r.get(1), seen_ms_ago: r.get(2) })
                    .collect(),
            )
        }
        Read::Raw(from, limit) => {
            let rows = c
                .query(
                    "SELECT seq, record FROM spool_events WHERE partition = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                    &[&p, &i64_of(from), &i64_of(limit.min(READ_BATCH_MAX) as u64)],
                )
                .await
                .map_err(pg_err)?;
            ReadAnswer::Raw(rows.iter().map(|r| (u64_of(r.get(0)), r.get::<_, Vec<u8>>(1))).collect())
        }
        Read::Streams(after, limit) => {
            let limit = i64_of(limit.min(READ_BATCH_MAX) as u64);
            let rows = match after {
                Some(a) => {
                    c.query(
                        "SELECT stream, version FROM spool_streams WHERE partition = $1 AND stream COLLATE \"C\" > $2 \
                         ORDER BY stream COLLATE \"C\" LIMIT $3",
                        &[&p, &a, &limit],
                    )
                    .await
                }
                None => {
                    c.query(
                        "SELECT stream, version FROM spool_streams WHERE partition = $1 ORDER BY stream COLLATE \"C\" LIMIT $2",
                        &[&p, &limit],
                    )
                    .await
                }
            }
            .map_err(pg_err)?;
            ReadAnswer::Streams(rows.iter().map(|r| (r.get::<_, String>(0), u64_of(r.get(1)))).collect())
        }
        Read::From(from, limit) => {
            let rows = c
                .query(
                    "SELECT seq, record FROM spool_events WHERE partition = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                    &[&p, &i64_of(from), &i64_of(limit.min(READ_BATCH_MAX) as u64)],
                )
                .await
                .map_err(pg_err)?;
            ReadAnswer::Envelopes(decode(rows)?)
        }
        Read::PartitionFrom(partition, from, limit) => {
            let rows = c
                .query(
                    "SELECT seq, record FROM spool_events WHERE partition = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                    &[&partition, &i64_of(from), &i64_of(limit.min(READ_BATCH_MAX) as u64)],
                )
                .await
                .map_err(pg_err)?;
            ReadAnswer::Envelopes(decode(rows)?)
        }
        Read::Stream(stream, from, limit) => {
            let rows = c
                .query(
                    "SELECT seq, record FROM spool_events WHERE partition = $1 AND stream = $2 AND version >= $3 \
                     ORDER BY version LIMIT $4",
                    &[&p, &stream, &i64_of(from), &i64_of(limit.min(READ_BATCH_MAX) as u64)],
                )
                .await
                .map_err(pg_err)?;
            ReadAnswer::Envelopes(decode(rows)?)
        }
        Read::Version(stream) => {
            let row = c
                .query_opt("SELECT version FROM spool_streams WHERE partition = $1 AND stream = $2", &[&p, &stream])
                .await
                .map_err(pg_err)?;
            ReadAnswer::Version(row.map_or(0, |r| u64_of(r.get(0))))
        }
        Read::Snapshot(name) => {
            let rows = c
                .query(
                    "SELECT at_seq, bytes FROM spool_snapshots WHERE partition = $1 AND name = $2 ORDER BY chunk",
                    &[&p, &name],
                )
                .await
                .map_err(pg_err)?;
            let Some(first) = rows.first() else { return Ok(ReadAnswer::Snapshot(None)) };
            let at_seq: i64 = first.get(0);
            let mut bytes = Vec::new();
            for r in &rows {
                bytes.extend_from_slice(r.get::<_, &[u8]>(1));
            }
            ReadAnswer::Snapshot(Some(Snapshot { at_seq: u64_of(at_seq), bytes }))
        }
        Read::SideGet(t, key) => {
            let row = c
                .query_opt(
                    "SELECT value FROM spool_side WHERE partition = $1 AND tbl = $2 AND key = $3",
                    &[&p, &side_code(t), &key],
                )
                .await
                .map_err(pg_err)?;
            ReadAnswer::Side(row.map(|r| r.get::<_, Vec<u8>>(0)))
        }
        Read::SideGetMany(t, keys) => {
            let rows = c
                .query(
                    "SELECT key, value FROM spool_side WHERE partition = $1 AND tbl = $2 AND key = ANY($3)",
                    &[&p, &side_code(t), &keys],
                )
                .await
                .map_err(pg_err)?;
            let mut found: std::collections::HashMap<String, Vec<u8>> =
                rows.into_iter().map(|r| (r.get::<_, String>(0), r.get::<_, Vec<u8>>(1))).collect();
            ReadAnswer::SideMany(keys.iter().map(|k| found.remove(k)).collect())
        }
        Read::SideScan(t, after, limit) => {
            let limit = i64_of(limit.min(READ_BATCH_MAX) as u64);
            let rows = match after {
                Some(a) => {
                    c.query(
                        "SELECT key, value FROM spool_side WHERE partition = $1 AND tbl = $2 AND key COLLATE \"C\" > $3 \
                         ORDER BY key COLLATE \"C\" LIMIT $4",
                        &[&p, &side_code(t), &a, &limit],
                    )
                    .await
                }
                None => {
                    c.query(
                        "SELECT key, value FROM spool_side WHERE partition = $1 AND tbl = $2 \
                         ORDER BY key COLLATE \"C\" LIMIT $3",
                        &[&p, &side_code(t), &limit],
                    )
                    .await
                }
            }
            .map_err(pg_err)?;
            ReadAnswer::Scan(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, Vec<u8>>(1))).collect())
        }
    })
}

/// The partition's one writer.
struct Writer {
    url: String,
    partition: i32,
    epoch: u64,
    head: u64,
    /// Commits of the partition so far (`spool_partitions.commits`, moved by the fence): a
    /// commit without events moves it too, so an in-doubt commit is settled by it.
    commits: u64,
    /// The last outcome is not known: the next group reads the partition's row first.
    resync: bool,
    stats: Arc<LogStats>,
    lease: Arc<Lease>,
}

/// The partition's lease as this node sees it: when it was last renewed (on this node's
/// monotonic clock) and whether it is lost.
struct Lease {
    /// Closing: the lease thread hands the lease back (if still held) and ends.
    stopping: std::sync::atomic::AtomicBool,
    /// Set by the lease thread once it has ended (after handing the lease back).
    ended: watch::Sender<bool>,
    renewed: Mutex<std::time::Instant>,
    ttl: std::time::Duration,
    lost: watch::Sender<bool>,
}

impl Lease {
    /// Held: not lost, and renewed within the lease's time (the local bound: a node that could
    /// not renew for that long stops acting, whatever the database says later).
    fn held(&self) -> bool {
        if *self.lost.borrow() {
            return false;
        }
        let renewed = *self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        if renewed.elapsed() > self.ttl {
            self.lose("the lease was not renewed within its time");
            return false;
        }
        true
    }

    fn lose(&self, why: &str) {
        if !self.lost.send_replace(true) {
            tracing::error!(why, "this node no longer holds the partition; it appends nothing more");
        }
    }
}

/// A standby tries the lease at least this often (a handed-back lease is taken within it).
const STANDBY_POLL_MAX: std::time::Duration = std::time::Duration::from_millis(500);

/// How often a holder renews the lease, and a standby tries it: a third of its time.
fn lease_poll(ttl: std::time::Duration) -> std::time::Duration {
    (ttl / 3).max(std::time::Duration::from_millis(50))
}

/// The lease thread: renew every third of the lease's time while this node holds the partition
/// at `epoch`; another epoch, or no renewal within the lease's time, loses it for good.
fn renew_loop(opts: &PgLogOptions, epoch: u64, lease: &Lease) {
    let Ok(rt) = thread_runtime() else { return };
    let ttl = opts.lease_ttl.as_secs_f64();
    let mut client: Option<Client> = None;
    loop {
        // In short steps, so that closing the log does not wait a third of a lease.
        let until = std::time::Instant::now() + lease_poll(opts.lease_ttl);
        while std::time::Instant::now() < until && !lease.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if lease.stopping.load(Ordering::SeqCst) {
            if lease.held() {
                hand_back(&rt, opts, epoch);
            }
            lease.ended.send_replace(true);
            return;
        }
        if !lease.held() {
            lease.ended.send_replace(true);
            return;
        }
        // The lease is good until a lease's time after the renewal was sent (the database's
        // `now()` is no earlier), not after its answer came: a renewal that waited is no proof.
        let sent = std::time::Instant::now();
        let renewed = rt.block_on(async {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                let c = connect(&opts.url).await?;
                c.batch_execute(&format!("SET lock_timeout = {}", lease_poll(opts.lease_ttl).as_millis().max(1)))
                    .await
                    .map_err(pg_err)?;
                client = Some(c);
            }
            let c = client.as_ref().ok_or(Error::Closed)?;
            c.execute(
                "UPDATE spool_partitions SET lease_expires = now() + make_interval(secs => $4) \
                 WHERE partition = $1 AND epoch = $2 AND lease_owner = $3",
                &[&opts.partition, &i64_of(epoch), &opts.node_id, &ttl],
            )
            .await
            .map_err(pg_err)
        });
        match renewed {
            Ok(1) => *lease.renewed.lock().unwrap_or_else(|p| p.into_inner()) = sent,
            Ok(_) => {
                lease.lose("another node took the partition over");
                return;
            }
            Err(e) => {
                client = None;
                tracing::warn!(error = %e, "the partition's lease was not renewed; retrying");
            }
        }
    }
}

/// Hand a held lease back when the log closes (`spool serve` stopping on SIGTERM): a standby
/// takes the partition at its next try instead of waiting for the lease to expire. Only this
/// epoch's lease is cleared: a partition already taken over is left alone.
fn hand_back(rt: &tokio::runtime::Runtime, opts: &PgLogOptions, epoch: u64) {
    let released = rt.block_on(async {
        let c = connect(&opts.url).await?;
        c.execute(
            "UPDATE spool_partitions SET lease_owner = NULL, lease_expires = now() \
             WHERE partition = $1 AND epoch = $2 AND lease_owner = $3",
            &[&opts.partition, &i64_of(epoch), &opts.node_id],
        )
        .await
        .map_err(pg_err)
    });
    match released {
        Ok(n) if n > 0 => tracing::info!(partition = opts.partition, epoch, "handed the partition's lease back"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not hand the lease back; it expires on its own"),
    }
}

/// The statements a writer prepares once per connection.
struct Prepared {
    begin: Statement,
    fence: Statement,
    events: Statement,
    side_put: Statement,
    side_delete: Statement,
    snapshot_delete: Statement,
    snapshot_put: Statement,
    commit: Statement,
    versions: Statement,
}

/// The writer's connection: its client, its prepared statements, its server process.
struct Conn {
    client: Client,
    st: Prepared,
    pid: i32,
}

impl Conn {
    async fn open(url: &str, lease_ttl: std::time::Duration) -> Result<Conn, Error> {
        let client = connect(url).await?;
        // The writer never idles inside a transaction (a group is sent whole): a session that
        // does is paused or stalled, and the server ends it after a lease's time, so that the
        // partition row it locked does not hold a takeover back for ever.
        client
            .batch_execute(&format!("SET idle_in_transaction_session_timeout = {}", lease_ttl.as_millis().max(1)))
            .await
            .map_err(pg_err)?;
        let st = prepare(&client).await?;
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.map_err(pg_err)?.get(0);
        Ok(Conn { client, st, pid })
    }
}

async fn prepare(c: &Client) -> Result<Prepared, Error> {
    let p = |sql: &'static str| async move { c.prepare(sql).await.map_err(pg_err) };
    Ok(Prepared {
        begin: p("BEGIN").await?,
        fence: p("SELECT spool_fence($1, $2, $3, $4, $5)").await?,
        events: p(INSERT_EVENTS).await?,
        side_put: p("INSERT INTO spool_side (partition, tbl, key, value) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (partition, tbl, key) DO UPDATE SET value = EXCLUDED.value")
        .await?,
        side_delete: p("DELETE FROM spool_side WHERE partition = $1 AND tbl = $2 AND key = $3").await?,
        snapshot_delete: p("DELETE FROM spool_snapshots WHERE partition = $1 AND name = $2").await?,
        snapshot_put: p(
            "INSERT INTO spool_snapshots (partition, name, chunk, at_seq, bytes) VALUES ($1, $2, $3, $4, $5)",
        )
        .await?,
        commit: p("COMMIT").await?,
        versions: p("SELECT stream, version FROM spool_streams WHERE partition = $1 AND stream = ANY($2)").await?,
    })
}

/// What one group of appends writes, built before the transaction.
struct Group {
    seqs: Vec<i64>,
    streams: Vec<String>,
    records: Vec<Vec<u8>>,
    side: Vec<SideWrite>,
    /// Per job: its answer, or the refusal decided before the transaction.
    answers: Vec<Result<Appended, Error>>,
    new_head: u64,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>, head_tx: watch::Sender<u64>) {
        let Ok(rt) = thread_runtime() else { return };
        let mut conn: Option<Conn> = None;
        let mut batch: Vec<Job> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut events = first.req.event_count();
            batch.push(first);
            while batch.len() < crate::GROUP_COMMIT_REQUESTS_MAX && events < crate::GROUP_COMMIT_EVENTS_MAX {
                match rx.try_recv() {
                    Ok(job) => {
                        events += job.req.event_count();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            let result = rt.block_on(self.commit(&mut conn, &batch));
            // Whatever happened, tails follow the head this writer knows (a settled or
            // resynchronised commit moved it too).
            head_tx.send_replace(self.head);
            match result {
                Ok(answers) => {
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    for (job, a) in batch.drain(..).zip(answers) {
                        if a.is_ok() {
                            self.stats.appends.fetch_add(1, Ordering::Relaxed);
                            self.stats.events.fetch_add(job.req.event_count() as u64, Ordering::Relaxed);
                        }
                        let _ = job.reply.send(a);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, requests = batch.len(), "log commit failed; nothing of this batch was written");
                    self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                    for job in batch.drain(..) {
                        let _ = job.reply.send(Err(match &e {
                            Error::Fenced(m) => Error::Fenced(m.clone()),
                            other => Error::Storage(other.to_string()),
                        }));
                    }
                }
            }
        }
    }

    /// Commit one group. Returns each job's answer (a job refused by its expected versions or
    /// its snapshot is answered alone; the others commit).
    async fn commit(&mut self, conn: &mut Option<Conn>, batch: &[Job]) -> Result<Vec<Result<Appended, Error>>, Error> {
        if !self.lease.held() {
            return Err(Error::Fenced(format!("partition {} is no longer held by this node", self.partition)));
        }
        if self.resync {
            self.resync_from_database().await?;
        }
        if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            *conn = Some(Conn::open(&self.url, self.lease.ttl).await?);
        }
        let Conn { client: c, st, pid } = conn.as_ref().ok_or(Error::Closed)?;
        let pid = *pid;
        // Expected versions other than `Any` are checked against the versions now: this writer
        // is the partition's only one, so they cannot change before its transaction. Streams
        // without events are read too (their version is answered as it is).
        let checked: Vec<&str> = batch
            .iter()
            .flat_map(|j| j.req.streams.iter())
            .filter(|s| s.expected != Expected::Any || s.events.is_empty())
            .map(|s| s.stream.as_str())
            .collect();
        let mut known: HashMap<String, u64> = HashMap::new();
        if !checked.is_empty() {
            let rows = c.query(&st.versions, &[&self.partition, &checked]).await.map_err(pg_err)?;
            for r in rows {
                known.insert(r.get(0), u64_of(r.get(1)));
            }
            // A stream the database does not know has no events yet.
            for s in checked {
                known.entry(s.to_string()).or_insert(0);
            }
        }
        let mut group = self.build(batch, &mut known)?;
        // One snapshot per name: the last one of the group wins (as in redb).
        let mut seen = std::collections::HashSet::new();
        let mut side: Vec<SideWrite> = Vec::with_capacity(group.side.len());
        for w in group.side.drain(..).rev() {
            if let SideWrite::Snapshot { name, .. } = &w
                && !seen.insert(name.clone())
            {
                continue;
            }
            side.push(w);
        }
        side.reverse();
        group.side = side;
        let (old_head, old_commits) = (self.head, self.commits);
        if group.new_head == old_head && group.side.is_empty() {
            return Ok(group.answers);
        }
        let p = &self.partition;
        let (ep, oh, nh, oc) = (i64_of(self.epoch), i64_of(old_head), i64_of(group.new_head), i64_of(old_commits));
        let mut snapshot_rows: Vec<(String, i32, i64, &[u8])> = Vec::new();
        let mut snapshot_names: Vec<String> = Vec::new();
        for s in &group.side {
            if let SideWrite::Snapshot { name, at_seq, bytes } = s {
                snapshot_names.push(name.clone());
                for (i, chunk) in bytes.chunks(SNAPSHOT_CHUNK_BYTES).enumerate() {
                    snapshot_rows.push((name.clone(), i32::try_from(i).unwrap_or(i32::MAX), i64_of(*at_seq), chunk));
                }
                if bytes.is_empty() {
                    snapshot_rows.push((name.clone(), 0, i64_of(*at_seq), &[]));
                }
            }
        }
        let codes: Vec<(i16, &str, Option<&[u8]>)> = group
            .side
            .iter()
            .filter_map(|s| match s {
                SideWrite::Put { table, key, value } => Some((side_code(*table), key.as_str(), Some(value.as_slice()))),
                SideWrite::Delete { table, key } => Some((side_code(*table), key.as_str(), None)),
                SideWrite::Snapshot { .. } => None,
            })
            .collect();
        // Everything below is sent at once: one round trip for the whole group. The requests go
        // out in the order they are first polled, so they are polled in this order.
        type Step<'a> = std::pin::Pin<
            Box<dyn Future<Output = Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>> + Send + 'a>,
        >;
        let mut steps: Vec<Step<'_>> = Vec::new();
        steps.push(Box::pin(async { c.execute(&st.begin, &[]).await.map(|_| Vec::new()) }));
        steps.push(Box::pin(async { c.execute(&st.fence, &[p, &ep, &oh, &nh, &oc]).await.map(|_| Vec::new()) }));
        let has_events = !group.seqs.is_empty();
        if has_events {
            steps
                .push(Box::pin(async { c.query(&st.events, &[p, &group.seqs, &group.streams, &group.records]).await }));
        }
        for (code, key, value) in &codes {
            steps.push(Box::pin(async move {
                match value {
                    Some(v) => c.execute(&st.side_put, &[p, code, key, v]).await,
                    None => c.execute(&st.side_delete, &[p, code, key]).await,
                }
                .map(|_| Vec::new())
            }));
        }
        for n in &snapshot_names {
            steps.push(Box::pin(async move { c.execute(&st.snapshot_delete, &[p, n]).await.map(|_| Vec::new()) }));
        }
        for (n, i, at, b) in &snapshot_rows {
            steps.push(Box::pin(
                async move { c.execute(&st.snapshot_put, &[p, n, i, at, b]).await.map(|_| Vec::new()) },
            ));
        }
        steps.push(Box::pin(async { c.execute(&st.commit, &[]).await.map(|_| Vec::new()) }));
        // A statement that fails before it is sent (a parameter that does not encode) stops the
        // group before its COMMIT goes out: the connection is dropped and the server rolls back.
        let Some(mut results) = in_order(steps, |r| r.as_ref().is_err_and(|e| e.as_db_error().is_none())).await else {
            *conn = None;
            return Err(Error::Storage("a statement of the group could not be sent; nothing was written".into()));
        };
        let commit = results.pop().unwrap_or_else(|| Ok(Vec::new()));
        let rows = if has_events {
            results.get(2).and_then(|r| r.as_ref().ok()).cloned().unwrap_or_default()
        } else {
            Vec::new()
        };
        let failed: Vec<tokio_postgres::Error> = results.into_iter().filter_map(Result::err).collect();
        if let Some(e) = failed.iter().find(|e| e.as_db_error().is_some()) {
            // The server refused a statement, so it aborted the transaction and answered its
            // COMMIT with ROLLBACK: nothing was written.
            let e = pg_err_ref(e);
            if matches!(e, Error::Fenced(_)) {
                // Another epoch, or a head this writer does not know: read which.
                self.resync = true;
            }
            if commit.is_err() {
                *conn = None;
            }
            return Err(e);
        }
        let mut answers = group.answers;
        // A statement without an answer (the connection dropped) leaves the outcome in doubt,
        // like a lost answer to COMMIT: settled below.
        let commit = match (commit, failed.into_iter().next()) {
            (Ok(_), Some(e)) | (Err(e), _) => Err(e),
            (Ok(v), None) => Ok(v),
        };
        if let Err(e) = commit {
            *conn = None;
            return match self.settle(old_commits, pid).await {
                Ok(true) => {
                    self.head = group.new_head;
                    self.commits = old_commits + 1;
                    // The versions are not known from the lost answer: read them (the answers
                    // keep the ones known before when that fails; the group did commit).
                    if let Ok(c) = connect(&self.url).await {
                        let names: Vec<&str> =
                            batch.iter().flat_map(|j| j.req.streams.iter()).map(|s| s.stream.as_str()).collect();
                        if let Ok(rows) = c
                            .query(
                                "SELECT stream, version FROM spool_streams WHERE partition = $1 AND stream = ANY($2)",
                                &[&self.partition, &names],
                            )
                            .await
                        {
                            fill_versions(batch, &mut answers, &rows);
                        }
                    }
                    Ok(answers)
                }
                Ok(false) => Err(pg_err(e)),
                Err(Error::Fenced(m)) => Err(Error::Fenced(m)),
                Err(settle) => {
                    // Not known yet: the next group first reads where the partition is.
                    self.resync = true;
                    Err(Error::Storage(format!(
                        "the outcome of a commit is unknown ({e}; settling it failed: {settle})"
                    )))
                }
            };
        }
        self.head = group.new_head;
        self.commits = old_commits + 1;
        fill_versions(batch, &mut answers, &rows);
        Ok(answers)
    }

    /// Whether a group whose answer was lost committed. The connection that sent it may still be
    /// at work on the server, so it is ended first (`pg_terminate_backend`, then waited for);
    /// then the partition's row is definitive: this epoch with one more commit means it landed.
    async fn settle(&self, old_commits: u64, pid: i32) -> Result<bool, Error> {
        let c = connect(&self.url).await?;
        c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.map_err(pg_err)?;
        for _ in 0..200 {
            let alive: i64 = c
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
                .map_err(pg_err)?
                .get(0);
            if alive == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let row = c
            .query_one("SELECT epoch, commits FROM spool_partitions WHERE partition = $1", &[&self.partition])
            .await
            .map_err(pg_err)?;
        let (epoch, commits): (i64, i64) = (row.get(0), row.get(1));
        if u64_of(epoch) != self.epoch {
            self.lease.lose("another node took the partition over");
            return Err(Error::Fenced(format!("partition {} was taken over (epoch {epoch})", self.partition)));
        }
        Ok(u64_of(commits) == old_commits + 1)
    }

    /// After an outcome that could not be settled (or a fence that refused): adopt the
    /// partition's head and commits when it is still this epoch's, else the partition is lost.
    async fn resync_from_database(&mut self) -> Result<(), Error> {
        let c = connect(&self.url).await?;
        let row = c
            .query_one("SELECT epoch, head, commits FROM spool_partitions WHERE partition = $1", &[&self.partition])
            .await
            .map_err(pg_err)?;
        let (epoch, head, commits): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if u64_of(epoch) != self.epoch {
            self.lease.lose("another node took the partition over");
            return Err(Error::Fenced(format!("partition {} was taken over (epoch {epoch})", self.partition)));
        }
        if u64_of(head) != self.head {
            tracing::warn!(
                was = self.head,
                now = head,
                "the partition's head moved under an unsettled commit; adopted"
            );
        }
        self.head = u64_of(head);
        self.commits = u64_of(commits);
        self.resync = false;
        Ok(())
    }

    /// Assign sequence numbers and versions, check expectations and snapshots, encode records.
    fn build(&self, batch: &[Job], known: &mut HashMap<String, u64>) -> Result<Group, Error> {
        let mut g = Group {
            seqs: Vec::new(),
            streams: Vec::new(),
            records: Vec::new(),
            side: Vec::new(),
            answers: Vec::new(),
            new_head: self.head,
        };
        // Versions as this group moves them (only tracked for streams whose version is known).
        'jobs: for job in batch {
            let mut within: HashMap<&str, u64> = HashMap::new();
            let mut versions = Vec::with_capacity(job.req.streams.len());
            for s in &job.req.streams {
                let actual = within.get(s.stream.as_str()).copied().or_else(|| known.get(&s.stream).copied());
                let ok = match (s.expected, actual) {
                    (Expected::Any, _) => true,
                    (Expected::NoStream, a) => a.unwrap_or(0) == 0,
                    (Expected::Exact(v), a) => a.unwrap_or(0) == v,
                };
                if !ok {
                    g.answers.push(Err(Error::Conflict {
                        stream: s.stream.clone(),
                        expected: s.expected,
                        actual: actual.unwrap_or(0),
                    }));
                    continue 'jobs;
                }
                let after = actual.map(|a| a + s.events.len() as u64);
                if let Some(a) = after {
                    within.insert(s.stream.as_str(), a);
                }
                versions.push(after);
            }
            let events = job.req.event_count() as u64;
            for side in &job.req.side {
                if let SideWrite::Snapshot { name, at_seq, .. } = side
                    && *at_seq > g.new_head + events
                {
                    g.answers.push(Err(Error::Invalid(format!(
                        "snapshot {name} at seq {at_seq} is ahead of the log ({})",
                        g.new_head + events
                    ))));
                    continue 'jobs;
                }
            }
            let first_seq = if events > 0 { g.new_head + 1 } else { 0 };
            for s in &job.req.streams {
                for ev in &s.events {
                    g.new_head += 1;
                    let env = Envelope {
                        seq: g.new_head,
                        stream: s.stream.clone(),
                        at_ms: ev.at_ms,
                        format_version: FORMAT_VERSION,
                        event: ev.event.clone(),
                    };
                    g.seqs.push(i64_of(g.new_head));
                    g.streams.push(s.stream.clone());
                    g.records.push(encode_envelope(&env).map_err(Error::Encode)?);
                }
            }
            for (s, v) in job.req.streams.iter().zip(&versions) {
                if let Some(v) = v {
                    known.insert(s.stream.clone(), *v);
                }
            }
            g.side.extend(job.req.side.iter().cloned());
            g.answers.push(Ok(Appended {
                first_seq,
                last_seq: g.new_head,
                // Filled from the statement's answer below when unknown here.
                versions: versions.iter().map(|v| v.unwrap_or(0)).collect(),
            }));
        }
        Ok(g)
    }
}

/// Each successful job's stream versions, from the streams' versions after the whole group
/// (`rows`: stream, version): a job's version of a stream is the final one less the events later
/// jobs of the group added to it.
fn fill_versions(batch: &[Job], answers: &mut [Result<Appended, Error>], rows: &[tokio_postgres::Row]) {
    let fin: HashMap<String, u64> = rows.iter().map(|r| (r.get::<_, String>(0), u64_of(r.get(1)))).collect();
    let mut later: HashMap<&str, u64> = HashMap::new();
    for (job, answer) in batch.iter().zip(answers.iter_mut()).rev() {
        let Ok(a) = answer else { continue };
        for (i, s) in job.req.streams.iter().enumerate().rev() {
            let Some(f) = fin.get(&s.stream) else { continue };
            let after_later = later.get(s.stream.as_str()).copied().unwrap_or(0);
            if let Some(v) = a.versions.get_mut(i) {
                *v = f.saturating_sub(after_later);
            }
            *later.entry(s.stream.as_str()).or_insert(0) += s.events.len() as u64;
        }
    }
}

impl EventLog for PgLog {
    fn append(&self, req: AppendRequest) -> crate::Appending<'_> {
        Box::pin(async move {
            crate::redb_log::validate(&req)?;
            let tx = self.tx.as_ref().ok_or(Error::Closed)?;
            let (reply, rx) = oneshot::channel();
            tx.send(Job { req, reply }).await.map_err(|_| Error::Closed)?;
            rx.await.map_err(|_| Error::Closed)?
        })
    }

    fn submit(&self, req: AppendRequest) -> crate::Submitted {
        let (reply, rx) = oneshot::channel();
        if let Err(e) = crate::redb_log::validate(&req) {
            let _ = reply.send(Err(e));
            return crate::Submitted::new(rx);
        }
        let Some(tx) = self.tx.as_ref() else {
            let _ = reply.send(Err(Error::Closed));
            return crate::Submitted::new(rx);
        };
        let job = match tx.try_send(Job { req, reply }) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(job)) => Some(job),
            Err(mpsc::error::TrySendError::Closed(job)) => {
                let _ = job.reply.send(Err(Error::Closed));
                None
            }
        };
        if let Some(job) = job {
            // The queue is full: wait for room (back-pressure), in order.
            let tx = tx.clone();
            if let Err(e) = std::thread::scope(|s| s.spawn(move || tx.blocking_send(job)).join()).unwrap_or(Ok(())) {
                let _ = e.0.reply.send(Err(Error::Closed));
            }
        }
        crate::Submitted::new(rx)
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }

    fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        match self.read(Read::From(from_seq, limit))? {
            ReadAnswer::Envelopes(v) => Ok(v),
            _ => Err(Error::Storage("a reader answered another question".into())),
        }
    }

    fn read_partition(&self, partition: i32, from_seq: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        match self.read(Read::PartitionFrom(partition, from_seq, limit))? {
            ReadAnswer::Envelopes(v) => Ok(v),
            _ => Err(Error::Storage("a reader answered another question".into())),
        }
    }

    fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        match self.read(Read::Stream(stream.to_string(), from_version, limit))? {
            ReadAnswer::Envelopes(v) => Ok(v),
            _ => Err(Error::Storage("a reader answered another question".into())),
        }
    }

    fn stream_version(&self, stream: &str) -> Result<u64, Error> {
        match self.read(Read::Version(stream.to_string()))? {
            ReadAnswer::Version(v) => Ok(v),
            _ => Err(Error::Storage("a reader answered another question".into())),
        }
    }

    fn tail(&self, from_seq: u64) -> Tail {
        let (reads, partition) = (self.reads.clone(), self.partition);
        Tail::new(
            from_seq,
            self.head.clone(),
            Arc::new(move |from, limit| {
                let (tx, rx) = std::sync::mpsc::channel();
                {
                    let reads = reads.lock().unwrap_or_else(|p| p.into_inner());
                    reads
                        .as_ref()
                        .ok_or(Error::Closed)?
                        .send((partition, Read::From(from, limit), tx))
                        .map_err(|_| Error::Closed)?;
                }
                match rx.recv().map_err(|_| Error::Closed)?? {
                    ReadAnswer::Envelopes(v) => Ok(v),
                    _ => Err(Error::Storage("a reader answered another question".into())),
                }
            }),
        )
    }

    fn snapshot(&self, name: &str) -> Result<Option<Snapshot>, Error> {
        match self.read(Read::Snapshot(name.to_string()))? {
            ReadAnswer::Snapshot(s) => Ok(s),
            _ => Err(Error::Storage("a reader answered another question".into())),
        }
    }

    fn side_get(&self, table: SideTable, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self.read(Read::SideGet(table, key.to_string()))? {
            ReadAnswer::Side(v) => Ok(v),
            _ => Err(Error::Storage("a reader answered another question".into())),
        }
    }

    fn side_get_many(&self, table: SideTable, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        if keys.len() > READ_BATCH_MAX {
            return Err(Error::Invalid(format!("{} keys in one read; at most {READ_BATCH_MAX}", keys.len())));
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self.read(Read::SideGetMany(table, keys.to_vec()))? {
            ReadAnswer::SideMany(v) => Ok(v),
            _ => Err(Error::Storage("a reader answered another question".into())),
        }
    }

    fn side_scan(&self, table: SideTable, after: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>, Error> {
        match self.read(Read::SideScan(table, after.map(str::to_string), limit))? {
            ReadAnswer::Scan(v) => Ok(v),
            _ => Err(Error::Storage("a reader answered another question".into())),
        }
    }

    fn stats(&self) -> &LogStats {
        &self.stats
    }

    fn hand_back(&self) {
        PgLog::hand_back(self);
    }

    fn holds_partition(&self) -> Result<bool, Error> {
        if *self.lost.borrow() || self.tx.is_none() {
            return Ok(false);
        }
        let now = self.partitions()?;
        Ok(now.iter().any(|p| p.partition == self.partition && p.epoch == self.epoch))
    }

    fn partitions(&self) -> Result<Vec<crate::PartitionStatus>, Error> {
        match self.read(Read::Partitions)? {
            ReadAnswer::Partitions(v) => Ok(v),
            _ => Err(Error::Storage("a reader answered another question".into())),
        }
    }

    fn nodes(&self) -> Result<Vec<crate::NodeStatus>, Error> {
        match self.read(Read::Nodes)? {
            ReadAnswer::Nodes(v) => Ok(v),
            _ => Err(Error::Storage("a read answered another question".into())),
        }
    }
}

/// Create a database named `name` on the server of `admin_url` (a URL whose user may create
/// databases) and return its URL: the tests give each log a database of its own.
pub fn create_database(admin_url: &str, name: &str) -> Result<String, Error> {
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(Error::Invalid(format!("database name {name:?}: lowercase letters, digits and _ only")));
    }
    let admin = admin_url.to_string();
    let create = format!("CREATE DATABASE {name}");
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = thread_runtime()?;
            rt.block_on(async {
                let c = connect(&admin).await?;
                c.batch_execute(&create).await.map_err(pg_err)
            })
        })
        .join()
    })
    .map_err(|_| Error::Storage("creating a database panicked".into()))??;
    let (base, _) =
        admin_url.rsplit_once('/').ok_or_else(|| Error::Invalid(format!("{}: no database", redact_url(admin_url))))?;
    Ok(format!("{base}/{name}"))
}

/// Await every future, polling them in their order at each wake: the first poll of each (when
/// tokio-postgres sends its request) happens in order, so the statements reach the server in
/// this order on the connection. `None` when a future other than the last finished with an
/// outcome that `stop` refuses during that first pass: the futures after it were never polled,
/// so their requests (the last is COMMIT) were never sent.
async fn in_order<'a, T>(
    mut steps: Vec<std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>>,
    stop: impl Fn(&T) -> bool,
) -> Option<Vec<T>> {
    let mut out: Vec<Option<T>> = steps.iter().map(|_| None).collect();
    let mut first = true;
    let mut stopped = false;
    std::future::poll_fn(|cx| {
        let mut pending = false;
        let last = steps.len().saturating_sub(1);
        for (i, (f, o)) in steps.iter_mut().zip(out.iter_mut()).enumerate() {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        if first && i < last && stop(&v) {
                            stopped = true;
                            return std::task::Poll::Ready(());
                        }
                        *o = Some(v);
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        first = false;
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    if stopped {
        return None;
    }
    Some(out.into_iter().flatten().collect())
}

/// A database URL (or key-value connection string) fit for a log line: its password, if any,
/// replaced by `***` — in the user-info part (up to the last `@` before any `?`, as a password
/// may hold `/` or `@`) and in any `password=` parameter.
pub fn redact_url(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('?').unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => match rest[..at].split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
                    None => url.to_string(),
                },
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    // `password=…` in a query string or a key-value string.
    let mut from = 0;
    while let Some(i) = out[from..].to_ascii_lowercase().find("password=") {
        let start = from + i + "password=".len();
        let end = out[start..].find(['&', ' ']).map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

impl crate::RawLog for PgLog {
    fn read_raw(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        match self.read(Read::Raw(from_seq, limit))? {
            ReadAnswer::Raw(v) => Ok(v),
            _ => Err(Error::Storage("a reader answered another question".into())),
        }
    }

    fn streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, u64)>, Error> {
        match self.read(Read::Streams(after.map(str::to_string), limit))? {
            ReadAnswer::Streams(v) => Ok(v),
            _ => Err(Error::Storage("a reader answered another question".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_never_reaches_a_log_line() {
        assert_eq!(super::redact_url("postgres://u:s3cret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact_url("nonsense"), "nonsense");
        assert_eq!(super::redact_url("postgres://u:pa/s@s@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            super::redact_url("postgres://u@h/db?password=x&sslmode=off"),
            "postgres://u@h/db?password=***&sslmode=off"
        );
        assert_eq!(super::redact_url("host=h password=x user=u"), "host=h password=*** user=u");
    }
}
