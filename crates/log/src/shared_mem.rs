//! `SharedMemLog`: one partition of a log that several nodes share, in memory, with the rules
//! of the PostgreSQL log (`engine-spec/cluster.md`) for the runtime simulator's cluster mode:
//!
//! - a **lease** on the database's clock (here a clock the simulator sets, [`SharedMemLog::set_now`]),
//!   taken when free, expired or the taker's own, and an **epoch** bumped at every takeover;
//! - each holder's writer ([`MemNode`]) assigns sequence numbers from the head *it* knows, and a
//!   commit is applied only if the partition's row still has this writer's epoch, head and
//!   number of commits, checked in the same critical section that applies it (the append
//!   transaction's fence): a paused old holder's commit is refused with [`Error::Fenced`], and
//!   the node then counts its partition as lost;
//! - an **in-doubt** commit (the answer lost after the commit was sent, [`MemNode::lose_next_answer`])
//!   is settled from the row before anyone is answered: one more commit at this epoch means it
//!   landed; a settle that cannot read the row answers an error whatever happened, and the
//!   writer reads where the partition is before its next commit (as `PgLog` does).
//!
//! Readers read the shared events directly (every committed event, whoever wrote it).

use crate::mem_log::{Stored, commit_one};
use crate::{APPEND_EVENTS_MAX, AppendRequest, Appended, Error, EventLog, SideTable, Snapshot, Tail};
use spool_model::Envelope;
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::{oneshot, watch};

/// The partition's row and its tables.
#[derive(Default)]
struct Row {
    stored: Stored,
    /// The epoch of the writer of each event (`events[i]` was written at `epochs[i]`).
    epochs: Vec<u64>,
    epoch: u64,
    owner: Option<String>,
    expires_ms: u64,
    commits: u64,
    /// The database's clock.
    now_ms: u64,
}

struct Shared {
    row: Mutex<Row>,
    head: watch::Sender<u64>,
    stats: crate::LogStats,
}

impl Shared {
    fn row(&self) -> std::sync::MutexGuard<'_, Row> {
        self.row.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The shared partition (see the module's documentation).
#[derive(Clone)]
pub struct SharedMemLog {
    shared: Arc<Shared>,
}

impl SharedMemLog {
    pub fn new(now_ms: u64) -> SharedMemLog {
        let row = Row { now_ms, ..Default::default() };
        SharedMemLog {
            shared: Arc::new(Shared {
                row: Mutex::new(row),
                head: watch::channel(0).0,
                stats: crate::LogStats::default(),
            }),
        }
    }

    /// Set the database's clock (it never goes back).
    pub fn set_now(&self, now_ms: u64) {
        let mut row = self.shared.row();
        row.now_ms = row.now_ms.max(now_ms);
    }

    /// Move the database's clock forward.
    pub fn advance(&self, ms: u64) {
        self.shared.row().now_ms += ms;
    }

    /// Take the lease for `node` when it is free, expired or `node`'s own: a new epoch and a
    /// writer at the partition's head. `None`: another node holds it.
    pub fn take(&self, node: &str, ttl_ms: u64) -> Option<MemNode> {
        let (epoch, head, commits) = {
            let mut row = self.shared.row();
            let free = row.owner.is_none() || row.owner.as_deref() == Some(node) || row.expires_ms < row.now_ms;
            if !free {
                return None;
            }
            row.epoch += 1;
            row.owner = Some(node.to_string());
            row.expires_ms = row.now_ms + ttl_ms;
            (row.epoch, row.stored.events.len() as u64, row.commits)
        };
        Some(MemNode::start(self.shared.clone(), node, epoch, ttl_ms, head, commits))
    }

    /// The holder and its epoch, as the row says (expired or not).
    pub fn holder(&self) -> (Option<String>, u64) {
        let row = self.shared.row();
        (row.owner.clone(), row.epoch)
    }

    /// Every event's writer epoch, in log order.
    pub fn epochs(&self) -> Vec<u64> {
        self.shared.row().epochs.clone()
    }

    /// Commits made so far at any epoch.
    pub fn commits(&self) -> u64 {
        self.shared.row().commits
    }
}

struct Job {
    req: AppendRequest,
    reply: oneshot::Sender<Result<Appended, Error>>,
}

/// How the next commit's answer is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAnswer {
    /// Sent and applied; the answer lost, then settled from the row.
    Applied,
    /// Lost on its way: nothing applied; settled from the row.
    NotApplied,
    /// Applied, and the settle cannot read the row: answered as an error although it landed.
    AppliedUnsettled,
}

#[derive(Default)]
struct Control {
    queue: std::collections::VecDeque<Job>,
    paused: bool,
    dead: bool,
    lose: Option<LostAnswer>,
    /// What this writer knows of the partition.
    head: u64,
    commits: u64,
    /// Read the row before the next commit (after an unsettled one).
    resync: bool,
}

struct NodeInner {
    shared: Arc<Shared>,
    node: String,
    epoch: u64,
    ttl_ms: u64,
    control: Mutex<Control>,
    wake: Condvar,
    lost: watch::Sender<bool>,
}

impl NodeInner {
    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lose(&self) {
        self.lost.send_replace(true);
    }
}

/// One node's hold of the shared partition: an [`EventLog`] whose writer is fenced by its epoch.
#[derive(Clone)]
pub struct MemNode {
    inner: Arc<NodeInner>,
}

impl MemNode {
    fn start(shared: Arc<Shared>, node: &str, epoch: u64, ttl_ms: u64, head: u64, commits: u64) -> MemNode {
        let inner = Arc::new(NodeInner {
            shared,
            node: node.to_string(),
            epoch,
            ttl_ms,
            control: Mutex::new(Control { head, commits, ..Default::default() }),
            wake: Condvar::new(),
            lost: watch::channel(false).0,
        });
        let writer = inner.clone();
        std::thread::Builder::new()
            .name(format!("spool-memnode-{node}"))
            .spawn(move || node_writer(&writer))
            .expect("a thread for the node's writer");
        MemNode { inner }
    }

