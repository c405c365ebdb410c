//! The log contract (`engine-spec/log-format.md`, "The contract"), one suite run on every
//! implementation of `EventLog`: redb (on disk), the in-memory log and PostgreSQL.
//! Each check is a generic function; `contract!` instantiates them per implementation.
#![allow(clippy::disallowed_methods)] // the tests' PostgreSQL is named by SPOOL_TEST_PG_URL
#![allow(clippy::cast_possible_truncation)] // test bytes

use spool_log::{
    AppendRequest, Error, EventLog, Expected, LostAnswer, MemLog, NewEvent, PgLog, PgLogOptions, RedbLog, SharedMemLog,
    SideTable, SideWrite, StreamAppend,
};
use spool_model::{Event, IndexId};
use std::sync::Arc;

fn ev(n: u64) -> NewEvent {
    NewEvent {
        at_ms: 1_000 + n,
        event: Event::IndexCreated {
            index_id: IndexId(ulid::Ulid::from_parts(n, 1)),
            name: format!("index {n}"),
            user_id: "u".into(),
        },
    }
}

fn one(stream: &str, expected: Expected, n: std::ops::Range<u64>) -> AppendRequest {
    AppendRequest::one(stream, expected, n.map(ev).collect())
}

async fn sequence_numbers_start_at_one_without_gaps<L: EventLog>(log: Arc<L>) {
    assert_eq!(log.head(), 0);
    let a = log.append(one("a", Expected::NoStream, 0..3)).await.unwrap();
    assert_eq!((a.first_seq, a.last_seq, a.versions.clone()), (1, 3, vec![3]));
    let b = log.append(one("b", Expected::Any, 3..5)).await.unwrap();
    assert_eq!((b.first_seq, b.last_seq), (4, 5));
    let all = log.read_from(1, 100).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(all[3].stream, "b");
    assert_eq!(log.read_from(4, 1).unwrap().len(), 1);
    assert_eq!(log.head(), 5);
}

