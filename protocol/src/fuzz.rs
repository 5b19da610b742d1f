//! Fuzzing support: a seed corpus of hostile payloads, a harness that runs one payload through
//! everything in this crate that reads network bytes, and a mutator.
//!
//! `tests/fuzz_corpus.rs` replays the corpus and a fixed set of mutations in CI. The long run,
//! outside CI (about ten million inputs):
//!
//! ```text
//! cargo run --release -p slim-protocol --features fuzzing --example fuzz -- --inputs 10000000 --seed 1
//! ```
//!
//! [`exercise`] asserts the contract's invariants as it goes (a request that passes its checks
//! has a publishable reply topic and a valid id, a refusal is only ever addressed to values
//! that passed their checks, every decoded message re-encodes to a stable form, ...), so a panic
//! under the fuzzer is either a crash or a broken invariant: both are bugs.
//!
//! The module is always compiled (so CI can replay the corpus without features) but is not
//! part of the documented API; the `fuzzing` feature only builds the driver example.

use std::sync::OnceLock;

use serde::{de::DeserializeOwned, Serialize};

use crate::{
    decode, encode,
    limits::{self, LimitError},
    peek_reply_address, peek_str, AgentInfo, AgentTopic, Assignment, AssignmentKey, BatchRecord,
    ClassScore, CoordinatorStatus, Decision, Decisions, DeviceInfo, DeviceProfile, Emulation,
    EnergySource, ErrorCode, ErrorReply, InferRequest, InferResult, ModelInfo, PeekedAddress,
    ProfilePoint, QueueStat, Refusal, RequestKey, Telemetry, Tensor, Timings, Topics, WidthInfo,
    PROTOCOL_VERSION,
};

/// The agent the corpus's assignments are signed for and its telemetry claims to come from.
pub const FUZZ_AGENT: &str = "a1";

/// The assignment key the corpus is signed with.
pub const FUZZ_KEY: &[u8] = b"slim-fuzz-assignment-key";

/// Seeds at least this large are mutated rarely (see [`Fuzzer`]): each costs milliseconds.
pub const LARGE_SEED_BYTES: usize = 16 * 1024;

/// Longest input [`mutate`] returns.
pub const MAX_MUTANT_BYTES: usize = 4 << 20;

/// Longest purely random input [`Fuzzer`] generates.
pub const MAX_RANDOM_BYTES: usize = 4096;

fn topics() -> &'static Topics {
    static TOPICS: OnceLock<Topics> = OnceLock::new();
    TOPICS.get_or_init(Topics::default)
}

fn key() -> &'static AssignmentKey {
    static KEY: OnceLock<AssignmentKey> = OnceLock::new();
    KEY.get_or_init(|| AssignmentKey::new(FUZZ_KEY))
}

// ---------------------------------------------------------------------------------------------
// The harness.

/// What one payload did in [`exercise`].
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `Some` when the payload decoded as an [`InferRequest`]: what `check_fields` said.
    pub request: Option<Result<String, Refusal>>,
    /// `Some` when it decoded as an [`Assignment`]: what `check_fields` said of its request.
    pub assignment: Option<Result<String, Refusal>>,
    /// `Some` for an assignment: whether it carries a valid signature for [`FUZZ_AGENT`].
    pub assignment_signed: Option<bool>,
    /// `Some` when it decoded as [`Telemetry`]: what `check` said.
    pub telemetry: Option<Result<(), LimitError>>,
    /// A decoded telemetry report that names an agent other than [`FUZZ_AGENT`], whose topic
    /// it stands for.
    pub telemetry_from_other_agent: bool,
    /// Request keys of a decoded telemetry report that parse (`done` and batch requests).
    pub request_keys: usize,
    /// `Some` when it decoded as [`AgentInfo`]: what `check` said.
    pub agent_info: Option<Result<(), LimitError>>,
    /// It decoded as an [`ErrorReply`].
    pub error_reply: bool,
    /// It decoded as an [`InferResult`].
    pub result: bool,
    /// It decoded as a [`Decision`] or a [`Decisions`] batch.
    pub decision: bool,
    /// It decoded as a [`CoordinatorStatus`].
    pub coordinator_status: bool,
    /// What [`peek_reply_address`] read.
    pub peeked: PeekedAddress,
    /// What [`peek_str`] read at `input.dtype`.
    pub dtype: Option<String>,
    /// A refusal addressed from `peeked` (as the coordinator and agents send for undecodable
    /// payloads).
    pub peeked_refusal: Refusal,
}

