//! Effects: what must happen next, derived from the state alone. The runtime runs each effect
//! (at least once) and reports the outcome as a command; `decide` drops outcomes that no longer
//! fit, so a repeated effect is harmless. `Effect`, `WorkKey` and their dispatch are generated
//! from the registry ([`crate::for_each_machine!`]).

use crate::State;
use crate::machines::Machine;
use serde::Serialize;
use spool_model::Event;

macro_rules! effect_registry {
    ($($module:ident $Var:ident),* $(,)?) => {
        /// One line per machine; untagged, so the JSON is the machine's own
        /// (`{"ImportFile":{…}}`). A machine without effects has a line of
        /// [`NoEffect`](crate::machines::NoEffect), which has no values.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(untagged)]
        pub enum Effect {
            $($Var(<crate::machines::$module::Machine as Machine>::Effect),)*
        }

        /// The aggregate whose effects an event can change: after a batch the runtime offers
        /// the effects of exactly these, so the work per event does not grow with the state.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        pub enum WorkKey {
            $($Var(<crate::machines::$module::Machine as Machine>::Key),)*
        }

        impl Effect {
            /// The aggregate this effect works for.
            pub fn work_key(&self) -> WorkKey {
                match self {
                    $(Effect::$Var(e) => e.work_key(),)*
                }
            }
        }

        impl WorkKey {
            /// The aggregate's stream name (its id).
            pub fn stream(&self) -> String {
                match self {
                    $(WorkKey::$Var(id) => id.to_string(),)*
                }
            }
        }

        /// The aggregate with work that an event concerns, if any (at most one machine
        /// claims an event: a test checks every sample).
        pub fn work_key(event: &Event) -> Option<WorkKey> {
            $(if let Some(k) = <crate::machines::$module::Machine as Machine>::work_key(event) {
                return Some(k);
            })*
            None
        }

        /// Other aggregates an event gives work to, read from the state after it (a run's
        /// end: its index's export automation).
        pub fn also_touches(state: &State, event: &Event, mut touch: impl FnMut(WorkKey)) {
            $(if let Some(k) = <crate::machines::$module::Machine as Machine>::touched_by(state, event) {
                touch(k);
            })*
        }

        /// The effects one aggregate needs now (bounded per aggregate).
        pub fn effects_for(state: &State, key: WorkKey) -> Vec<Effect> {
            match key {
                $(WorkKey::$Var(id) => <crate::machines::$module::Machine as Machine>::effects_for(state, id)
                    .into_iter()
                    .map(Effect::$Var)
                    .collect(),)*
            }
        }

        /// Every effect pending now: the effects of each aggregate in the machines' work sets
        /// ([`Machine::with_work`]). Used at start; afterwards effects are offered per touched
        /// aggregate ([`effects_for`]).
        pub fn pending_effects(state: &State) -> Vec<Effect> {
            let mut out = Vec::new();
            $(for id in <crate::machines::$module::Machine as Machine>::with_work(state) {
                out.extend(effects_for(state, WorkKey::$Var(id)));
            })*
            out
        }
    };
}
crate::for_each_machine!(effect_registry);

/// Effects that concern one stream (for `spool replay`).
pub fn pending_effects_for(state: &State, stream: &str) -> Vec<Effect> {
    pending_effects(state).into_iter().filter(|e| e.work_key().stream() == stream).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `work_key` takes the first machine that claims an event: two claiming one would make
    /// the second's work invisible. No sample event is claimed twice.
    #[test]
    fn no_event_is_the_work_of_two_machines() {
        macro_rules! claims {
            ($($module:ident $Var:ident),* $(,)?) => {
                for event in Event::samples() {
                    let mut by = Vec::new();
                    $(if <crate::machines::$module::Machine as Machine>::work_key(&event).is_some() {
                        by.push(stringify!($module));
                    })*
                    assert!(by.len() <= 1, "{} is claimed by {by:?}", event.kind());
                }
            };
        }
        crate::for_each_machine!(claims);
    }
}
