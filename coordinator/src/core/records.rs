//! The two records a placement publishes: the assignment, encoded with one allocation (its
//! payload, sized up front), and the decision, appended to the open [`DecisionBatch`]. The
//! strings they carry (the request, its id and model, the agent id, the router's name) are lent
//! to them, moved in and handed back, not copied. The request's tensor is copied once, from the
//! message it arrived in into the assignment, and the request handed back shares that copy.
//! The bytes are exactly [`slim_protocol::encode`]'s: the same codec, named fields.

use std::{io, mem::take};

use bytes::Bytes;
use slim_protocol::{Assignment, AssignmentKey, Decision, InferRequest, PROTOCOL_VERSION};

use super::decision_batch::DecisionBatch;

/// Bytes of an encoded assignment besides its strings, tensor shape and data, and signature:
/// field names, numbers and headers, with room to spare (at most about 250).
const ASSIGNMENT_OVERHEAD: usize = 320;

/// What an assignment says besides its request and router.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AssignmentFields {
    pub width: f32,
    pub batch_size: u16,
    pub max_queue_delay_ms: u32,
    pub assigned_at_ms: u64,
    pub attempt: u16,
}

/// An encoding buffer that notes where one given slice (by address) is written into it.
struct Marking<'a> {
    out: Vec<u8>,
    mark: &'a [u8],
    at: Option<usize>,
}

impl io::Write for Marking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.at.is_none() && std::ptr::eq(buf, self.mark) {
            self.at = Some(self.out.len());
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The encoded assignment of `request` to `agent`, signed when there is a `key`; returns the
/// request with it, its tensor's bytes now a slice of the payload's. `router` is lent to the
/// record and left as it was.
pub(crate) fn assignment(
    request: InferRequest,
    router: &mut String,
    agent: &str,
    fields: AssignmentFields,
    key: Option<&AssignmentKey>,
) -> (Bytes, InferRequest) {
    let mut assignment = Assignment {
        v: PROTOCOL_VERSION,
        request,
        width: fields.width,
        batch_size: fields.batch_size,
        max_queue_delay_ms: fields.max_queue_delay_ms,
        router: take(router),
        assigned_at_ms: fields.assigned_at_ms,
        attempt: fields.attempt,
        mac: None,
    };
    if let Some(key) = key {
        key.sign(agent, &mut assignment);
    }
    let data = assignment.request.input.data.clone();
    let mut buffer = Marking {
        out: Vec::with_capacity(assignment_capacity(&assignment)),
        mark: &data,
        at: None,
    };
    rmp_serde::encode::write_named(&mut buffer, &assignment)
        .expect("message types always serialize");
    let (at, payload) = (buffer.at, Bytes::from(buffer.out));
    // rmp writes a `bin` in one call with the caller's slice, so `at` is found (an empty
    // tensor is never written); were it not, the request copies its tensor rather than keep
    // the message it arrived in.
    debug_assert!(
        at.is_some() || data.is_empty(),
        "the tensor's place in the assignment"
    );
    assignment.request.input.data = match at {
        Some(at) => payload.slice(at..at + data.len()),
        None => Bytes::copy_from_slice(&data),
    };
    *router = assignment.router;
    (payload, assignment.request)
}

/// At least the encoded length of `a`.
fn assignment_capacity(a: &Assignment) -> usize {
    let r = &a.request;
    ASSIGNMENT_OVERHEAD
        + r.id.len()
        + r.model.len()
        + r.reply_to.as_ref().map_or(0, String::len)
        + 5 * r.input.shape.len()
        + r.input.data.len()
        + a.router.len()
        + a.mac.as_ref().map_or(0, |mac| mac.len() + 8)
}

/// What a decision says besides its strings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecisionFigures {
    pub width: f32,
    pub batch_size: u16,
    pub at_ms: u64,
    pub candidates: u16,
    pub agent_outstanding: u32,
    pub attempt: u16,
}

