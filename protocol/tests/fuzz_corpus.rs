//! CI half of the fuzzing: every hostile payload of the seed corpus is replayed with its expected
//! outcome, then a fixed set of mutants and proptest's arbitrary inputs run through the harness.
//! The long run is `cargo run --release -p slim-protocol --features fuzzing --example fuzz --
//! --inputs 10000000` (see `slim_protocol::fuzz`).

use std::collections::BTreeMap;

use proptest::prelude::*;
use slim_protocol::{
    fuzz::{exercise, mutate, seed_corpus, Fuzzer, Outcome, Rng, Tally, MAX_MUTANT_BYTES},
    limits, ErrorCode, InferRequest, PeekedAddress, Tensor, Topics,
};

fn corpus() -> BTreeMap<&'static str, Vec<u8>> {
    let entries = seed_corpus();
    let n = entries.len();
    let by_name: BTreeMap<_, _> = entries.into_iter().collect();
    assert_eq!(by_name.len(), n, "seed names are unique");
    by_name
}

/// The request refusal's code, id and reply topic.
fn refused(o: &Outcome) -> (ErrorCode, Option<&str>, Option<&str>) {
    match &o.request {
        Some(Err(r)) => (r.code, r.id.as_deref(), r.reply_to.as_deref()),
        other => panic!("expected a refused request, got {other:?}"),
    }
}

fn decodes_as_nothing(o: &Outcome) -> bool {
    o.request.is_none()
        && o.assignment.is_none()
        && o.telemetry.is_none()
        && o.agent_info.is_none()
        && !(o.error_reply || o.result || o.decision || o.coordinator_status)
}

