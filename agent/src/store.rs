//! The agent's durable state (sled): the outbox of messages that could not be published while
//! the broker was unreachable, and the requests accepted but not yet answered.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A message waiting for the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Topic.
    pub topic: String,
    /// Payload.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// QoS level (0, 1 or 2).
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// When it was stored, ms since the epoch.
    pub stored_at_ms: u64,
}

/// Limits on the outbox.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxLimits {
    /// Most bytes of payload kept; the oldest are dropped (and counted) beyond it.
    pub max_bytes: u64,
    /// Messages older than this are dropped (and counted) instead of sent, ms.
    pub max_age_ms: u64,
}

/// Durable agent state.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    outbox: sled::Tree,
    pending: sled::Tree,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("agent store: {0}")]
pub struct StoreError(String);

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::open(dir)?;
        Ok(Self {
            outbox: db.open_tree("outbox")?,
            pending: db.open_tree("pending")?,
            db,
        })
    }

    /// Appends a message to the outbox, then drops the oldest beyond the byte limit.
    /// Returns how many were dropped.
    pub fn push(&self, message: &Stored, limits: OutboxLimits) -> Result<usize, StoreError> {
        let id = self.db.generate_id()?;
        let bytes = rmp_serde::to_vec_named(message).map_err(|e| StoreError(e.to_string()))?;
        self.outbox.insert(id.to_be_bytes(), bytes)?;
        let mut total: u64 = self
            .outbox
            .iter()
            .values()
            .flatten()
            .map(|v| v.len() as u64)
            .sum();
        let mut dropped = 0;
        while total > limits.max_bytes {
            let Some((key, value)) = self.outbox.pop_min()? else {
                break;
            };
            let _ = key;
            total = total.saturating_sub(value.len() as u64);
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Takes every stored message, oldest first, dropping those older than the age limit.
    /// Returns the messages to send and how many expired.
    pub fn drain(
        &self,
        limits: OutboxLimits,
        now_ms: u64,
    ) -> Result<(Vec<Stored>, usize), StoreError> {
        let mut out = Vec::new();
        let mut expired = 0;
        while let Some((_, value)) = self.outbox.pop_min()? {
            let Ok(message) = rmp_serde::from_slice::<Stored>(&value) else {
                expired += 1;
                continue;
            };
            if now_ms.saturating_sub(message.stored_at_ms) > limits.max_age_ms {
                expired += 1;
            } else {
                out.push(message);
            }
        }
        self.outbox.flush()?;
        Ok((out, expired))
    }

    /// Messages waiting in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Records an accepted request (its assignment payload) until it is answered.
    pub fn accept(&self, id: &str, assignment: &[u8]) -> Result<(), StoreError> {
        self.pending.insert(id.as_bytes(), assignment)?;
        Ok(())
    }

    /// Forgets an answered request.
    pub fn answered(&self, id: &str) -> Result<(), StoreError> {
        self.pending.remove(id.as_bytes())?;
        Ok(())
    }

    /// Requests accepted by an earlier run and never answered: (id, assignment payload).
    pub fn unanswered(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.pending
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                Ok((String::from_utf8_lossy(&k).to_string(), v.to_vec()))
            })
            .collect()
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, at: u64, size: usize) -> Stored {
        Stored {
            topic: topic.into(),
            payload: vec![7; size],
            qos: 1,
            retain: false,
            stored_at_ms: at,
        }
    }

    fn store() -> (Store, std::path::PathBuf) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("slim-store-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Store::open(&dir).unwrap(), dir)
    }

    const ROOMY: OutboxLimits = OutboxLimits {
        max_bytes: 1 << 20,
        max_age_ms: 60_000,
    };

    #[test]
    fn stored_messages_come_back_oldest_first() {
        let (s, dir) = store();
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            s.push(&msg(t, 1000 + i as u64, 10), ROOMY).unwrap();
        }
        let (out, expired) = s.drain(ROOMY, 2000).unwrap();
        assert_eq!(
            out.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(expired, 0);
        assert_eq!(s.outbox_len(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_outbox_keeps_within_its_size_and_age_bounds() {
        let (s, dir) = store();
        let tight = OutboxLimits {
            max_bytes: 250,
            max_age_ms: 100,
        };
        let mut dropped = 0;
        for i in 0..5 {
            dropped += s
                .push(&msg(&format!("m{i}"), 1000 + i, 100), tight)
                .unwrap();
        }
        assert!(
            dropped >= 3,
            "only what fits in 250 bytes stays: dropped {dropped}"
        );
        let (out, expired) = s.drain(tight, 1103).unwrap();
        assert_eq!(out.last().unwrap().topic, "m4", "the newest survive");
        assert!(expired <= 1);
        assert!(out.iter().all(|m| 1103 - m.stored_at_ms <= 100));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn accepted_requests_survive_a_reopen_until_answered() {
        let (s, dir) = store();
        s.accept("r1", b"one").unwrap();
        s.accept("r2", b"two").unwrap();
        s.answered("r1").unwrap();
        s.flush().unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(
            s.unanswered().unwrap(),
            vec![("r2".to_string(), b"two".to_vec())]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
