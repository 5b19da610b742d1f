//! The agent's durable state (sled): the outbox of messages that could not be published while
//! the broker was unreachable, and the requests accepted but not yet answered.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use serde::{Deserialize, Serialize};
use slim_protocol::RequestKey;

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

/// The store's page cache, bytes. sled's default, 1 GiB, is no bound on a Jetson whose 8 GiB
/// are shared with the GPU. The store holds the outbox and the requests in flight, read back
/// only after a restart, so a small cache costs nothing on the live path. (It is not what made
/// the agent's RSS climb in `bench/soak.sh`: with this cap it climbed about as fast, 113.7
/// against 128.4 MiB at 300 s; docs/performance.md.)
pub const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Durable agent state.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    outbox: sled::Tree,
    pending: sled::Tree,
    /// Bytes in the outbox tree, kept as messages come and go (summing the tree on every push
    /// would cost O(n) per message during an outage).
    outbox_bytes: Arc<AtomicU64>,
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
    /// Opens (or creates) the store in `dir`, with a page cache of at most [`CACHE_BYTES`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        let outbox = db.open_tree("outbox")?;
        let bytes: u64 = outbox
            .iter()
            .values()
            .flatten()
            .map(|v| v.len() as u64)
            .sum();
        Ok(Self {
            outbox,
            pending: db.open_tree("pending")?,
            db,
            outbox_bytes: Arc::new(AtomicU64::new(bytes)),
        })
    }

    /// Appends a message to the outbox, then drops the oldest beyond the byte limit.
    /// Returns how many were dropped.
    pub fn push(&self, message: &Stored, limits: OutboxLimits) -> Result<usize, StoreError> {
        let id = self.db.generate_id()?;
        let bytes = rmp_serde::to_vec_named(message).map_err(|e| StoreError(e.to_string()))?;
        let len = bytes.len() as u64;
        self.outbox.insert(id.to_be_bytes(), bytes)?;
        let mut total = self.outbox_bytes.fetch_add(len, Ordering::Relaxed) + len;
        let mut dropped = 0;
        while total > limits.max_bytes {
            let Some((_, value)) = self.outbox.pop_min()? else {
                break;
            };
            total = self.shrink(value.len() as u64);
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Records that `len` bytes left the outbox; returns what is left.
    fn shrink(&self, len: u64) -> u64 {
        let before = self
            .outbox_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(len))
            })
            .unwrap_or(0);
        before.saturating_sub(len)
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
            self.shrink(value.len() as u64);
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
    pub fn accept(&self, key: &RequestKey, assignment: &[u8]) -> Result<(), StoreError> {
        self.pending.insert(key.wire().as_bytes(), assignment)?;
        Ok(())
    }

    /// Forgets an answered request.
    pub fn answered(&self, key: &RequestKey) -> Result<(), StoreError> {
        self.pending.remove(key.wire().as_bytes())?;
        Ok(())
    }

    /// Requests accepted by an earlier run and never answered: (key, assignment payload).
    /// Entries whose key cannot be read (written by an older agent, keyed by id alone) are
    /// returned under a key with an empty reply topic; validation then fills it in.
    pub fn unanswered(&self) -> Result<Vec<(RequestKey, Vec<u8>)>, StoreError> {
        self.pending
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                let text = String::from_utf8_lossy(&k);
                let key = RequestKey::from_wire(&text)
                    .unwrap_or_else(|| RequestKey::new("", text.to_string()));
                Ok((key, v.to_vec()))
            })
            .collect()
    }

    /// Forgets a stored request by its raw stored key (for entries [`Store::unanswered`]
    /// could not read).
    pub fn forget_raw(&self, key: &RequestKey) -> Result<(), StoreError> {
        let raw = if key.reply_to.is_empty() {
            key.id.clone()
        } else {
            key.wire()
        };
        self.pending.remove(raw.as_bytes())?;
        Ok(())
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

    /// A store in a fresh temp folder, removed when the folder is dropped.
    fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::Builder::new()
            .prefix("slim-store-test-")
            .tempdir()
            .unwrap();
        (Store::open(dir.path()).unwrap(), dir)
    }

    const ROOMY: OutboxLimits = OutboxLimits {
        max_bytes: 1 << 20,
        max_age_ms: 60_000,
    };

    #[test]
    fn stored_messages_come_back_oldest_first() {
        let (s, _dir) = store();
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
    }

    #[test]
    fn the_outbox_keeps_within_its_size_and_age_bounds() {
        let (s, _dir) = store();
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
    }

    #[test]
    fn accepted_requests_survive_a_reopen_until_answered() {
        let (s, dir) = store();
        let k = |id: &str| RequestKey::new("replies/c", id);
        s.accept(&k("r1"), b"one").unwrap();
        s.accept(&k("r2"), b"two").unwrap();
        s.accept(&RequestKey::new("replies/other", "r1"), b"other")
            .unwrap();
        s.answered(&k("r1")).unwrap();
        s.flush().unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.unanswered().unwrap(),
            vec![
                (k("r2"), b"two".to_vec()),
                (RequestKey::new("replies/other", "r1"), b"other".to_vec())
            ]
        );
    }
}
