use crate::{Error, READ_BATCH_MAX};
use spool_model::Envelope;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::watch;

type Reader = Arc<dyn Fn(u64, usize) -> Result<Vec<Envelope>, Error> + Send + Sync>;

/// A follower of the log. It reads committed events in batches and, at the head, waits on
/// the writer's commit notification (a `watch` of the head sequence number).
pub struct Tail {
    next_seq: u64,
    buffered: VecDeque<Envelope>,
    head: watch::Receiver<u64>,
    read: Reader,
}

impl Tail {
    pub(crate) fn new(from_seq: u64, head: watch::Receiver<u64>, read: Reader) -> Self {
        Tail { next_seq: from_seq.max(1), buffered: VecDeque::new(), head, read }
    }

    /// The next event; waits for a commit when the tail has caught up.
    /// Errors with [`Error::Closed`] once the log is closed and every event was yielded.
    pub async fn next(&mut self) -> Result<Envelope, Error> {
        loop {
            if let Some(env) = self.buffered.pop_front() {
                return Ok(env);
            }
            let head = *self.head.borrow_and_update();
            if head >= self.next_seq {
                let batch = (self.read)(self.next_seq, READ_BATCH_MAX)?;
                if let Some(last) = batch.last() {
                    self.next_seq = last.seq + 1;
                }
                self.buffered.extend(batch);
                continue;
            }
            if self.head.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }

    /// Every event that is durable now, without waiting (up to `limit`).
    pub fn drain_ready(&mut self, limit: usize) -> Result<Vec<Envelope>, Error> {
        let mut out = Vec::new();
        while out.len() < limit {
            if let Some(env) = self.buffered.pop_front() {
                out.push(env);
                continue;
            }
            let head = *self.head.borrow_and_update();
            if head < self.next_seq {
                break;
            }
            let batch = (self.read)(self.next_seq, READ_BATCH_MAX.min(limit - out.len()))?;
            match batch.last() {
                Some(last) => self.next_seq = last.seq + 1,
                None => break,
            }
            out.extend(batch);
        }
        Ok(out)
    }
}
