//! `evolve`: fold one envelope into the state. Pure, total, deterministic: an event that does
//! not fit the state (it cannot happen if `decide` wrote it) changes nothing. This file is the
//! registry: every machine sees every event and folds its own.

use crate::State;
use crate::machines::{api_key, connector, import_job, index, video, webhook};
use spool_model::Envelope;

pub fn evolve(state: &mut State, env: &Envelope) {
    state.applied_seq = env.seq;
    index::evolve(state, env);
    api_key::evolve(state, env);
    connector::evolve(state, env);
    import_job::evolve(state, env);
    video::evolve(state, env);
    webhook::evolve(state, env);
    crate::machines::prompt::evolve(state, env);
    crate::machines::prompt_run::evolve(state, env);
    crate::machines::export::evolve(state, env);
    crate::machines::automation::evolve(state, env);
}

/// Fold envelopes, in order, into a state.
pub fn replay<'a>(mut state: State, envs: impl IntoIterator<Item = &'a Envelope>) -> State {
    for env in envs {
        evolve(&mut state, env);
    }
    state
}
