use crate::WorkKey;
use spool_model::Event;

/// API keys have no effects.
pub fn work_key(_event: &Event) -> Option<WorkKey> {
    None
}
