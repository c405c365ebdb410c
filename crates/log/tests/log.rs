//! The log's contract: durable appends, per-stream concurrency, reads, live tail, side
//! records in the same transaction, and failed commits that leave no trace.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)] // tests, benches and simulators: sizes they chose

use redb::StorageBackend;
use redb::backends::InMemoryBackend;
use spool_log::*;
use spool_model::{ApiKeyId, Event, IndexId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use ulid::Ulid;

fn ev(n: u64) -> NewEvent {
    NewEvent {
        at_ms: 1_000 + n,
        event: Event::IndexCreated {
            index_id: IndexId(Ulid::from_parts(n, 0)),
            name: format!("n{n}"),
            user_id: "u".into(),
        },
    }
}

fn open(dir: &tempfile::TempDir) -> RedbLog {
    RedbLog::open_dir(dir.path()).unwrap()
}

#[tokio::test]
async fn appends_get_consecutive_sequence_numbers_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        let a = log.append(AppendRequest::one("idx_a", Expected::NoStream, vec![ev(1), ev(2)])).await.unwrap();
        assert_eq!((a.first_seq, a.last_seq, a.versions.clone()), (1, 2, vec![2]));
        let b = log.append(AppendRequest::one("idx_b", Expected::Any, vec![ev(3)])).await.unwrap();
        assert_eq!((b.first_seq, b.last_seq), (3, 3));
        assert_eq!(log.head(), 3);
    }
    let log = open(&dir);
    assert_eq!(log.head(), 3);
    let all = log.read_from(1, 100).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(all[2].stream, "idx_b");
    assert_eq!(all[0].event, ev(1).event);
    assert_eq!(all[0].at_ms, 1001);
    let a = log.read_stream("idx_a", 0, 100).unwrap();
    assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(log.read_stream("idx_a", 1, 100).unwrap().len(), 1);
    assert_eq!(log.stream_version("idx_a").unwrap(), 2);
    assert_eq!(log.stream_version("idx_none").unwrap(), 0);
    let c = log.append(AppendRequest::one("idx_a", Expected::Exact(2), vec![ev(4)])).await.unwrap();
    assert_eq!(c.first_seq, 4);
}

#[tokio::test]
async fn a_stale_expected_version_is_a_typed_conflict_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    log.append(AppendRequest::one("idx_a", Expected::NoStream, vec![ev(1)])).await.unwrap();
    let err = log.append(AppendRequest::one("idx_a", Expected::NoStream, vec![ev(2)])).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { ref stream, actual: 1, .. } if stream == "idx_a"), "{err:?}");
    let err = log.append(AppendRequest::one("idx_a", Expected::Exact(0), vec![ev(2)])).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { actual: 1, .. }));
    // A request over two streams is all-or-nothing.
    let req = AppendRequest {
        streams: vec![
            StreamAppend { stream: "idx_b".into(), expected: Expected::NoStream, events: vec![ev(3)] },
            StreamAppend { stream: "idx_a".into(), expected: Expected::Exact(5), events: vec![ev(4)] },
        ],
        side: vec![SideWrite::Put { table: SideTable::Idempotency, key: "k".into(), value: b"v".to_vec() }],
    };
    assert!(matches!(log.append(req).await, Err(Error::Conflict { .. })));
    assert_eq!(log.head(), 1);
    assert_eq!(log.stream_version("idx_b").unwrap(), 0);
    assert_eq!(log.side_get(SideTable::Idempotency, "k").unwrap(), None);
    // Concurrent writers racing on one version: exactly one wins.
    let log = Arc::new(log);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(AppendRequest::one("idx_a", Expected::Exact(1), vec![ev(100 + i)])).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(log.stream_version("idx_a").unwrap(), 2);
}

#[tokio::test]
async fn invalid_requests_are_refused_before_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let req = AppendRequest {
        streams: vec![StreamAppend { stream: "".into(), expected: Expected::Any, events: vec![ev(1)] }],
        side: vec![],
    };
    assert!(matches!(log.append(req).await, Err(Error::Invalid(_))));
    let big = AppendRequest::one("s", Expected::Any, (0..APPEND_EVENTS_MAX as u64 + 1).map(ev).collect());
    assert!(matches!(log.append(big).await, Err(Error::Invalid(_))));
    let snap = AppendRequest {
        streams: vec![],
        side: vec![SideWrite::Snapshot { name: "core".into(), at_seq: 5, bytes: vec![1] }],
    };
    assert!(matches!(log.append(snap).await, Err(Error::Invalid(_))));
    assert_eq!(log.head(), 0);
}