async fn streams_are_read_by_version_and_expected_versions_are_checked<L: EventLog>(log: Arc<L>) {
    log.append(one("s", Expected::NoStream, 0..2)).await.unwrap();
    assert_eq!(log.stream_version("s").unwrap(), 2);
    let conflict = log.append(one("s", Expected::Exact(1), 2..3)).await;
    assert!(matches!(conflict, Err(Error::Conflict { actual: 2, .. })), "{conflict:?}");
    assert!(matches!(log.append(one("s", Expected::NoStream, 2..3)).await, Err(Error::Conflict { .. })));
    log.append(one("s", Expected::Exact(2), 2..3)).await.unwrap();
    let s = log.read_stream("s", 1, 10).unwrap();
    assert_eq!(s.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(log.head(), 3, "a refused append wrote nothing");
}

async fn an_append_is_all_or_nothing_across_streams_and_side_records<L: EventLog>(log: Arc<L>) {
    log.append(one("x", Expected::NoStream, 0..1)).await.unwrap();
    let req = AppendRequest {
        streams: vec![
            StreamAppend { stream: "y".into(), expected: Expected::NoStream, events: vec![ev(1)] },
            StreamAppend { stream: "x".into(), expected: Expected::NoStream, events: vec![ev(2)] },
        ],
        side: vec![SideWrite::Put { table: SideTable::Idempotency, key: "k".into(), value: b"v".to_vec() }],
    };
    assert!(log.append(req).await.is_err());
    assert_eq!(log.head(), 1);
    assert_eq!(log.stream_version("y").unwrap(), 0);
    assert_eq!(log.side_get(SideTable::Idempotency, "k").unwrap(), None);
    // A stream named twice in one request continues from its first appearance.
    let req = AppendRequest {
        streams: vec![
            StreamAppend { stream: "y".into(), expected: Expected::NoStream, events: vec![ev(3)] },
            StreamAppend { stream: "y".into(), expected: Expected::Exact(1), events: vec![ev(4)] },
        ],
        side: vec![
            SideWrite::Put { table: SideTable::DataKeys, key: "b".into(), value: b"2".to_vec() },
            SideWrite::Put { table: SideTable::DataKeys, key: "a".into(), value: b"1".to_vec() },
            SideWrite::Put { table: SideTable::Idempotency, key: "z".into(), value: b"0".to_vec() },
        ],
    };
    let done = log.append(req).await.unwrap();
    assert_eq!(done.versions, vec![1, 2]);
    let keys = log.side_scan(SideTable::DataKeys, None, 10).unwrap();
    assert_eq!(
        keys,
        vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
        "side records in key order, one table"
    );
    assert_eq!(log.side_scan(SideTable::DataKeys, Some("a"), 10).unwrap().len(), 1);
    log.append(AppendRequest {
        streams: vec![],
        side: vec![SideWrite::Delete { table: SideTable::DataKeys, key: "a".into() }],
    })
    .await
    .unwrap();
    assert_eq!(log.side_get(SideTable::DataKeys, "a").unwrap(), None);
}

async fn snapshots_are_kept_with_their_position_and_never_ahead_of_the_log<L: EventLog>(log: Arc<L>) {
    log.append(one("s", Expected::Any, 0..4)).await.unwrap();
    let snap = |at_seq| AppendRequest {
        streams: vec![],
        side: vec![SideWrite::Snapshot { name: "core".into(), at_seq, bytes: vec![7; 3] }],
    };
    assert!(log.append(snap(9)).await.is_err(), "a snapshot ahead of the log is refused");
    log.append(snap(4)).await.unwrap();
    let s = log.snapshot("core").unwrap().unwrap();
    assert_eq!((s.at_seq, s.bytes), (4, vec![7, 7, 7]));
    assert!(log.snapshot("other").unwrap().is_none());
}

async fn submitted_appends_commit_in_the_order_they_were_submitted<L: EventLog>(log: Arc<L>) {
    let pending: Vec<_> = (0..50).map(|i| log.submit(one(&format!("p{i}"), Expected::NoStream, i..i + 1))).collect();
    let mut last = 0;
    for p in pending {
        let done = p.await.unwrap();
        assert_eq!(done.first_seq, last + 1);
        last = done.last_seq;
    }
    let streams: Vec<String> = log.read_from(1, 100).unwrap().into_iter().map(|e| e.stream).collect();
    assert_eq!(streams, (0..50).map(|i| format!("p{i}")).collect::<Vec<_>>());
}

async fn a_tail_yields_what_is_durable_then_waits_for_commits<L: EventLog>(log: Arc<L>) {
    log.append(one("t", Expected::Any, 0..2)).await.unwrap();
    let mut tail = log.tail(2);
    assert_eq!(tail.next().await.unwrap().seq, 2);
    let waiting = tokio::spawn(async move { tail.next().await.map(|e| e.seq) });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(!waiting.is_finished(), "the tail waits at the head");
    log.append(one("t", Expected::Any, 2..3)).await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(got, 3);
}

macro_rules! contract {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn sequence_numbers_start_at_one_without_gaps() {
                let (log, _dir) = $make;
                super::sequence_numbers_start_at_one_without_gaps(log).await;
            }
            #[tokio::test]
            async fn streams_are_read_by_version_and_expected_versions_are_checked() {
                let (log, _dir) = $make;
                super::streams_are_read_by_version_and_expected_versions_are_checked(log).await;
            }
            #[tokio::test]
            async fn an_append_is_all_or_nothing_across_streams_and_side_records() {
                let (log, _dir) = $make;
                super::an_append_is_all_or_nothing_across_streams_and_side_records(log).await;
            }
            #[tokio::test]
            async fn snapshots_are_kept_with_their_position_and_never_ahead_of_the_log() {
                let (log, _dir) = $make;
                super::snapshots_are_kept_with_their_position_and_never_ahead_of_the_log(log).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn submitted_appends_commit_in_the_order_they_were_submitted() {
                let (log, _dir) = $make;
                super::submitted_appends_commit_in_the_order_they_were_submitted(log).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_tail_yields_what_is_durable_then_waits_for_commits() {
                let (log, _dir) = $make;
                super::a_tail_yields_what_is_durable_then_waits_for_commits(log).await;
            }
        }
    };
}

contract!(redb, {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(RedbLog::open_dir(dir.path()).unwrap()), Some(dir))
});
contract!(memory, (Arc::new(MemLog::new()), None::<tempfile::TempDir>));
contract!(shared_memory, (Arc::new(SharedMemLog::new(0).take("node-a", 1_000).unwrap()), None::<tempfile::TempDir>));
contract!(postgres, (Arc::new(pg_log()), None::<tempfile::TempDir>));

