//! Error replies: what a sender gets back when its message cannot be served.

use serde::{Deserialize, Serialize};

/// Machine-readable reason, stable across versions. Serialized in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The payload is not MessagePack, or not the expected message.
    Malformed,
    /// The `v` field names a protocol version this process does not speak.
    UnsupportedVersion,
    /// No agent serves this model.
    UnknownModel,
    /// The model has no such width.
    UnknownWidth,
    /// The input shape is not the model's.
    BadShape,
    /// The input dtype is not `f32` or `u8`, or the bytes do not match the shape.
    BadDtype,
    /// The payload exceeds the configured size limit.
    TooLarge,
    /// The request has no `reply_to`.
    MissingReplyTo,
    /// No width meets the requested accuracy floor.
    AccuracyUnreachable,
    /// No online agent can take the request now.
    NoCapacity,
    /// The agent restarted while holding the request and could not finish it.
    Interrupted,
    /// A fault inside the system; the message says which.
    Internal,
    /// `reply_to` is not a topic the system will publish to (see docs/protocol.md, Limits);
    /// this reply goes to `{prefix}/errors`.
    BadReplyTo,
    /// The request id is empty or longer than 256 bytes.
    BadId,
    /// A number is NaN, infinite or out of range (input elements, `min_accuracy`, `width`).
    BadValue,
    /// A bound was hit (queued or held requests); try again later.
    Overloaded,
    /// An assignment without a valid signature reached an agent that requires one.
    Unauthenticated,
}

impl ErrorCode {
    /// All codes, for metrics and docs.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::Malformed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownModel,
        ErrorCode::UnknownWidth,
        ErrorCode::BadShape,
        ErrorCode::BadDtype,
        ErrorCode::TooLarge,
        ErrorCode::MissingReplyTo,
        ErrorCode::AccuracyUnreachable,
        ErrorCode::NoCapacity,
        ErrorCode::Interrupted,
        ErrorCode::Internal,
        ErrorCode::BadReplyTo,
        ErrorCode::BadId,
        ErrorCode::BadValue,
        ErrorCode::Overloaded,
        ErrorCode::Unauthenticated,
    ];

    /// The wire name, e.g. `bad_shape`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownModel => "unknown_model",
            ErrorCode::UnknownWidth => "unknown_width",
            ErrorCode::BadShape => "bad_shape",
            ErrorCode::BadDtype => "bad_dtype",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::MissingReplyTo => "missing_reply_to",
            ErrorCode::AccuracyUnreachable => "accuracy_unreachable",
            ErrorCode::NoCapacity => "no_capacity",
            ErrorCode::Interrupted => "interrupted",
            ErrorCode::Internal => "internal",
            ErrorCode::BadReplyTo => "bad_reply_to",
            ErrorCode::BadId => "bad_id",
            ErrorCode::BadValue => "bad_value",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Unauthenticated => "unauthenticated",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sent to a request's `reply_to` (or to `{prefix}/errors` when there is none) instead of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Protocol version.
    pub v: u16,
    /// Always `true`, so a client can tell an error from a result without knowing the schema.
    pub error: bool,
    /// The request id, when it could be read.
    #[serde(default)]
    pub id: Option<String>,
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// Which process refused: `coordinator` or `agent:{id}`.
    pub origin: String,
    /// The topic the offending message arrived on.
    #[serde(default)]
    pub topic: Option<String>,
    /// With `overloaded` from the coordinator: how long, in ms, the sender should hold its next
    /// requests for the same model (the coordinator expects room by then). The coordinator sends
    /// 1 to [`MAX_RETRY_AFTER_MS`]; a client clamps what it reads to that range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u32>,
}

/// The longest `retry_after_ms` the coordinator sends, and the most a client holds requests for.
pub const MAX_RETRY_AFTER_MS: u32 = 1_000;

impl ErrorReply {
    /// An error reply from `origin`.
    pub fn new(
        id: Option<String>,
        code: ErrorCode,
        message: impl Into<String>,
        origin: impl Into<String>,
    ) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            error: true,
            id,
            code,
            message: message.into(),
            origin: origin.into(),
            topic: None,
            retry_after_ms: None,
        }
    }

    /// Asks the sender to hold its next requests for the same model for `retry_after_ms`.
    pub fn retry_after(mut self, retry_after_ms: Option<u32>) -> Self {
        self.retry_after_ms = retry_after_ms;
        self
    }

    /// Records the topic the offending message came in on.
    pub fn on_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_to_their_documented_names() {
        for code in ErrorCode::ALL {
            let bytes = rmp_serde::to_vec(&code).unwrap();
            let name: String = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(name, code.as_str());
        }
    }

    #[test]
    fn retry_after_is_optional_on_the_wire() {
        let plain = ErrorReply::new(
            Some("r1".into()),
            ErrorCode::Overloaded,
            "busy",
            "coordinator",
        );
        let bytes = crate::encode(&plain);
        // Absent when unset, so replies read by older clients are unchanged.
        assert!(!bytes.windows(14).any(|w| w == b"retry_after_ms"));
        assert_eq!(crate::decode::<ErrorReply>(&bytes).unwrap(), plain);
        let hinted = plain.retry_after(Some(250));
        let decoded: ErrorReply = crate::decode(&crate::encode(&hinted)).unwrap();
        assert_eq!(decoded.retry_after_ms, Some(250));
    }
}
