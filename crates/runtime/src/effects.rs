//! Executors: run one effect, return the command that reports its outcome.

use spool_core::{Command, Effect};

/// Run an effect. Index deletion has no dependent work yet (videos, jobs and runs arrive in
/// later machines): draining and purging complete at once.
pub(crate) async fn run(effect: &Effect) -> Command {
    match effect {
        Effect::DrainIndex { index_id, deletion_id } => {
            Command::RecordIndexDrained { index_id: *index_id, deletion_id: *deletion_id }
        }
        Effect::PurgeIndex { index_id, deletion_id } => {
            Command::RecordIndexPurged { index_id: *index_id, deletion_id: *deletion_id }
        }
    }
}