/// A log in a database of its own on the tests' PostgreSQL (`scripts/pg.sh start DIR`, then
/// source `DIR/pg-env`: `scripts/test.sh` does both).
fn pg_log() -> PgLog {
    let admin = std::env::var("SPOOL_TEST_PG_URL")
        .expect("SPOOL_TEST_PG_URL: start PostgreSQL with scripts/pg.sh start DIR and source DIR/pg-env");
    let name = format!("contract_{}", ulid::Ulid::new().to_string().to_lowercase());
    let url = spool_log::create_database(&admin, &name).unwrap();
    PgLog::open(PgLogOptions::new(url, "test-node")).unwrap()
}

/// A second opening of the same partition takes it over: the first writer's next append is
/// refused (fenced), and nothing of it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_writer_of_an_earlier_epoch_cannot_append() {
    let admin = std::env::var("SPOOL_TEST_PG_URL").expect("SPOOL_TEST_PG_URL (scripts/pg.sh)");
    let name = format!("fence_{}", ulid::Ulid::new().to_string().to_lowercase());
    let url = spool_log::create_database(&admin, &name).unwrap();
    let old = PgLog::open(PgLogOptions::new(url.clone(), "test-node")).unwrap();
    old.append(one("a", Expected::Any, 0..2)).await.unwrap();
    let new = PgLog::open(PgLogOptions::new(url, "test-node")).unwrap();
    assert!(new.epoch() > old.epoch());
    let refused = old.append(one("a", Expected::Any, 2..3)).await;
    assert!(matches!(refused, Err(Error::Fenced(_))), "{refused:?}");
    assert_eq!(new.head(), 2);
    let b = new.append(one("a", Expected::Any, 3..4)).await.unwrap();
    assert_eq!((b.first_seq, b.versions.clone()), (3, vec![3]));
    assert_eq!(new.read_from(1, 10).unwrap().len(), 3, "the fenced append wrote nothing");
}

#[tokio::test]
async fn memory_log_a_failed_commit_writes_nothing_and_refuses_until_healed() {
    let log = MemLog::new();
    log.append(one("a", Expected::Any, 0..1)).await.unwrap();
    log.fail_commits();
    assert!(matches!(log.append(one("a", Expected::Any, 1..2)).await, Err(Error::Storage(_))));
    assert!(log.append(one("b", Expected::Any, 2..3)).await.is_err(), "refused until healed, as redb");
    assert_eq!(log.head(), 1);
    log.heal();
    assert_eq!(log.append(one("a", Expected::Any, 3..4)).await.unwrap().first_seq, 2);
}

/// A snapshot larger than a chunk (a `bytea` holds at most 1 GB) is stored in chunks and read
/// back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_snapshot_larger_than_a_chunk_reads_back_whole() {
    let log = pg_log();
    log.append(one("s", Expected::Any, 0..1)).await.unwrap();
    let bytes: Vec<u8> = (0..spool_log::SNAPSHOT_CHUNK_BYTES * 2 + 5).map(|i| (i % 251) as u8).collect();
    log.append(AppendRequest {
        streams: vec![],
        side: vec![SideWrite::Snapshot { name: "core".into(), at_seq: 1, bytes: bytes.clone() }],
    })
    .await
    .unwrap();
    let s = log.snapshot("core").unwrap().unwrap();
    assert_eq!(s.at_seq, 1);
    assert!(s.bytes == bytes, "{} bytes back of {}", s.bytes.len(), bytes.len());
    // A smaller one replaces it entirely (no chunk of the old one is left behind).
    log.append(AppendRequest {
        streams: vec![],
        side: vec![SideWrite::Snapshot { name: "core".into(), at_seq: 1, bytes: vec![1, 2, 3] }],
    })
    .await
    .unwrap();
    assert_eq!(log.snapshot("core").unwrap().unwrap().bytes, vec![1, 2, 3]);
}

