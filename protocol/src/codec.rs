//! MessagePack encoding with named fields, and a lenient peek at a payload's reply address.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::InferRequest;

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// Encodes a message as a MessagePack map with named fields.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Our types are plain data: serialization into a Vec cannot fail.
    rmp_serde::to_vec_named(message).expect("message types always serialize")
}

/// Decodes a message. A payload nested deeper than [`crate::limits::MAX_DEPTH`] is refused.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    decode_borrowed(payload)
}

/// Decodes an [`InferRequest`] whose tensor shares `payload`'s buffer instead of copying it:
/// the tensor's bytes are a slice of `payload`. A tensor sent as an array of numbers rather
/// than `bin` (which some encoders write) is copied, as [`decode`] does. Whoever holds the
/// request keeps all of `payload`'s buffer alive, which for a message read from a socket can be
/// the whole read buffer it arrived in: copy the bytes out before holding it long.
pub fn decode_request_shared(payload: &Bytes) -> Result<InferRequest, DecodeError> {
    match decode_borrowed::<InferRequest<&[u8]>>(payload) {
        Ok(view) => Ok(view.map_data(|data| payload.slice_ref(data))),
        Err(_) => decode(payload),
    }
}

fn decode_borrowed<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, DecodeError> {
    let mut decoder = rmp_serde::Deserializer::from_read_ref(payload);
    // rmp-serde refuses a container when its count reaches 0, so allow one more: exactly
    // MAX_DEPTH levels decode. Its default (1024) overflows a 2 MiB stack in a debug build.
    decoder.set_max_depth(crate::limits::MAX_DEPTH + 1);
    T::deserialize(&mut decoder).map_err(|e| DecodeError(e.to_string()))
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
/// [`crate::Assignment`]) is searched too. The payload is walked in place: nothing but the two
/// strings is allocated, whatever its size, and nesting deeper than 64 levels ends the walk.
/// The caller still validates both before using them.
pub fn peek_reply_address(payload: &[u8]) -> PeekedAddress {
    let mut cursor = Cursor::new(payload);
    peek_map(&mut cursor, 0).unwrap_or_default()
}

/// The string at `path` (map keys, outermost first) of any MessagePack payload, if there is one.
pub fn peek_str(payload: &[u8], path: &[&str]) -> Option<String> {
    let mut cursor = Cursor::new(payload);
    for (depth, key) in path.iter().enumerate() {
        let entries = cursor.map_len()?;
        let mut found = false;
        for _ in 0..entries {
            if cursor.str()? == Some(*key) {
                found = true;
                break;
            }
            cursor.skip(depth + 1)?;
        }
        if !found {
            return None;
        }
    }
    cursor.str()?.map(str::to_string)
}

fn peek_map(cursor: &mut Cursor<'_>, depth: usize) -> Option<PeekedAddress> {
    let entries = cursor.map_len()?;
    let mut out = PeekedAddress::default();
    let mut nested = PeekedAddress::default();
    let mut partial = || -> Option<()> {
        for _ in 0..entries {
            let key = cursor.str()?;
            match key {
                Some("id") | Some("reply_to") => {
                    let value = cursor.str()?.filter(|v| !v.is_empty()).map(str::to_string);
                    if key == Some("id") {
                        out.id = out.id.take().or(value);
                    } else {
                        out.reply_to = out.reply_to.take().or(value);
                    }
                }
                Some("request") if depth == 0 => {
                    let start = cursor.pos;
                    match peek_map(cursor, depth + 1) {
                        Some(found) => nested = found,
                        None => {
                            cursor.pos = start;
                            cursor.skip(depth + 1)?;
                        }
                    }
                }
                _ => cursor.skip(depth + 1)?,
            }
        }
        Some(())
    };
    // A payload cut short still yields what was read before the cut.
    let _ = partial();
    Some(PeekedAddress {
        id: out.id.or(nested.id),
        reply_to: out.reply_to.or(nested.reply_to),
    })
}

/// Deepest nesting [`Cursor::skip`] walks into.
const MAX_PEEK_DEPTH: usize = 64;

/// A read position in a MessagePack buffer that skips values without decoding them.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn uint(&mut self, width: usize) -> Option<usize> {
        let bytes = self.take(width)?;
        Some(bytes.iter().fold(0usize, |n, &b| (n << 8) | b as usize))
    }

    /// The entry count of the map here; `None` (position unchanged) if there is no map.
    fn map_len(&mut self) -> Option<usize> {
        let start = self.pos;
        let marker = self.take(1)?[0];
        let len = match marker {
            0x80..=0x8f => Some((marker & 0x0f) as usize),
            0xde => self.uint(2),
            0xdf => self.uint(4),
            _ => None,
        };
        if len.is_none() {
            self.pos = start;
        }
        len
    }

    /// The string here, `Some(None)` after skipping a value of another type, `None` at a
    /// malformed or truncated value.
    fn str(&mut self) -> Option<Option<&'a str>> {
        let marker = *self.buf.get(self.pos)?;
        let len = match marker {
            0xa0..=0xbf => {
                self.pos += 1;
                (marker & 0x1f) as usize
            }
            0xd9..=0xdb => {
                self.pos += 1;
                self.uint(1 << (marker - 0xd9))?
            }
            _ => {
                self.skip(0)?;
                return Some(None);
            }
        };
        Some(std::str::from_utf8(self.take(len)?).ok())
    }

    /// Skips one value (and everything inside it).
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_PEEK_DEPTH {
            return None;
        }
        let marker = self.take(1)?[0];
        let (items, bytes) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (2 * (marker & 0x0f) as usize, 0),
            0x90..=0x9f => ((marker & 0x0f) as usize, 0),
            0xa0..=0xbf => (0, (marker & 0x1f) as usize),
            0xc4 | 0xd9 => (0, self.uint(1)?),
            0xc5 | 0xda => (0, self.uint(2)?),
            0xc6 | 0xdb => (0, self.uint(4)?),
            0xc7 => (0, self.uint(1)? + 1),
            0xc8 => (0, self.uint(2)? + 1),
            0xc9 => (0, self.uint(4)? + 1),
            0xca | 0xce | 0xd2 => (0, 4),
            0xcb | 0xcf | 0xd3 => (0, 8),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xd4 => (0, 2),
            0xd5 => (0, 3),
            0xd6 => (0, 5),
            0xd7 => (0, 9),
            0xd8 => (0, 17),
            0xdc => (self.uint(2)?, 0),
            0xdd => (self.uint(4)?, 0),
            0xde => (2 * self.uint(2)?, 0),
            0xdf => (2 * self.uint(4)?, 0),
            // 0xc1 is never used.
            _ => return None,
        };
        self.take(bytes)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Some(())
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
            mac: Some(vec![1, 2, 3]),
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
            max_queued: Some(4096),
            concurrency: Some(2),
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
                    RequestKey::new("replies/me", "r1").wire(),
                    RequestKey::new("replies/me", "r2").wire(),
                ],
            }],
            done: vec![RequestKey::new("replies/me", "r1").wire()],
            refused: vec![RequestKey::new("replies/me", "r2").wire()],
            emulated: false,
            pace_misses: 3,
            more: true,
            unreported_dropped: 7,
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
            requests: vec![RequestKey::new("replies/me", "r1").wire()],
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
    fn a_shared_decode_lends_the_tensor_from_the_payload_and_reads_any_encoding_of_it() {
        let request = sample_request();
        let payload = Bytes::from(encode(&request));
        let shared = decode_request_shared(&payload).unwrap();
        assert_eq!(shared, request);
        let (inside, data) = (payload.as_ptr_range(), shared.input.data.as_ptr_range());
        assert!(
            inside.start <= data.start && data.end <= inside.end,
            "not copied"
        );
        // A tensor written as an array of numbers (copied) or as a string (read in place) too.
        for data in [
            rmpv::Value::Array(vec![0.into(), 1.into(), 2.into(), 3.into()]),
            rmpv::Value::from("\u{0}\u{1}\u{2}\u{3}"),
        ] {
            let map = rmpv::Value::Map(vec![
                ("v".into(), 1.into()),
                ("id".into(), "r1".into()),
                ("model".into(), "digits".into()),
                ("reply_to".into(), "replies/me".into()),
                (
                    "input".into(),
                    rmpv::Value::Map(vec![
                        ("dtype".into(), "u8".into()),
                        (
                            "shape".into(),
                            rmpv::Value::Array(vec![1.into(), 2.into(), 2.into()]),
                        ),
                        ("data".into(), data),
                    ]),
                ),
            ]);
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &map).unwrap();
            let decoded = decode_request_shared(&Bytes::from(bytes)).unwrap();
            assert_eq!(decoded.input, request.input);
        }
        let e = decode_request_shared(&payload.slice(..payload.len() - 2)).unwrap_err();
        assert_eq!(
            e.to_string(),
            decode::<InferRequest>(&payload[..payload.len() - 2])
                .unwrap_err()
                .to_string(),
            "a malformed request is reported as the plain decode reports it"
        );
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
    fn peeking_walks_past_large_and_nested_values_and_stops_at_hostile_ones() {
        // The reply address after a large binary field, as rmp-serde orders an InferRequest.
        let mut r = sample_request();
        r.input = Tensor::from_u8(vec![1, 512, 512], vec![0; 512 * 512]);
        assert_eq!(
            peek_reply_address(&encode(&r)).reply_to.as_deref(),
            Some("replies/me")
        );
        // Nested inside an assignment.
        let a = Assignment {
            v: 1,
            request: r,
            width: 0.5,
            batch_size: 1,
            max_queue_delay_ms: 0,
            router: "x".into(),
            assigned_at_ms: 0,
            attempt: 0,
            mac: None,
        };
        assert_eq!(peek_reply_address(&encode(&a)).id.as_deref(), Some("r1"));
        // Deep nesting, absurd lengths and truncation end the walk without a panic.
        let mut deep = vec![0x81, 0xa1, b'x'];
        deep.extend(std::iter::repeat_n(0x91, 100_000));
        assert_eq!(peek_reply_address(&deep), PeekedAddress::default());
        assert_eq!(
            peek_reply_address(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
            PeekedAddress::default()
        );
        let bytes = encode(&sample_request());
        for cut in 0..bytes.len() {
            let _ = peek_reply_address(&bytes[..cut]);
            let _ = peek_str(&bytes[..cut], &["input", "dtype"]);
        }
    }

    #[test]
    fn payloads_nested_deeper_than_the_limit_are_refused() {
        // A request with an unknown field of `levels` nested arrays: the request map is one level.
        let nested = |levels: usize| {
            let mut bytes = encode(&sample_request());
            bytes[0] += 1;
            bytes.extend(encode(&"extra"));
            bytes.extend(std::iter::repeat_n(0x91, levels - 1));
            bytes.push(0xc0);
            bytes
        };
        assert!(decode::<InferRequest>(&nested(crate::limits::MAX_DEPTH)).is_ok());
        let e = decode::<InferRequest>(&nested(crate::limits::MAX_DEPTH + 1)).unwrap_err();
        assert!(e.to_string().contains("depth"), "{e}");
        // Far past rmp-serde's own limit of 1024, on a 2 MiB stack in this unoptimized build.
        let bomb = nested(100_000);
        let decoded = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || decode::<InferRequest>(&bomb).is_ok())
            .unwrap()
            .join()
            .unwrap();
        assert!(!decoded);
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
