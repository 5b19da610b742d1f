//! Signed assignments: an agent that holds the deployment's assignment key runs only the
//! assignments the coordinator signed with it, so a client that can publish on the broker
//! cannot hand an agent forged work even where the broker has no ACL.
//!
//! The signature is HMAC-SHA256 over the agent id, a NUL, and the assignment's MessagePack
//! encoding with `mac` left out. Binding the agent id means an assignment signed for one agent
//! is refused by every other.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Assignment;

/// Feeds what is written to it into a MAC.
struct MacWriter<'a>(&'a mut Hmac<Sha256>);

impl std::io::Write for MacWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// The shared secret of a deployment's coordinators and agents.
#[derive(Clone)]
pub struct AssignmentKey(Vec<u8>);

impl std::fmt::Debug for AssignmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AssignmentKey(..)")
    }
}

/// Why an assignment key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read the assignment key {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key is too short to be a secret.
    #[error("the assignment key {path} holds {len} bytes; at least {MIN_KEY_BYTES} are needed (e.g. `openssl rand -hex 32 > {path}`)")]
    TooShort {
        /// The file.
        path: String,
        /// Its length after trimming.
        len: usize,
    },
}

impl AssignmentKey {
    /// A key from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// Reads a key file: its contents, with surrounding whitespace trimmed, are the key.
    pub fn from_file(path: &std::path::Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                path: shown,
                len: trimmed.len(),
            });
        }
        Ok(Self(trimmed.to_vec()))
    }

    fn mac(&self, agent: &str, assignment: &Assignment) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(agent.as_bytes());
        mac.update(&[0]);
        let unsigned = Assignment {
            mac: None,
            ..assignment.clone()
        };
        // The encoding streams into the MAC: the tensor is not copied into a buffer for it.
        rmp_serde::encode::write_named(&mut MacWriter(&mut mac), &unsigned)
            .expect("message types always serialize");
        mac
    }

    /// Signs `assignment` for `agent` (sets its `mac`).
    pub fn sign(&self, agent: &str, assignment: &mut Assignment) {
        assignment.mac = None;
        let tag = self.mac(agent, assignment).finalize().into_bytes().to_vec();
        assignment.mac = Some(tag);
    }

    /// True when `assignment` carries a valid signature for `agent` (compared in constant time).
    pub fn verify(&self, agent: &str, assignment: &Assignment) -> bool {
        match &assignment.mac {
            Some(tag) => self.mac(agent, assignment).verify_slice(tag).is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InferRequest, Tensor};

    fn assignment() -> Assignment {
        let mut request =
            InferRequest::new("r1", "digits", Tensor::from_u8(vec![1, 2, 2], vec![0; 4]));
        request.reply_to = Some("replies/me".into());
        Assignment {
            v: 1,
            request,
            width: 0.5,
            batch_size: 4,
            max_queue_delay_ms: 0,
            router: "least-loaded".into(),
            assigned_at_ms: 7,
            attempt: 0,
            mac: None,
        }
    }

    #[test]
    fn a_signed_assignment_verifies_only_for_its_agent_and_unchanged() {
        let key = AssignmentKey::new(*b"0123456789abcdef0123");
        let mut a = assignment();
        assert!(!key.verify("agent-1", &a), "unsigned");
        key.sign("agent-1", &mut a);
        assert!(key.verify("agent-1", &a));
        // The documented definition: HMAC-SHA256 over the agent id, a NUL and the encoding.
        let mut expected = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef0123").unwrap();
        expected.update(b"agent-1\0");
        expected.update(&crate::encode(&Assignment {
            mac: None,
            ..a.clone()
        }));
        assert_eq!(
            a.mac.as_deref(),
            Some(&expected.finalize().into_bytes()[..])
        );
        let decoded: Assignment = crate::decode(&crate::encode(&a)).unwrap();
        assert!(key.verify("agent-1", &decoded), "survives the wire");
        assert!(!key.verify("agent-2", &a), "bound to the agent");
        let mut tampered = a.clone();
        tampered.request.reply_to = Some("elsewhere".into());
        assert!(!key.verify("agent-1", &tampered));
        let other = AssignmentKey::new(*b"another key of 16+ bytes");
        assert!(!other.verify("agent-1", &a));
    }

    #[test]
    fn short_or_missing_key_files_are_clear_errors() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let short = dir.join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let e = AssignmentKey::from_file(&short).unwrap_err().to_string();
        assert!(e.contains("at least 16"), "{e}");
        let e = AssignmentKey::from_file(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        let good = dir.join("good");
        std::fs::write(&good, "  0123456789abcdef0123456789abcdef\n").unwrap();
        assert!(AssignmentKey::from_file(&good).is_ok());
    }
}
