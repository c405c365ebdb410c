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
            Err(e) => {
                tracing::error!(error = %e, "reading the catalog panicked; trying again");
                Vec::new()
            }
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
            // Read, with nothing to fold: a catch-up starts after it.
            rt.catalog_scanned.fetch_max(pos, std::sync::atomic::Ordering::SeqCst);
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

/// Published domain events ingested per `Ingest` command (their deliveries join it).
const INGEST_EVENTS_MAX: usize = 16;

/// In the catalog of a partitioned cluster: follow every index partition's log and decide the
/// deliveries of the domain events it published (`WebhookCommand::Ingest`, with that partition's
/// cursor in the same append: one delivery per webhook and event, `sequence` per webhook from
/// this one writer). Each partition is read from its cursor (`State::ingested`), every
/// [`FOLLOW_POLL`] when none had anything new.
pub(crate) async fn ingest_partitions(rt: Arc<Runtime>, partitions: u16) {
    let mut stop = rt.stopping.subscribe();
    rt.wait_ready().await;
    let mut recorded: Vec<u64> =
        (0..=partitions).map(|p| rt.read(|st| st.ingested.get(&p).copied().unwrap_or(0))).collect();
    let mut pos = recorded.clone();
    loop {
        let mut busy = false;
        for p in 1..=partitions {
            if *stop.borrow() {
                return;
            }
            let i = usize::from(p);
            let (log, from) = (rt.log().clone(), pos[i] + 1);
            let batch =
                match tokio::task::spawn_blocking(move || log.read_partition(i32::from(p), from, FOLLOW_BATCH)).await {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => {
                        tracing::warn!(partition = p, error = %e, "reading an index partition failed; trying again");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(partition = p, error = %e, "reading an index partition panicked; trying again");
                        continue;
                    }
                };
            let Some(last) = batch.last().map(|e| e.seq) else { continue };
            busy = true;
            let published: Vec<MirroredEvent> = batch
                .into_iter()
                .filter(|e| matches!(e.event, spool_model::Event::DomainEventPublished { .. }))
                .map(|e| MirroredEvent { seq: e.seq, at_ms: e.at_ms, stream: e.stream, event: e.event })
                .collect();
            if published.is_empty() && last - recorded[i] < SKIPPED_RECORD_EVERY {
                pos[i] = last;
                continue;
            }
            let chunks: Vec<&[MirroredEvent]> =
                if published.is_empty() { vec![&[]] } else { published.chunks(INGEST_EVENTS_MAX).collect() };
            let n = chunks.len();
            let mut after = recorded[i];
            let mut failed = false;
            for (k, chunk) in chunks.into_iter().enumerate() {
                let through_seq = if k + 1 == n { last } else { chunk.last().map(|m| m.seq).unwrap_or(last) };
                let cmd = spool_core::Command::Webhook(spool_core::WebhookCommand::Ingest {
                    partition: p,
                    after,
                    through_seq,
                    events: chunk.to_vec(),
                });
                match rt.execute(cmd).await {
                    Ok(_) => after = through_seq,
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "ingesting an index partition: reading again from its cursor");
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                // Read again from the cursor after a pause: a refusal that repeats (a decision
                // past its bound) must not spin.
                after = rt.read(|st| st.ingested.get(&p).copied().unwrap_or(0));
                busy = false;
            }
            recorded[i] = after;
            pos[i] = after;
        }
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

impl Runtime {
    /// The catalog of a partitioned cluster (its indexes live in the index partitions).
    pub fn is_partitioned_catalog(&self) -> bool {
        self.cfg.index_partitions > 0
    }

    /// In an index partition: read the catalog now and fold what is new, without waiting for
    /// the follower's next look (a request named a key, connector or prompt the catalog may have
    /// made since). It reads from where the follower last read (what lies between the
    /// partition's recorded position and there holds nothing to fold) until the catalog has
    /// nothing more, at most [`CATCH_UP_READS_MAX`] reads; after a refusal (the follower moved
    /// meanwhile) it reads again from where the partition then is, never from a position it
    /// did not record itself. Whether anything was folded here or by another follower.
    pub async fn catch_up_catalog(self: &Arc<Self>) -> bool {
        let Some(catalog) = self.cfg.catalog.clone() else { return false };
        let mut changed = false;
        let mut reads = 0;
        // From where the partition is; again from there after a refusal (the follower, or
        // another catch-up, recorded meanwhile: what it recorded may end before the fact this
        // catch-up is for, so reading stops only when the catalog has nothing more).
        'from_the_partition: loop {
            let mut after = self.read(|st| st.catalog_seq);
            let mut pos = after.max(self.catalog_scanned.load(std::sync::atomic::Ordering::SeqCst));
            loop {
                if reads >= CATCH_UP_READS_MAX {
                    return changed;
                }
                reads += 1;
                let (c, from) = (catalog.0.clone(), pos + 1);
                let Ok(Ok(batch)) = tokio::task::spawn_blocking(move || c.read_from(from, FOLLOW_BATCH)).await else {
                    return changed;
                };
                let Some(last) = batch.last().map(|e| e.seq) else { return changed };
                pos = last;
                let mirrored: Vec<MirroredEvent> = batch
                    .into_iter()
                    .filter(|e| spool_model::mirrored_to_partitions(&e.event))
                    .map(|e| MirroredEvent { seq: e.seq, at_ms: e.at_ms, stream: e.stream, event: e.event })
                    .collect();
                for chunk in mirrored.chunks(EVENTS_PER_RECORD_MAX) {
                    let through_seq = chunk.last().map(|m| m.seq).unwrap_or(last);
                    let cmd = spool_core::Command::Catalog(CatalogCommand::Follow {
                        after,
                        through_seq,
                        events: chunk.to_vec(),
                    });
                    changed = true;
                    if self.execute(cmd).await.is_err() {
                        continue 'from_the_partition;
                    }
                    after = through_seq;
                }
                // Everything of this batch that needs folding is folded: the rest was read.
                self.catalog_scanned.fetch_max(pos, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    /// The catalog's position this partition has folded or read past.
    pub fn catalog_followed(&self) -> u64 {
        self.read(|st| st.catalog_seq).max(self.catalog_scanned.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// In an index partition: catch up with the catalog until it has followed it through
    /// `seq` (a key revoked, a connector or prompt changed or deleted there at `seq`), within
    /// `within`. Whether it got there.
    pub async fn catch_up_catalog_to(self: &Arc<Self>, seq: u64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut idle = 0;
        loop {
            let at = self.catalog_followed();
            if at >= seq {
                return true;
            }
            // The catalog had nothing past where this partition is, three times over: `seq`
            // is not (or not yet) the catalog's.
            if tokio::time::Instant::now() >= deadline || idle >= CATCH_UP_IDLE_MAX {
                return false;
            }
            if !self.catch_up_catalog().await && self.catalog_followed() == at {
                idle += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Catch-ups in a row that find nothing new before `catch_up_catalog_to` gives up.
const CATCH_UP_IDLE_MAX: u32 = 3;

/// Catalog reads one catch-up makes at most.
const CATCH_UP_READS_MAX: u32 = 8;