#[tokio::test]
async fn side_records_commit_with_their_events() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        let req = AppendRequest {
            streams: vec![StreamAppend { stream: "idx_a".into(), expected: Expected::Any, events: vec![ev(1), ev(2)] }],
            side: vec![
                SideWrite::Put {
                    table: SideTable::Idempotency,
                    key: "p:POST:/indexes:k1".into(),
                    value: b"resp".to_vec(),
                },
                SideWrite::Snapshot { name: "core".into(), at_seq: 2, bytes: b"state".to_vec() },
            ],
        };
        log.append(req).await.unwrap();
    }
    let log = open(&dir);
    assert_eq!(log.side_get(SideTable::Idempotency, "p:POST:/indexes:k1").unwrap(), Some(b"resp".to_vec()));
    assert_eq!(log.snapshot("core").unwrap(), Some(Snapshot { at_seq: 2, bytes: b"state".to_vec() }));
    assert_eq!(log.snapshot("other").unwrap(), None);
    log.append(AppendRequest {
        streams: vec![],
        side: vec![SideWrite::Delete { table: SideTable::Idempotency, key: "p:POST:/indexes:k1".into() }],
    })
    .await
    .unwrap();
    assert_eq!(log.side_get(SideTable::Idempotency, "p:POST:/indexes:k1").unwrap(), None);
    assert_eq!(log.side_scan(SideTable::Idempotency, None, 10).unwrap().len(), 0);
}

#[tokio::test]
async fn the_tail_yields_history_then_waits_for_new_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&dir));
    log.append(AppendRequest::one("a", Expected::Any, vec![ev(1), ev(2)])).await.unwrap();
    let mut tail = log.tail(2);
    assert_eq!(tail.next().await.unwrap().seq, 2);
    let waiter = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(tail.next().await.unwrap().seq);
        }
        seen
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    log.append(AppendRequest::one("b", Expected::Any, vec![ev(3)])).await.unwrap();
    log.append(AppendRequest::one("c", Expected::Any, vec![ev(4), ev(5)])).await.unwrap();
    assert_eq!(waiter.await.unwrap(), vec![3, 4, 5]);
}

#[tokio::test]
async fn many_concurrent_appenders_all_land_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&dir));
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..20 {
                let a = log
                    .append(AppendRequest::one(format!("s{t}"), Expected::Exact(i), vec![ev(t * 100 + i)]))
                    .await
                    .unwrap();
                seqs.push(a.last_seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one appender's events are in order");
        all.extend(seqs);
    }
    all.sort();
    assert_eq!(all, (1..=640).collect::<Vec<_>>());
    let stats = log.stats();
    assert_eq!(stats.appends.load(Ordering::Relaxed), 640);
    assert!(stats.commits.load(Ordering::Relaxed) <= 640);
}

/// A backend whose writes and syncs fail on demand, like a full disk.
#[derive(Debug)]
struct Flaky {
    inner: Arc<InMemoryBackend>,
    fail: Arc<AtomicBool>,
}

impl StorageBackend for Flaky {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device"));
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device"));
        }
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device"));
        }
        self.inner.write(offset, data)
    }
}

