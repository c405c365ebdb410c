//! The sequencer: the one writer of events, a type of its own over any [`EventLog`].
//!
//! ```text
//!  submitters ──► inbox (INBOX_DEPTH_MAX) ──► decide thread ──► pipeline (PIPELINE_BATCHES_MAX) ──► commit thread
//!                                             │ working state                                      │ log.submit(batches merged)
//!                                             │ (decided, maybe not durable)                       │ durable ─► host.publish(events)
//!                                             └ decides batch N+1 while N is on its way            │            answers, in order
//!                                                                                                  │            host.committed(touched)
//!                                                                                                  └ failed ─► this batch and every
//!                                                                                                    batch decided on it fail
//! ```
//!
//! The **decide thread** takes what is queued (up to [`SEQUENCER_BATCH_COMMANDS_MAX`] commands
//! or [`SEQUENCER_BATCH_EVENTS_MAX`] events) and decides each command in order on its own
//! *working state*, which runs ahead of the log: it holds every decided batch, durable or not.
//! Each decision's events are folded at once (the next command decides on them), its answer is
//! rendered, and the batch goes to the pipeline; the thread goes on with the next batch without
//! waiting for the disk (or, later, the network).
//!
//! The **commit thread** takes the decided batches in order, merges the ones waiting into one
//! append (one durable commit for several batches, within `APPEND_EVENTS_MAX`), and when it is
//! durable hands each batch's events to the host, which folds them into the state readers see
//! (`SequencerHost::publish`), then answers its submitters and lets the host offer effects.
//! Readers therefore never wait on a commit and never see a decision that is not durable.
//!
//! A failed commit fails its batches and every batch decided on top of them (they were decided
//! on a state that will never be): the decide thread sees the failure, waits until the pipeline
//! is empty, and starts again from the host's durable state (the fold of the log). No command
//! is ever re-decided after it committed; one whose batch failed is answered with the error.
//!
//! A decision is pure, so a panicking one (or one past [`DECISION_EVENTS_MAX`]) fails its own
//! command and the batch goes on (`ARCHITECTURE.md`, "Poison input").

use crate::error::{Reply, RuntimeError};
use crate::keyring::Keyring;
use crate::{Clock, IdSource, IdemBody, IdemKey, IdemRecord};
use spool_core::{Command, Ctx, Outcome, State, WorkKey, decide, evolve};
use spool_log::{AppendRequest, EventLog, Expected, NewEvent, SideTable, SideWrite, StreamAppend};
use spool_model::{Envelope, FORMAT_VERSION};
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Submissions waiting for the sequencer; a full inbox makes submitters wait (back-pressure).
pub const INBOX_DEPTH_MAX: usize = 8192;
/// Commands decided in one sequencer batch.
pub const SEQUENCER_BATCH_COMMANDS_MAX: usize = 1024;
/// Events in one sequencer batch: past this the batch closes (below `APPEND_EVENTS_MAX`).
pub const SEQUENCER_BATCH_EVENTS_MAX: usize = 4096;
/// Events one decision may write, with the webhook deliveries of its domain events. A batch
/// closes at [`SEQUENCER_BATCH_EVENTS_MAX`] events, so a batch holds at most
/// `SEQUENCER_BATCH_EVENTS_MAX - 1 + DECISION_EVENTS_MAX` < `APPEND_EVENTS_MAX` events. A
/// decision past it fails its command (`decision_too_large`), never the batch.
pub const DECISION_EVENTS_MAX: usize = 5_000;
const _: () = assert!(SEQUENCER_BATCH_EVENTS_MAX - 1 + DECISION_EVENTS_MAX < spool_log::APPEND_EVENTS_MAX);
/// Batches decided but not yet durable: past this the decide thread waits for the log.
pub const PIPELINE_BATCHES_MAX: usize = 8;

/// How an answer is rendered from the state the command led to.
pub type Render = Box<dyn FnOnce(&State, Outcome) -> Reply + Send + 'static>;

