//! The catalog follower of an index partition (`engine-spec/cluster.md`, "Partitions"): in a
//! partitioned cluster, API keys, connectors and prompts live in the catalog (partition 0),
//! and every index partition folds them too, from `CatalogFollowed` events its holder appends as
//! it reads the catalog's log. The partition's log thus holds every fact its decisions read,
//! and its replay needs no other partition. A cluster of one partition never has these events.

use crate::{Ctx, Decision, DomainError, Outcome, State};
use serde::{Deserialize, Serialize};
use spool_model::{Envelope, Event, MirroredEvent};

/// The stream of `CatalogFollowed` events.
pub const STREAM: &str = "catalog";
/// Catalog events one `CatalogFollowed` carries at most (its record stays small).
pub const EVENTS_PER_RECORD_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogCommand {
    /// The catalog was read from `after` + 1 through `through_seq`; `events` are the ones to
    /// fold here (`spool_model::mirrored_to_partitions`), in order. Refused unless the
    /// partition has followed the catalog exactly through `after` (a second follower, or one
    /// that restarted, reads again from the partition's position).
    Follow { after: u64, through_seq: u64, events: Vec<MirroredEvent> },
}

fn decide(state: &State, cmd: &CatalogCommand, _ctx: &mut Ctx) -> Result<Decision, DomainError> {
    match cmd {
        CatalogCommand::Follow { after, through_seq, events } => {
            if *after != state.catalog_seq {
                return Err(DomainError::Stale(format!(
                    "the catalog is followed through {}, not {after}",
                    state.catalog_seq
                )));
            }
            if *through_seq <= *after
                || events.len() > EVENTS_PER_RECORD_MAX
                || events
                    .iter()
                    .any(|m| m.seq <= *after || m.seq > *through_seq || !spool_model::mirrored_to_partitions(&m.event))
                || events.windows(2).any(|w| w[0].seq >= w[1].seq)
            {
                return Err(DomainError::invalid("events", "not the catalog's next events in order"));
            }
            Ok(Decision::one(
                STREAM.to_string(),
                vec![Event::CatalogFollowed { through_seq: *through_seq, events: events.clone() }],
                Outcome::Catalog(*through_seq),
            ))
        }
    }
}

fn evolve(state: &mut State, env: &Envelope) {
    if let Event::CatalogFollowed { through_seq, events } = &env.event {
        state.catalog_seq = *through_seq;
        for m in events {
            // Folded as the catalog folded it: its own time and stream (never a position of
            // this partition's log).
            let inner = Envelope {
                seq: m.seq,
                stream: m.stream.clone(),
                at_ms: m.at_ms,
                format_version: env.format_version,
                event: m.event.clone(),
            };
            crate::evolve::evolve_mirrored(state, &inner);
        }
    }
}

/// This machine in the registry (`crate::machines::for_each_machine!`).
pub struct Machine;

impl super::Machine for Machine {
    type Command = CatalogCommand;
    type Effect = super::NoEffect;
    type Key = u64;

    fn decide(state: &State, cmd: &CatalogCommand, ctx: &mut Ctx) -> Result<Decision, DomainError> {
        decide(state, cmd, ctx)
    }

    fn evolve(state: &mut State, env: &Envelope) {
        evolve(state, env)
    }
}
