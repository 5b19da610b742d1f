//! Checking a client's request before it is routed: first what needs no knowledge of the fleet
//! ([`decode_request`]), then what the model announced by the agents requires
//! ([`check_against_model`]).

use bytes::Bytes;
use slim_protocol::{
    decode_request_shared, limits, peek_reply_address, peek_str, ErrorCode, InferRequest,
    ModelInfo, Refusal, RequestKey, Topics,
};

/// A request that decoded and passed every field check; it has a valid reply address and key.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    /// The request.
    pub request: InferRequest,
    /// Its identity (`reply_to`, `id`).
    pub key: RequestKey,
    /// True while the request's tensor is a slice of the message it arrived in, which for a
    /// message read from a socket is a slice of the whole read buffer: whoever holds it longer
    /// than it takes to route copies it out ([`ValidRequest::own_tensor`]).
    pub shares_message: bool,
}

impl ValidRequest {
    /// A request the coordinator held (its tensor is its own or its assignment's).
    pub fn held(request: InferRequest, key: RequestKey) -> Self {
        Self {
            request,
            key,
            shares_message: false,
        }
    }

    /// Copies the tensor out of the message it arrived in, if it still shares it.
    pub fn own_tensor(&mut self) {
        if self.shares_message {
            let data = &mut self.request.input.data;
            *data = Bytes::copy_from_slice(data);
            self.shares_message = false;
        }
    }
}

/// The refusal for a payload over `max_payload_bytes`, addressed from what can be peeked.
pub fn too_large(payload: &[u8], len: usize, max_payload_bytes: usize, topics: &Topics) -> Refusal {
    Refusal::new(
        ErrorCode::TooLarge,
        format!("payload of {len} bytes exceeds the limit of {max_payload_bytes}"),
    )
    .to_peeked(&peek_reply_address(payload), topics)
}

/// Decodes a request published on the request topic of `topic_model` and checks every field.
/// The request's tensor shares `payload`'s buffer ([`decode_request_shared`]).
pub fn decode_request(
    payload: &Bytes,
    topic_model: &str,
    max_payload_bytes: usize,
    topics: &Topics,
) -> Result<ValidRequest, Refusal> {
    if payload.len() > max_payload_bytes {
        return Err(too_large(payload, payload.len(), max_payload_bytes, topics));
    }
    let request: InferRequest = decode_request_shared(payload).map_err(|e| {
        let refusal =
            match peek_str(payload, &["input", "dtype"]).filter(|d| d != "f32" && d != "u8") {
                Some(dtype) => Refusal::new(
                    ErrorCode::BadDtype,
                    format!(
                        "input dtype {:?} is not supported: use \"f32\" or \"u8\"",
                        limits::shorten(&dtype)
                    ),
                ),
                None => Refusal::new(
                    ErrorCode::Malformed,
                    format!("not a valid InferRequest: {e}"),
                ),
            };
        refusal.to_peeked(&peek_reply_address(payload), topics)
    })?;
    let reply_to = request.check_fields(topics)?;
    if request.model != topic_model {
        return Err(Refusal::new(
            ErrorCode::Malformed,
            format!(
                "published on the topic of model {:?} but names model {:?}",
                limits::shorten(topic_model),
                request.model
            ),
        )
        .to(Some(&request.id), Some(&reply_to), topics));
    }
    let key = RequestKey::new(reply_to, request.id.clone());
    Ok(ValidRequest {
        request,
        key,
        shares_message: true,
    })
}

/// Checks a valid request against the model as the agents announce it: pinned width, accuracy
/// floor and input shape.
pub fn check_against_model(valid: &ValidRequest, model: &ModelInfo) -> Result<(), Refusal> {
    let request = &valid.request;
    let refuse = |code, message: String| {
        let mut r = Refusal::new(code, message);
        r.id = Some(valid.key.id.clone());
        r.reply_to = Some(valid.key.reply_to.clone());
        Err(r)
    };
    if let Some(width) = request.width {
        if !model
            .widths
            .iter()
            .any(|w| slim_protocol::WidthKey::same(w.width, width))
        {
            let widths: Vec<f32> = model.widths.iter().map(|w| w.width).collect();
            return refuse(
                ErrorCode::UnknownWidth,
                format!("model {} has widths {widths:?}, not {width}", model.name),
            );
        }
    }
    if let Some(floor) = request.min_accuracy {
        let best = model.widths.iter().map(|w| w.top1).fold(0.0, f32::max);
        if floor > best {
            return refuse(
                ErrorCode::AccuracyUnreachable,
                format!(
                    "min_accuracy {floor} is above the best width of {} ({best})",
                    model.name
                ),
            );
        }
    }
    if !request.input.is_sample_of(&model.input_shape) {
        return refuse(
            ErrorCode::BadShape,
            format!(
                "model {} takes [C,H,W] = {:?} (or [1,C,H,W]), got {:?}",
                model.name, model.input_shape, request.input.shape
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use slim_protocol::{encode, Tensor};

    use super::*;

    fn request() -> InferRequest {
        let mut r = InferRequest::new("r1", "digits", Tensor::from_u8(vec![1, 8, 8], vec![0; 64]));
        r.reply_to = Some("replies/me".into());
        r
    }

    #[test]
    fn an_oversized_payload_is_refused_on_its_peeked_address() {
        let t = Topics::default();
        let e = decode_request(&encode(&request()).into(), "digits", 10, &t).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge);
        assert_eq!(e.reply_to.as_deref(), Some("replies/me"));
    }

    #[test]
    fn a_hostile_reply_topic_in_a_malformed_payload_is_never_used() {
        let t = Topics::default();
        let mut bytes = encode(&request());
        bytes.truncate(bytes.len() - 3);
        let e = decode_request(&bytes.into(), "digits", 1 << 20, &t).unwrap_err();
        assert_eq!(e.code, ErrorCode::Malformed);
        let mut r = request();
        r.reply_to = Some("slim/v1/agents/a1/assign".into());
        let mut bytes = encode(&r);
        bytes.truncate(bytes.len() - 3);
        let e = decode_request(&bytes.into(), "digits", 1 << 20, &t).unwrap_err();
        assert_eq!(e.reply_to, None, "goes to the dead-letter topic");
    }

    #[test]
    fn a_request_is_checked_against_the_announced_model() {
        let t = Topics::default();
        let valid = decode_request(&encode(&request()).into(), "digits", 1 << 20, &t).unwrap();
        assert_eq!(valid.key, RequestKey::new("replies/me", "r1"));
        let model = crate::state::tests::agent_info("a").models.remove(0);
        assert_eq!(check_against_model(&valid, &model), Ok(()));
        let mut wrong = valid.clone();
        wrong.request.input = Tensor::from_u8(vec![3, 8, 8], vec![0; 192]);
        assert_eq!(
            check_against_model(&wrong, &model).unwrap_err().code,
            ErrorCode::BadShape
        );
        let e = decode_request(&encode(&request()).into(), "other", 1 << 20, &t).unwrap_err();
        assert_eq!(e.code, ErrorCode::Malformed);
    }
}