/// A step that turns into a command inside the sequencer, against the state as the earlier
/// commands leave it: sealing a secret with its owner's data key, or merging a credentials patch
/// into the stored credentials (two concurrent patches then both land). It returns the command
/// and the side writes (data keys) that commit with it.
pub type Prepare =
    Box<dyn FnOnce(&State, &Keyring) -> Result<(Command, Vec<SideWrite>), RuntimeError> + Send + 'static>;

/// What a submitter asks the sequencer to decide.
pub enum Work {
    Command(Box<Command>),
    Prepared(Prepare),
}

impl From<Command> for Work {
    fn from(c: Command) -> Work {
        Work::Command(Box::new(c))
    }
}

/// What a submitter is answered.
pub type Answered = Result<(Reply, Outcome), RuntimeError>;
type Answer = tokio::sync::oneshot::Sender<Answered>;

/// A command waiting for the sequencer.
pub struct Submission {
    pub work: Work,
    pub idem: Option<IdemKey>,
    /// Side writes that commit with the command's events (a new data key for sealed values).
    pub side: Vec<SideWrite>,
    pub render: Render,
    pub reply: Answer,
}

pub type Inbox = tokio::sync::mpsc::Receiver<Submission>;

pub fn inbox() -> (tokio::sync::mpsc::Sender<Submission>, Inbox) {
    tokio::sync::mpsc::channel(INBOX_DEPTH_MAX)
}

/// What the sequencer needs of the process around it.
pub trait SequencerHost: Send + Sync + 'static {
    /// A batch is durable: fold its events into the state readers see. Called in commit
    /// order, before the batch's submitters are answered.
    fn publish(&self, events: &[Envelope]);
    /// After a durable batch was published and answered: offer the effects of the aggregates it
    /// touched, wake the timer service when the earliest timer changed.
    fn committed(&self, touched: &BTreeSet<WorkKey>, last_seq: u64, timers_changed: bool);
    /// The fold of everything durable (what readers see): decided on again after a failed commit.
    fn durable_state(&self) -> State;
    /// One more command taken (for `/metrics`).
    fn command_taken(&self) {}
}

/// The sequencer's settings.
#[derive(Debug, Clone, Copy)]
pub struct SequencerConfig {
    /// Events one decision may write (at most [`DECISION_EVENTS_MAX`]).
    pub decision_events_max: usize,
    /// The partition of a partitioned cluster this sequencer decides for: new ids carry it.
    pub partition: Option<u16>,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        SequencerConfig { decision_events_max: DECISION_EVENTS_MAX, partition: None }
    }
}

/// A decided batch on its way to the log.
struct InFlight {
    /// The decide thread's epoch when it was decided (bumped after each failed commit).
    epoch: u64,
    req: AppendRequest,
    events: Vec<Envelope>,
    /// The last sequence number the batch takes (the working state's after it).
    expected_last: u64,
    answers: Vec<(Answer, Answered)>,
    touched: BTreeSet<WorkKey>,
    timers_changed: bool,
}

/// What the two threads share.
struct Shared {
    /// Epochs below this one had a failed commit: their batches fail.
    broken_below: AtomicU64,
    /// Batches handed to the commit thread and not yet finished.
    in_flight: Mutex<usize>,
    drained: Condvar,
    /// Batches decided so far (tests watch the pipeline with it).
    decided: AtomicUsize,
}

/// The sequencer (see the module's documentation).
pub struct Sequencer<L: EventLog + ?Sized> {
    log: Arc<L>,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    host: Arc<dyn SequencerHost>,
    cfg: SequencerConfig,
    shared: Arc<Shared>,
}

/// A running sequencer: its two threads; `join` waits for both after the inbox closed.
pub struct SequencerThreads {
    decide: std::thread::JoinHandle<()>,
    shared: Arc<Shared>,
}

impl SequencerThreads {
    pub fn join(self) {
        let _ = self.decide.join();
    }

    /// Batches decided since the start.
    pub fn decided_batches(&self) -> usize {
        self.shared.decided.load(Ordering::SeqCst)
    }
}

