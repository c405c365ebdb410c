//! The sequencer: the one owner of the state.
//!
//! API handlers, effect executors and timers submit commands into one bounded inbox
//! ([`INBOX_DEPTH_MAX`]). A dedicated OS thread takes what is queued (up to
//! [`SEQUENCER_BATCH_COMMANDS_MAX`] commands or [`SEQUENCER_BATCH_EVENTS_MAX`] events), and under
//! the state's write lock decides each command in order against the state the earlier commands
//! of the batch left (their events are folded at once), renders each answer, appends the whole
//! batch in one durable group commit, and only then answers every submitter and offers the
//! effects of the aggregates the batch touched.
//!
//! No command is ever re-decided and no aggregate is locked: decisions are totally ordered, so
//! a cancel and a late outcome can never both win. Readers take the read lock; they wait at
//! most for one batch (its decisions and its fsync) and each read is bounded by its page size.
//!
//! A failed commit answers every command of the batch with the error and rebuilds the state
//! from the log (snapshot + tail), so the in-memory state always equals the fold of the log.

use crate::runtime::{
    DECISION_EVENTS_MAX, INBOX_DEPTH_MAX, Reply, Runtime, RuntimeError, SEQUENCER_BATCH_COMMANDS_MAX,
    SEQUENCER_BATCH_EVENTS_MAX, SNAPSHOT_NAME,
};
use crate::{IdemBody, IdemKey, IdemRecord};
use spool_core::{Command, Ctx, Outcome, State, WorkKey, decide, evolve};
use spool_log::{AppendRequest, EventLog, Expected, NewEvent, READ_BATCH_MAX, SideTable, SideWrite, StreamAppend};
use spool_model::{Envelope, FORMAT_VERSION};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// How an answer is rendered from the state the command led to.
pub type Render = Box<dyn FnOnce(&State, Outcome) -> Reply + Send + 'static>;

/// A step that turns into a command inside the sequencer, against the state as the earlier
/// commands leave it: sealing a secret with its owner's data key, or merging a credentials patch
/// into the stored credentials (two concurrent patches then both land). It returns the command
/// and the side writes (data keys) that commit with it.
pub type Prepare =
    Box<dyn FnOnce(&State, &crate::Keyring) -> Result<(Command, Vec<SideWrite>), RuntimeError> + Send + 'static>;

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

/// A command waiting for the sequencer.
pub(crate) struct Submission {
    pub work: Work,
    pub idem: Option<IdemKey>,
    /// Side writes that commit with the command's events (a new data key for sealed values).
    pub side: Vec<SideWrite>,
    pub render: Render,
    pub reply: tokio::sync::oneshot::Sender<Result<(Reply, Outcome), RuntimeError>>,
}

pub(crate) type Inbox = tokio::sync::mpsc::Receiver<Submission>;

pub(crate) fn inbox() -> (tokio::sync::mpsc::Sender<Submission>, Inbox) {
    tokio::sync::mpsc::channel(INBOX_DEPTH_MAX)
}

/// Fold every durable event after the state's `applied_seq` into it.
pub(crate) fn fold_tail(log: &spool_log::RedbLog, state: &mut State) -> Result<(), spool_log::Error> {
    loop {
        let batch = log.read_from(state.applied_seq + 1, READ_BATCH_MAX)?;
        if batch.is_empty() {
            return Ok(());
        }
        for env in &batch {
            evolve(state, env);
        }
    }
}

/// The latest snapshot's state when it fits the log and this state format, else an empty state.
pub(crate) fn restore_snapshot(log: &spool_log::RedbLog) -> Result<State, spool_log::Error> {
    let head = log.head();
    match log.snapshot(SNAPSHOT_NAME)? {
        Some(s) if s.at_seq <= head => match State::from_snapshot(&s.bytes) {
            Some(st) if st.applied_seq == s.at_seq => {
                tracing::info!(at_seq = s.at_seq, "restored the state from a snapshot");
                Ok(st)
            }
            _ => {
                tracing::warn!("the snapshot is of another state format; rebuilding from the log");
                Ok(State::default())
            }
        },
        _ => Ok(State::default()),
    }
}