    /// This hold's epoch.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Turns true, for good, when the partition is lost (another epoch refused a commit, or a
    /// renewal found the lease taken).
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.inner.lost.subscribe()
    }

    pub fn is_lost(&self) -> bool {
        *self.inner.lost.borrow()
    }

    /// Renew the lease on the database's clock (`false`: it was taken over; the hold is lost).
    pub fn renew(&self) -> bool {
        let ok = {
            let mut row = self.inner.shared.row();
            if row.epoch == self.inner.epoch && row.owner.as_deref() == Some(&self.inner.node) {
                row.expires_ms = row.now_ms + self.inner.ttl_ms;
                true
            } else {
                false
            }
        };
        if !ok {
            self.inner.lose();
        }
        ok
    }

    /// A process stopped (SIGSTOP): commits wait, nothing is renewed by the simulator.
    pub fn pause(&self) {
        self.inner.control().paused = true;
    }

    pub fn resume(&self) {
        self.inner.control().paused = false;
        self.inner.wake.notify_all();
    }

    /// The process is gone (SIGKILL): nothing more is committed; waiting appends fail.
    pub fn kill(&self) {
        self.inner.control().dead = true;
        self.inner.wake.notify_all();
    }

    /// The next commit's answer is lost in the given way.
    pub fn lose_next_answer(&self, how: LostAnswer) {
        self.inner.control().lose = Some(how);
    }
}