impl<L: EventLog + ?Sized> Sequencer<L> {
    pub fn new(
        log: Arc<L>,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        host: Arc<dyn SequencerHost>,
        cfg: SequencerConfig,
    ) -> Self {
        let shared = Arc::new(Shared {
            broken_below: AtomicU64::new(0),
            in_flight: Mutex::new(0),
            drained: Condvar::new(),
            decided: AtomicUsize::new(0),
        });
        Sequencer { log, keyring, clock, ids, host, cfg, shared }
    }

    /// Start both threads. `start` runs on the decide thread before it takes the first
    /// command (folding the log, getting ready) and returns the state it decides on first: the
    /// host's durable state.
    pub fn spawn(self, rx: Inbox, start: impl FnOnce() -> State + Send + 'static) -> std::io::Result<SequencerThreads> {
        let shared = self.shared.clone();
        let decide = std::thread::Builder::new().name("spool-sequencer".into()).spawn(move || {
            let mut working = start();
            working.rows.emit = true;
            self.decide_loop(rx, working);
        })?;
        Ok(SequencerThreads { decide, shared })
    }

    fn decide_loop(self, mut rx: Inbox, mut working: State) {
        let (tx, pipeline) = std::sync::mpsc::sync_channel::<InFlight>(PIPELINE_BATCHES_MAX);
        let committer = {
            let log = self.log.clone();
            let host = self.host.clone();
            let shared = self.shared.clone();
            std::thread::Builder::new()
                .name("spool-commit".into())
                .spawn(move || commit_loop(&*log, &*host, &shared, pipeline))
                .expect("a thread for the sequencer's commits")
        };
        let mut epoch = 0u64;
        let mut carried: VecDeque<Submission> = VecDeque::new();
        loop {
            if carried.is_empty() {
                match rx.blocking_recv() {
                    Some(first) => carried.push_back(first),
                    None => break,
                }
            }
            while carried.len() < SEQUENCER_BATCH_COMMANDS_MAX {
                match rx.try_recv() {
                    Ok(s) => carried.push_back(s),
                    Err(_) => break,
                }
            }
            // A commit failed under this epoch: what the working state holds beyond the log
            // will never be. Wait for the pipeline to empty, then decide on the durable state.
            if self.shared.broken_below.load(Ordering::SeqCst) > epoch {
                self.wait_drained();
                working = self.host.durable_state();
                working.rows.emit = true;
                epoch = self.shared.broken_below.load(Ordering::SeqCst);
            }
            match self.decide_batch(&mut working, &mut carried, epoch) {
                Decided::Batch(b) => {
                    *self.shared.in_flight.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    self.shared.decided.fetch_add(1, Ordering::SeqCst);
                    if tx.send(*b).is_err() {
                        break;
                    }
                }
                Decided::Nothing => {}
                Decided::Reset => {
                    // The working state is half-folded (a panic while folding): nothing of this
                    // batch was sent; start again from what is durable.
                    self.wait_drained();
                    working = self.host.durable_state();
                    working.rows.emit = true;
                }
            }
        }
        drop(tx);
        let _ = committer.join();
        tracing::debug!("the sequencer's inbox is closed");
    }

