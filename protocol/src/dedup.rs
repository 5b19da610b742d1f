//! A bounded set of recently seen request ids: MQTT delivers at least once, and a redelivered
//! request must be answered once.

use std::collections::{HashSet, VecDeque};

/// Remembers the last `capacity` ids.
#[derive(Debug)]
pub struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RecentIds {
    /// Remembers up to `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The key of a request: its id within its sender's reply address, so two clients that
    /// happen to pick the same id do not collide.
    pub fn key(reply_to: &str, id: &str) -> String {
        format!("{reply_to}\u{0}{id}")
    }

    /// Records `id`; returns false if it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_reported_once_and_old_ids_are_forgotten() {
        let mut r = RecentIds::new(2);
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        assert!(r.insert("b"));
        assert!(r.insert("c"));
        assert!(r.insert("a"), "a was evicted by c");
    }
}