/// Runs `payload` through every decoder and check of this crate, asserting the contract's
/// invariants. Panics only when one is broken (or something crashes): that is a bug.
pub fn exercise(payload: &[u8]) -> Outcome {
    let topics = topics();

    let request = decoded::<InferRequest>(payload).map(|r| check_request(&r, topics));

    let assignment = decoded::<Assignment>(payload);
    let assignment_signed = assignment.as_ref().map(check_signature);
    let assignment = assignment.map(|a| check_request(&a.request, topics));

    let telemetry = decoded::<Telemetry>(payload).map(|t| check_telemetry(&t, topics));
    let agent_info = decoded::<AgentInfo>(payload).map(|info| check_agent_info(&info, topics));

    let error_reply = decoded::<ErrorReply>(payload).is_some();
    let result = decoded::<InferResult>(payload).is_some();
    let decision =
        decoded::<Decision>(payload).is_some() || decoded::<Decisions>(payload).is_some();
    let coordinator_status = decoded::<CoordinatorStatus>(payload).is_some();

    let peeked = peek_reply_address(payload);
    for field in [&peeked.id, &peeked.reply_to].into_iter().flatten() {
        assert!(!field.is_empty(), "peeking never returns an empty field");
        // Arbitrary text through the topic parsers.
        let _ = topics.parse_request(field);
        let _ = topics.parse_agent(field);
    }
    let dtype = peek_str(payload, &["input", "dtype"]);
    let peeked_refusal =
        Refusal::new(ErrorCode::Malformed, "not a valid message").to_peeked(&peeked, topics);
    assert_addressable(&peeked_refusal, topics);

    Outcome {
        request,
        assignment,
        assignment_signed,
        telemetry_from_other_agent: telemetry.as_ref().is_some_and(|t| t.other_agent),
        request_keys: telemetry.as_ref().map_or(0, |t| t.request_keys),
        telemetry: telemetry.map(|t| t.checked),
        agent_info,
        error_reply,
        result,
        decision,
        coordinator_status,
        peeked,
        dtype,
        peeked_refusal,
    }
}

/// What [`check_telemetry`] found in a decoded telemetry report.
struct TelemetryChecked {
    /// What `check` said.
    checked: Result<(), LimitError>,
    /// It names an agent other than [`FUZZ_AGENT`].
    other_agent: bool,
    /// Request keys that parse (`done` and batch requests).
    request_keys: usize,
}

/// `check`, and the promises around it: a request key that parses reads back as it was
/// written, and a checked agent name is one topic level.
fn check_telemetry(t: &Telemetry, topics: &Topics) -> TelemetryChecked {
    let mut request_keys = 0;
    for text in t
        .done
        .iter()
        .chain(t.batches.iter().flat_map(|b| &b.requests))
    {
        if let Some(key) = RequestKey::from_wire(text) {
            assert_eq!(
                &key.wire(),
                text,
                "a request key reads back as it was written"
            );
            assert_eq!(key.len(), text.len());
            request_keys += 1;
        }
    }
    let checked = t.check();
    if checked.is_ok() {
        assert_eq!(
            topics.parse_agent(&topics.telemetry(&t.agent)),
            Some(AgentTopic::Telemetry(t.agent.clone())),
            "a checked agent name is one topic level"
        );
    }
    TelemetryChecked {
        checked,
        other_agent: t.agent != FUZZ_AGENT,
        request_keys,
    }
}

/// `check`, and the promise around it: a checked status's agent and model names are one topic
/// level each.
fn check_agent_info(info: &AgentInfo, topics: &Topics) -> Result<(), LimitError> {
    let checked = info.check();
    if checked.is_ok() {
        assert_eq!(
            topics.parse_agent(&topics.status(&info.agent)),
            Some(AgentTopic::Status(info.agent.clone()))
        );
        for m in &info.models {
            assert_eq!(
                topics.parse_request(&topics.request(&m.name)),
                Some(m.name.as_str())
            );
        }
    }
    checked
}

/// Decodes `payload` as a `T` and checks that the value re-encodes to a stable form: what it
/// encodes to decodes to a value that encodes to the same bytes. The coordinator re-encodes
/// what it decodes (assignments, signatures), so this must hold for anything that decodes.
fn decoded<T: Serialize + DeserializeOwned>(payload: &[u8]) -> Option<T> {
    let value: T = decode(payload).ok()?;
    let bytes = encode(&value);
    let again: T = decode(&bytes).unwrap_or_else(|e| {
        panic!(
            "a decoded {} does not decode after encoding: {e}",
            std::any::type_name::<T>()
        )
    });
    assert!(
        encode(&again) == bytes,
        "a decoded {} does not re-encode to a stable form",
        std::any::type_name::<T>()
    );
    Some(value)
}

/// `check_fields`, and the promises around it.
fn check_request(r: &InferRequest, topics: &Topics) -> Result<String, Refusal> {
    let checked = r.check_fields(topics);
    match &checked {
        Ok(reply_to) => {
            assert_eq!(Some(reply_to.as_str()), r.reply_to.as_deref());
            assert_eq!(limits::check_reply_to(reply_to, topics), Ok(()));
            assert_eq!(limits::check_id(&r.id), Ok(()));
            assert_eq!(limits::check_name("model", &r.model), Ok(()));
            assert_eq!(
                topics.parse_request(&topics.request(&r.model)),
                Some(r.model.as_str())
            );
            assert_eq!(r.input.validate(), Ok(()));
            let elements = r.input.element_count().expect("a valid tensor has a size");
            assert_eq!(r.input.to_f32_vec().len(), elements);
            let _ = r.input.is_sample_of(&[1, 28, 28]);
            // A checked reply topic has no NUL, so the key splits back where it was joined.
            let key = RequestKey::new(reply_to.as_str(), r.id.as_str());
            assert_eq!(RequestKey::from_wire(&key.wire()), Some(key.clone()));
        }
        Err(refusal) => assert_addressable(refusal, topics),
    }
    checked
}