    fn wait_drained(&self) {
        let mut n = self.shared.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = self.shared.drained.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Decide what fits of `pending` into one batch on `st`; what does not fit stays in
    /// `pending`, in order.
    fn decide_batch(&self, st: &mut State, pending: &mut VecDeque<Submission>, epoch: u64) -> Decided {
        let mut streams: Vec<StreamAppend> = Vec::new();
        let mut envelopes: Vec<Envelope> = Vec::new();
        let mut side: Vec<SideWrite> = Vec::new();
        let mut answers = Vec::new();
        let mut touched: BTreeSet<WorkKey> = BTreeSet::new();
        let mut events = 0usize;
        let first_timer = st.next_timer().cloned();
        // Rows of durable events can be read from the tables again (`spool_core::rows`).
        st.rows.forget_durable(self.log.head());
        let bound = self.cfg.decision_events_max.min(DECISION_EVENTS_MAX);
        while let Some(sub) = pending.pop_front() {
            let Submission { work, idem, side: mut sub_side, render, reply } = sub;
            self.host.command_taken();
            let cmd = match work {
                Work::Command(c) => *c,
                Work::Prepared(prepare) => match prepare(st, &self.keyring) {
                    Ok((c, extra)) => {
                        sub_side.extend(extra);
                        c
                    }
                    Err(e) => {
                        answers.push((reply, Err(e)));
                        continue;
                    }
                },
            };
            // What the decision (and its answer) reads from the tables, loaded first: only the
            // state's rows change, so a failed read fails this command alone.
            if let Err(e) = crate::rows::load_needs(&*self.log, st, |st| spool_core::rows::needs(st, &cmd)) {
                answers.push((reply, Err(e.into())));
                continue;
            }
            let now = self.clock.now_ms();
            let mut ctx = Ctx::new(now, self.ids.entropy()).in_partition(self.cfg.partition);
            // A decision is pure: one that panics fails its command alone (the state is untouched).
            let decided_now = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide(st, &cmd, &mut ctx)));
            let mut decision = match decided_now {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    answers.push((reply, Err(e.into())));
                    continue;
                }
                Err(payload) => {
                    let what = crate::error::panic_message(payload.as_ref());
                    tracing::error!(command = ?cmd, panic = %what, "deciding a command panicked; it fails alone");
                    answers.push((reply, Err(poisoned("decision_failed", &what))));
                    continue;
                }
            };
            let own = decision.streams.iter().map(|s| s.events.len()).sum::<usize>();
            if own > bound {
                tracing::error!(command = ?cmd, events = own, "a decision passed its bound on events; it fails alone");
                let why = format!("it would write {own} events; at most {bound}");
                answers.push((reply, Err(poisoned("decision_too_large", &why))));
                continue;
            }
            // Fold at once: the next command of the batch decides on this state. Then the
            // outbox: deliveries of this decision's domain events, decided on the state its events
            // left, join the same append. A panic here (or deliveries past the bound) leaves the
            // state half-folded: the batch is dropped unsent, this command fails, the commands
            // decided before it in the batch get a retryable error (nothing of them was
            // written), the rest wait in `pending`, and the working state starts again from
            // what is durable.
            let mut own_streams = Vec::new();
            let mut own_envelopes = Vec::new();
            let mut own_touched = BTreeSet::new();
            let folded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut out =
                    Folded { streams: &mut own_streams, envelopes: &mut own_envelopes, touched: &mut own_touched };
                let mut n = fold_streams(st, &decision.streams, now, &mut out);
                // An index partition of a partitioned cluster publishes its domain events for
                // the catalog (where the webhooks are) instead. Both read the rows of the videos
                // they resolve: loaded first, from the tables.
                let publishes = matches!(self.cfg.partition, Some(p) if p >= 1);
                if publishes || !st.webhooks.is_empty() {
                    crate::rows::load_needs(&*self.log, st, |st| spool_core::outbox_rows(st, &decision))
                        .map_err(|e| ("storage_unavailable", format!("reading the rows its webhooks carry: {e}")))?;
                }
                let deliveries = match self.cfg.partition {
                    Some(p) if p >= 1 => spool_core::publish(st, &decision, &mut ctx),
                    _ => spool_core::outbox(st, &decision, &mut ctx),
                };
                let extra = deliveries.iter().map(|s| s.events.len()).sum::<usize>();
                if own + extra > bound {
                    return Err((
                        "decision_too_large",
                        format!("it would write {} events with its webhook deliveries; at most {bound}", own + extra),
                    ));
                }
                n += fold_streams(st, &deliveries, now, &mut out);
                decision.streams.extend(deliveries);
                Ok(n)
            }));
            let n = match folded {
                Ok(Ok(n)) => n,
                failed => {
                    let (code, why) = match failed {
                        Ok(Err(coded)) => coded,
                        Err(payload) => ("decision_failed", crate::error::panic_message(payload.as_ref())),
                        Ok(Ok(_)) => unreachable!("matched above"),
                    };
                    tracing::error!(command = ?cmd, error = %why, "folding a decision failed; it fails alone and the state is rebuilt");
                    return drop_unsent(
                        answers,
                        reply,
                        poisoned(code, &why),
                        "another command of the same batch failed; nothing was written, try again",
                    );
                }
            };
            events += n;
            streams.append(&mut own_streams);
            envelopes.append(&mut own_envelopes);
            touched.append(&mut own_touched);
            side.extend(sub_side);
            side.extend(side_writes_of(&self.keyring, &decision));
            // The rows its events wrote commit with them.
            crate::rows::side_writes(st.rows.take_written(), &mut side);
            let answer = render(st, decision.outcome);
            if let Some(k) = &idem {
                let body = if k.seal {
                    match self.keyring.seal(&k.owner(), &answer.body) {
                        Ok((sealed, put)) => {
                            side.push(put);
                            IdemBody::Sealed(sealed)
                        }
                        Err(e) => {
                            // Nothing of this command may commit without its record: the batch
                            // is dropped unsent (its commands answered with the error) and the
                            // working state starts again from what is durable.
                            let msg = format!("sealing an idempotency record failed: {e}");
                            tracing::error!(error = %msg, "a batch is dropped before its commit");
                            return drop_unsent(answers, reply, e.into(), &msg);
                        }
                    }
                } else {
                    IdemBody::Plain(answer.body.clone())
                };
                let rec = IdemRecord { fingerprint: k.fingerprint, status: answer.status, body, created_at_ms: now };
                side.push(SideWrite::Put { table: SideTable::Idempotency, key: k.scoped.clone(), value: rec.encode() });
            }
            answers.push((reply, Ok((answer, decision.outcome))));
            if events >= SEQUENCER_BATCH_EVENTS_MAX {
                break;
            }
        }
        if answers.is_empty() {
            return Decided::Nothing;
        }
        // A batch that writes nothing (refusals, no-ops) still goes through the pipeline: its
        // answers were decided on the working state, so they go out once every batch before it
        // is durable (and fail with them).
        let timers_changed = st.next_timer() != first_timer.as_ref();
        Decided::Batch(Box::new(InFlight {
            epoch,
            req: AppendRequest { streams, side },
            events: envelopes,
            expected_last: st.applied_seq,
            answers,
            touched,
            timers_changed,
        }))
    }
}