/// The state as the log says: the snapshot when it fits, then the tail.
pub(crate) fn load_state(log: &spool_log::RedbLog) -> Result<State, spool_log::Error> {
    let mut state = restore_snapshot(log)?;
    fold_tail(log, &mut state)?;
    Ok(state)
}

/// Fold a decision's streams into the state at once (the next command of the batch decides on
/// it) and queue them for the batch's append, noting the aggregates they touch. Returns the
/// number of events.
fn fold_streams(
    st: &mut State,
    decided: &[spool_core::StreamEvents],
    now: u64,
    streams: &mut Vec<StreamAppend>,
    touched: &mut BTreeSet<WorkKey>,
) -> usize {
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
                touched.insert(k);
            }
            evolve(st, &env);
            // An event may also give another aggregate work (a run's end, its index's export
            // automation), known from the state it leads to.
            if let Some(k) = spool_core::also_touches(st, &env.event) {
                touched.insert(k);
            }
            n += 1;
        }
        streams.push(StreamAppend {
            stream: s.stream.clone(),
            expected: Expected::Any,
            events: s.events.iter().map(|e| NewEvent { at_ms: now, event: e.clone() }).collect(),
        });
    }
    n
}

/// The error of a command whose decision panicked or passed a bound.
fn poisoned(code: &'static str, _cmd: &Command, why: &str) -> RuntimeError {
    RuntimeError::Poisoned { code, message: format!("Spool could not decide this request: {why}") }
}

/// What one submission of a batch came to, before the commit.
struct Decided {
    reply: tokio::sync::oneshot::Sender<Result<(Reply, Outcome), RuntimeError>>,
    result: Result<(Reply, Outcome), RuntimeError>,
}

impl Runtime {
    /// The sequencer thread: fold what the log holds beyond the snapshot, mark the runtime
    /// ready, then decide batches until the inbox closes.
    pub(crate) fn sequencer_loop(self: Arc<Self>, mut rx: Inbox) {
        {
            let mut st = self.state_mut();
            if let Err(e) = fold_tail(self.log(), &mut st) {
                tracing::error!(error = %e, "the log cannot be replayed; the sequencer stops");
                return;
            }
            self.applied.send_replace(st.applied_seq);
            // The whole log is folded and nothing is served yet (the API answers 503 until
            // ready, so no upload is being staged): every staged file an open job names is known.
            crate::runtime::sweep_uploads(&self.uploads_dir(), &st);
        }
        self.ready.send_replace(true);
        tracing::info!(head = self.log().head(), "log replayed");
        self.dispatch_effects();
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < SEQUENCER_BATCH_COMMANDS_MAX {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            self.run_batch(batch, &mut rx);
        }
        tracing::debug!("the sequencer's inbox is closed");
    }