/// A refusal is only ever addressed to an id and a topic that passed their checks.
fn assert_addressable(refusal: &Refusal, topics: &Topics) {
    if let Some(id) = &refusal.id {
        assert_eq!(
            limits::check_id(id),
            Ok(()),
            "refusal addressed to a bad id"
        );
    }
    if let Some(reply_to) = &refusal.reply_to {
        assert_eq!(
            limits::check_reply_to(reply_to, topics),
            Ok(()),
            "refusal addressed to a bad reply topic"
        );
    }
}

/// Whether `a` is signed for [`FUZZ_AGENT`]; and a re-signed copy verifies for that agent only.
fn check_signature(a: &Assignment) -> bool {
    let key = key();
    let signed = key.verify(FUZZ_AGENT, a);
    let mut resigned = a.clone();
    key.sign(FUZZ_AGENT, &mut resigned);
    assert!(
        key.verify(FUZZ_AGENT, &resigned),
        "a signed assignment verifies"
    );
    assert!(
        !key.verify("a2", &resigned),
        "a signature is bound to its agent"
    );
    signed
}

/// Counts of what many [`exercise`] runs reached.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Inputs run.
    pub inputs: u64,
    /// Decoded as an [`InferRequest`].
    pub requests: u64,
    /// ... and passed `check_fields`.
    pub requests_valid: u64,
    /// Decoded as an [`Assignment`].
    pub assignments: u64,
    /// ... whose request passed `check_fields`.
    pub assignments_valid: u64,
    /// ... with a valid signature.
    pub assignments_signed: u64,
    /// Decoded as [`Telemetry`].
    pub telemetry: u64,
    /// ... and passed `check`.
    pub telemetry_valid: u64,
    /// Decoded as [`AgentInfo`].
    pub agent_infos: u64,
    /// ... and passed `check`.
    pub agent_infos_valid: u64,
    /// Decoded as an [`ErrorReply`].
    pub error_replies: u64,
    /// Decoded as an [`InferResult`].
    pub results: u64,
    /// Decoded as a [`Decision`] or a [`Decisions`] batch.
    pub decisions: u64,
    /// Decoded as a [`CoordinatorStatus`].
    pub coordinator_statuses: u64,
    /// Decoded as nothing at all.
    pub undecodable: u64,
    /// A reply topic was peeked.
    pub peeked_reply_to: u64,
    /// An id was peeked.
    pub peeked_id: u64,
    /// A peeked refusal was addressable (it kept a reply topic).
    pub peeked_addressable: u64,
    /// `input.dtype` was peeked.
    pub peeked_dtype: u64,
    /// Request refusals (of requests and assigned requests) per code, in [`ErrorCode::ALL`] order.
    pub refusals: [u64; ErrorCode::ALL.len()],
}

impl Tally {
    /// Counts one outcome.
    pub fn add(&mut self, o: &Outcome) {
        let bump = |n: &mut u64, yes: bool| *n += u64::from(yes);
        self.inputs += 1;
        for (checked, decoded, valid) in [
            (&o.request, &mut self.requests, &mut self.requests_valid),
            (
                &o.assignment,
                &mut self.assignments,
                &mut self.assignments_valid,
            ),
        ] {
            if let Some(checked) = checked {
                *decoded += 1;
                match checked {
                    Ok(_) => *valid += 1,
                    Err(r) => {
                        let i = ErrorCode::ALL.iter().position(|c| *c == r.code);
                        self.refusals[i.expect("every code is in ALL")] += 1;
                    }
                }
            }
        }
        bump(
            &mut self.assignments_signed,
            o.assignment_signed == Some(true),
        );
        bump(&mut self.telemetry, o.telemetry.is_some());
        bump(
            &mut self.telemetry_valid,
            matches!(o.telemetry, Some(Ok(()))),
        );
        bump(&mut self.agent_infos, o.agent_info.is_some());
        bump(
            &mut self.agent_infos_valid,
            matches!(o.agent_info, Some(Ok(()))),
        );
        bump(&mut self.error_replies, o.error_reply);
        bump(&mut self.results, o.result);
        bump(&mut self.decisions, o.decision);
        bump(&mut self.coordinator_statuses, o.coordinator_status);
        let anything = o.request.is_some()
            || o.assignment.is_some()
            || o.telemetry.is_some()
            || o.agent_info.is_some()
            || o.error_reply
            || o.result
            || o.decision
            || o.coordinator_status;
        bump(&mut self.undecodable, !anything);
        bump(&mut self.peeked_reply_to, o.peeked.reply_to.is_some());
        bump(&mut self.peeked_id, o.peeked.id.is_some());
        bump(
            &mut self.peeked_addressable,
            o.peeked_refusal.reply_to.is_some(),
        );
        bump(&mut self.peeked_dtype, o.dtype.is_some());
    }