#[test]
fn every_seed_has_its_expected_outcome() {
    let corpus = corpus();
    let outcomes: BTreeMap<&str, Outcome> = corpus
        .iter()
        .map(|(name, bytes)| (*name, exercise(bytes)))
        .collect();
    let o = |name: &str| {
        outcomes
            .get(name)
            .unwrap_or_else(|| panic!("no seed named {name}"))
    };
    let me = Some("replies/me");

    // Good paths: each type decodes, and only as itself.
    assert_eq!(o("valid-request").request, Some(Ok("replies/me".into())));
    assert_eq!(
        o("valid-request").peeked,
        PeekedAddress {
            id: Some("r1".into()),
            reply_to: Some("replies/me".into())
        }
    );
    assert_eq!(o("valid-request").dtype.as_deref(), Some("u8"));
    assert_eq!(o("valid-request").peeked_refusal.reply_to.as_deref(), me);
    assert_eq!(
        o("valid-request-f32-all-fields").request,
        Some(Ok("slim/v1/clients/c1/replies".into()))
    );
    assert_eq!(
        o("valid-request-as-array").request,
        Some(Ok("replies/me".into()))
    );
    assert_eq!(o("valid-telemetry").telemetry, Some(Ok(())));
    assert!(!o("valid-telemetry").telemetry_from_other_agent);
    assert_eq!(o("valid-telemetry").request_keys, 3);
    assert_eq!(o("valid-agent-info").agent_info, Some(Ok(())));
    assert!(o("valid-error-reply").error_reply);
    assert!(o("valid-result").result);
    assert!(o("valid-decision").decision);
    assert!(o("valid-coordinator-status").coordinator_status);
    for name in outcomes.keys().filter(|n| n.starts_with("valid-")) {
        let o = o(name);
        let decoded = [
            o.request.is_some(),
            o.assignment.is_some(),
            o.telemetry.is_some(),
            o.agent_info.is_some(),
            o.error_reply,
            o.result,
            o.decision,
            o.coordinator_status,
        ];
        assert_eq!(
            decoded.iter().filter(|d| **d).count(),
            1,
            "{name} decodes as exactly one type"
        );
    }

    // Reply topics that must never be published to: refused, and the refusal goes to
    // {prefix}/errors (no reply topic), still naming the id.
    for name in [
        "reply-to-over-65535-bytes",
        "reply-to-nul",
        "reply-to-plus",
        "reply-to-hash",
        "reply-to-sys",
        "reply-to-deployment-prefix",
    ] {
        assert_eq!(
            refused(o(name)),
            (ErrorCode::BadReplyTo, Some("r1"), None),
            "{name}"
        );
        assert_eq!(o(name).peeked_refusal.reply_to, None, "{name}");
    }
    assert!(
        o("reply-to-over-65535-bytes")
            .peeked
            .reply_to
            .as_ref()
            .unwrap()
            .len()
            > 65_535,
        "peeked in full, then refused by its check"
    );
    for name in ["reply-to-empty", "reply-to-absent"] {
        assert_eq!(
            refused(o(name)),
            (ErrorCode::MissingReplyTo, Some("r1"), None),
            "{name}"
        );
    }

    // Ids: refused without echoing the id, answered on the reply topic.
    assert_eq!(refused(o("id-200kB")), (ErrorCode::BadId, None, me));
    assert_eq!(refused(o("id-empty")), (ErrorCode::BadId, None, me));
    assert_eq!(o("id-200kB").peeked_refusal.id, None);

    // Tensors, numbers, names, versions.
    for (name, code) in [
        ("shape-overflow", ErrorCode::BadShape),
        ("shape-9-dims", ErrorCode::BadShape),
        ("shape-size-mismatch", ErrorCode::BadDtype),
        ("input-nan", ErrorCode::BadValue),
        ("input-inf", ErrorCode::BadValue),
        ("min-accuracy-nan", ErrorCode::BadValue),
        ("width-nan", ErrorCode::BadValue),
        ("width-inf", ErrorCode::BadValue),
        ("width-as-huge-f64", ErrorCode::BadValue),
        ("top-k-65535", ErrorCode::BadValue),
        ("model-with-slash", ErrorCode::UnknownModel),
        ("model-empty", ErrorCode::UnknownModel),
        ("version-2", ErrorCode::UnsupportedVersion),
    ] {
        assert_eq!(refused(o(name)), (code, Some("r1"), me), "{name}");
    }

    // Assignments: only a mac made with the key, for this agent, verifies.
    assert_eq!(o("assignment-signed").assignment_signed, Some(true));
    assert_eq!(
        o("assignment-signed").assignment,
        Some(Ok("replies/me".into()))
    );
    for name in [
        "assignment-no-mac",
        "assignment-forged-mac",
        "assignment-signed-for-another-agent",
    ] {
        assert_eq!(o(name).assignment_signed, Some(false), "{name}");
    }
    let hostile = o("assignment-hostile-request");
    match &hostile.assignment {
        Some(Err(r)) => assert_eq!(
            (r.code, r.reply_to.as_deref()),
            (ErrorCode::BadReplyTo, None)
        ),
        other => panic!("an assigned request to the assign topic is refused, not {other:?}"),
    }
    assert_eq!(
        hostile.peeked.reply_to.as_deref(),
        Some("slim/v1/agents/a1/assign")
    );
    assert_eq!(
        hostile.peeked_refusal.reply_to, None,
        "peeked, then refused"
    );

    // Telemetry and agent status.
    assert!(o("telemetry-other-agent").telemetry_from_other_agent);
    assert_eq!(o("telemetry-other-agent").telemetry, Some(Ok(())));
    for name in [
        "telemetry-nan-figures",
        "telemetry-100k-done-keys",
        "telemetry-oversized-key",
    ] {
        let code = o(name)
            .telemetry
            .as_ref()
            .map(|r| r.as_ref().map_err(|e| e.code()));
        assert_eq!(code, Some(Err(ErrorCode::BadValue)), "{name}");
    }
    assert_eq!(o("telemetry-100k-done-keys").request_keys, 100_002);
    assert_eq!(
        o("telemetry-key-without-nul").request_keys,
        3,
        "\"\\0\" is a key"
    );
    assert!(matches!(
        o("agent-info-10k-models").agent_info,
        Some(Err(_))
    ));
    assert!(matches!(o("agent-info-bad-names").agent_info, Some(Err(_))));

    // Malformed bytes: nothing decodes, nothing panics, peeking reads what precedes the damage.
    let nothing = PeekedAddress::default();
    for name in [
        "empty-payload",
        "nesting-bomb",
        "nesting-bomb-of-maps",
        "map32-claims-2^32-entries",
        "array32-claims-2^32-entries",
        "reserved-marker-c1",
        "top-level-string",
        "top-level-nil",
        "top-level-int",
        "str32-claims-4GiB-id",
        "truncated-request-1-byte",
    ] {
        assert!(decodes_as_nothing(o(name)), "{name}");
        assert_eq!(o(name).peeked, nothing, "{name}");
        assert_eq!(o(name).dtype, None, "{name}");
    }
    for name in [
        "nesting-bomb-in-unknown-field",
        "nesting-bomb-as-reply-to",
        "map32-claims-2^32-entries-then-id",
        "reserved-marker-c1-in-map",
        "bin32-claims-4GiB-data",
        "array32-claims-4G-dims",
        "dtype-f16",
        "id-as-integer",
        "version-negative",
        "version-u64-max",
        "duplicate-id",
        "ext32-claims-4GiB",
        "truncated-request-in-id",
        "truncated-request-in-tensor",
        "truncated-request-last-byte",
    ] {
        assert!(decodes_as_nothing(o(name)), "{name}");
    }
    // The sender of a damaged request still hears why, where the address precedes the damage.
    for name in [
        "nesting-bomb-in-unknown-field",
        "version-negative",
        "truncated-request-last-byte",
        "ext32-claims-4GiB",
    ] {
        let p = &o(name).peeked_refusal;
        assert_eq!(
            (p.id.as_deref(), p.reply_to.as_deref()),
            (Some("r1"), me),
            "{name}"
        );
    }
    // `reply_to` is encoded before `input`, so a request cut inside its tensor is still
    // answered on its own topic ...
    let p = &o("truncated-request-in-tensor").peeked;
    assert_eq!(
        (p.id.as_deref(), p.reply_to.as_deref()),
        (Some("r1"), Some("replies/me"))
    );
    // ... and what follows an oversized value is out of reach.
    for name in ["bin32-claims-4GiB-data", "array32-claims-4G-dims"] {
        let p = &o(name).peeked;
        assert_eq!(
            (p.id.as_deref(), p.reply_to.as_deref()),
            (Some("r1"), None),
            "{name}"
        );
    }
    assert_eq!(
        o("nesting-bomb-as-reply-to").peeked.id.as_deref(),
        Some("r1")
    );
    assert_eq!(o("nesting-bomb-as-reply-to").peeked.reply_to, None);
    assert_eq!(
        o("map32-claims-2^32-entries-then-id").peeked.id.as_deref(),
        Some("r1")
    );
    assert_eq!(o("truncated-request-in-id").peeked.id, None);
    assert_eq!(o("dtype-f16").dtype.as_deref(), Some("f16"));
    assert_eq!(
        o("duplicate-id").peeked.id.as_deref(),
        Some("r1"),
        "the first wins"
    );
    // Nesting: up to the limit decodes, past it is refused before it is walked.
    assert_eq!(
        o("nesting-at-the-limit").request,
        Some(Ok("replies/me".into()))
    );
    assert!(decodes_as_nothing(o("nesting-past-the-limit")));
    assert_eq!(
        o("nesting-past-the-limit")
            .peeked_refusal
            .reply_to
            .as_deref(),
        me
    );
    // Fields of an odd but decodable form.
    assert_eq!(o("reply-to-as-bin").request, Some(Ok("replies/me".into())));
    assert_eq!(
        o("reply-to-as-bin").peeked.reply_to,
        None,
        "peek reads strings only"
    );
    assert!(o("ext-type-field").request.is_some());
    assert_eq!(
        refused(o("request-in-request")).0,
        ErrorCode::MissingReplyTo
    );
    assert_eq!(
        o("request-in-request").peeked.reply_to.as_deref(),
        me,
        "a nested request's address is peeked"
    );
}

