//! MessagePack encoding with named fields, and a lenient peek at a payload's reply address.

use serde::{de::DeserializeOwned, Serialize};

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// Encodes a message as a MessagePack map with named fields.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Our types are plain data: serialization into a Vec cannot fail.
    rmp_serde::to_vec_named(message).expect("message types always serialize")
}

/// Decodes a message.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice(payload).map_err(|e| DecodeError(e.to_string()))
}

/// What could be read of a payload that failed to decode.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeekedAddress {
    /// The `id` field, if it is a string.
    pub id: Option<String>,
    /// The `reply_to` field, if it is a non-empty string.
    pub reply_to: Option<String>,
}

/// Reads `id` and `reply_to` from any MessagePack map, ignoring every other field, so a sender
/// of a malformed request still gets an error reply. A map nested under `request` (as in an
/// [`crate::Assignment`]) is searched too.
pub fn peek_reply_address(payload: &[u8]) -> PeekedAddress {
    let mut cursor = payload;
    let Ok(value) = rmpv::decode::read_value(&mut cursor) else {
        return PeekedAddress::default();
    };
    peek_map(&value)
}

/// The string at `path` (map keys, outermost first) of any MessagePack payload, if there is one.
pub fn peek_str(payload: &[u8], path: &[&str]) -> Option<String> {
    let mut cursor = payload;
    let mut value = rmpv::decode::read_value(&mut cursor).ok()?;
    for key in path {
        let rmpv::Value::Map(entries) = value else {
            return None;
        };
        value = entries
            .into_iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)?;
    }
    value.as_str().map(str::to_string)
}

