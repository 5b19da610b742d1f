//! The identity of a request: its id within its sender's reply address.

use serde::{Deserialize, Serialize};

/// One request's identity, `(reply_to, id)`: two clients may pick the same id, but not the same
/// reply topic. Dedup, the coordinator's ledger, telemetry `done` lists, batch records and the
/// agent's store all key on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestKey {
    /// The request's reply topic.
    pub reply_to: String,
    /// The client-chosen id.
    pub id: String,
}

impl RequestKey {
    /// The key of the request `id` answered on `reply_to`.
    pub fn new(reply_to: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            reply_to: reply_to.into(),
            id: id.into(),
        }
    }

    /// The key as it travels in telemetry and sits in the store: `reply_to`, a NUL, `id`.
    /// A valid `reply_to` never contains NUL, so the first NUL splits it back.
    pub fn wire(&self) -> String {
        format!("{}\u{0}{}", self.reply_to, self.id)
    }

    /// Parses [`RequestKey::wire`]; `None` when there is no NUL.
    pub fn from_wire(text: &str) -> Option<Self> {
        let (reply_to, id) = text.split_once('\0')?;
        Some(Self::new(reply_to, id))
    }

    /// Bytes of key text, for size budgets.
    pub fn len(&self) -> usize {
        self.reply_to.len() + 1 + self.id.len()
    }

    /// True for the key of an empty reply topic and id (never a valid request).
    pub fn is_empty(&self) -> bool {
        self.reply_to.is_empty() && self.id.is_empty()
    }
}

impl std::fmt::Display for RequestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}", self.id, self.reply_to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_wire_form() {
        let key = RequestKey::new("replies/me", "id\u{0}with nul");
        assert_eq!(RequestKey::from_wire(&key.wire()), Some(key.clone()));
        assert_eq!(key.len(), key.wire().len());
        assert_eq!(RequestKey::from_wire("no separator"), None);
    }

    #[test]
    fn the_same_id_from_two_clients_is_two_keys() {
        assert_ne!(RequestKey::new("a/r", "1"), RequestKey::new("b/r", "1"));
    }
}
