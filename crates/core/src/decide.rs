//! `decide`: a command and the state in, events (or a refusal) out. Pure. The dispatch to
//! each machine's `decide` is generated from the registry ([`crate::for_each_machine!`]).

use crate::command::EngineCommand;
use crate::machines::{Machine, api_key, connector, index, webhook};
use crate::{Command, Ctx, DomainError, State};
use spool_model::{Event, Scope};

pub use api_key::{KEY_EXPIRY_DAYS_MAX, KEY_NAME_CHARS_MAX, KEY_PREFIX_CHARS};
pub use connector::{
    CONNECTOR_NAME_CHARS_MAX, EXPORT_BASE_PATH_CHARS_MAX, TEST_ERROR_CHARS_MAX, normalize_export_base_path,
};
pub use index::{INDEX_DESCRIPTION_CHARS_MAX, INDEX_NAME_CHARS_MAX};

/// Events for one stream. The sequencer appends decisions in the order it made them, so no
/// expected version is needed: nothing else writes events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvents {
    pub stream: String,
    pub events: Vec<Event>,
}

macro_rules! outcome_enum {
    ($($module:ident $Var:ident),* $(,)?) => {
        /// What a command resolved to, so the caller can render its answer from the state: the
        /// aggregate of a machine (one variant per machine of the registry, holding its key),
        /// or one of the few answers that are not an aggregate.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Outcome {
            $($Var(<crate::machines::$module::Machine as Machine>::Key),)*
            /// A webhook's delivery.
            Delivery(spool_model::DeliveryId),
            /// A manual segment retry of a run.
            SegmentRetry(spool_model::PromptRunId, spool_model::RetryId),
            /// Nothing to show (effect outcomes, usage records, timers).
            Done,
        }
    };
}
crate::for_each_machine!(outcome_enum);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub streams: Vec<StreamEvents>,
    pub outcome: Outcome,
}

impl Decision {
    /// Events for one stream.
    pub fn one(stream: String, events: Vec<Event>, outcome: Outcome) -> Decision {
        Decision { streams: vec![StreamEvents { stream, events }], outcome }
    }

    /// No events.
    pub fn nothing(outcome: Outcome) -> Decision {
        Decision { streams: Vec::new(), outcome }
    }

    pub fn is_empty(&self) -> bool {
        self.streams.iter().all(|s| s.events.is_empty())
    }
}

/// A name: trimmed not empty, at most `max` characters, no control characters.
pub(crate) fn check_name(field: &'static str, name: &str, max: usize) -> Result<String, DomainError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    let n = name.chars().count();
    if n > max {
        return Err(DomainError::invalid(field, format!("must be at most {max} characters (got {n})")));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(DomainError::invalid(field, "must not contain control characters"));
    }
    Ok(name.to_string())
}

/// The webhook deliveries of a decision's domain events, decided on the state after the
/// decision's events (the sequencer folds them first) and appended with them.
pub fn outbox(state_after: &State, decision: &Decision, ctx: &mut Ctx) -> Vec<StreamEvents> {
    webhook::outbox(state_after, decision, ctx)
}

/// The videos whose rows [`outbox`] or [`publish`] reads for this decision (`crate::rows`): the
/// runtime loads the ones the state does not hold before calling them.
pub fn outbox_rows(state_after: &State, decision: &Decision) -> Vec<crate::rows::Need> {
    webhook::outbox_rows(state_after, decision)
}

/// In an index partition of a partitioned cluster, instead of [`outbox`]: the decision's domain
/// events published with their resolved data, for the catalog to deliver.
pub fn publish(state_after: &State, decision: &Decision, ctx: &mut Ctx) -> Vec<StreamEvents> {
    webhook::publish(state_after, decision, ctx)
}

macro_rules! decide_registry {
    ($($module:ident $Var:ident),* $(,)?) => {
        /// Each machine's commands go to its own `decide`; a due timer to the machine that
        /// owns it ([`Machine::fire`]).
        pub fn decide(state: &State, cmd: &Command, ctx: &mut Ctx) -> Result<Decision, DomainError> {
            match cmd {
                $(Command::$Var(c) => <crate::machines::$module::Machine as Machine>::decide(state, c, ctx),)*
                Command::Engine(EngineCommand::FireTimer { timer }) => {
                    $(if let Some(d) = <crate::machines::$module::Machine as Machine>::fire(state, timer, ctx) {
                        return d;
                    })*
                    Err(DomainError::Stale(format!("no machine owns the timer {timer:?}")))
                }
            }
        }
    };
}
crate::for_each_machine!(decide_registry);

/// Scopes in the order the API lists them.
pub fn scope_names(scopes: &[Scope]) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}
