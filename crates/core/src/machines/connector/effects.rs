use crate::WorkKey;
use spool_model::Event;

/// Connectors have no effects (tests and browses run in the API, their outcome is a command).
pub fn work_key(_event: &Event) -> Option<WorkKey> {
    None
}