/// Appends the decision record of placing `request` on `agent` to `batch`, after `with` has
/// seen it; the encoded batch when that filled it. The request's id and model, `agent` and
/// `router` are lent to the record and left as they were.
pub(crate) fn decision(
    request: &mut InferRequest,
    agent: &mut String,
    router: &mut String,
    figures: DecisionFigures,
    with: impl FnOnce(&Decision),
    batch: &mut DecisionBatch,
) -> Option<Vec<u8>> {
    let decision = Decision {
        v: PROTOCOL_VERSION,
        request_id: take(&mut request.id),
        model: take(&mut request.model),
        agent: take(agent),
        width: figures.width,
        batch_size: figures.batch_size,
        router: take(router),
        at_ms: figures.at_ms,
        candidates: figures.candidates,
        agent_outstanding: figures.agent_outstanding,
        attempt: figures.attempt,
    };
    with(&decision);
    let full = batch.push(&decision);
    request.id = decision.request_id;
    request.model = decision.model;
    *agent = decision.agent;
    *router = decision.router;
    full
}

#[cfg(test)]
mod tests {
    use slim_protocol::{decode, encode, Decisions, Tensor};

    use super::*;

    /// A request with every optional field set, at its widest.
    fn request(tensor: Tensor) -> InferRequest {
        let mut r = InferRequest::new("r".repeat(200), "m".repeat(64), tensor);
        r.reply_to = Some("replies/".repeat(120));
        r.width = Some(0.75);
        r.min_accuracy = Some(0.5);
        r.deadline_ms = Some(u32::MAX);
        r.top_k = Some(u16::MAX);
        r.sent_at_ms = Some(u64::MAX);
        r
    }

    fn fields() -> AssignmentFields {
        AssignmentFields {
            width: 0.5,
            batch_size: u16::MAX,
            max_queue_delay_ms: u32::MAX,
            assigned_at_ms: u64::MAX,
            attempt: u16::MAX,
        }
    }

    #[test]
    fn an_assignment_is_encoded_as_the_protocol_encodes_it_in_one_buffer_and_signed() {
        let key = AssignmentKey::new(*b"0123456789abcdef0123");
        let tensors = [
            Tensor::from_u8(vec![1, 8, 8], vec![9; 64]),
            Tensor::from_f32(vec![u32::MAX, 3, 32, 32], &[0.5; 3 * 32 * 32]),
        ];
        for (tensor, key) in tensors.into_iter().zip([None, Some(&key)]) {
            let original = request(tensor);
            let mut router = "ppo:efficiency+online".to_string();
            let (payload, back) =
                assignment(original.clone(), &mut router, "agent-1", fields(), key);
            assert_eq!(
                (&back, router.as_str()),
                (&original, "ppo:efficiency+online")
            );
            assert!(
                super::super::tests::within(&payload, &back.input.data),
                "the request handed back shares the assignment's copy of its tensor"
            );
            let decoded: Assignment = decode(&payload).unwrap();
            assert_eq!(payload, encode(&decoded), "the protocol's bytes");
            assert!(
                payload.len() <= assignment_capacity(&decoded),
                "one allocation"
            );
            assert_eq!(decoded.request, original);
            assert_eq!(decoded.router, "ppo:efficiency+online");
            if let Some(key) = key {
                assert!(key.verify("agent-1", &decoded));
            }
        }
    }

    #[test]
    fn a_decision_joins_the_batch_as_the_protocol_encodes_it_and_lends_its_strings_back() {
        let mut r = request(Tensor::from_u8(vec![1, 8, 8], vec![9; 64]));
        let original = r.clone();
        let (mut agent, mut router) = ("a".repeat(128), "least-loaded".to_string());
        let figures = DecisionFigures {
            width: 0.25,
            batch_size: u16::MAX,
            at_ms: u64::MAX,
            candidates: u16::MAX,
            agent_outstanding: u32::MAX,
            attempt: u16::MAX,
        };
        let mut seen = None;
        let mut batch = DecisionBatch::new("c");
        let full = decision(
            &mut r,
            &mut agent,
            &mut router,
            figures,
            |d| seen = Some(d.clone()),
            &mut batch,
        );
        assert_eq!(full, None, "one record does not fill a batch");
        let seen = seen.unwrap();
        let batch: Decisions = decode(&batch.take().unwrap()).unwrap();
        assert_eq!(batch.decisions, std::slice::from_ref(&seen));
        assert_eq!(
            (seen.request_id.as_str(), seen.agent.len()),
            (original.id.as_str(), 128)
        );
        assert_eq!(
            (r, agent.len(), router.as_str()),
            (original, 128, "least-loaded")
        );
    }
}
