//! Turning an assignment payload into a [`ValidAssignment`], or into the error its sender gets.

use std::{collections::HashMap, sync::Arc, time::Instant};

use slim_protocol::{
    decode, limits, peek_reply_address, Assignment, AssignmentKey, ErrorCode, InferRequest,
    Refusal, RequestKey, Topics, PROTOCOL_VERSION,
};

use crate::model::{InputMismatch, ModelFamily};

/// An assignment that passed every check: its model and width exist, its input fits, and it
/// has somewhere to send the answer.
#[derive(Debug, Clone)]
pub struct ValidAssignment {
    /// The client's request.
    pub request: InferRequest,
    /// Its identity; `key.reply_to` is the validated topic the answer goes to.
    pub key: RequestKey,
    /// The assignment as it arrived, kept in the durable store until answered (set by the
    /// session when the agent has a store).
    pub payload: Option<Vec<u8>>,
    /// The family to run.
    pub family: Arc<ModelFamily>,
    /// Width to run at (exactly one the family has).
    pub width: f32,
    /// Largest batch to form.
    pub batch_size: u16,
    /// Longest to wait for the batch to fill.
    pub max_queue_delay_ms: u32,
    /// Router that placed it.
    pub router: String,
    /// Re-route count.
    pub attempt: u16,
    /// Model-ready input.
    pub sample: Vec<f32>,
    /// When the agent received it.
    pub received_at: Instant,
}

/// What an agent checks assignments against, beyond its model families.
#[derive(Debug, Clone)]
pub struct AssignmentRules {
    /// This agent's id: signatures are bound to it.
    pub agent: String,
    /// The deployment's topics: reply topics are checked against its prefix.
    pub topics: Topics,
    /// Largest payload accepted.
    pub max_payload_bytes: usize,
    /// Largest batch the agent forms.
    pub max_batch: u16,
    /// Longest queue delay honoured, milliseconds (longer requests are capped).
    pub max_queue_delay_ms: u32,
    /// When set, only assignments signed with this key are run.
    pub key: Option<AssignmentKey>,
}

/// Checks an assignment payload against the loaded families and the agent's rules: first the
/// envelope (size, encoding, signature, version), then the request's fields, then whether this
/// agent can serve it. The order decides which refusal code wins.
pub fn validate_assignment(
    payload: &[u8],
    rules: &AssignmentRules,
    families: &HashMap<String, Arc<ModelFamily>>,
) -> Result<ValidAssignment, Refusal> {
    let assignment = open_envelope(payload, rules)?;
    let request = assignment.request;
    let reply_to = request.check_fields(&rules.topics)?;
    let (family, width) = servable(&request, &reply_to, assignment.width, families)?;
    let sample = family.preprocess(&request.input);
    Ok(ValidAssignment {
        width,
        batch_size: assignment.batch_size.clamp(1, rules.max_batch),
        max_queue_delay_ms: assignment.max_queue_delay_ms.min(rules.max_queue_delay_ms),
        router: if assignment.router.len() > 64 {
            limits::shorten(&assignment.router)
        } else {
            assignment.router
        },
        attempt: assignment.attempt,
        family: family.clone(),
        key: RequestKey::new(reply_to, request.id.clone()),
        request,
        sample,
        payload: None,
        received_at: Instant::now(),
    })
}

/// The assignment in `payload`, when it is small enough, decodes, is signed with the
/// deployment's key (when there is one) and speaks this protocol version.
fn open_envelope(payload: &[u8], rules: &AssignmentRules) -> Result<Assignment, Refusal> {
    let topics = &rules.topics;
    if payload.len() > rules.max_payload_bytes {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "payload of {} bytes exceeds the limit of {}",
                payload.len(),
                rules.max_payload_bytes
            ),
        )
        .to_peeked(&peek_reply_address(payload), topics));
    }
    let assignment: Assignment = decode(payload).map_err(|e| {
        Refusal::new(ErrorCode::Malformed, format!("not a valid assignment: {e}"))
            .to_peeked(&peek_reply_address(payload), topics)
    })?;
    if let Some(key) = &rules.key {
        if !key.verify(&rules.agent, &assignment) {
            // Whoever forged it chose the reply topic: the refusal goes to the dead letters.
            let mut refusal = Refusal::new(
                ErrorCode::Unauthenticated,
                "the assignment is not signed with this deployment's assignment key",
            );
            refusal.id = Some(limits::shorten(&assignment.request.id));
            return Err(refusal);
        }
    }
    if assignment.v != PROTOCOL_VERSION {
        return Err(Refusal::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not {PROTOCOL_VERSION}",
                assignment.v
            ),
        )
        .to(
            Some(&assignment.request.id),
            assignment.request.reply_to.as_deref(),
            topics,
        ));
    }
    Ok(assignment)
}

/// The family serving `request` and its plan's width, when this agent has the model, the
/// width and an input of the family's shape and dtype; otherwise the refusal, answered on
/// `reply_to`.
fn servable<'a>(
    request: &InferRequest,
    reply_to: &str,
    width: f32,
    families: &'a HashMap<String, Arc<ModelFamily>>,
) -> Result<(&'a Arc<ModelFamily>, f32), Refusal> {
    let reject = |code, message: String| {
        let mut r = Refusal::new(code, message);
        r.id = Some(request.id.clone());
        r.reply_to = Some(reply_to.to_string());
        r
    };
    let Some(family) = families.get(&request.model) else {
        return Err(reject(
            ErrorCode::UnknownModel,
            format!("this agent does not serve model {:?}", request.model),
        ));
    };
    let Some(plan) = family.plan(width) else {
        let widths: Vec<f32> = family.plans().iter().map(|p| p.entry.width).collect();
        return Err(reject(
            ErrorCode::UnknownWidth,
            format!("model {} has widths {widths:?}, not {width}", family.name()),
        ));
    };
    if let Err(mismatch) = family.check_input(&request.input) {
        let (code, message) = match mismatch {
            InputMismatch::Shape(m) => (ErrorCode::BadShape, m),
            InputMismatch::Dtype(m) => (ErrorCode::BadDtype, m),
        };
        return Err(reject(code, message));
    }
    Ok((family, plan.entry.width))
}