fn peek_map(value: &rmpv::Value) -> PeekedAddress {
    let rmpv::Value::Map(entries) = value else {
        return PeekedAddress::default();
    };
    let nested = entries
        .iter()
        .find(|(k, _)| k.as_str() == Some("request"))
        .map(|(_, v)| peek_map(v))
        .unwrap_or_default();
    let field = |name: &str| {
        entries
            .iter()
            .find_map(|(k, v)| match (k.as_str(), v.as_str()) {
                (Some(key), Some(value)) if key == name && !value.is_empty() => {
                    Some(value.to_string())
                }
                _ => None,
            })
    };
    PeekedAddress {
        id: field("id").or(nested.id),
        reply_to: field("reply_to").or(nested.reply_to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn sample_request() -> InferRequest {
        let mut r = InferRequest::new(
            "r1",
            "digits",
            Tensor::from_u8(vec![1, 2, 2], vec![0, 1, 2, 3]),
        );
        r.reply_to = Some("replies/me".into());
        r.width = Some(0.5);
        r.deadline_ms = Some(100);
        r
    }

    #[test]
    fn every_message_round_trips_through_messagepack() {
        let request = sample_request();
        assert_eq!(decode::<InferRequest>(&encode(&request)).unwrap(), request);

        let assignment = Assignment {
            v: PROTOCOL_VERSION,
            request: request.clone(),
            width: 0.25,
            batch_size: 8,
            max_queue_delay_ms: 5,
            router: "random".into(),
            assigned_at_ms: 1,
            attempt: 0,
        };
        assert_eq!(
            decode::<Assignment>(&encode(&assignment)).unwrap(),
            assignment
        );

        let result = InferResult {
            v: PROTOCOL_VERSION,
            id: "r1".into(),
            model: "digits".into(),
            agent: "a1".into(),
            width: 0.25,
            batch_size: 3,
            top_k: vec![ClassScore {
                class: 7,
                label: "7".into(),
                score: 0.9,
            }],
            accuracy: 0.95,
            timings: Timings {
                queue_ms: 1.0,
                compute_ms: 2.0,
                total_ms: 3.5,
            },
            energy_j: 0.01,
            energy_source: EnergySource::Model,
            router: "random".into(),
            emulated: false,
        };
        assert_eq!(decode::<InferResult>(&encode(&result)).unwrap(), result);

        let error = ErrorReply::new(Some("r1".into()), ErrorCode::BadShape, "no", "coordinator")
            .on_topic("slim/v1/requests/digits");
        assert_eq!(decode::<ErrorReply>(&encode(&error)).unwrap(), error);

        let info = AgentInfo {
            threads: 1,
            v: PROTOCOL_VERSION,
            agent: "a1".into(),
            online: true,
            started_at_ms: 5,
            backend: "cpu".into(),
            backend_reason: "requested".into(),
            device: DeviceInfo::default(),
            models: vec![ModelInfo {
                name: "digits".into(),
                input_shape: vec![1, 8, 8],
                classes: 10,
                widths: vec![WidthInfo {
                    width: 0.25,
                    top1: 0.9,
                    accuracy_source: "measured".into(),
                    flops: 10,
                    params: 5,
                }],
            }],
            max_batch: 32,
            emulation: Some(Emulation {
                slowdown: 2.0,
                profile: None,
            }),
            profile: None,
            durable: true,
        };
        assert_eq!(decode::<AgentInfo>(&encode(&info)).unwrap(), info);

        let telemetry = Telemetry {
            v: PROTOCOL_VERSION,
            agent: "a1".into(),
            seq: 3,
            at_ms: 9,
            cpu_util: 0.5,
            ram_used_bytes: 1,
            ram_total_bytes: 2,
            gpu_util: None,
            vram_used_bytes: None,
            vram_total_bytes: None,
            power_w: 10.0,
            energy_j: 100.0,
            energy_source: EnergySource::Model,
            queues: vec![],
            outstanding: 0,
            completed: 4,
            errors: 0,
            batches: vec![BatchRecord {
                model: "digits".into(),
                width: 0.5,
                batch_size: 2,
                queue_ms: 1.5,
                compute_ms: 3.0,
                energy_j: 0.02,
                requests: vec![
                    RecentIds::key("replies/me", "r1"),
                    RecentIds::key("replies/me", "r2"),
                ],
            }],
            done: vec!["r1".into()],
            emulated: false,
        };
        assert_eq!(decode::<Telemetry>(&encode(&telemetry)).unwrap(), telemetry);
    }

    /// A batch record as agents wrote it before `requests` existed.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct OldBatchRecord {
        model: String,
        width: f32,
        batch_size: u16,
        queue_ms: f32,
        compute_ms: f32,
        energy_j: f32,
    }

    #[test]
    fn batch_records_without_requests_interoperate_both_ways() {
        let old = OldBatchRecord {
            model: "digits".into(),
            width: 1.0,
            batch_size: 4,
            queue_ms: 2.0,
            compute_ms: 8.0,
            energy_j: 0.1,
        };
        // An older agent's record reads as one with no requests ...
        let read: BatchRecord = decode(&encode(&old)).unwrap();
        assert!(read.requests.is_empty());
        assert_eq!((read.batch_size, read.energy_j), (4, 0.1));
        // ... an empty list is left out of the payload, byte for byte the old encoding ...
        assert_eq!(encode(&read), encode(&old));
        // ... and an older coordinator reads a record that lists its requests.
        let new = BatchRecord {
            requests: vec![RecentIds::key("replies/me", "r1")],
            ..read
        };
        assert_eq!(decode::<OldBatchRecord>(&encode(&new)).unwrap(), old);
    }

    #[test]
    fn optional_request_fields_may_be_left_out() {
        #[derive(serde::Serialize)]
        struct Minimal<'a> {
            v: u16,
            id: &'a str,
            model: &'a str,
            input: Tensor,
        }
        let bytes = encode(&Minimal {
            v: 1,
            id: "x",
            model: "digits",
            input: Tensor::from_u8(vec![1], vec![0]),
        });
        let decoded: InferRequest = decode(&bytes).unwrap();
        assert_eq!(decoded.reply_to, None);
        assert_eq!(decoded.top_k, None);
    }

    #[test]
    fn the_reply_address_of_a_malformed_request_can_still_be_read() {
        let mut map = rmpv::Value::Map(vec![
            ("id".into(), "r9".into()),
            ("reply_to".into(), "replies/me".into()),
            ("input".into(), "not a tensor".into()),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &map).unwrap();
        assert!(decode::<InferRequest>(&bytes).is_err());
        assert_eq!(
            peek_reply_address(&bytes),
            PeekedAddress {
                id: Some("r9".into()),
                reply_to: Some("replies/me".into())
            }
        );

        if let rmpv::Value::Map(entries) = &mut map {
            entries.retain(|(k, _)| k.as_str() != Some("reply_to"));
        }
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &map).unwrap();
        assert_eq!(peek_reply_address(&bytes).reply_to, None);
        assert_eq!(peek_reply_address(b"\xc1garbage"), PeekedAddress::default());
    }

    #[test]
    fn a_nested_string_field_can_be_peeked() {
        let map = rmpv::Value::Map(vec![(
            "input".into(),
            rmpv::Value::Map(vec![("dtype".into(), "f16".into())]),
        )]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &map).unwrap();
        assert_eq!(
            peek_str(&bytes, &["input", "dtype"]).as_deref(),
            Some("f16")
        );
        assert_eq!(peek_str(&bytes, &["input", "shape"]), None);
        assert_eq!(peek_str(b"\xc1", &["input"]), None);
    }
}