/// A batch dropped before it was sent (its working state is half-folded): the commands decided
/// before in it are answered `why` (nothing of them was written), the one that failed `err`;
/// the decide thread then starts again from the durable state.
fn drop_unsent(answers: Vec<(Answer, Answered)>, reply: Answer, err: RuntimeError, why: &str) -> Decided {
    for (r, _) in answers {
        let _ = r.send(Err(RuntimeError::Log(spool_log::Error::Storage(why.to_string()))));
    }
    let _ = reply.send(Err(err));
    Decided::Reset
}

enum Decided {
    Batch(Box<InFlight>),
    Nothing,
    Reset,
}

/// The commit thread: take decided batches in order, merge those waiting into one append,
/// wait for it to be durable, publish, answer, in order.
fn commit_loop<L: EventLog + ?Sized>(
    log: &L,
    host: &dyn SequencerHost,
    shared: &Shared,
    pipeline: std::sync::mpsc::Receiver<InFlight>,
) {
    let mut next: Option<InFlight> = None;
    loop {
        let first = match next.take() {
            Some(b) => b,
            None => match pipeline.recv() {
                Ok(b) => b,
                Err(_) => return,
            },
        };
        let mut group = vec![first];
        let mut events = group[0].req.event_count();
        while let Ok(b) = pipeline.try_recv() {
            if b.epoch != group[0].epoch || events + b.req.event_count() > spool_log::APPEND_EVENTS_MAX {
                next = Some(b);
                break;
            }
            events += b.req.event_count();
            group.push(b);
        }
        let n = group.len();
        let epoch = group[0].epoch;
        if shared.broken_below.load(Ordering::SeqCst) > epoch {
            fail_group(group, "an earlier commit failed; this was decided on top of it and is not written");
        } else {
            let expected_last = group.last().map_or(0, |b| b.expected_last);
            let mut req = AppendRequest::default();
            for b in &mut group {
                req.streams.append(&mut b.req.streams);
                req.side.append(&mut b.req.side);
            }
            let done = if req.streams.is_empty() && req.side.is_empty() {
                // Nothing to write: durable as soon as everything before it is.
                Ok(spool_log::Appended { first_seq: 0, last_seq: expected_last, versions: Vec::new() })
            } else {
                futures::executor::block_on(log.submit(req))
            };
            match done {
                Ok(done) if done.last_seq == expected_last => {
                    for b in group {
                        host.publish(&b.events);
                        let last = b.expected_last;
                        for (reply, result) in b.answers {
                            let _ = reply.send(result);
                        }
                        host.committed(&b.touched, last, b.timers_changed);
                    }
                }
                other => {
                    let why = match other {
                        Ok(done) => format!(
                            "the log assigned sequence numbers up to {} where the sequencer folded {expected_last}",
                            done.last_seq
                        ),
                        Err(e) => e.to_string(),
                    };
                    tracing::error!(error = %why, batches = n, "a commit failed; its batches and every batch decided on them fail");
                    shared.broken_below.fetch_max(epoch + 1, Ordering::SeqCst);
                    fail_group(group, &why);
                }
            }
        }
        let mut in_flight = shared.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        *in_flight -= n;
        if *in_flight == 0 {
            shared.drained.notify_all();
        }
    }
}