fn node_writer(inner: &Arc<NodeInner>) {
    loop {
        let (batch, lose, head, old_commits, resync) = {
            let mut c = inner.control();
            loop {
                if Arc::strong_count(inner) == 1 {
                    return;
                }
                if c.dead {
                    for job in c.queue.drain(..) {
                        let _ = job.reply.send(Err(Error::Storage("the node is gone".into())));
                    }
                } else if !c.paused && !c.queue.is_empty() {
                    break;
                }
                c = inner
                    .wake
                    .wait_timeout(c, std::time::Duration::from_millis(50))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let batch: Vec<Job> = c.queue.drain(..).collect();
            (batch, c.lose.take(), c.head, c.commits, std::mem::take(&mut c.resync))
        };
        let mut row = inner.shared.row();
        let (mut head_known, mut commits_known) = (head, old_commits);
        if resync && row.epoch == inner.epoch {
            // After an unsettled commit: where the partition is now.
            head_known = row.stored.events.len() as u64;
            commits_known = row.commits;
        }
        // The fence: this epoch, at the head and commits this writer knows, in the critical
        // section that applies the commit.
        if row.epoch != inner.epoch || row.stored.events.len() as u64 != head_known || row.commits != commits_known {
            let why = format!("the partition is at epoch {}; this writer is at {}", row.epoch, inner.epoch);
            drop(row);
            inner.lose();
            inner.shared.stats.failed_commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for job in batch {
                let _ = job.reply.send(Err(Error::Fenced(why.clone())));
            }
            continue;
        }
        let apply = lose != Some(LostAnswer::NotApplied);
        let mut answers = Vec::with_capacity(batch.len());
        if apply {
            for job in batch {
                let result = commit_one(&mut row.stored, &job.req);
                answers.push((job.reply, result));
            }
            let n = row.stored.events.len();
            let epoch = inner.epoch;
            row.epochs.resize(n, epoch);
            row.commits += 1;
        } else {
            for job in batch {
                answers.push((job.reply, Err(Error::Storage("the connection dropped before the commit".into()))));
            }
        }
        let new_head = row.stored.events.len() as u64;
        let new_commits = row.commits;
        drop(row);
        // Settle a lost answer from the row, as `PgLog::settle` does: (fenced, why) on failure.
        let outcome: Result<(), (bool, String)> = match lose {
            None => Ok(()),
            Some(LostAnswer::AppliedUnsettled) => {
                Err((false, "the outcome of a commit is unknown (the settle could not read the row)".into()))
            }
            Some(_) => {
                let row = inner.shared.row();
                if row.epoch != inner.epoch {
                    Err((true, format!("partition taken over (epoch {})", row.epoch)))
                } else if row.commits == commits_known + 1 {
                    Ok(())
                } else {
                    Err((false, "the commit did not land (settled)".into()))
                }
            }
        };
        {
            let mut c = inner.control();
            match &outcome {
                Ok(()) => {
                    c.head = new_head;
                    c.commits = new_commits;
                }
                Err((true, _)) => inner.lose(),
                Err((false, _)) => c.resync = true,
            }
        }
        if apply {
            use std::sync::atomic::Ordering::Relaxed;
            inner.shared.stats.commits.fetch_add(1, Relaxed);
            inner.shared.stats.events.store(new_head, Relaxed);
            inner.shared.head.send_replace(new_head);
        }
        for (reply, result) in answers {
            let _ = reply.send(match (&outcome, result) {
                (Ok(()), r) => r,
                (Err((true, why)), _) => Err(Error::Fenced(why.clone())),
                (Err((false, why)), _) => Err(Error::Storage(why.clone())),
            });
        }
    }
}

impl EventLog for MemNode {
    fn append(&self, req: AppendRequest) -> crate::Appending<'_> {
        let done = self.submit(req);
        Box::pin(done)
    }

    fn stats(&self) -> &crate::LogStats {
        &self.inner.shared.stats
    }

    fn submit(&self, req: AppendRequest) -> crate::Submitted {
        let (reply, rx) = oneshot::channel();
        let n = req.event_count();
        if n > APPEND_EVENTS_MAX {
            let _ = reply.send(Err(Error::Invalid(format!("{n} events in one append; at most {APPEND_EVENTS_MAX}"))));
        } else {
            self.inner.control().queue.push_back(Job { req, reply });
            self.inner.wake.notify_all();
        }
        crate::Submitted::new(rx)
    }

    fn head(&self) -> u64 {
        *self.inner.shared.head.borrow()
    }

    fn read_from(&self, from_seq: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        Ok(self.inner.shared.row().stored.read_from(from_seq, limit))
    }

    fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        Ok(self.inner.shared.row().stored.read_stream(stream, from_version, limit))
    }

    fn stream_version(&self, stream: &str) -> Result<u64, Error> {
        Ok(self.inner.shared.row().stored.stream_version(stream))
    }

    fn tail(&self, from_seq: u64) -> Tail {
        let me = self.clone();
        Tail::new(from_seq, self.inner.shared.head.subscribe(), Arc::new(move |from, limit| me.read_from(from, limit)))
    }

    fn snapshot(&self, name: &str) -> Result<Option<Snapshot>, Error> {
        Ok(self.inner.shared.row().stored.snapshots.get(name).cloned())
    }

    fn holds_partition(&self) -> Result<bool, Error> {
        Ok(!self.is_lost() && self.inner.shared.row().epoch == self.inner.epoch)
    }

    fn side_get(&self, table: SideTable, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.inner.shared.row().stored.side_get(table, key))
    }

    fn side_scan(&self, table: SideTable, after: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>, Error> {
        Ok(self.inner.shared.row().stored.side_scan(table, after, limit))
    }
}
