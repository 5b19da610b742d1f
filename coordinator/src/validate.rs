//! Checking a client's request before it is routed.

use slim_protocol::{
    decode, peek_reply_address, peek_str, ErrorCode, InferRequest, PROTOCOL_VERSION,
};

use crate::state::ClusterState;

/// A request that decoded, has a reply address, names a known model and width, and whose input
/// fits that model.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    /// The request.
    pub request: InferRequest,
    /// Where to answer.
    pub reply_to: String,
}

/// Why a request was refused, and where to say so (if known).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Explanation.
    pub message: String,
    /// Request id, when readable.
    pub id: Option<String>,
    /// Reply address, when readable.
    pub reply_to: Option<String>,
}

/// Checks a request published on the request topic for `topic_model`.
pub fn validate_request(
    payload: &[u8],
    topic_model: &str,
    max_payload_bytes: usize,
    cluster: &ClusterState,
) -> Result<ValidRequest, Refusal> {
    let peeked = || peek_reply_address(payload);
    let early = |code, message: String| {
        let p = peeked();
        Refusal {
            code,
            message,
            id: p.id,
            reply_to: p.reply_to,
        }
    };
    if payload.len() > max_payload_bytes {
        return Err(early(
            ErrorCode::TooLarge,
            format!(
                "payload of {} bytes exceeds the limit of {max_payload_bytes}",
                payload.len()
            ),
        ));
    }
    let request: InferRequest = decode(payload).map_err(|e| {
        match peek_str(payload, &["input", "dtype"]).filter(|d| d != "f32" && d != "u8") {
            Some(dtype) => early(
                ErrorCode::BadDtype,
                format!("input dtype {dtype:?} is not supported: use \"f32\" or \"u8\""),
            ),
            None => early(
                ErrorCode::Malformed,
                format!("not a valid InferRequest: {e}"),
            ),
        }
    })?;
    let refuse = |code, message: String| Refusal {
        code,
        message,
        id: Some(request.id.clone()),
        reply_to: request.reply_to.clone().filter(|r| !r.is_empty()),
    };
    if request.v != PROTOCOL_VERSION {
        return Err(refuse(
            ErrorCode::UnsupportedVersion,
            format!("protocol version {} is not {PROTOCOL_VERSION}", request.v),
        ));
    }
    let Some(reply_to) = request.reply_to.clone().filter(|r| !r.is_empty()) else {
        return Err(refuse(
            ErrorCode::MissingReplyTo,
            "the request has no reply_to".into(),
        ));
    };
    if request.id.is_empty() {
        return Err(refuse(
            ErrorCode::Malformed,
            "the request id is empty".into(),
        ));
    }
    if request.model != topic_model {
        return Err(refuse(
            ErrorCode::Malformed,
            format!(
                "published on the topic of model {topic_model:?} but names model {:?}",
                request.model
            ),
        ));
    }
    let Some(model) = cluster.model(&request.model) else {
        return Err(refuse(
            ErrorCode::UnknownModel,
            format!("no agent serves model {:?}", request.model),
        ));
    };
    if let Some(width) = request.width {
        if !model.widths.iter().any(|w| (w.width - width).abs() < 1e-3) {
            let widths: Vec<f32> = model.widths.iter().map(|w| w.width).collect();
            return Err(refuse(
                ErrorCode::UnknownWidth,
                format!("model {} has widths {widths:?}, not {width}", model.name),
            ));
        }
    }
    if let Some(floor) = request.min_accuracy {
        let best = model.widths.iter().map(|w| w.top1).fold(0.0, f32::max);
        if floor > best {
            return Err(refuse(
                ErrorCode::AccuracyUnreachable,
                format!(
                    "min_accuracy {floor} is above the best width of {} ({best})",
                    model.name
                ),
            ));
        }
    }
    if let Err(e) = request.input.validate() {
        return Err(refuse(ErrorCode::BadDtype, e.to_string()));
    }
    if !request.input.is_sample_of(&model.input_shape) {
        return Err(refuse(
            ErrorCode::BadShape,
            format!(
                "model {} takes [C,H,W] = {:?} (or [1,C,H,W]), got {:?}",
                model.name, model.input_shape, request.input.shape
            ),
        ));
    }
    Ok(ValidRequest { request, reply_to })
}
