//! The state as a log says: its snapshot when it fits this state format, then the events after
//! it. Used at start, after a failed commit, and by the offline tools, on any [`EventLog`].

use spool_core::{State, evolve};
use spool_log::{EventLog, READ_BATCH_MAX};

/// The name of the core state's snapshot.
pub const SNAPSHOT_NAME: &str = "core";

/// Fold every durable event after the state's `applied_seq` into it.
pub fn fold_tail<L: EventLog + ?Sized>(log: &L, state: &mut State) -> Result<(), spool_log::Error> {
    loop {
        let batch = log.read_from(state.applied_seq + 1, READ_BATCH_MAX)?;
        if batch.is_empty() {
            return Ok(());
        }
        for env in &batch {
            fold_one(log, state, env)?;
        }
    }
}

/// Fold one event of the log. An event from before the tables reads its videos' rows
/// (`spool_core::rows::fold_reads`): they are loaded for it alone, from the tables (built at
/// start, `crate::rows::ensure_tables`).
pub fn fold_one<L: EventLog + ?Sized>(
    log: &L,
    state: &mut State,
    env: &spool_model::Envelope,
) -> Result<(), spool_log::Error> {
    let reads = spool_core::rows::fold_reads(&env.event);
    if reads.is_empty() {
        evolve(state, env);
        return Ok(());
    }
    let loaded: Vec<_> = reads.iter().filter(|id| !state.rows.videos.contains_key(id)).copied().collect();
    crate::rows::load_video_rows(log, state, &loaded)?;
    evolve(state, env);
    for id in &loaded {
        state.rows.videos.remove(id);
    }
    Ok(())
}

/// The latest snapshot's state when it fits the log and this state format, else an empty state.
pub fn restore_snapshot<L: EventLog + ?Sized>(log: &L) -> Result<State, spool_log::Error> {
    let head = log.head();
    match log.snapshot(SNAPSHOT_NAME)? {
        Some(s) if s.at_seq <= head => match State::from_snapshot(&s.bytes) {
            Some(st) if st.applied_seq == s.at_seq => {
                tracing::debug!(at_seq = s.at_seq, "restored the state from a snapshot");
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
pub fn load_state<L: EventLog + ?Sized>(log: &L) -> Result<State, spool_log::Error> {
    let mut state = restore_snapshot(log)?;
    fold_tail(log, &mut state)?;
    Ok(state)
}
