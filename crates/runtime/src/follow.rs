//! In an index partition of a partitioned cluster: follow the catalog's log (partition 0) and
//! append what this partition must fold of it (`spool_core::machines::catalog`,
//! `engine-spec/cluster.md`, "Partitions").
//!
//! The follower reads the catalog from the partition's position (`State::catalog_seq`, so a
//! new holder goes on where the last one stopped), keeps the events index partitions need
//! (`spool_model::mirrored_to_partitions`: API keys, connectors, prompts) and submits them as
//! `CatalogCommand::Follow`, at most `EVENTS_PER_RECORD_MAX` a record. A stretch of catalog
//! events with nothing to fold (deliveries, key usage) is recorded only every
//! [`SKIPPED_RECORD_EVERY`] events, so a restart reads at most that much again. The catalog is
//! polled every [`FOLLOW_POLL`]: a key revoked, a connector deleted (its data key shredded) takes
//! effect in every index partition within that, plus a commit.

use crate::Runtime;
use spool_core::machines::catalog::{CatalogCommand, EVENTS_PER_RECORD_MAX};
use spool_log::EventLog;
use spool_model::MirroredEvent;
use std::sync::Arc;
use std::time::Duration;

/// How often the catalog's log is read when it had nothing new.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Catalog events read at once.
const FOLLOW_BATCH: usize = 512;
/// A stretch of catalog events with nothing to fold is recorded once it is this long.
pub const SKIPPED_RECORD_EVERY: u64 = 10_000;

pub(crate) async fn follow_catalog(rt: Arc<Runtime>, catalog: Arc<dyn EventLog>) {
    let mut stop = rt.stopping.subscribe();
    rt.wait_ready().await;
    let mut recorded = rt.read(|st| st.catalog_seq);
    let mut pos = recorded;
    loop {
        if *stop.borrow() {
            return;
        }
        let (c, from) = (catalog.clone(), pos + 1);
        let batch = match tokio::task::spawn_blocking(move || c.read_from(from, FOLLOW_BATCH)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the catalog failed; trying again");
                Vec::new()
            }
            Err(_) => return,
        };
        let Some(last) = batch.last().map(|e| e.seq) else {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        };
        let mirrored: Vec<MirroredEvent> = batch
            .into_iter()
            .filter(|e| spool_model::mirrored_to_partitions(&e.event))
            .map(|e| MirroredEvent { seq: e.seq, at_ms: e.at_ms, stream: e.stream, event: e.event })
            .collect();
        if mirrored.is_empty() && last - recorded < SKIPPED_RECORD_EVERY {
            pos = last;
            continue;
        }
        let chunks: Vec<&[MirroredEvent]> =
            if mirrored.is_empty() { vec![&[]] } else { mirrored.chunks(EVENTS_PER_RECORD_MAX).collect() };
        let n = chunks.len();
        let mut after = recorded;
        let mut failed = false;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let through_seq = if i + 1 == n { last } else { chunk.last().map(|m| m.seq).unwrap_or(last) };
            let cmd =
                spool_core::Command::Catalog(CatalogCommand::Follow { after, through_seq, events: chunk.to_vec() });
            match rt.execute(cmd).await {
                Ok(_) => after = through_seq,
                Err(e) => {
                    // Another follower moved the position, or the log refused: read again from
                    // where the partition is.
                    tracing::warn!(error = %e, "following the catalog: reading again from this partition's position");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            after = rt.read(|st| st.catalog_seq);
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        recorded = after;
        pos = after;
    }
}
