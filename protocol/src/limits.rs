//! Limits on every field that arrives from the network, checked before the field is used.
//!
//! docs/protocol.md ("Limits") lists the same numbers. A violation is refused with the
//! [`ErrorCode`] its [`LimitError`] maps to; nothing is published to a topic that failed
//! [`check_reply_to`].

use crate::{ErrorCode, Topics};

/// Longest request id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest `reply_to` topic, in bytes.
pub const MAX_REPLY_TO_BYTES: usize = 1024;
/// Longest model or agent name, in bytes. Names are `[A-Za-z0-9._-]+`.
pub const MAX_NAME_BYTES: usize = 128;
/// Most dimensions a tensor may declare.
pub const MAX_TENSOR_DIMS: usize = 8;
/// Most classes a request may ask for in `top_k`.
pub const MAX_TOP_K: u16 = 1000;
/// Most request keys one telemetry report carries in `done` and all `batches[].requests`
/// together, counted in bytes of key text; the rest go in the next report.
pub const MAX_REPORT_KEY_BYTES: usize = 128 * 1024;
/// Deepest nesting of maps, arrays and ext values in a decoded payload. Every message type
/// needs at most 5 levels; the rest is room for fields a newer version may add. Deeper payloads
/// are refused before they are walked: each level costs the decoder stack, and a few hundred
/// levels overflow a 2 MiB thread stack (Rust's and tokio's default) in an unoptimized build.
pub const MAX_DEPTH: usize = 32;
/// Most entries in any list of an agent's status or telemetry (models, widths, profile points,
/// queues, batch records, done keys).
pub const MAX_LIST_LEN: usize = 4096;
/// Decision records in one message on `{prefix}/decisions` ([`crate::Decisions`]).
pub const MAX_DECISIONS_PER_MESSAGE: usize = 256;

/// Why a field is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The request id is empty or too long.
    #[error("the request id must be 1 to {MAX_ID_BYTES} bytes, not {0}")]
    Id(usize),
    /// `reply_to` is not a topic this system will publish to.
    #[error("reply_to {shown:?} is not a usable reply topic: {why}")]
    ReplyTo {
        /// The start of the topic, for the message.
        shown: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A model or agent name breaks the naming rule.
    #[error(
        "{what} {shown:?} is not a valid name: 1 to {MAX_NAME_BYTES} bytes of A-Z a-z 0-9 . _ -"
    )]
    Name {
        /// `model` or `agent`.
        what: &'static str,
        /// The start of the name, for the message.
        shown: String,
    },
    /// A number is NaN, infinite or out of its range.
    #[error("{0}")]
    Value(String),
}

impl LimitError {
    /// The error code a sender gets for this violation.
    pub fn code(&self) -> ErrorCode {
        match self {
            LimitError::Id(_) => ErrorCode::BadId,
            LimitError::ReplyTo { .. } => ErrorCode::BadReplyTo,
            LimitError::Name { .. } => ErrorCode::UnknownModel,
            LimitError::Value(_) => ErrorCode::BadValue,
        }
    }
}

/// At most 64 characters of `text`, for error messages about oversized fields.
pub fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(64).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// A request id: 1 to [`MAX_ID_BYTES`] bytes.
pub fn check_id(id: &str) -> Result<(), LimitError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(LimitError::Id(id.len()));
    }
    Ok(())
}

/// A model or agent name: 1 to [`MAX_NAME_BYTES`] bytes of `[A-Za-z0-9._-]`, so it is one
/// topic level, safe in file names, labels and logs.
pub fn check_name(what: &'static str, name: &str) -> Result<(), LimitError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LimitError::Name {
            what,
            shown: shorten(name),
        })
    }
}

/// A reply topic: a valid MQTT topic name (non-empty, no NUL, no `+` or `#`, not `$`-prefixed),
/// at most [`MAX_REPLY_TO_BYTES`], and not under the deployment's prefix except the client area
/// `{prefix}/clients/`.
pub fn check_reply_to(topic: &str, topics: &Topics) -> Result<(), LimitError> {
    let refuse = |why| {
        Err(LimitError::ReplyTo {
            shown: shorten(topic),
            why,
        })
    };
    if topic.is_empty() {
        return refuse("it is empty");
    }
    if topic.len() > MAX_REPLY_TO_BYTES {
        return refuse("it is longer than 1024 bytes");
    }
    if topic.contains('\0') {
        return refuse("it contains a NUL character");
    }
    // Mosquitto drops a client that publishes to a topic with control characters or Unicode
    // non-characters ("malformed packet"), so answering there would disconnect us.
    if topic.chars().any(|c| c.is_control() || is_noncharacter(c)) {
        return refuse("it contains a control character or a Unicode non-character");
    }
    if topic.contains(['+', '#']) {
        return refuse("it contains a wildcard (+ or #)");
    }
    if topic.starts_with('$') {
        return refuse("topics starting with $ belong to the broker");
    }
    // Under the deployment's prefix (the prefix itself or `{prefix}/...`) only a topic in the
    // client area `{prefix}/clients/<something>` may be used. Compared in place: this runs on
    // every request.
    if let Some(rest) = topic
        .strip_prefix(topics.prefix())
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    {
        let in_client_area = rest
            .strip_prefix("/clients/")
            .is_some_and(|client| !client.is_empty());
        if !in_client_area {
            return refuse(
                "under the deployment's prefix only the client area ({prefix}/clients/...) may be used",
            );
        }
    }
    Ok(())
}

