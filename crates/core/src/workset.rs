//! Per-status sets: the reusable index that keeps every "how many are X" and "the next few that
//! are X" question O(log n), whatever the size of the aggregate. Import jobs keep their files in
//! one; prompt runs (segments) and webhooks (deliveries) are meant to use the same type.
//!
//! The owner keeps each item's current status itself (on the item) and tells the index every
//! move, in `evolve`; views page through one status from a key onward (`range`), never
//! `skip(n)`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSets<S: Ord, K: Ord> {
    sets: BTreeMap<S, BTreeSet<K>>,
}

impl<S: Ord, K: Ord> Default for StatusSets<S, K> {
    fn default() -> Self {
        StatusSets { sets: BTreeMap::new() }
    }
}

impl<S: Ord + Copy, K: Ord + Copy> StatusSets<S, K> {
    /// A new item with this status.
    pub fn insert(&mut self, status: S, key: K) {
        self.sets.entry(status).or_default().insert(key);
    }

    /// An item left `from` for `to`.
    pub fn moved(&mut self, key: K, from: S, to: S) {
        if from == to {
            return;
        }
        self.remove(from, key);
        self.insert(to, key);
    }

    pub fn remove(&mut self, status: S, key: K) {
        if let Some(set) = self.sets.get_mut(&status) {
            set.remove(&key);
            if set.is_empty() {
                self.sets.remove(&status);
            }
        }
    }

    pub fn count(&self, status: S) -> usize {
        self.sets.get(&status).map_or(0, BTreeSet::len)
    }

    pub fn contains(&self, status: S, key: K) -> bool {
        self.sets.get(&status).is_some_and(|s| s.contains(&key))
    }

    /// The items with this status, in key order, from `from` (inclusive) onward.
    pub fn from(&self, status: S, from: K) -> impl DoubleEndedIterator<Item = K> + '_ {
        self.sets.get(&status).into_iter().flat_map(move |s| s.range(from..).copied())
    }

    /// The items with this status below `before` (exclusive), the greatest first.
    pub fn before(&self, status: S, before: K) -> impl Iterator<Item = K> + '_ {
        self.sets.get(&status).into_iter().flat_map(move |s| s.range(..before).rev().copied())
    }

    /// The items with this status, in key order.
    pub fn iter(&self, status: S) -> impl DoubleEndedIterator<Item = K> + '_ {
        self.sets.get(&status).into_iter().flat_map(|s| s.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_keep_counts_and_pages() {
        let mut s: StatusSets<u8, u32> = StatusSets::default();
        for k in 0..10 {
            s.insert(0, k);
        }
        s.moved(3, 0, 1);
        s.moved(7, 0, 1);
        s.moved(7, 1, 1);
        assert_eq!((s.count(0), s.count(1), s.count(2)), (8, 2, 0));
        assert_eq!(s.from(0, 4).take(3).collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(s.before(0, 4).take(3).collect::<Vec<_>>(), [2, 1, 0]);
        assert_eq!(s.iter(1).collect::<Vec<_>>(), [3, 7]);
        s.remove(1, 3);
        s.remove(1, 7);
        assert_eq!(s, {
            let mut t = StatusSets::default();
            for k in [0, 1, 2, 4, 5, 6, 8, 9] {
                t.insert(0, k);
            }
            t
        });
    }
}
