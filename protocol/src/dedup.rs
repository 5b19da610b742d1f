//! A bounded set of recently seen requests: MQTT delivers at least once, and a redelivered
//! request must be answered once.

use std::{
    collections::{HashSet, VecDeque},
    hash::BuildHasher,
};

use crate::RequestKey;

/// Remembers the last `capacity` request keys. It keeps a 64-bit keyed fingerprint of each
/// (SipHash with a per-process random key), so its memory does not depend on how long ids and
/// reply topics are, and a sender cannot aim for collisions.
#[derive(Debug)]
pub struct RecentIds {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl RecentIds {
    /// Remembers up to `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            hasher: Default::default(),
        }
    }

    fn fingerprint(&self, key: &RequestKey) -> u64 {
        self.hasher.hash_one(key)
    }

    /// True if `key` was recorded and not yet forgotten.
    pub fn contains(&self, key: &RequestKey) -> bool {
        self.set.contains(&self.fingerprint(key))
    }

    /// Records `key`; returns false if it was already there.
    pub fn insert(&mut self, key: &RequestKey) -> bool {
        let print = self.fingerprint(key);
        if !self.set.insert(print) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(print);
        true
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_is_reported_once_and_old_keys_are_forgotten() {
        let k = |id: &str| RequestKey::new("r", id);
        let mut r = RecentIds::new(2);
        assert!(r.insert(&k("a")));
        assert!(!r.insert(&k("a")));
        assert!(r.contains(&k("a")));
        assert!(r.insert(&k("b")));
        assert!(r.insert(&k("c")));
        assert_eq!(r.len(), 2);
        assert!(r.insert(&k("a")), "a was evicted by c");
        assert!(
            r.insert(&RequestKey::new("other", "a")),
            "another client's id"
        );
    }

    #[test]
    fn memory_does_not_grow_with_key_length() {
        let mut r = RecentIds::new(10);
        for i in 0..100 {
            r.insert(&RequestKey::new("r", format!("{i}{}", "x".repeat(100_000))));
        }
        assert_eq!(r.len(), 10);
    }
}
