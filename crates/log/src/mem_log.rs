//! `MemLog`: the [`EventLog`] contract in memory, for tests of what sits on a log (the
//! sequencer alone, the log-contract suite) and for simulators. It keeps the same rules as
//! [`crate::RedbLog`]: appends are committed by one writer in the order they were submitted,
//! gap-free, each request all or nothing, `Expected` checked per stream, side records in the
//! same commit. Faults are injected the way a disk fails: [`MemLog::fail_commits`] makes every
//! commit fail until [`MemLog::heal`] (redb refuses writes after a failed commit until it is
//! opened again), and [`MemLog::pause`] holds commits back (a slow disk or network), so a test
//! can see what its caller does while appends are in flight.

use crate::{
    APPEND_EVENTS_MAX, AppendRequest, Appended, Error, EventLog, Expected, READ_BATCH_MAX, SideTable, SideWrite,
    Snapshot, Tail,
};
use spool_model::{Envelope, FORMAT_VERSION};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::{oneshot, watch};

/// The tables of an in-memory log (also [`crate::SharedMemLog`]'s).
#[derive(Default)]
pub(crate) struct Stored {
    pub(crate) events: Vec<Envelope>,
    pub(crate) streams: HashMap<String, Vec<u64>>,
    pub(crate) snapshots: HashMap<String, Snapshot>,
    side: BTreeMap<(u8, String), Vec<u8>>,
}

impl Stored {
    pub(crate) fn read_from(&self, from_seq: u64, limit: usize) -> Vec<Envelope> {
        let from = spool_model::num::sat_usize(from_seq.max(1)) - 1;
        self.events.iter().skip(from).take(limit.min(READ_BATCH_MAX)).cloned().collect()
    }

    pub(crate) fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Vec<Envelope> {
        let Some(seqs) = self.streams.get(stream) else { return Vec::new() };
        seqs.iter()
            .skip(spool_model::num::sat_usize(from_version))
            .take(limit.min(READ_BATCH_MAX))
            .map(|s| self.events[spool_model::num::sat_usize(*s) - 1].clone())
            .collect()
    }

    pub(crate) fn stream_version(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |v| v.len() as u64)
    }

    pub(crate) fn side_get(&self, table: SideTable, key: &str) -> Option<Vec<u8>> {
        self.side.get(&(side_key(table), key.to_string())).cloned()
    }

    pub(crate) fn side_scan(&self, table: SideTable, after: Option<&str>, limit: usize) -> Vec<(String, Vec<u8>)> {
        let t = side_key(table);
        let from = match after {
            Some(a) => std::ops::Bound::Excluded((t, a.to_string())),
            None => std::ops::Bound::Included((t, String::new())),
        };
        self.side
            .range((from, std::ops::Bound::Unbounded))
            .take_while(|((tt, _), _)| *tt == t)
            .take(limit.min(READ_BATCH_MAX))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }
}

struct Job {
    req: AppendRequest,
    reply: oneshot::Sender<Result<Appended, Error>>,
}

#[derive(Default)]
struct Control {
    queue: std::collections::VecDeque<Job>,
    paused: bool,
    failing: bool,
    /// Commits left before `failing` turns on by itself.
    fail_after: Option<u64>,
    commits: u64,
}

struct Inner {
    stored: Mutex<Stored>,
    control: Mutex<Control>,
    wake: Condvar,
    head: watch::Sender<u64>,
    stats: crate::LogStats,
}

/// An event log in memory (see the module's documentation).
#[derive(Clone)]
pub struct MemLog {
    inner: Arc<Inner>,
}

impl Default for MemLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemLog {
    /// An empty log with its writer thread.
    pub fn new() -> MemLog {
        let inner = Arc::new(Inner {
            stored: Mutex::new(Stored::default()),
            control: Mutex::new(Control::default()),
            wake: Condvar::new(),
            head: watch::channel(0).0,
            stats: crate::LogStats::default(),
        });
        let writer = inner.clone();
        std::thread::Builder::new()
            .name("spool-memlog".into())
            .spawn(move || writer_loop(&writer))
            .expect("a thread for the in-memory log");
        MemLog { inner }
    }

    /// Hold every commit back until [`MemLog::resume`] (appends queue in order meanwhile).
    pub fn pause(&self) {
        self.control().paused = true;
    }

    pub fn resume(&self) {
        self.control().paused = false;
        self.inner.wake.notify_all();
    }

    /// Fail every commit from now on (nothing of it is written) until [`MemLog::heal`].
    pub fn fail_commits(&self) {
        self.control().failing = true;
    }

    /// Let the next `commits` commits through, then fail every one until [`MemLog::heal`].
    pub fn fail_commits_after(&self, commits: u64) {
        self.control().fail_after = Some(commits);
    }

    pub fn heal(&self) {
        let mut c = self.control();
        c.failing = false;
        c.fail_after = None;
    }

    /// Appends waiting for the writer.
    pub fn queued(&self) -> usize {
        self.control().queue.len()
    }

