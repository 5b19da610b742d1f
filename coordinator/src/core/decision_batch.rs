//! The decision records, batched: a placement appends its [`Decision`] to the open batch, which
//! goes out as one [`slim_protocol::Decisions`] message when it holds
//! [`MAX_DECISIONS_PER_MESSAGE`] records or at the next tick. One message per placement doubled
//! what the coordinator published (an assignment and a decision per request): under load the
//! decision's encoding, its MQTT write and the broker's handling of it were about a seventh of
//! the CPU that `slim bench --saturate` measured (docs/performance.md).
//!
//! The records are encoded into one growing buffer as they are made; the batch's header is
//! written in front of them when it goes out. The bytes are exactly [`slim_protocol::encode`]'s
//! of the `Decisions` they make.

use slim_protocol::limits::MAX_DECISIONS_PER_MESSAGE;
use slim_protocol::{Decision, PROTOCOL_VERSION};

/// Bytes of a batch's header besides the coordinator's id.
const HEADER_OVERHEAD: usize = 40;
/// Bytes one record's buffer starts with room for, per record of a full batch.
const RECORD_BYTES: usize = 160;

/// The open batch of one coordinator's decision records.
#[derive(Debug)]
pub(crate) struct DecisionBatch {
    coordinator: String,
    /// The records, each encoded as [`slim_protocol::encode`] encodes a [`Decision`].
    records: Vec<u8>,
    count: usize,
}

impl DecisionBatch {
    /// An empty batch of `coordinator`'s records.
    pub fn new(coordinator: &str) -> Self {
        Self {
            coordinator: coordinator.to_string(),
            records: Vec::new(),
            count: 0,
        }
    }

    /// Records currently in the batch.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Appends `decision`; the encoded batch when that filled it.
    pub fn push(&mut self, decision: &Decision) -> Option<Vec<u8>> {
        if self.records.capacity() == 0 {
            self.records
                .reserve(RECORD_BYTES * MAX_DECISIONS_PER_MESSAGE);
        }
        rmp_serde::encode::write_named(&mut self.records, decision)
            .expect("message types always serialize");
        self.count += 1;
        if self.count >= MAX_DECISIONS_PER_MESSAGE {
            self.take()
        } else {
            None
        }
    }

    /// The encoded batch of what it holds, if anything; it is empty afterwards.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        let mut payload =
            Vec::with_capacity(HEADER_OVERHEAD + self.coordinator.len() + self.records.len());
        let write = |payload: &mut Vec<u8>| -> Result<(), rmp::encode::ValueWriteError> {
            rmp::encode::write_map_len(payload, 3)?;
            rmp::encode::write_str(payload, "v")?;
            rmp::encode::write_uint(payload, u64::from(PROTOCOL_VERSION))?;
            rmp::encode::write_str(payload, "coordinator")?;
            rmp::encode::write_str(payload, &self.coordinator)?;
            rmp::encode::write_str(payload, "decisions")?;
            rmp::encode::write_array_len(payload, self.count as u32)?;
            Ok(())
        };
        write(&mut payload).expect("writing to a Vec cannot fail");
        payload.extend_from_slice(&self.records);
        self.records.clear();
        self.count = 0;
        Some(payload)
    }
}

#[cfg(test)]
mod tests {
    use slim_protocol::{decode, encode, Decisions};

    use super::*;

    fn decision(i: usize) -> Decision {
        Decision {
            v: PROTOCOL_VERSION,
            request_id: format!("r-{i}"),
            model: "digits".into(),
            agent: "a".repeat(i % 200),
            width: 0.25,
            batch_size: u16::MAX,
            router: "least-loaded".into(),
            at_ms: u64::MAX - i as u64,
            candidates: u16::MAX,
            agent_outstanding: u32::MAX,
            attempt: (i % 3) as u16,
        }
    }

    #[test]
    fn a_batch_is_encoded_as_the_protocol_encodes_its_records_in_order() {
        // Counts across msgpack's array headers (fix, 16 and the full batch) and ids across
        // its string headers (fix, 8 and 16 bit lengths).
        let ids = ["c".to_string(), "c".repeat(32), "c".repeat(256)];
        let counts = [1, 15, 16, 17, 200, MAX_DECISIONS_PER_MESSAGE];
        for (n, id) in counts.into_iter().zip(ids.iter().cycle()) {
            let mut batch = DecisionBatch::new(id);
            let made: Vec<Decision> = (0..n).map(decision).collect();
            let mut full = None;
            for (i, d) in made.iter().enumerate() {
                full = batch.push(d);
                assert_eq!(full.is_some(), i + 1 == MAX_DECISIONS_PER_MESSAGE);
            }
            let payload = full.or_else(|| batch.take()).unwrap();
            let expected = Decisions {
                v: PROTOCOL_VERSION,
                coordinator: id.clone(),
                decisions: made,
            };
            assert_eq!(
                payload,
                encode(&expected),
                "the protocol's bytes, {n} records"
            );
            assert_eq!(decode::<Decisions>(&payload).unwrap(), expected);
            assert_eq!((batch.len(), batch.take()), (0, None), "empty afterwards");
        }
    }

    #[test]
    fn a_full_batch_goes_out_at_once_and_the_next_starts_empty() {
        let mut batch = DecisionBatch::new("c");
        let mut out = Vec::new();
        for i in 0..MAX_DECISIONS_PER_MESSAGE + 3 {
            out.extend(batch.push(&decision(i)));
        }
        assert_eq!(out.len(), 1);
        let full: Decisions = decode(&out[0]).unwrap();
        assert_eq!(full.decisions.len(), MAX_DECISIONS_PER_MESSAGE);
        assert_eq!(full.decisions[0].request_id, "r-0");
        let rest: Decisions = decode(&batch.take().unwrap()).unwrap();
        let ids: Vec<&str> = rest
            .decisions
            .iter()
            .map(|d| d.request_id.as_str())
            .collect();
        assert_eq!(ids, ["r-256", "r-257", "r-258"]);
    }
}
