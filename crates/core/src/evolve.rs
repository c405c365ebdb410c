//! `evolve`: fold one envelope into the state. Pure, total, deterministic: an event that does
//! not fit the state (it cannot happen if `decide` wrote it) changes nothing. Every machine of
//! the registry ([`crate::for_each_machine!`]) sees every event, in the registry's order, and
//! folds its own.

use crate::State;
use crate::machines::Machine;
use spool_model::Envelope;

macro_rules! evolve_registry {
    ($($module:ident $Var:ident),* $(,)?) => {
        fn evolve_machines(state: &mut State, env: &Envelope) {
            $(<crate::machines::$module::Machine as Machine>::evolve(state, env);)*
        }
    };
}
crate::for_each_machine!(evolve_registry);

pub fn evolve(state: &mut State, env: &Envelope) {
    // Events fold in log order (a replay of one stream skips others, never goes back).
    debug_assert!(env.seq > state.applied_seq, "event {} folded after {}", env.seq, state.applied_seq);
    state.applied_seq = env.seq;
    // Before the machines: usage reads the state as it was before the event (a run's segment).
    // Only here, for the partition's own events: `evolve_mirrored` does not count the catalog's.
    crate::usage::fold(state, env);
    evolve_machines(state, env);
    #[cfg(debug_assertions)]
    check_touched(state, env);
}

/// Fold a catalog event carried into an index partition (`Event::CatalogFollowed`): through
/// every machine, as the catalog folded it, without moving the partition's `applied_seq` (the
/// envelope's `seq` is the catalog's).
pub(crate) fn evolve_mirrored(state: &mut State, env: &Envelope) {
    if spool_model::mirrored_to_partitions(&env.event) {
        evolve_machines(state, env);
    }
}

/// The invariants of the aggregate an event touched, in O(1) (debug builds: every test and
/// both simulators run them on every event): a job's failed counter equals its per-status
/// index and its files plus its imported and skipped counters its files discovered; a run's segment counters never pass its segments.
#[cfg(debug_assertions)]
fn check_touched(state: &State, env: &Envelope) {
    use crate::WorkKey;
    use crate::machines::import_job::FileStatus;
    match crate::work_key(&env.event) {
        Some(WorkKey::Import(id)) => {
            if let Some(j) = state.imports.get(&id) {
                debug_assert_eq!(j.by_status.count(FileStatus::Failed) as u64, j.failed, "job {id}: failed counter");
                // Imported and skipped files are rows: every discovered file is the job's or one.
                debug_assert_eq!(
                    j.files.len() as u64 + j.imported + j.skipped,
                    u64::from(j.file_count),
                    "job {id}: files, imported and skipped"
                );
            }
        }
        Some(WorkKey::PromptRun(id)) => {
            if let Some(r) = state.prompt_runs.get(&id) {
                debug_assert!(
                    r.completed_segments + r.failed_segments <= r.segments.len() as u64,
                    "run {id}: {} completed and {} failed of {} segments",
                    r.completed_segments,
                    r.failed_segments,
                    r.segments.len()
                );
            }
        }
        _ => {}
    }
}

/// Fold envelopes, in order, into a state.
pub fn replay<'a>(mut state: State, envs: impl IntoIterator<Item = &'a Envelope>) -> State {
    for env in envs {
        evolve(&mut state, env);
    }
    state
}