#[tokio::test]
async fn a_failed_commit_answers_every_appender_with_an_error_and_leaves_the_log_as_it_was() {
    let mem = Arc::new(InMemoryBackend::new());
    let fail = Arc::new(AtomicBool::new(false));
    {
        let log = Arc::new(
            RedbLog::open_with_backend(Flaky { inner: mem.clone(), fail: fail.clone() }, RedbLogOptions::default())
                .unwrap(),
        );
        log.append(AppendRequest::one("idx_a", Expected::Any, vec![ev(1), ev(2)])).await.unwrap();
        fail.store(true, Ordering::SeqCst);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.append(AppendRequest::one(format!("s{i}"), Expected::Any, vec![ev(10 + i)])).await
            }));
        }
        for t in tasks {
            let res = t.await.unwrap();
            assert!(matches!(res, Err(Error::Storage(_))), "{res:?}");
        }
        assert_eq!(log.head(), 2, "nothing acknowledged past the failure");
        assert!(log.stats().failed_commits.load(Ordering::Relaxed) >= 1);
    }
    fail.store(false, Ordering::SeqCst);
    let log = RedbLog::open_with_backend(Flaky { inner: mem, fail }, RedbLogOptions::default()).unwrap();
    assert_eq!(log.head(), 2);
    let all = log.read_from(1, 100).unwrap();
    assert_eq!(all.len(), 2);
    let next = log.append(AppendRequest::one("idx_b", Expected::Any, vec![ev(3)])).await.unwrap();
    assert_eq!(next.first_seq, 3, "no gap where the failed batch was");
    let _ = ApiKeyId(Ulid::nil());
}

#[test]
fn a_held_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _held = RedbLog::open_dir(dir.path()).unwrap();
    match RedbLog::open_dir(dir.path()) {
        Err(Error::AlreadyOpen { .. }) => {}
        Err(other) => panic!("expected AlreadyOpen, got {other}"),
        Ok(_) => panic!("expected AlreadyOpen, got an open log"),
    }
}

#[tokio::test]
async fn stream_reads_span_the_indexed_part_and_the_unindexed_tail_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let total = (STREAM_INDEX_FLUSH_EVENTS as u64) * 2 + 123;
    {
        let log = open(&dir);
        let mut n = 0;
        while n < total {
            // Two streams interleaved, in requests of 100 events.
            for s in ["idx_a", "idx_b"] {
                let evs = (n..n + 50).map(ev).collect();
                log.append(AppendRequest::one(s, Expected::Any, evs)).await.unwrap();
            }
            n += 100;
        }
        let a = read_all_of(&log, "idx_a");
        assert_eq!(a.len() as u64, log.stream_version("idx_a").unwrap());
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        // Reading from a version in the middle.
        let mid = log.read_stream("idx_a", 3000, 10).unwrap();
        assert_eq!(mid[0].seq, a[3000]);
    }
    let log = open(&dir);
    let a = read_all_of(&log, "idx_a");
    let b = read_all_of(&log, "idx_b");
    assert_eq!(a.len() + b.len(), log.head() as usize);
    assert_eq!(log.read_stream("idx_b", b.len() as u64 - 1, 10).unwrap().len(), 1);
}

fn read_all_of(log: &RedbLog, stream: &str) -> Vec<u64> {
    let mut out = Vec::new();
    loop {
        let batch = log.read_stream(stream, out.len() as u64, 1000).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.iter().map(|e| e.seq));
    }
}

/// The sequencer appends a batch in decision order, so one request may name a stream several
/// times: each appearance continues from the one before (versions, expected versions, index).
#[tokio::test]
async fn a_stream_named_twice_in_one_request_continues_from_its_first_appearance() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let req = AppendRequest {
        streams: vec![
            StreamAppend { stream: "a".into(), expected: Expected::Exact(0), events: vec![ev(1), ev(2)] },
            StreamAppend { stream: "b".into(), expected: Expected::Any, events: vec![ev(3)] },
            StreamAppend { stream: "a".into(), expected: Expected::Exact(2), events: vec![ev(4)] },
        ],
        side: vec![],
    };
    let done = log.append(req).await.unwrap();
    assert_eq!((done.first_seq, done.last_seq, done.versions.clone()), (1, 4, vec![2, 1, 3]));
    assert_eq!(read_all_of(&log, "a"), [1, 2, 4]);
    assert_eq!(log.stream_version("a").unwrap(), 3);
    // A wrong expectation for the second appearance refuses the whole request.
    let bad = AppendRequest {
        streams: vec![
            StreamAppend { stream: "a".into(), expected: Expected::Exact(3), events: vec![ev(5)] },
            StreamAppend { stream: "a".into(), expected: Expected::Exact(3), events: vec![ev(6)] },
        ],
        side: vec![],
    };
    assert!(matches!(log.append(bad).await, Err(Error::Conflict { .. })));
    assert_eq!(log.head(), 4);
    drop(log);
    let log = open(&dir);
    assert_eq!(read_all_of(&log, "a"), [1, 2, 4]);
}