fn fail_group(group: Vec<InFlight>, why: &str) {
    for b in group {
        for (reply, _) in b.answers {
            let _ = reply.send(Err(RuntimeError::Log(spool_log::Error::Storage(why.to_string()))));
        }
    }
}

/// Where a decision's folded events go.
struct Folded<'a> {
    streams: &'a mut Vec<StreamAppend>,
    envelopes: &'a mut Vec<Envelope>,
    touched: &'a mut BTreeSet<WorkKey>,
}

/// Fold a decision's streams into the working state at once (the next command of the batch
/// decides on it) and queue them for the batch's append, noting the aggregates they touch.
/// Returns the number of events.
fn fold_streams(st: &mut State, decided: &[spool_core::StreamEvents], now: u64, out: &mut Folded<'_>) -> usize {
    let mut n = 0;
    for s in decided.iter().filter(|s| !s.events.is_empty()) {
        for ev in &s.events {
            let env = Envelope {
                seq: st.applied_seq + 1,
                stream: s.stream.clone(),
                at_ms: now,
                format_version: FORMAT_VERSION,
                event: ev.clone(),
            };
            if let Some(k) = spool_core::work_key(&env.event) {
                out.touched.insert(k);
            }
            evolve(st, &env);
            // An event may also give another aggregate work (a run's end, its index's export
            // automation), known from the state it leads to.
            spool_core::also_touches(st, &env.event, |k| {
                out.touched.insert(k);
            });
            out.envelopes.push(env);
            n += 1;
        }
        out.streams.push(StreamAppend {
            stream: s.stream.clone(),
            expected: Expected::Any,
            events: s.events.iter().map(|e| NewEvent { at_ms: now, event: e.clone() }).collect(),
        });
    }
    n
}

/// The error of a command whose decision panicked or passed a bound.
fn poisoned(code: &'static str, why: &str) -> RuntimeError {
    RuntimeError::Poisoned { code, message: format!("Spool could not decide this request: {why}") }
}

/// Side writes that follow from a decision's events: a deleted connector's data key is
/// deleted in the same transaction (crypto-shredding), whoever asked for the deletion.
fn side_writes_of(keyring: &Keyring, decision: &spool_core::Decision) -> Vec<SideWrite> {
    let mut out = Vec::new();
    for s in &decision.streams {
        for ev in &s.events {
            match ev {
                spool_model::Event::ConnectorDeleted { connector_id } => {
                    out.push(keyring.shred(&connector_id.to_string()))
                }
                spool_model::Event::WebhookDeleted { webhook_id } => out.push(keyring.shred(&webhook_id.to_string())),
                _ => {}
            }
        }
    }
    out
}