/// A fixed run of the mutator, as the long fuzz run does it, so every CI run covers the same
/// 20 000 mutants.
#[test]
fn twenty_thousand_mutants_do_not_panic() {
    let mut fuzzer = Fuzzer::new(0x5eed);
    let mut tally = Tally::default();
    for _ in 0..20_000 {
        tally.add(&exercise(&fuzzer.next_input()));
    }
    assert_eq!(tally.inputs, 20_000);
    // The mutants reach past the decoders into the checks, both ways.
    assert!(
        tally.requests_valid > 0 && tally.requests > tally.requests_valid,
        "{tally}"
    );
    assert!(
        tally.assignments > 0 && tally.telemetry > 0 && tally.agent_infos > 0,
        "{tally}"
    );
    assert!(
        tally.peeked_addressable > 0 && tally.undecodable > 0,
        "{tally}"
    );
}

#[test]
fn the_mutator_is_deterministic_and_bounded() {
    let corpus = seed_corpus();
    let run = |seed| {
        let mut rng = Rng::new(seed);
        let mut next = || rng.next_u64();
        corpus
            .iter()
            .map(|(_, bytes)| mutate(bytes, &corpus[0].1, &mut next))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    assert!(run(9).iter().all(|m| m.len() <= MAX_MUTANT_BYTES));
    let mut rng = Rng::new(1);
    let mut next = || rng.next_u64();
    assert!(!mutate(&[], &[], &mut next).is_empty());
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn reply_topics() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        "[a-z/]{1,20}",
        "(slim/v1|slim/v1/clients|\\$SYS|\\$share/g)?(/[a-z0-9+#\\x00]{0,6}){0,4}",
        ".{0,40}",
        "r{1020,1030}",
    ])
}