    fn run_batch(self: &Arc<Self>, batch: Vec<Submission>, rx: &mut Inbox) {
        let mut st = self.state_mut();
        let mut streams: Vec<StreamAppend> = Vec::new();
        let mut side: Vec<SideWrite> = Vec::new();
        let mut decided: Vec<Decided> = Vec::with_capacity(batch.len());
        let mut touched: BTreeSet<WorkKey> = BTreeSet::new();
        let mut events = 0usize;
        // The timer service sleeps until the earliest timer: it is woken when that changes.
        let first_timer = st.next_timer().cloned();
        let mut pending = batch.into_iter().collect::<std::collections::VecDeque<_>>();
        while let Some(sub) = pending.pop_front() {
            let Submission { work, idem, side: mut sub_side, render, reply } = sub;
            self.commands_total.fetch_add(1, Ordering::Relaxed);
            let cmd = match work {
                Work::Command(c) => *c,
                Work::Prepared(prepare) => match prepare(&st, self.keyring()) {
                    Ok((c, extra)) => {
                        sub_side.extend(extra);
                        c
                    }
                    Err(e) => {
                        decided.push(Decided { reply, result: Err(e) });
                        continue;
                    }
                },
            };
            let now = self.clock().now_ms();
            let mut ctx = Ctx::new(now, self.ids().entropy());
            // A decision is pure: one that panics fails its command alone (the state is untouched).
            let decided_now = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide(&st, &cmd, &mut ctx)));
            let mut decision = match decided_now {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    decided.push(Decided { reply, result: Err(e.into()) });
                    continue;
                }
                Err(payload) => {
                    let what = crate::runtime::panic_message(payload.as_ref());
                    tracing::error!(command = ?cmd, panic = %what, "deciding a command panicked; it fails alone");
                    decided.push(Decided { reply, result: Err(poisoned("decision_failed", &cmd, &what)) });
                    continue;
                }
            };
            let bound = self.cfg.decision_events_max.min(DECISION_EVENTS_MAX);
            let own = decision.streams.iter().map(|s| s.events.len()).sum::<usize>();
            if own > bound {
                tracing::error!(command = ?cmd, events = own, "a decision passed DECISION_EVENTS_MAX; it fails alone");
                let why = format!("it would write {own} events; at most {bound}");
                decided.push(Decided { reply, result: Err(poisoned("decision_too_large", &cmd, &why)) });
                continue;
            }
            // Fold at once: the next command of the batch decides on this state. Then the
            // outbox: deliveries of this decision's domain events, decided on the state its events
            // left, join the same append. A panic here (or deliveries past the bound) leaves the
            // state half-folded: it is rebuilt from the log, the commands decided before in this
            // batch are answered with a retryable error (nothing of them was written), this one
            // fails alone, and the rest are decided in a new batch.
            let mut pending_streams = Vec::new();
            let mut pending_touched = BTreeSet::new();
            let folded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut n = fold_streams(&mut st, &decision.streams, now, &mut pending_streams, &mut pending_touched);
                let deliveries = spool_core::outbox(&st, &decision, &mut ctx);
                let extra = deliveries.iter().map(|s| s.events.len()).sum::<usize>();
                if own + extra > bound {
                    return Err(format!(
                        "it would write {} events with its webhook deliveries; at most {bound}",
                        own + extra
                    ));
                }
                n += fold_streams(&mut st, &deliveries, now, &mut pending_streams, &mut pending_touched);
                decision.streams.extend(deliveries);
                Ok(n)
            }));
            match folded {
                Ok(Ok(n)) => {
                    events += n;
                    streams.append(&mut pending_streams);
                    touched.append(&mut pending_touched);
                }
                failed => {
                    let (code, why) = match failed {
                        Ok(Err(why)) => ("decision_too_large", why),
                        Err(payload) => ("decision_failed", crate::runtime::panic_message(payload.as_ref())),
                        Ok(Ok(_)) => unreachable!(),
                    };
                    tracing::error!(command = ?cmd, error = %why, "folding a decision failed; it fails alone and the state is rebuilt");
                    let err = poisoned(code, &cmd, &why);
                    drop(cmd);
                    self.rebuild(&mut st);
                    let mut answered: Vec<Decided> = decided
                        .into_iter()
                        .map(|d| Decided {
                            reply: d.reply,
                            result: Err(RuntimeError::Log(spool_log::Error::Storage(
                                "another command of the same batch failed; nothing was written, try again".into(),
                            ))),
                        })
                        .collect();
                    answered.push(Decided { reply, result: Err(err) });
                    drop(st);
                    self.answer(answered);
                    let rest: Vec<Submission> = pending.into_iter().collect();
                    self.requeue(rest, rx);
                    return;
                }
            }
            side.extend(sub_side);
            side.extend(self.side_writes_of(&decision));
            let answer = render(&st, decision.outcome);
            if let Some(k) = &idem {
                let body = if k.seal {
                    match self.keyring().seal(&k.owner(), &answer.body) {
                        Ok((sealed, put)) => {
                            side.push(put);
                            IdemBody::Sealed(sealed)
                        }
                        Err(e) => {
                            // Nothing of this command may commit without its record; the batch
                            // fails as a whole and the state is rebuilt.
                            decided.push(Decided { reply, result: Err(e.into()) });
                            self.fail_batch(&mut st, decided, pending, "sealing an idempotency record failed");
                            return;
                        }
                    }
                } else {
                    IdemBody::Plain(answer.body.clone())
                };
                let rec = IdemRecord { fingerprint: k.fingerprint, status: answer.status, body, created_at_ms: now };
                side.push(SideWrite::Put { table: SideTable::Idempotency, key: k.scoped.clone(), value: rec.encode() });
            }
            decided.push(Decided { reply, result: Ok((answer, decision.outcome)) });
            if events >= SEQUENCER_BATCH_EVENTS_MAX {
                break;
            }
        }
        // What did not fit waits for the next batch, in order, ahead of newer submissions.
        let leftover: Vec<Submission> = pending.into_iter().collect();
        if streams.is_empty() && side.is_empty() {
            drop(st);
            self.answer(decided);
            self.requeue(leftover, rx);
            return;
        }
        let req = AppendRequest { streams, side };
        let expected_last = st.applied_seq;
        match futures::executor::block_on(self.log().append(req)) {
            Ok(done) if done.last_seq == expected_last => {
                let timers = st.next_timer() != first_timer.as_ref();
                self.applied.send_replace(expected_last);
                drop(st);
                self.answer(decided);
                self.after_commit(&touched, expected_last, timers);
            }
            Ok(done) => {
                tracing::error!(
                    expected_last,
                    got = done.last_seq,
                    "the log assigned other sequence numbers than the sequencer folded; rebuilding the state"
                );
                self.rebuild(&mut st);
                drop(st);
                self.answer(decided);
            }
            Err(e) => {
                tracing::error!(error = %e, "a batch did not commit; its commands fail and the state is rebuilt");
                let msg = e.to_string();
                self.rebuild(&mut st);
                drop(st);
                let failed = decided
                    .into_iter()
                    .map(|d| Decided {
                        reply: d.reply,
                        result: Err(RuntimeError::Log(spool_log::Error::Storage(msg.clone()))),
                    })
                    .collect();
                self.answer(failed);
            }
        }
        self.requeue(leftover, rx);
    }

    /// Submissions a full batch could not take are decided next, before anything newer.
    fn requeue(self: &Arc<Self>, leftover: Vec<Submission>, rx: &mut Inbox) {
        if !leftover.is_empty() {
            self.run_batch(leftover, rx);
        }
    }

    fn fail_batch(
        self: &Arc<Self>,
        st: &mut State,
        decided: Vec<Decided>,
        pending: std::collections::VecDeque<Submission>,
        why: &str,
    ) {
        self.rebuild(st);
        let mut all = decided;
        for p in pending {
            all.push(Decided { reply: p.reply, result: Err(RuntimeError::Log(spool_log::Error::Storage(why.into()))) });
        }
        let all = all
            .into_iter()
            .map(|d| match d.result {
                Ok(_) => {
                    Decided { reply: d.reply, result: Err(RuntimeError::Log(spool_log::Error::Storage(why.into()))) }
                }
                err => Decided { reply: d.reply, result: err },
            })
            .collect();
        self.answer(all);
    }

    /// The state again from the log (after a failed commit): what is durable is the truth.
    fn rebuild(&self, st: &mut State) {
        match load_state(self.log()) {
            Ok(fresh) => {
                *st = fresh;
                self.applied.send_replace(st.applied_seq);
            }
            Err(e) => {
                // Readers keep the state of before; nothing new can commit while the log fails.
                tracing::error!(error = %e, "rebuilding the state from the log failed");
            }
        }
    }

    fn answer(&self, decided: Vec<Decided>) {
        for d in decided {
            let _ = d.reply.send(d.result);
        }
    }

    /// Side writes that follow from a decision's events: a deleted connector's data key is
    /// deleted in the same transaction (crypto-shredding), whoever asked for the deletion.
    fn side_writes_of(&self, decision: &spool_core::Decision) -> Vec<SideWrite> {
        let mut out = Vec::new();
        for s in &decision.streams {
            for ev in &s.events {
                match ev {
                    spool_model::Event::ConnectorDeleted { connector_id } => {
                        out.push(self.keyring().shred(&connector_id.to_string()))
                    }
                    spool_model::Event::WebhookDeleted { webhook_id } => {
                        out.push(self.keyring().shred(&webhook_id.to_string()))
                    }
                    _ => {}
                }
            }
        }
        out
    }
}