/// U+FDD0..=U+FDEF and every code point ending in FFFE or FFFF.
fn is_noncharacter(c: char) -> bool {
    let u = c as u32;
    (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE
}

/// Free text from an agent (host name, CPU model, reasons): at most this many bytes.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Free text: at most [`MAX_TEXT_BYTES`].
pub fn check_text(what: &str, text: &str) -> Result<(), LimitError> {
    if text.len() <= MAX_TEXT_BYTES {
        Ok(())
    } else {
        Err(LimitError::Value(format!(
            "{what} is {} bytes; the limit is {MAX_TEXT_BYTES}",
            text.len()
        )))
    }
}

/// A fraction such as an accuracy floor: finite and within 0..=1.
pub fn check_fraction(what: &str, value: f32) -> Result<(), LimitError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(LimitError::Value(format!(
            "{what} must be a number from 0 to 1, not {value}"
        )))
    }
}

/// A width multiplier: finite and within (0, 4].
pub fn check_width(value: f32) -> Result<(), LimitError> {
    if value.is_finite() && value > 0.0 && value <= 4.0 {
        Ok(())
    } else {
        Err(LimitError::Value(format!(
            "width must be a number above 0 and at most 4, not {value}"
        )))
    }
}

/// A measured figure (latency, power, energy, utilization): finite and not negative.
pub fn check_measure(what: &str, value: f64) -> Result<(), LimitError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(LimitError::Value(format!(
            "{what} must be a finite, non-negative number, not {value}"
        )))
    }
}

/// A list from the network: at most [`MAX_LIST_LEN`] entries.
pub fn check_list(what: &str, len: usize) -> Result<(), LimitError> {
    if len <= MAX_LIST_LEN {
        Ok(())
    } else {
        Err(LimitError::Value(format!(
            "{what} has {len} entries; the limit is {MAX_LIST_LEN}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_topics_must_be_plain_topic_names_outside_the_deployment() {
        let t = Topics::new("slim/v1");
        for ok in [
            "replies/me",
            "slim/v1/clients/c1/replies",
            "a",
            "slim/v2/x",
            "slim/v1x/replies",
        ] {
            assert_eq!(check_reply_to(ok, &t), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "replies/+",
            "replies/#",
            "nul\0here",
            "$SYS/broker",
            "$share/g/slim/v1/requests/digits",
            "slim/v1/agents/a1/assign",
            "slim/v1/requests/digits",
            "slim/v1/errors",
            "slim/v1",
            "slim/v1/clients/",
            "replies/\u{1}",
            "replies/\u{7f}",
            "replies/\u{fdd0}",
            "replies/\u{ffff}",
        ] {
            let e = check_reply_to(bad, &t).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadReplyTo, "{bad:?}");
        }
        let long = "r/".repeat(600);
        assert!(check_reply_to(&long, &t).is_err());
        assert!(
            check_reply_to(&"x".repeat(70_000), &t)
                .unwrap_err()
                .to_string()
                .len()
                < 300
        );
    }

    #[test]
    fn ids_and_names_have_length_and_charset_limits() {
        assert!(check_id("r-1").is_ok());
        assert!(check_id(&"i".repeat(MAX_ID_BYTES)).is_ok());
        assert_eq!(check_id(""), Err(LimitError::Id(0)));
        assert_eq!(
            check_id(&"i".repeat(200_000)).unwrap_err().code(),
            ErrorCode::BadId
        );
        assert!(check_name("model", "cifar-slimresnet").is_ok());
        assert!(check_name("agent", "slim-test-1a2b-v1-agent_3.x").is_ok());
        for bad in ["", "a/b", "a+", "#", "ä", "a b", "x\0"] {
            assert!(check_name("model", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("model", &"m".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn numbers_must_be_finite_and_in_range() {
        assert!(check_fraction("min_accuracy", 0.5).is_ok());
        for bad in [f32::NAN, f32::INFINITY, -0.1, 1.1] {
            assert_eq!(
                check_fraction("min_accuracy", bad).unwrap_err().code(),
                ErrorCode::BadValue
            );
        }
        assert!(check_width(0.25).is_ok());
        assert!(check_width(f32::NAN).is_err());
        assert!(check_width(0.0).is_err());
        assert!(check_measure("power_w", 3.0).is_ok());
        assert!(check_measure("power_w", f64::NAN).is_err());
        assert!(check_measure("power_w", -1.0).is_err());
    }
}
