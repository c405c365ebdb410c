//! The `spool_waiting` gauges of `/metrics`, kept as batches commit: each aggregate's share
//! ([`spool_core::waiting::gauge_of`]) is recomputed when a batch touches it, so a scrape reads
//! a few counters instead of walking every workflow. Built by one walk when the log is folded
//! at start; in debug builds every publish checks them against a fresh walk.

use spool_core::{State, WorkKey, waiting};
use std::collections::{BTreeMap, HashMap};

type Share = (&'static str, &'static str, u64);

#[derive(Default)]
pub(crate) struct Gauges {
    by_key: HashMap<WorkKey, Share>,
    counts: BTreeMap<(&'static str, &'static str), u64>,
}

impl Gauges {
    /// The gauges of a state, by one walk.
    pub fn of(st: &State) -> Gauges {
        let mut g = Gauges::default();
        for key in waiting::gauge_keys(st) {
            g.update(st, key);
        }
        g
    }

    /// Recompute one aggregate's share. O(log n).
    pub fn update(&mut self, st: &State, key: WorkKey) {
        if let Some((kind, reason, n)) = self.by_key.remove(&key)
            && let Some(c) = self.counts.get_mut(&(kind, reason))
        {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.counts.remove(&(kind, reason));
            }
        }
        if let Some(share @ (kind, reason, n)) = waiting::gauge_of(st, key) {
            *self.counts.entry((kind, reason)).or_insert(0) += n;
            self.by_key.insert(key, share);
        }
    }

    /// The gauges: `(kind, reason) → n`, zeros left out.
    pub fn counts(&self) -> Vec<((&'static str, &'static str), u64)> {
        self.counts.iter().map(|(k, n)| (*k, *n)).collect()
    }

    /// In debug builds: the kept gauges equal a fresh walk of the state.
    pub fn check(&self, st: &State) {
        if cfg!(debug_assertions) {
            let walked = waiting::counts(st);
            debug_assert_eq!(
                self.counts, walked,
                "the kept waiting gauges drifted from the state at seq {}",
                st.applied_seq
            );
        }
    }
}