/// A loopback TCP proxy between a `PgLog` and the tests' PostgreSQL that can cut a connection
/// at the worst moments of a commit.
mod cutting_proxy {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Forward everything.
    pub const PASS: u8 = 0;
    /// Cut the connection that carries the server's answer to `COMMIT` before that answer is
    /// forwarded: the transaction committed, the client never hears it.
    pub const CUT_AFTER_COMMIT: u8 = 1;
    /// Drop the client's next bytes and cut its connection: the transaction never arrives.
    pub const CUT_BEFORE_SENT: u8 = 2;

    /// On the writer's connection (the one that prepared `spool_fence`), forward its next group
    /// up to the end of its second statement (`BEGIN`, then the fence: the partition's row is
    /// now locked by an open transaction) and hold the rest (`COMMIT` included) until released:
    /// the writer is paused inside its append transaction.
    pub const HOLD_AFTER_FENCE: u8 = 3;
    /// Set by the proxy while it holds the rest of a group.
    pub const HOLDING: u8 = 4;

    pub struct Proxy {
        pub port: u16,
        pub mode: Arc<AtomicU8>,
        pub release: Arc<tokio::sync::Notify>,
    }

    /// Where the second Sync message of `bytes` ends, given `skip` bytes still to pass of a
    /// message begun in an earlier chunk (frontend messages: a type byte, then a length that
    /// counts itself). Updates `skip` and `syncs` for the next chunk.
    fn after_second_sync(bytes: &[u8], skip: &mut usize, syncs: &mut u32) -> Option<usize> {
        let mut i = (*skip).min(bytes.len());
        *skip -= i;
        while i + 5 <= bytes.len() {
            let len = u32::from_be_bytes([bytes[i + 1], bytes[i + 2], bytes[i + 3], bytes[i + 4]]) as usize;
            let end = i + 1 + len;
            if bytes[i] == b'S' {
                *syncs += 1;
                if *syncs == 2 {
                    return Some(end.min(bytes.len()));
                }
            }
            if end > bytes.len() {
                *skip = end - bytes.len();
                return None;
            }
            i = end;
        }
        None
    }

