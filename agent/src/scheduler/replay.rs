//! Answers kept for a while after they were sent, so a request retried after its answer was
//! lost (a broker restart) is answered again from here instead of being run twice. Bounded in
//! entries, bytes and time.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use slim_protocol::RequestKey;

/// Limits of a [`ReplayCache`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayLimits {
    /// Most answers kept.
    pub entries: usize,
    /// Most payload bytes kept.
    pub bytes: usize,
    /// How long an answer is kept.
    pub ttl: Duration,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        Self {
            entries: 10_000,
            bytes: 32 * 1024 * 1024,
            ttl: Duration::from_secs(120),
        }
    }
}

/// Recently sent answers by request key.
#[derive(Debug, Default)]
pub struct ReplayCache {
    limits: ReplayLimits,
    answers: HashMap<RequestKey, (Vec<u8>, Instant)>,
    order: VecDeque<(RequestKey, Instant)>,
    bytes: usize,
}

impl ReplayCache {
    /// An empty cache with `limits`.
    pub fn new(limits: ReplayLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Keeps the answer `payload` to `key`, sent at `now`.
    pub fn insert(&mut self, key: RequestKey, payload: Vec<u8>, now: Instant) {
        if payload.len() > self.limits.bytes {
            return;
        }
        self.bytes += payload.len();
        if let Some((old, _)) = self.answers.insert(key.clone(), (payload, now)) {
            self.bytes -= old.len();
        }
        self.order.push_back((key, now));
        while self.answers.len() > self.limits.entries || self.bytes > self.limits.bytes {
            if !self.evict_front() {
                break;
            }
        }
    }

    /// The answer to `key`, if it was sent within the TTL.
    pub fn get(&self, key: &RequestKey, now: Instant) -> Option<&[u8]> {
        let (payload, at) = self.answers.get(key)?;
        (now.saturating_duration_since(*at) <= self.limits.ttl).then_some(payload.as_slice())
    }

    /// Forgets answers older than the TTL.
    pub fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > self.limits.ttl)
        {
            self.evict_front();
        }
    }

    /// Evicts the oldest entry; false when there is none.
    fn evict_front(&mut self) -> bool {
        let Some((key, at)) = self.order.pop_front() else {
            return false;
        };
        // A key answered again since owns a newer slot; only the matching one goes.
        if self.answers.get(&key).is_some_and(|(_, t)| *t == at) {
            if let Some((payload, _)) = self.answers.remove(&key) {
                self.bytes -= payload.len();
            }
        }
        true
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_within_entries_bytes_and_ttl() {
        let t0 = Instant::now();
        let k = |id: &str| RequestKey::new("r", id);
        let mut c = ReplayCache::new(ReplayLimits {
            entries: 2,
            bytes: 10,
            ttl: Duration::from_secs(5),
        });
        c.insert(k("1"), vec![1; 4], t0);
        assert_eq!(c.get(&k("1"), t0), Some(&[1u8; 4][..]));
        assert_eq!(c.get(&k("1"), t0 + Duration::from_secs(6)), None);
        c.insert(k("2"), vec![2; 4], t0);
        c.insert(k("3"), vec![3; 4], t0);
        assert_eq!(c.len(), 2, "entries");
        assert_eq!(c.get(&k("1"), t0), None);
        c.insert(k("4"), vec![4; 8], t0);
        assert_eq!(c.len(), 1, "bytes: only the 8-byte answer fits");
        c.insert(k("big"), vec![0; 11], t0);
        assert_eq!(c.get(&k("big"), t0), None, "larger than the whole cache");
        c.expire(t0 + Duration::from_secs(6));
        assert!(c.is_empty());
    }
}
