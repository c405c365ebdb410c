//! The machines, one folder each: its commands and state (`mod.rs`), `decide.rs`, `evolve.rs`
//! and `effects.rs`, and one `impl Machine` that tells the engine what the machine is.
//!
//! [`for_each_machine!`] is the registry: the one list of machines. `Command`, `Effect`,
//! `WorkKey`, the decide/evolve/effects/timer dispatch and the not-found codes are generated
//! from it here (`crate::registry`); the runtime's effect dispatch (`spool-runtime`
//! `executors/mod.rs`) and the API's routes (`spool-api` `routes/mod.rs`) are generated from it
//! in their crates. Adding a machine: its folders (here, `executors/<name>.rs` if it has
//! effects, `routes/<name>/`), one `pub mod` line and one registry line below, its `State`
//! fields, its events.

pub mod api_key;
pub mod automation;
pub mod catalog;
pub mod connector;
pub mod export;
pub mod import_job;
pub mod index;
pub mod prompt;
pub mod prompt_run;
pub mod video;
pub mod webhook;

/// The registry: `module Variant` for each machine, in the order `evolve` folds an event
/// through them. `Variant` names the machine's line in `Command`, `Effect` and `WorkKey`;
/// `module` its folder here, its executor in the runtime and its routes in the API.
/// `for_each_machine!(callback)` calls `callback! { module Variant, … }`.
#[macro_export]
macro_rules! for_each_machine {
    ($callback:ident) => {
        $callback! {
            index Index,
            api_key ApiKey,
            connector Connector,
            import_job Import,
            video Video,
            webhook Webhook,
            prompt Prompt,
            prompt_run PromptRun,
            export Export,
            automation Automation,
            catalog Catalog,
        }
    };
}

use crate::{Ctx, Decision, DomainError, State, Timer, WorkKey};
use spool_model::{Envelope, Event};

/// What a machine is to the engine: its commands and effects, how it decides and folds, which
/// aggregate an event gives work to and what that aggregate needs next. Every function is
/// pure; the defaults are those of a machine without effects or timers.
pub trait Machine {
    /// Its commands (`Command::<Variant>`).
    type Command;
    /// Its effects (`Effect::<Variant>`); [`NoEffect`] if it has none.
    type Effect;
    /// The id of the aggregate its effects work for (`WorkKey::<Variant>`).
    type Key: Copy + std::fmt::Display;
    /// The kinds of resource it owns, each with the error code of an unknown one
    /// (`engine-spec/errors.md`). A kind named nowhere is `resource_not_found`.
    const NOT_FOUND: &'static [(&'static str, &'static str)] = &[];

    fn decide(state: &State, cmd: &Self::Command, ctx: &mut Ctx) -> Result<Decision, DomainError>;
    fn evolve(state: &mut State, env: &Envelope);

    /// The aggregate of this machine with work that an event concerns.
    fn work_key(_event: &Event) -> Option<WorkKey> {
        None
    }
    /// An aggregate of this machine that an event of another machine gives work to, read from
    /// the state after it (a run's end: its index's export automation).
    fn touched_by(_state: &State, _event: &Event) -> Option<WorkKey> {
        None
    }
    /// What one aggregate needs now (bounded per aggregate).
    fn effects_for(_state: &State, _key: Self::Key) -> Vec<Self::Effect> {
        Vec::new()
    }
    /// The aggregates with work left (a work set `evolve` keeps): offered at start.
    fn with_work(_state: &State) -> Vec<Self::Key> {
        Vec::new()
    }
    /// A due timer of this machine decided, or `None` when the timer is another machine's.
    fn fire(_state: &State, _timer: &Timer, _ctx: &mut Ctx) -> Option<Result<Decision, DomainError>> {
        None
    }
}

/// The effect of a machine without effects: it has no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum NoEffect {}

impl NoEffect {
    pub fn work_key(&self) -> WorkKey {
        match *self {}
    }
}
