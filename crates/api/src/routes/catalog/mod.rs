//! The catalog follower (`spool_core::machines::catalog`) has no routes: its commands come from
//! the runtime, which follows the catalog's log in an index partition of a partitioned cluster.

use super::Op;

/// This machine's `/api/v2` routes (`crate::routes::api_ops`): none.
pub(crate) fn ops() -> Vec<Op> {
    Vec::new()
}
