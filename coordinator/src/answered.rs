//! Requests answered recently, and by whom: a client that retries a request whose answer was
//! lost (a broker restart) has it re-sent to the agent that answered, which replays its cached
//! result instead of running the request again. Bounded in entries and in time; each entry is a
//! keyed 64-bit fingerprint of the request key, so its size does not depend on the key's.

use std::{
    collections::{hash_map::RandomState, HashMap, VecDeque},
    hash::BuildHasher,
    sync::Arc,
    time::{Duration, Instant},
};

use slim_protocol::RequestKey;

/// Where a request was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct AnsweredBy {
    /// The agent that reported it done.
    pub agent: Arc<str>,
    /// The width it was assigned, when this coordinator assigned it.
    pub width: Option<f32>,
}

/// Recently answered requests.
#[derive(Debug)]
pub struct Answered {
    hasher: RandomState,
    by: HashMap<u64, (AnsweredBy, Instant)>,
    order: VecDeque<(u64, Instant)>,
    capacity: usize,
    ttl: Duration,
}

impl Answered {
    /// Remembers at most `capacity` answers for at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            hasher: RandomState::new(),
            by: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// Records that `key` was answered by `by` at `now`.
    pub fn insert(&mut self, key: &RequestKey, by: AnsweredBy, now: Instant) {
        let print = self.hasher.hash_one(key);
        if self.by.insert(print, (by, now)).is_none() {
            self.order.push_back((print, now));
        }
        while self.order.len() > self.capacity {
            self.evict_front();
        }
    }

    /// Who answered `key`, if it was answered within the TTL.
    pub fn get(&self, key: &RequestKey, now: Instant) -> Option<&AnsweredBy> {
        let (by, at) = self.by.get(&self.hasher.hash_one(key))?;
        (now.saturating_duration_since(*at) <= self.ttl).then_some(by)
    }

    /// Forgets entries older than the TTL.
    pub fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > self.ttl)
        {
            self.evict_front();
        }
    }

    fn evict_front(&mut self) {
        if let Some((print, at)) = self.order.pop_front() {
            // Only if it was not answered again since (a newer entry owns the map slot).
            if self.by.get(&print).is_some_and(|(_, t)| *t == at) {
                self.by.remove(&print);
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.by.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.by.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(agent: &str) -> AnsweredBy {
        AnsweredBy {
            agent: agent.into(),
            width: Some(0.5),
        }
    }

    #[test]
    fn an_answer_is_remembered_for_its_ttl_and_capacity() {
        let t0 = Instant::now();
        let k = |id: &str| RequestKey::new("r", id);
        let mut a = Answered::new(2, Duration::from_secs(10));
        a.insert(&k("1"), by("a1"), t0);
        assert_eq!(a.get(&k("1"), t0).map(|b| &*b.agent), Some("a1"));
        assert_eq!(a.get(&RequestKey::new("other", "1"), t0), None);
        assert_eq!(a.get(&k("1"), t0 + Duration::from_secs(11)), None);
        a.insert(&k("2"), by("a2"), t0);
        a.insert(&k("3"), by("a3"), t0);
        assert_eq!(a.len(), 2);
        assert_eq!(a.get(&k("1"), t0), None, "evicted by capacity");
        a.expire(t0 + Duration::from_secs(11));
        assert!(a.is_empty());
    }
}
