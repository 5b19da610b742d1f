//! Turning an assignment payload into a [`ValidAssignment`], or into the error its sender gets.

use std::{collections::HashMap, sync::Arc, time::Instant};

use slim_protocol::{decode, Assignment, ErrorCode, InferRequest, PROTOCOL_VERSION};

use crate::model::{InputMismatch, ModelFamily};

/// An assignment that passed every check: its model and width exist, its input fits, and it
/// has somewhere to send the answer.
#[derive(Debug, Clone)]
pub struct ValidAssignment {
    /// The client's request.
    pub request: InferRequest,
    /// Where the answer goes.
    pub reply_to: String,
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

/// Why an assignment was refused; `reply_to` is where to say so, when known.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Explanation for the sender.
    pub message: String,
    /// The request id, when readable.
    pub id: Option<String>,
    /// The reply address, when readable.
    pub reply_to: Option<String>,
}

/// Checks an assignment payload against the loaded families.
pub fn validate_assignment(
    payload: &[u8],
    max_payload_bytes: usize,
    families: &HashMap<String, Arc<ModelFamily>>,
    max_batch: u16,
) -> Result<ValidAssignment, Rejection> {
    let peek = || slim_protocol::peek_reply_address(payload);
    if payload.len() > max_payload_bytes {
        let p = peek();
        return Err(Rejection {
            code: ErrorCode::TooLarge,
            message: format!(
                "payload of {} bytes exceeds the limit of {max_payload_bytes}",
                payload.len()
            ),
            id: p.id,
            reply_to: p.reply_to,
        });
    }
    let assignment: Assignment = decode(payload).map_err(|e| {
        let p = peek();
        Rejection {
            code: ErrorCode::Malformed,
            message: format!("not a valid assignment: {e}"),
            id: p.id,
            reply_to: p.reply_to,
        }
    })?;
    let request = assignment.request;
    let reject = |code, message: String| Rejection {
        code,
        message,
        id: Some(request.id.clone()),
        reply_to: request.reply_to.clone().filter(|r| !r.is_empty()),
    };
    if assignment.v != PROTOCOL_VERSION || request.v != PROTOCOL_VERSION {
        return Err(reject(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not {PROTOCOL_VERSION}",
                request.v.max(assignment.v)
            ),
        ));
    }
    let Some(reply_to) = request.reply_to.clone().filter(|r| !r.is_empty()) else {
        return Err(reject(
            ErrorCode::MissingReplyTo,
            "the request has no reply_to".into(),
        ));
    };
    let Some(family) = families.get(&request.model) else {
        return Err(reject(
            ErrorCode::UnknownModel,
            format!("this agent does not serve model {:?}", request.model),
        ));
    };
    let Some(plan) = family.plan(assignment.width) else {
        let widths: Vec<f32> = family.plans().iter().map(|p| p.entry.width).collect();
        return Err(reject(
            ErrorCode::UnknownWidth,
            format!(
                "model {} has widths {widths:?}, not {}",
                family.name(),
                assignment.width
            ),
        ));
    };
    if let Err(mismatch) = family.check_input(&request.input) {
        let (code, message) = match mismatch {
            InputMismatch::Shape(m) => (ErrorCode::BadShape, m),
            InputMismatch::Dtype(m) => (ErrorCode::BadDtype, m),
        };
        return Err(reject(code, message));
    }
    let sample = family.preprocess(&request.input);
    Ok(ValidAssignment {
        width: plan.entry.width,
        batch_size: assignment.batch_size.clamp(1, max_batch),
        max_queue_delay_ms: assignment.max_queue_delay_ms,
        router: assignment.router,
        attempt: assignment.attempt,
        family: family.clone(),
        reply_to,
        request,
        sample,
        received_at: Instant::now(),
    })
}