    pub async fn start(target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let release = Arc::new(tokio::sync::Notify::new());
        let (m, rel) = (mode.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let (m1, m2) = (m.clone(), m.clone());
                let cut = Arc::new(tokio::sync::Notify::new());
                let (cut1, cut2) = (cut.clone(), cut.clone());
                let release = rel.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    let (mut writer, mut holding_group) = (false, false);
                    let (mut skip, mut syncs) = (0usize, 0u32);
                    loop {
                        let n = tokio::select! {
                            r = cr.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                            _ = cut1.notified() => break,
                        };
                        if m1.compare_exchange(CUT_BEFORE_SENT, PASS, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                            cut1.notify_waiters();
                            break;
                        }
                        writer |= buf[..n].windows(12).any(|w| w == b"spool_fence(");
                        if writer && !holding_group && m1.load(Ordering::SeqCst) == HOLD_AFTER_FENCE {
                            (holding_group, skip, syncs) = (true, 0, 0);
                        }
                        if holding_group && let Some(at) = after_second_sync(&buf[..n], &mut skip, &mut syncs) {
                            holding_group = false;
                            if sw.write_all(&buf[..at]).await.is_err() {
                                break;
                            }
                            let held = buf[at..n].to_vec();
                            let released = release.notified();
                            m1.store(HOLDING, Ordering::SeqCst);
                            released.await;
                            if sw.write_all(&held).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = tokio::select! {
                            r = sr.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                            _ = cut2.notified() => break,
                        };
                        let commit_answer = buf[..n].windows(7).any(|w| w == b"COMMIT\0");
                        if commit_answer
                            && m2.compare_exchange(CUT_AFTER_COMMIT, PASS, Ordering::SeqCst, Ordering::SeqCst).is_ok()
                        {
                            cut2.notify_waiters();
                            break;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Proxy { port, mode, release }
    }
}

fn pg_log_through_proxy(proxy_port: u16) -> (PgLog, String) {
    pg_log_through_proxy_as(proxy_port, "test-node", spool_log::LEASE_TTL_DEFAULT)
}

fn pg_log_through_proxy_as(proxy_port: u16, node: &str, lease_ttl: std::time::Duration) -> (PgLog, String) {
    let admin = std::env::var("SPOOL_TEST_PG_URL").expect("SPOOL_TEST_PG_URL (scripts/pg.sh)");
    let name = format!("doubt_{}", ulid::Ulid::new().to_string().to_lowercase());
    let direct = spool_log::create_database(&admin, &name).unwrap();
    let (head, tail) = direct.rsplit_once('@').unwrap();
    let (_, db) = tail.split_once('/').unwrap();
    let url = format!("{head}@127.0.0.1:{proxy_port}/{db}");
    let mut opts = PgLogOptions::new(url, node);
    opts.lease_ttl = lease_ttl;
    (PgLog::open(opts).unwrap(), direct)
}

/// Split brain inside the append transaction: the holder is paused after its fence locked the
/// partition's row and before its `COMMIT` (a proxy holds the rest of its group). Another node
/// takes the partition over anyway, within a bound (its takeover does not wait behind the lock:
/// `lock_timeout`; the paused session is ended by the server after a lease's time:
/// `idle_in_transaction_session_timeout`), and writes. Resumed, the old holder's append is not
/// acknowledged, its next one is fenced, and the log has no event of the old epoch after the new
/// epoch's first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_holder_paused_inside_its_append_transaction_cannot_hold_a_takeover_back() {
    let ttl = std::time::Duration::from_secs(2);
    let proxy = cutting_proxy::start(pg_port()).await;
    let (a, direct) = pg_log_through_proxy_as(proxy.port, "node-a", ttl);
    let a = Arc::new(a);
    a.append(one("p", Expected::Any, 0..2)).await.unwrap();
    proxy.mode.store(cutting_proxy::HOLD_AFTER_FENCE, std::sync::atomic::Ordering::SeqCst);
    let paused = tokio::spawn({
        let a = a.clone();
        async move { a.append(one("p", Expected::Any, 2..3)).await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proxy.mode.load(std::sync::atomic::Ordering::SeqCst) != cutting_proxy::HOLDING {
        assert!(std::time::Instant::now() < deadline, "the proxy never held a group");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The partition's row is locked by a's open transaction now.
    let began = std::time::Instant::now();
    let b = tokio::task::spawn_blocking(move || {
        let mut opts = PgLogOptions::new(direct, "node-b");
        opts.lease_ttl = ttl;
        PgLog::open(opts)
    })
    .await
    .unwrap()
    .unwrap();
    let took = began.elapsed();
    eprintln!("takeover past a holder paused inside its transaction: {:.2} s (lease {ttl:?})", took.as_secs_f64());
    assert!(took < ttl * 4, "the takeover waited {took:?}");
    assert!(b.epoch() > a.epoch());
    let first = b.append(one("p", Expected::Any, 3..4)).await.unwrap();
    assert_eq!(first.first_seq, 3, "the paused group did not land");
    proxy.release.notify_waiters();
    let late = paused.await.unwrap();
    assert!(late.is_err(), "the paused holder's append was acknowledged: {late:?}");
    let next = a.append(one("p", Expected::Any, 4..5)).await;
    assert!(matches!(next, Err(Error::Fenced(_))), "{next:?}");
    assert!(*a.lost().borrow(), "the old holder dropped the partition");
    let names: Vec<String> = b
        .read_from(1, 100)
        .unwrap()
        .iter()
        .map(|e| match &e.event {
            Event::IndexCreated { name, .. } => name.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(names, vec!["index 0", "index 1", "index 3"], "no event of the old epoch after the new one's first");
}

fn pg_port() -> u16 {
    let admin = std::env::var("SPOOL_TEST_PG_URL").expect("SPOOL_TEST_PG_URL (scripts/pg.sh)");
    let after_host = admin.rsplit_once('@').unwrap().1;
    after_host.split_once(':').unwrap().1.split_once('/').unwrap().0.parse().unwrap()
}

/// The answer to COMMIT is lost (the connection is cut after the server committed): the writer
/// settles the outcome from the database before answering, so the append is acknowledged, once,
/// and the log goes on without a gap or a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_commit_whose_answer_is_lost_is_settled_as_committed() {
    let proxy = cutting_proxy::start(pg_port()).await;
    let (log, _) = pg_log_through_proxy(proxy.port);
    log.append(one("d", Expected::Any, 0..2)).await.unwrap();
    proxy.mode.store(cutting_proxy::CUT_AFTER_COMMIT, std::sync::atomic::Ordering::SeqCst);
    let settled = log.append(one("d", Expected::Any, 2..4)).await;
    assert_eq!(proxy.mode.load(std::sync::atomic::Ordering::SeqCst), cutting_proxy::PASS, "the proxy cut a commit");
    let settled = settled.expect("a commit that landed is acknowledged");
    assert_eq!((settled.first_seq, settled.last_seq, settled.versions.clone()), (3, 4, vec![4]));
    let next = log.append(one("d", Expected::Any, 4..5)).await.unwrap();
    assert_eq!(next.first_seq, 5);
    let seqs: Vec<u64> = log.read_from(1, 100).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5], "no gap, no repeat");
}

/// The connection is cut before the transaction reaches the server: the writer settles that it
/// did not land, answers the error, and the next append takes the same sequence numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_commit_that_never_arrived_is_settled_as_failed() {
    let proxy = cutting_proxy::start(pg_port()).await;
    let (log, _) = pg_log_through_proxy(proxy.port);
    log.append(one("d", Expected::Any, 0..2)).await.unwrap();
    proxy.mode.store(cutting_proxy::CUT_BEFORE_SENT, std::sync::atomic::Ordering::SeqCst);
    let lost = log.append(one("d", Expected::Any, 2..4)).await;
    assert!(matches!(lost, Err(Error::Storage(_))), "{lost:?}");
    let next = log.append(one("d", Expected::Any, 4..5)).await.unwrap();
    assert_eq!((next.first_seq, next.versions.clone()), (3, vec![3]));
    let seqs: Vec<u64> = log.read_from(1, 100).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
}

/// The shared in-memory log (the runtime simulator's cluster mode) keeps the PostgreSQL log's
/// lease and fence: a takeover needs an expired lease, bumps the epoch, and the old holder's
/// next commit is refused and loses its hold; its events never follow the new epoch's.
#[tokio::test]
async fn shared_memory_a_holder_of_an_earlier_epoch_is_fenced() {
    let shared = SharedMemLog::new(0);
    let a = shared.take("a", 1_000).unwrap();
    a.append(one("s", Expected::Any, 0..2)).await.unwrap();
    assert!(shared.take("b", 1_000).is_none(), "the lease is held");
    shared.set_now(500);
    assert!(a.renew());
    shared.set_now(1_400);
    assert!(shared.take("b", 1_000).is_none(), "renewed at 500: held until 1,500");
    shared.set_now(1_600);
    let b = shared.take("b", 1_000).unwrap();
    assert!(b.epoch() > a.epoch());
    b.append(one("s", Expected::Any, 2..3)).await.unwrap();
    let refused = a.append(one("s", Expected::Any, 3..4)).await;
    assert!(matches!(refused, Err(Error::Fenced(_))), "{refused:?}");
    assert!(a.is_lost() && !a.renew());
    assert_eq!(shared.epochs(), vec![a.epoch(), a.epoch(), b.epoch()]);
}

/// A lost answer is settled from the row before anyone is answered: a commit that landed is
/// acknowledged, one that did not is an error, and one that cannot be settled is an error after
/// which the writer reads where the partition is (its next commit follows the landed one).
#[tokio::test]
async fn shared_memory_in_doubt_commits_are_settled_before_the_answer() {
    let shared = SharedMemLog::new(0);
    let a = shared.take("a", 1_000).unwrap();
    a.lose_next_answer(LostAnswer::Applied);
    let landed = a.append(one("s", Expected::Any, 0..1)).await.unwrap();
    assert_eq!(landed.last_seq, 1);
    a.lose_next_answer(LostAnswer::NotApplied);
    assert!(matches!(a.append(one("s", Expected::Any, 1..2)).await, Err(Error::Storage(_))));
    assert_eq!(a.read_from(1, 10).unwrap().len(), 1, "nothing of it written");
    a.lose_next_answer(LostAnswer::AppliedUnsettled);
    assert!(matches!(a.append(one("s", Expected::Any, 2..3)).await, Err(Error::Storage(_))));
    assert_eq!(a.read_from(1, 10).unwrap().len(), 2, "it landed although its writer was told an error");
    let next = a.append(one("s", Expected::Any, 3..4)).await.unwrap();
    assert_eq!(next.first_seq, 3, "the writer adopted the landed commit");
    assert!(!a.is_lost());
}