fn ids() -> impl Strategy<Value = String> {
    prop_oneof![".{0,8}", "i{250,260}", ".{0,300}"]
}

prop_compose! {
    fn tensors()(
        f32s in any::<bool>(),
        shape in proptest::collection::vec(prop_oneof![0u32..4, any::<u32>()], 0..10),
        data in proptest::collection::vec(any::<u8>(), 0..64),
        fit in any::<bool>(),
    ) -> Tensor {
        let dtype = if f32s { slim_protocol::DType::F32 } else { slim_protocol::DType::U8 };
        let mut t = Tensor { dtype, shape, data };
        // Half the time, bytes that match the shape, so the float check is reached.
        if fit {
            if let Some(n) = t.element_count().filter(|n| *n <= 4096) {
                t.data.resize(n * t.dtype.size(), 0x3f);
            }
        }
        t.map_data(Into::into)
    }
}

prop_compose! {
    fn requests()(
        v in prop_oneof![Just(1u16), any::<u16>()],
        id in ids(),
        model in prop_oneof![Just("digits".to_string()), ".{0,10}"],
        input in tensors(),
        reply_to in reply_topics(),
        width in proptest::option::of(any::<f32>()),
        min_accuracy in proptest::option::of(any::<f32>()),
        top_k in proptest::option::of(any::<u16>()),
    ) -> InferRequest {
        InferRequest {
            v,
            reply_to,
            width,
            min_accuracy,
            top_k,
            ..InferRequest::new(id, model, input)
        }
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_requests_are_checked_soundly(request in requests()) {
        let topics = Topics::default();
        match request.check_fields(&topics) {
            Ok(reply_to) => {
                prop_assert_eq!(limits::check_reply_to(&reply_to, &topics), Ok(()));
                prop_assert_eq!(limits::check_id(&request.id), Ok(()));
                prop_assert_eq!(Some(reply_to), request.reply_to.clone());
            }
            Err(refusal) => {
                if let Some(r) = &refusal.reply_to {
                    prop_assert_eq!(limits::check_reply_to(r, &topics), Ok(()));
                }
                if let Some(id) = &refusal.id {
                    prop_assert_eq!(limits::check_id(id), Ok(()));
                }
            }
        }
        // And the same request off the wire, through every decoder.
        exercise(&slim_protocol::encode(&request));
    }
}