    /// Adds another tally's counts to this one.
    pub fn merge(&mut self, other: &Tally) {
        let Tally {
            inputs,
            requests,
            requests_valid,
            assignments,
            assignments_valid,
            assignments_signed,
            telemetry,
            telemetry_valid,
            agent_infos,
            agent_infos_valid,
            error_replies,
            results,
            decisions,
            coordinator_statuses,
            undecodable,
            peeked_reply_to,
            peeked_id,
            peeked_addressable,
            peeked_dtype,
            refusals,
        } = other;
        self.inputs += inputs;
        self.requests += requests;
        self.requests_valid += requests_valid;
        self.assignments += assignments;
        self.assignments_valid += assignments_valid;
        self.assignments_signed += assignments_signed;
        self.telemetry += telemetry;
        self.telemetry_valid += telemetry_valid;
        self.agent_infos += agent_infos;
        self.agent_infos_valid += agent_infos_valid;
        self.error_replies += error_replies;
        self.results += results;
        self.decisions += decisions;
        self.coordinator_statuses += coordinator_statuses;
        self.undecodable += undecodable;
        self.peeked_reply_to += peeked_reply_to;
        self.peeked_id += peeked_id;
        self.peeked_addressable += peeked_addressable;
        self.peeked_dtype += peeked_dtype;
        for (mine, theirs) in self.refusals.iter_mut().zip(refusals) {
            *mine += theirs;
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "inputs run:            {}", self.inputs)?;
        writeln!(
            f,
            "InferRequest:          {} decoded, {} passed check_fields",
            self.requests, self.requests_valid
        )?;
        writeln!(
            f,
            "Assignment:            {} decoded, {} with a valid request, {} correctly signed",
            self.assignments, self.assignments_valid, self.assignments_signed
        )?;
        writeln!(
            f,
            "Telemetry:             {} decoded, {} passed check",
            self.telemetry, self.telemetry_valid
        )?;
        writeln!(
            f,
            "AgentInfo:             {} decoded, {} passed check",
            self.agent_infos, self.agent_infos_valid
        )?;
        writeln!(f, "ErrorReply:            {} decoded", self.error_replies)?;
        writeln!(f, "InferResult:           {} decoded", self.results)?;
        writeln!(f, "Decision:              {} decoded", self.decisions)?;
        writeln!(
            f,
            "CoordinatorStatus:     {} decoded",
            self.coordinator_statuses
        )?;
        writeln!(f, "decoded as nothing:    {}", self.undecodable)?;
        writeln!(
            f,
            "peeked:                {} reply_to, {} id, {} input.dtype; {} refusals addressable",
            self.peeked_reply_to, self.peeked_id, self.peeked_dtype, self.peeked_addressable
        )?;
        let refusals: Vec<String> = ErrorCode::ALL
            .iter()
            .zip(&self.refusals)
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        write!(f, "request refusals:      {}", refusals.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Mutation.

/// Byte values that mean something to a MessagePack reader: nil, the reserved marker, the
/// largest fixint, map32/array32/str32/bin32 and ext markers, negative fixint.
const INTERESTING_BYTES: [u8; 14] = [
    0x00, 0xff, 0xc1, 0xdf, 0x7f, 0xc0, 0xdd, 0xdb, 0xc6, 0xc9, 0xd4, 0x90, 0x80, 0xa0,
];

/// Big-endian lengths and counts worth planting over a length field.
const INTERESTING_U32: [u32; 8] = [
    0,
    1,
    0x7f,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

fn below(rng: &mut impl FnMut() -> u64, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (rng() % n as u64) as usize
    }
}

/// A mutant of `seed`: one (half the time) to four stacked changes among bit flips,
/// interesting bytes or lengths, byte changes, truncations, duplicated or deleted slices,
/// inserted random bytes, oversized markers, or a splice with `other`. At most
/// [`MAX_MUTANT_BYTES`] long.
pub fn mutate(seed: &[u8], other: &[u8], rng: &mut impl FnMut() -> u64) -> Vec<u8> {
    let mut out = seed.to_vec();
    // Half the mutants change one thing (and mostly still decode), half stack two to four.
    let rounds = if below(rng, 2) == 0 {
        1
    } else {
        2 + below(rng, 3)
    };
    for _ in 0..rounds {
        if out.is_empty() {
            let n = 1 + below(rng, 16);
            out.extend((0..n).map(|_| rng() as u8));
            continue;
        }
        let len = out.len();
        let at = below(rng, len);
        match below(rng, 11) {
            0 => out[at] ^= 1 << below(rng, 8),
            1 => out[at] = INTERESTING_BYTES[below(rng, INTERESTING_BYTES.len())],
            2 => out[at] = rng() as u8,
            3 => out[at] = out[at].wrapping_add(below(rng, 33) as u8).wrapping_sub(16),
            4 => out.truncate(at),
            5 => {
                let n = 1 + below(rng, (len - at).min(64));
                out.drain(at..at + n);
            }
            6 => {
                let n = 1 + below(rng, (len - at).min(4096));
                let slice = out[at..at + n].to_vec();
                let to = below(rng, len + 1);
                out.splice(to..to, slice);
            }
            7 => {
                let n = 1 + below(rng, 16);
                let bytes: Vec<u8> = (0..n).map(|_| rng() as u8).collect();
                out.splice(at..at, bytes);
            }
            8 => {
                let value = INTERESTING_U32[below(rng, INTERESTING_U32.len())].to_be_bytes();
                let width = [1, 2, 4][below(rng, 3)];
                let end = (at + width).min(len);
                out[at..end].copy_from_slice(&value[4 - width..][..end - at]);
            }
            9 if !other.is_empty() => {
                let from = below(rng, other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                // A marker byte followed by its plausible length: an oversized container or string.
                let marker =
                    [0xdc, 0xdd, 0xde, 0xdf, 0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6][below(rng, 10)];
                let value = INTERESTING_U32[below(rng, INTERESTING_U32.len())].to_be_bytes();
                let mut bytes = vec![marker];
                bytes.extend_from_slice(&value);
                out.splice(at..at, bytes);
            }
        }
    }
    out.truncate(MAX_MUTANT_BYTES);
    out
}

/// A small, fast, deterministic random-number generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds start far apart and the state is never 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Generates fuzz inputs: mostly mutants of the seed corpus, one in eight a random byte string
/// of up to [`MAX_RANDOM_BYTES`]. Seeds of [`LARGE_SEED_BYTES`] or more are picked for one
/// mutant in 1024, so they are covered without dominating the run time.
#[derive(Debug, Clone)]
pub struct Fuzzer {
    small: Vec<Vec<u8>>,
    large: Vec<Vec<u8>>,
    rng: Rng,
}

impl Fuzzer {
    /// A generator over [`seed_corpus`], deterministic for `seed`.
    pub fn new(seed: u64) -> Self {
        let (large, small) = seed_corpus()
            .into_iter()
            .map(|(_, bytes)| bytes)
            .partition(|b| b.len() >= LARGE_SEED_BYTES);
        Self {
            small,
            large,
            rng: Rng::new(seed),
        }
    }

    /// The next input.
    pub fn next_input(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        let mut next = || rng.next_u64();
        if below(&mut next, 8) == 0 {
            let n = below(&mut next, MAX_RANDOM_BYTES + 1);
            return (0..n).map(|_| next() as u8).collect();
        }
        let pool = if below(&mut next, 1024) == 0 && !self.large.is_empty() {
            &self.large
        } else {
            &self.small
        };
        let seed = &pool[below(&mut next, pool.len())];
        let other = &self.small[below(&mut next, self.small.len())];
        mutate(seed, other, &mut next)
    }
}

// ---------------------------------------------------------------------------------------------
// The seed corpus.

/// A MessagePack map from keys and already-encoded values, in order.
fn map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    match entries.len() {
        n @ 0..=15 => out.push(0x80 | n as u8),
        n => {
            out.push(0xde);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    for (key, value) in entries {
        out.extend(encode(key));
        out.extend_from_slice(value);
    }
    out
}

/// `encoded` (a fixmap of under 15 entries) with one more entry at the end.
fn with_field(encoded: &[u8], key: &str, value: &[u8]) -> Vec<u8> {
    assert!(
        (0x80..0x8f).contains(&encoded[0]),
        "with_field takes a small fixmap"
    );
    let mut out = encoded.to_vec();
    out[0] += 1;
    out.extend(encode(&key));
    out.extend_from_slice(value);
    out
}

fn bin(bytes: &[u8]) -> Vec<u8> {
    encode(&serde_bytes::Bytes::new(bytes))
}

/// `depth` nested one-element arrays around a nil.
fn nesting_bomb(depth: usize) -> Vec<u8> {
    let mut out = vec![0x91; depth];
    out.push(0xc0);
    out
}

fn request() -> InferRequest {
    let mut r = InferRequest::new(
        "r1",
        "digits",
        Tensor::from_u8(vec![1, 2, 2], vec![0, 1, 2, 3]),
    );
    r.reply_to = Some("replies/me".into());
    r
}

fn request_with(change: impl FnOnce(&mut InferRequest)) -> Vec<u8> {
    let mut r = request();
    change(&mut r);
    encode(&r)
}

fn assignment(request: InferRequest) -> Assignment {
    Assignment {
        v: PROTOCOL_VERSION,
        request,
        width: 0.5,
        batch_size: 4,
        max_queue_delay_ms: 5,
        router: "least-loaded".into(),
        assigned_at_ms: 1_700_000_000_000,
        attempt: 0,
        mac: None,
    }
}

fn result() -> InferResult {
    InferResult {
        v: PROTOCOL_VERSION,
        id: "r1".into(),
        model: "digits".into(),
        agent: FUZZ_AGENT.into(),
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
        energy_source: EnergySource::Nvml,
        router: "random".into(),
        emulated: true,
    }
}

fn decision() -> Decision {
    Decision {
        v: PROTOCOL_VERSION,
        request_id: "r1".into(),
        model: "digits".into(),
        agent: FUZZ_AGENT.into(),
        width: 0.5,
        batch_size: 4,
        router: "least-loaded".into(),
        at_ms: 1,
        candidates: 2,
        agent_outstanding: 0,
        attempt: 1,
    }
}

fn telemetry() -> Telemetry {
    Telemetry {
        v: PROTOCOL_VERSION,
        agent: FUZZ_AGENT.into(),
        seq: 3,
        at_ms: 9,
        cpu_util: 0.5,
        ram_used_bytes: 1 << 30,
        ram_total_bytes: 8 << 30,
        gpu_util: Some(0.25),
        vram_used_bytes: Some(1 << 20),
        vram_total_bytes: Some(1 << 30),
        power_w: 10.0,
        energy_j: 100.0,
        energy_source: EnergySource::Model,
        queues: vec![QueueStat {
            model: "digits".into(),
            width: 0.5,
            depth: 2,
            oldest_wait_ms: 1.5,
            instances: 1,
        }],
        outstanding: 2,
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
        pace_misses: 0,
        more: false,
        unreported_dropped: 0,
    }
}

fn model_info(name: String) -> ModelInfo {
    ModelInfo {
        name,
        input_shape: vec![1, 8, 8],
        classes: 10,
        widths: vec![WidthInfo {
            width: 0.25,
            top1: 0.9,
            accuracy_source: "measured".into(),
            flops: 10,
            params: 5,
        }],
    }
}

fn agent_info() -> AgentInfo {
    AgentInfo {
        v: PROTOCOL_VERSION,
        agent: FUZZ_AGENT.into(),
        online: true,
        started_at_ms: 5,
        backend: "cpu".into(),
        backend_reason: "requested".into(),
        device: DeviceInfo {
            hostname: "host".into(),
            kind: "cpu".into(),
            cpu_model: "cpu".into(),
            cpu_cores: 4,
            ram_bytes: 8 << 30,
            gpu: None,
            vram_bytes: None,
        },
        models: vec![model_info("digits".into())],
        max_batch: 32,
        emulation: Some(Emulation {
            slowdown: 2.0,
            profile: Some("jetson-orin-nano".into()),
        }),
        profile: Some(DeviceProfile {
            name: "jetson-orin-nano".into(),
            source: "derived".into(),
            idle_power_w: 3.0,
            max_power_w: 15.0,
            points: vec![ProfilePoint {
                model: "digits".into(),
                width: 0.5,
                batch: 4,
                latency_ms: 2.0,
                power_w: Some(7.0),
            }],
        }),
        threads: 2,
        durable: true,
        max_queued: Some(4096),
        concurrency: Some(2),
    }
}

/// Named payloads, in a fixed order.
type Seeds = Vec<(&'static str, Vec<u8>)>;

/// Named payloads covering every hostile case the decoders and checks must survive, plus one
/// valid message of each type so the good paths are exercised too.
pub fn seed_corpus() -> Vec<(&'static str, Vec<u8>)> {
    let valid = encode(&request());
    let mut corpus = valid_messages(&valid);
    corpus.extend(hostile_requests());
    corpus.extend(hostile_assignments());
    corpus.extend(hostile_agent_messages());
    // Hand-made bytes: what no encoder writes.
    corpus.extend(hand_made_structures(&valid));
    corpus.extend(hand_made_requests());
    corpus.extend(hand_made_fields(&valid));
    corpus.extend(truncations(&valid));
    corpus
}

/// One valid message of each type (`valid` is the encoded [`request`]).
fn valid_messages(valid: &[u8]) -> Seeds {
    vec![
        ("valid-request", valid.to_vec()),
        (
            "valid-request-f32-all-fields",
            request_with(|r| {
                r.input = Tensor::from_f32(vec![1, 1, 2, 2], &[0.5, -1.0, 2.0, 0.0]);
                r.reply_to = Some("slim/v1/clients/c1/replies".into());
                r.width = Some(0.5);
                r.min_accuracy = Some(0.9);
                r.deadline_ms = Some(100);
                r.top_k = Some(1000);
                r.sent_at_ms = Some(1_700_000_000_000);
            }),
        ),
        (
            "valid-request-as-array",
            rmp_serde::to_vec(&request()).expect("encodes"),
        ),
        (
            "valid-error-reply",
            encode(
                &ErrorReply::new(Some("r1".into()), ErrorCode::BadShape, "no", "coordinator")
                    .on_topic("slim/v1/requests/digits"),
            ),
        ),
        ("valid-result", encode(&result())),
        ("valid-decision", encode(&decision())),
        (
            "valid-decisions",
            encode(&Decisions {
                v: PROTOCOL_VERSION,
                coordinator: "c1".into(),
                decisions: vec![decision(), decision()],
            }),
        ),
        (
            "valid-coordinator-status",
            encode(&CoordinatorStatus {
                v: PROTOCOL_VERSION,
                id: "c1".into(),
                online: true,
                router: "least-loaded".into(),
                started_at_ms: 1,
            }),
        ),
        ("valid-telemetry", encode(&telemetry())),
        ("valid-agent-info", encode(&agent_info())),
    ]
}

/// A named change to a valid message.
type NamedChange<T> = (&'static str, fn(&mut T));

/// Requests with one hostile field each: reply topics that must never be published to, ids,
/// tensors, numbers, names and versions.
fn hostile_requests() -> Seeds {
    let changes: &[NamedChange<InferRequest>] = &[
        ("reply-to-over-65535-bytes", |r| {
            r.reply_to = Some("r".repeat(65_546))
        }),
        ("reply-to-nul", |r| r.reply_to = Some("replies/\0me".into())),
        ("reply-to-plus", |r| r.reply_to = Some("replies/+".into())),
        ("reply-to-hash", |r| r.reply_to = Some("replies/#".into())),
        ("reply-to-sys", |r| {
            r.reply_to = Some("$SYS/broker/load".into())
        }),
        ("reply-to-deployment-prefix", |r| {
            r.reply_to = Some(topics().assign(FUZZ_AGENT))
        }),
        ("reply-to-empty", |r| r.reply_to = Some(String::new())),
        ("reply-to-absent", |r| r.reply_to = None),
        ("id-200kB", |r| r.id = "i".repeat(200_000)),
        ("id-empty", |r| r.id = String::new()),
        ("shape-overflow", |r| {
            r.input = Tensor::from_u8(vec![u32::MAX; 3], vec![0; 4])
        }),
        ("shape-9-dims", |r| {
            r.input = Tensor::from_u8(vec![1; 9], vec![0])
        }),
        ("shape-size-mismatch", |r| {
            r.input = Tensor::from_f32(vec![1, 2, 2], &[0.0; 3])
        }),
        ("input-nan", |r| {
            r.input = Tensor::from_f32(vec![1, 2], &[0.0, f32::NAN])
        }),
        ("input-inf", |r| {
            r.input = Tensor::from_f32(vec![2], &[f32::NEG_INFINITY, 1.0])
        }),
        ("min-accuracy-nan", |r| r.min_accuracy = Some(f32::NAN)),
        ("width-nan", |r| r.width = Some(f32::NAN)),
        ("width-inf", |r| r.width = Some(f32::INFINITY)),
        ("top-k-65535", |r| r.top_k = Some(u16::MAX)),
        ("model-with-slash", |r| r.model = "digits/../x".into()),
        ("model-empty", |r| r.model = String::new()),
        ("version-2", |r| r.v = 2),
    ];
    changes
        .iter()
        .map(|&(name, change)| (name, request_with(change)))
        .collect()
}

/// Assignments unsigned, forged, signed for this agent or another, and carrying a hostile
/// request.
fn hostile_assignments() -> Seeds {
    let signed_for = |agent: &str| {
        let mut a = assignment(request());
        key().sign(agent, &mut a);
        encode(&a)
    };
    vec![
        ("assignment-no-mac", encode(&assignment(request()))),
        (
            "assignment-forged-mac",
            encode(&Assignment {
                mac: Some(vec![0xaa; 32]),
                ..assignment(request())
            }),
        ),
        ("assignment-signed", signed_for(FUZZ_AGENT)),
        ("assignment-signed-for-another-agent", signed_for("a2")),
        ("assignment-hostile-request", {
            let mut r = request();
            r.reply_to = Some(topics().assign(FUZZ_AGENT));
            r.id = String::new();
            encode(&assignment(r))
        }),
    ]
}

/// Telemetry and agent status: another agent's, non-finite figures, huge or malformed request
/// keys, many models, names that are not one topic level.
fn hostile_agent_messages() -> Seeds {
    let telemetry_with = |change: fn(&mut Telemetry)| {
        let mut t = telemetry();
        change(&mut t);
        encode(&t)
    };
    vec![
        (
            "telemetry-other-agent",
            telemetry_with(|t| t.agent = "a2".into()),
        ),
        (
            "telemetry-nan-figures",
            telemetry_with(|t| {
                t.cpu_util = f32::NAN;
                t.power_w = f32::INFINITY;
                t.energy_j = -1.0;
            }),
        ),
        (
            "telemetry-100k-done-keys",
            telemetry_with(|t| {
                t.done = (0..100_000)
                    .map(|i| RequestKey::new("replies/me", format!("r{i}")).wire())
                    .collect()
            }),
        ),
        (
            "telemetry-oversized-key",
            telemetry_with(|t| t.done = vec![RequestKey::new("r".repeat(2000), "r1").wire()]),
        ),
        (
            "telemetry-key-without-nul",
            telemetry_with(|t| t.done = vec!["no separator".into(), String::new(), "\0".into()]),
        ),
        (
            "agent-info-10k-models",
            encode(&AgentInfo {
                models: (0..10_000).map(|i| model_info(format!("m{i}"))).collect(),
                ..agent_info()
            }),
        ),
        (
            "agent-info-bad-names",
            encode(&AgentInfo {
                agent: "a/b".into(),
                models: vec![model_info("x+y".into())],
                ..agent_info()
            }),
        ),
    ]
}

/// Nesting bombs, collection and string lengths claiming gigabytes, the reserved marker, and
/// top-level values that are not maps (`valid` is the encoded [`request`]).
fn hand_made_structures(valid: &[u8]) -> Seeds {
    let bomb = nesting_bomb(100_000);
    vec![
        ("empty-payload", vec![]),
        ("nesting-bomb", bomb.clone()),
        (
            "nesting-bomb-in-unknown-field",
            with_field(valid, "extra", &bomb),
        ),
        (
            "nesting-bomb-as-reply-to",
            map(&[("id", encode(&"r1")), ("reply_to", bomb.clone())]),
        ),
        ("nesting-bomb-of-maps", {
            let mut out = Vec::new();
            for _ in 0..50_000 {
                out.extend_from_slice(&[0x81, 0xa1, b'x']);
            }
            out.push(0xc0);
            out
        }),
        // limits::MAX_DEPTH levels in all (the request map is the first) decode; one more
        // does not.
        (
            "nesting-at-the-limit",
            with_field(valid, "extra", &nesting_bomb(limits::MAX_DEPTH - 1)),
        ),
        (
            "nesting-past-the-limit",
            with_field(valid, "extra", &nesting_bomb(limits::MAX_DEPTH)),
        ),
        (
            "map32-claims-2^32-entries",
            vec![0xdf, 0xff, 0xff, 0xff, 0xff],
        ),
        ("map32-claims-2^32-entries-then-id", {
            let mut out = vec![0xdf, 0xff, 0xff, 0xff, 0xff];
            out.extend(encode(&"id"));
            out.extend(encode(&"r1"));
            out
        }),
        (
            "array32-claims-2^32-entries",
            vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0],
        ),
        ("reserved-marker-c1", vec![0xc1]),
        (
            "reserved-marker-c1-in-map",
            map(&[("id", vec![0xc1]), ("reply_to", encode(&"r"))]),
        ),
        ("top-level-string", encode(&"slim/v1/requests/digits")),
        ("top-level-nil", vec![0xc0]),
        ("top-level-int", vec![0x01]),
        (
            "str32-claims-4GiB-id",
            map(&[("id", vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'r'])]),
        ),
    ]
}

/// A request map written field by field, from already-encoded values.
fn raw_request(id: Vec<u8>, input: Vec<u8>, reply_to: Vec<u8>) -> Vec<u8> {
    map(&[
        ("v", encode(&1u16)),
        ("id", id),
        ("model", encode(&"digits")),
        ("input", input),
        ("reply_to", reply_to),
    ])
}

/// A tensor map written field by field, from already-encoded shape and data.
fn raw_tensor(dtype: &str, shape: Vec<u8>, data: Vec<u8>) -> Vec<u8> {
    map(&[("dtype", encode(&dtype)), ("shape", shape), ("data", data)])
}

/// Requests written by hand whose tensor claims gigabytes or an unknown dtype, or whose fields
/// have the wrong type.
fn hand_made_requests() -> Seeds {
    let id = || encode(&"r1");
    let reply_to = || encode(&"replies/me");
    let tensor = || encode(&request().input);
    let claims_4gib = vec![0xc6, 0xff, 0xff, 0xff, 0xff, 0];
    let claims_4g_dims = vec![0xdd, 0xff, 0xff, 0xff, 0xff, 1, 1];
    vec![
        (
            "bin32-claims-4GiB-data",
            raw_request(
                id(),
                raw_tensor("u8", encode(&vec![1u32]), claims_4gib),
                reply_to(),
            ),
        ),
        (
            "array32-claims-4G-dims",
            raw_request(
                id(),
                raw_tensor("u8", claims_4g_dims, bin(&[0])),
                reply_to(),
            ),
        ),
        (
            "dtype-f16",
            raw_request(
                id(),
                raw_tensor("f16", encode(&vec![1u32]), bin(&[0, 0])),
                reply_to(),
            ),
        ),
        (
            "reply-to-as-bin",
            raw_request(id(), tensor(), bin(b"replies/me")),
        ),
        (
            "id-as-integer",
            raw_request(encode(&7u8), tensor(), reply_to()),
        ),
    ]
}

/// A valid request (`valid`, encoded) with one field changed or added by hand: values no
/// encoder writes for it, a duplicate key, extension types, a request inside a request.
fn hand_made_fields(valid: &[u8]) -> Seeds {
    vec![
        // width 1e300 as a float64, which narrows to an infinite f32.
        (
            "width-as-huge-f64",
            replace_nil_field(valid, "width", &encode(&1e300f64)),
        ),
        ("version-negative", replace_field(valid, "v", &[0xff])),
        (
            "version-u64-max",
            replace_field(
                valid,
                "v",
                &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
        ),
        ("duplicate-id", with_field(valid, "id", &encode(&"r2"))),
        (
            "ext-type-field",
            with_field(valid, "x", &[0xd4, 0x01, 0x00]),
        ),
        (
            "ext32-claims-4GiB",
            with_field(valid, "x", &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ),
        (
            "request-in-request",
            with_field(
                &encode(&InferRequest {
                    reply_to: None,
                    id: String::new(),
                    ..request()
                }),
                "request",
                valid,
            ),
        ),
    ]
}

/// Truncations of a valid request (`valid`, encoded): at the first byte, inside `id`, inside
/// the tensor, and one byte short.
fn truncations(valid: &[u8]) -> Seeds {
    let cut_at = |n: usize| valid[..n].to_vec();
    let id_at = find(valid, b"\xa2r1").expect("the id is in the payload");
    let data_at = find(valid, b"data").expect("the tensor is in the payload");
    vec![
        ("truncated-request-1-byte", cut_at(1)),
        ("truncated-request-in-id", cut_at(id_at + 2)),
        ("truncated-request-in-tensor", cut_at(data_at + 6)),
        ("truncated-request-last-byte", cut_at(valid.len() - 1)),
    ]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `encoded` with the value of the top-level field `key` (a single-byte value such as a fixint
/// or nil) replaced by `value`.
fn replace_field(encoded: &[u8], key: &str, value: &[u8]) -> Vec<u8> {
    let needle = encode(&key);
    let at = find(encoded, &needle).expect("the field is in the payload") + needle.len();
    let mut out = encoded[..at].to_vec();
    out.extend_from_slice(value);
    out.extend_from_slice(&encoded[at + 1..]);
    out
}

/// [`replace_field`] for a field whose value is nil.
fn replace_nil_field(encoded: &[u8], key: &str, value: &[u8]) -> Vec<u8> {
    let mut needle = encode(&key);
    needle.push(0xc0);
    assert!(find(encoded, &needle).is_some(), "{key} is nil");
    replace_field(encoded, key, value)
}