    /// Commits made so far (each takes every queued request).
    pub fn commits(&self) -> u64 {
        self.control().commits
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.inner.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stored(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.inner.stored.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn writer_loop(inner: &Arc<Inner>) {
    loop {
        let batch: Vec<Job> = {
            let mut c = inner.control.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                // The writer holds the only other reference while the log is alive.
                if Arc::strong_count(inner) == 1 {
                    return;
                }
                if !c.paused && !c.queue.is_empty() {
                    break;
                }
                c = inner
                    .wake
                    .wait_timeout(c, std::time::Duration::from_millis(50))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            c.commits += 1;
            match c.fail_after {
                Some(0) => {
                    c.failing = true;
                    c.fail_after = None;
                }
                Some(n) => c.fail_after = Some(n - 1),
                None => {}
            }
            if c.failing {
                inner.stats.failed_commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for job in c.queue.drain(..) {
                    let _ = job.reply.send(Err(Error::Storage("injected commit failure (MemLog)".into())));
                }
                continue;
            }
            c.queue.drain(..).collect()
        };
        let mut stored = inner.stored.lock().unwrap_or_else(|p| p.into_inner());
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch {
            let result = commit_one(&mut stored, &job.req);
            answers.push((job.reply, result));
        }
        let head = stored.events.len() as u64;
        drop(stored);
        {
            use std::sync::atomic::Ordering::Relaxed;
            inner.stats.commits.fetch_add(1, Relaxed);
            inner.stats.appends.fetch_add(answers.iter().filter(|(_, r)| r.is_ok()).count() as u64, Relaxed);
            inner.stats.events.store(head, Relaxed);
        }
        inner.head.send_replace(head);
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
    }
}

fn side_key(table: SideTable) -> u8 {
    match table {
        SideTable::Idempotency => 0,
        SideTable::DataKeys => 1,
        SideTable::Videos => 2,
        SideTable::JobFiles => 3,
        SideTable::ImportKeys => 4,
        SideTable::IndexVideos => 5,
        SideTable::Deliveries => 6,
        SideTable::WebhookDeliveries => 7,
        SideTable::RunAnswers => 8,
        SideTable::RunCalls => 9,
    }
}

/// One request, all or nothing.
pub(crate) fn commit_one(stored: &mut Stored, req: &AppendRequest) -> Result<Appended, Error> {
    let mut within: HashMap<&str, u64> = HashMap::new();
    for s in &req.streams {
        let actual =
            *within.get(s.stream.as_str()).unwrap_or(&stored.streams.get(&s.stream).map_or(0, |v| v.len() as u64));
        let ok = match s.expected {
            Expected::Any => true,
            Expected::NoStream => actual == 0,
            Expected::Exact(v) => actual == v,
        };
        if !ok {
            return Err(Error::Conflict { stream: s.stream.clone(), expected: s.expected, actual });
        }
        within.insert(s.stream.as_str(), actual + s.events.len() as u64);
    }
    let head = stored.events.len() as u64;
    for side in &req.side {
        if let SideWrite::Snapshot { name, at_seq, .. } = side
            && *at_seq > head + req.event_count() as u64
        {
            return Err(Error::Invalid(format!("snapshot {name} at seq {at_seq} is ahead of the log")));
        }
    }
    let first_seq = if req.event_count() > 0 { head + 1 } else { 0 };
    let mut versions = Vec::with_capacity(req.streams.len());
    for s in &req.streams {
        for ev in &s.events {
            let seq = stored.events.len() as u64 + 1;
            stored.events.push(Envelope {
                seq,
                stream: s.stream.clone(),
                at_ms: ev.at_ms,
                format_version: FORMAT_VERSION,
                event: ev.event.clone(),
            });
            stored.streams.entry(s.stream.clone()).or_default().push(seq);
        }
        versions.push(stored.streams.get(&s.stream).map_or(0, |v| v.len() as u64));
    }
    for side in &req.side {
        match side {
            SideWrite::Put { table, key, value } => {
                stored.side.insert((side_key(*table), key.clone()), value.clone());
            }
            SideWrite::Delete { table, key } => {
                stored.side.remove(&(side_key(*table), key.clone()));
            }
            SideWrite::Snapshot { name, at_seq, bytes } => {
                stored.snapshots.insert(name.clone(), Snapshot { at_seq: *at_seq, bytes: bytes.clone() });
            }
        }
    }
    Ok(Appended { first_seq, last_seq: stored.events.len() as u64, versions })
}

impl EventLog for MemLog {
    fn append(&self, req: AppendRequest) -> crate::Appending<'_> {
        let done = self.submit(req);
        Box::pin(done)
    }

    fn stats(&self) -> &crate::LogStats {
        &self.inner.stats
    }

    fn submit(&self, req: AppendRequest) -> crate::Submitted {
        let (reply, rx) = oneshot::channel();
        let n = req.event_count();
        if n > APPEND_EVENTS_MAX {
            let _ = reply.send(Err(Error::Invalid(format!("{n} events in one append; at most {APPEND_EVENTS_MAX}"))));
        } else {
            self.control().queue.push_back(Job { req, reply });
            self.inner.wake.notify_all();
        }
        crate::Submitted::new(rx)
    }

    fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        Ok(self.stored().read_from(from_seq, limit))
    }

    fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        Ok(self.stored().read_stream(stream, from_version, limit))
    }

    fn stream_version(&self, stream: &str) -> Result<u64, Error> {
        Ok(self.stored().stream_version(stream))
    }

    fn tail(&self, from_seq: u64) -> Tail {
        let me = self.clone();
        Tail::new(from_seq, self.inner.head.subscribe(), Arc::new(move |from, limit| me.read_from(from, limit)))
    }

    fn snapshot(&self, name: &str) -> Result<Option<Snapshot>, Error> {
        Ok(self.stored().snapshots.get(name).cloned())
    }

    fn side_get(&self, table: SideTable, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.stored().side_get(table, key))
    }

    fn side_scan(&self, table: SideTable, after: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>, Error> {
        Ok(self.stored().side_scan(table, after, limit))
    }
}
