//! Event decoding on hostile input: property tests over arbitrary bytes, JSON-like text and
//! mutated valid events (field deletions, type swaps, oversize strings, NUL and control
//! characters, deep nesting, huge numbers, invalid UTF-8, truncation), plus the edge cases
//! one by one. Properties: `decode` never panics; a rejection has one of the documented
//! codes (`not_json`, `schema`, `invalid`, `oversize`) and a non-empty, bounded reason; an
//! accepted event satisfies every limit and re-decodes to itself.

use proptest::prelude::*;
use runwatch::event::{Event, Limits, MAX_DETAIL_BYTES, RejectCode, Status, decode};
use serde_json::{Value, json};

/// Small limits, so generated inputs cross them often.
const SMALL: Limits = Limits {
    max_message_bytes: 4096,
    max_metadata_bytes: 256,
    max_string_bytes: 48,
    max_runs_per_group: 500,
    max_clock_skew: std::time::Duration::from_secs(300),
};

/// Checks the properties of one decode, returning the outcome.
fn check(bytes: &[u8], limits: &Limits) -> Result<Event, RejectCode> {
    match decode(bytes, limits) {
        Ok(event) => {
            let strings = [
                Some(&event.event_id),
                Some(&event.repository.owner),
                Some(&event.repository.name),
                event.repository.id.as_ref(),
                Some(&event.commit_sha),
                event.branch.as_ref(),
                Some(&event.run.id),
                Some(&event.run.workflow),
                event.run.url.as_ref(),
            ];
            for s in strings.into_iter().flatten() {
                assert!(
                    s.len() <= limits.max_string_bytes,
                    "accepted oversize {s:?}"
                );
                assert!(!s.contains('\0'), "accepted NUL in {s:?}");
            }
            assert!(!event.event_id.trim().is_empty() && !event.run.id.trim().is_empty());
            assert!(!event.event_id.chars().any(char::is_control));
            // Identifiers are printed one per line: no control character gets in.
            for s in strings.into_iter().take(8).flatten() {
                assert!(
                    !s.chars().any(char::is_control),
                    "accepted a control character in {s:?}"
                );
            }
            // Every accepted time is one Postgres stores and RFC 3339 writes in four digits.
            let year = chrono::Datelike::year(&event.run.updated_at);
            assert!((1..=9999).contains(&year), "accepted year {year}");
            assert!(event.run.attempt >= 1 && event.pr_number != Some(0));
            // Every accepted pr_number is stored as it is (a BIGINT), never clamped.
            assert!(event.pr_number.is_none_or(|p| i64::try_from(p).is_ok()));
            assert_eq!(
                event.run.status == Status::Completed,
                event.run.conclusion.is_some()
            );
            assert!(event.metadata.is_null() || event.metadata.is_object());
            let meta = serde_json::to_vec(&event.metadata).unwrap().len();
            assert!(event.metadata.is_null() || meta <= limits.max_metadata_bytes);
            let again = serde_json::to_vec(&event).unwrap();
            assert_eq!(
                decode(&again, limits).as_ref(),
                Ok(&event),
                "does not re-decode"
            );
            Ok(event)
        }
        Err(r) => {
            assert!(
                matches!(
                    r.code,
                    RejectCode::NotJson
                        | RejectCode::Schema
                        | RejectCode::Invalid
                        | RejectCode::Oversize
                ),
                "undocumented code {:?}",
                r.code
            );
            assert!(!r.detail.trim().is_empty(), "empty reason for {:?}", r.code);
            assert!(
                r.detail.len() <= MAX_DETAIL_BYTES,
                "reason of {} bytes",
                r.detail.len()
            );
            assert!(!r.to_string().is_empty());
            Err(r.code)
        }
    }
}

fn valid() -> Value {
    json!({
        "schema": "runwatch.workflow_run.v1",
        "event_id": "e-1",
        "provider": "github",
        "repository": {"owner": "octo-org", "name": "octo-repo", "id": "300029405"},
        "commit_sha": "3484a3fb816e0859fd6e",
        "branch": "feature/x",
        "pr_number": 2,
        "run": {
            "id": "289782451", "attempt": 1, "workflow": "test", "status": "completed",
            "conclusion": "failure", "url": "https://ci/1", "updated_at": "2020-10-05T16:33:24Z"
        },
        "metadata": {"k": [1, 2, {"x": null}]}
    })
}

const PATHS: &[&str] = &[
    "/schema",
    "/event_id",
    "/provider",
    "/repository",
    "/repository/owner",
    "/repository/name",
    "/repository/id",
    "/commit_sha",
    "/branch",
    "/pr_number",
    "/run",
    "/run/id",
    "/run/attempt",
    "/run/workflow",
    "/run/status",
    "/run/conclusion",
    "/run/url",
    "/run/updated_at",
    "/metadata",
];

/// One change to a valid event.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Replace(usize, Value),
    /// A string of this many bytes (multi-byte characters included).
    Long(usize, usize),
    /// A NUL (or another control character) inside the string.
    Control(usize, char),
    /// `metadata` nested this deep.
    Deep(usize),
    /// Raw bytes spliced into the serialized event at a position (modulo its length).
    Splice(usize, Vec<u8>),
    /// The serialized event cut at a position (modulo its length).
    Truncate(usize),
    /// A field whose raw JSON text is a number out of every range.
    HugeNumber(usize, &'static str),
}

fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!(["a", 1])),
        Just(json!({"owner": 1})),
        Just(Value::from("completed")),
        Just(Value::from("2020-10-05T16:33:24+25:00")),
        Just(Value::from("+275760-09-13T00:00:00Z")),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let path = 0..PATHS.len();
    prop_oneof![
        path.clone().prop_map(Mutation::Delete),
        (path.clone(), odd_value()).prop_map(|(p, v)| Mutation::Replace(p, v)),
        (path.clone(), 0usize..200).prop_map(|(p, n)| Mutation::Long(p, n)),
        (
            path.clone(),
            prop_oneof![Just('\0'), Just('\n'), Just('\u{7f}'), Just('\u{1b}')]
        )
            .prop_map(|(p, c)| Mutation::Control(p, c)),
        (1usize..400).prop_map(Mutation::Deep),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, b)| Mutation::Splice(at, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            path,
            prop_oneof![
                Just("1e400"),
                Just("-1e400"),
                Just("18446744073709551616"),
                Just("-1"),
                Just("1.5"),
                Just("123456789012345678901234567890")
            ]
        )
            .prop_map(|(p, n)| Mutation::HugeNumber(p, n)),
    ]
}

const PLACEHOLDER: &str = "__runwatch_raw_number__";

/// Applies the mutations; returns the bytes to decode.
fn mutate(mutations: &[Mutation]) -> Vec<u8> {
    let mut value = valid();
    let mut raw_numbers = Vec::new();
    let mut byte_edits = Vec::new();
    for m in mutations {
        match m {
            Mutation::Delete(p) => {
                let (parent, key) = PATHS[*p].rsplit_once('/').unwrap();
                if let Some(Value::Object(o)) = value.pointer_mut(parent) {
                    o.remove(key);
                }
            }
            Mutation::Replace(p, v) => {
                if let Some(slot) = value.pointer_mut(PATHS[*p]) {
                    *slot = v.clone();
                }
            }
            Mutation::Long(p, n) => {
                if let Some(slot) = value.pointer_mut(PATHS[*p]) {
                    let s: String = "é".repeat(n / 2) + &"x".repeat(n % 2);
                    *slot = Value::from(s);
                }
            }
            Mutation::Control(p, c) => {
                if let Some(Value::String(s)) = value.pointer_mut(PATHS[*p]) {
                    let mid = s
                        .char_indices()
                        .nth(s.chars().count() / 2)
                        .map_or(s.len(), |(i, _)| i);
                    s.insert(mid, *c);
                }
            }
            Mutation::Deep(d) => {
                let mut v = json!({});
                for _ in 0..*d {
                    v = json!({ "a": v });
                }
                value["metadata"] = v;
            }
            Mutation::HugeNumber(p, n) => {
                if let Some(slot) = value.pointer_mut(PATHS[*p]) {
                    *slot = Value::from(format!("{PLACEHOLDER}{}", raw_numbers.len()));
                    raw_numbers.push(*n);
                }
            }
            Mutation::Splice(..) | Mutation::Truncate(_) => byte_edits.push(m.clone()),
        }
    }
    let mut text = value.to_string();
    for (i, n) in raw_numbers.iter().enumerate().rev() {
        text = text.replace(&format!("\"{PLACEHOLDER}{i}\""), n);
    }
    let mut bytes = text.into_bytes();
    for m in byte_edits {
        match m {
            Mutation::Splice(at, b) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, b);
            }
            Mutation::Truncate(at) => bytes.truncate(at % (bytes.len() + 1)),
            _ => unreachable!(),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = check(&bytes, &SMALL);
        let _ = check(&bytes, &Limits::default());
    }

    #[test]
    fn json_like_text_never_panics(text in r#"[\[\]{}":,0-9a-z_.\-\\ eE+]{0,300}"#) {
        let _ = check(text.as_bytes(), &SMALL);
    }

    #[test]
    fn mutated_events_never_panic(mutations in proptest::collection::vec(mutation(), 0..5)) {
        let bytes = mutate(&mutations);
        let _ = check(&bytes, &SMALL);
        let _ = check(&bytes, &Limits::default());
    }

    /// A single string field over the limit is `oversize`, whichever field it is.
    #[test]
    fn one_oversize_string_is_oversize(field in prop::sample::select(vec![
        "/event_id", "/repository/owner", "/repository/name", "/repository/id", "/commit_sha",
        "/branch", "/run/id", "/run/workflow", "/run/url"]), extra in 1usize..100) {
        let mut v = valid();
        *v.pointer_mut(field).unwrap() = Value::from("y".repeat(SMALL.max_string_bytes + extra));
        prop_assert_eq!(check(v.to_string().as_bytes(), &SMALL).err(), Some(RejectCode::Oversize));
    }
}

fn code(bytes: &[u8]) -> RejectCode {
    check(bytes, &Limits::default()).expect_err("must be rejected")
}

fn with(pointer: &str, raw: &str) -> Vec<u8> {
    let mut v = valid();
    *v.pointer_mut(pointer).unwrap() = Value::from(PLACEHOLDER);
    v.to_string()
        .replace(&format!("\"{PLACEHOLDER}\""), raw)
        .into_bytes()
}

#[test]
fn the_valid_event_is_accepted() {
    let _ = check(valid().to_string().as_bytes(), &Limits::default()).unwrap();
    let _ = check(valid().to_string().as_bytes(), &SMALL).unwrap();
}

#[test]
fn deep_nesting_is_rejected_by_the_recursion_limit_not_the_stack() {
    // 127 levels of metadata (plus the event object) parse; far deeper is refused.
    let nest = |d: usize| format!("{}{}{}", "[".repeat(d), "1", "]".repeat(d));
    assert!(
        check(
            &with("/metadata", &format!("{{\"a\":{}}}", nest(100))),
            &Limits::default()
        )
        .is_ok()
    );
    let deep = with("/metadata", &format!("{{\"a\":{}}}", nest(20_000)));
    assert!(deep.len() < Limits::default().max_message_bytes);
    let err = decode(&deep, &Limits::default()).unwrap_err();
    assert_eq!(err.code, RejectCode::NotJson);
    assert!(err.detail.contains("recursion limit"), "{}", err.detail);
    // Bare nesting with no event around it.
    assert_eq!(code(nest(30_000).as_bytes()), RejectCode::NotJson);
    assert_eq!(
        code("{\"a\":".repeat(10_000).as_bytes()),
        RejectCode::NotJson
    );
}

#[test]
fn huge_and_out_of_range_numbers_are_rejected() {
    assert_eq!(
        code(&with("/pr_number", "18446744073709551616")),
        RejectCode::Invalid
    );
    assert_eq!(code(&with("/pr_number", "-2")), RejectCode::Invalid);
    assert_eq!(code(&with("/pr_number", "2.5")), RejectCode::Invalid);
    assert_eq!(code(&with("/pr_number", "0")), RejectCode::Invalid);
    assert_eq!(
        code(&with("/run/attempt", "4294967296")),
        RejectCode::Invalid
    );
    // Beyond f64: serde_json refuses the number while parsing.
    assert_eq!(code(&with("/pr_number", "1e400")), RejectCode::NotJson);
    assert_eq!(
        code(&with("/metadata", "{\"n\":1e400}")),
        RejectCode::NotJson
    );
    let long_digits = "9".repeat(30_000);
    assert!(
        check(
            &with("/metadata", &format!("{{\"n\":{long_digits}}}")),
            &Limits::default()
        )
        .is_err()
    );
}

/// Numbers the store cannot keep faithfully are `invalid` with a reason, not clamped: a
/// pr_number above i64::MAX (the group key is a BIGINT) would otherwise share one group
/// with every other such pull request.
#[test]
fn numbers_that_cannot_be_stored_faithfully_are_invalid() {
    for raw in ["9223372036854775808", "18446744073709551615"] {
        let err = decode(&with("/pr_number", raw), &Limits::default()).unwrap_err();
        assert_eq!(err.code, RejectCode::Invalid, "{raw}: {err}");
        assert!(
            err.detail.contains("pr_number") && err.detail.contains(raw),
            "{err}"
        );
    }
    let max = decode(
        &with("/pr_number", "9223372036854775807"),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(max.pr_number, Some(i64::MAX as u64));
    let err = decode(&with("/run/attempt", "4294967296"), &Limits::default()).unwrap_err();
    assert_eq!(err.code, RejectCode::Invalid);
    assert!(err.detail.contains("4294967296"), "{err}");
    let max = decode(&with("/run/attempt", "4294967295"), &Limits::default()).unwrap();
    assert_eq!(max.run.attempt, u32::MAX);
}

#[test]
fn invalid_utf8_and_surrogates_are_not_json() {
    let mut bytes = valid().to_string().into_bytes();
    let at = bytes.windows(5).position(|w| w == b"octo-").unwrap();
    bytes[at] = 0xff;
    assert_eq!(code(&bytes), RejectCode::NotJson);
    assert_eq!(
        code(&with("/run/workflow", r#""\ud800""#)),
        RejectCode::NotJson
    );
    assert_eq!(code(b"\xef\xbb\xbf{}"), RejectCode::NotJson);
}

#[test]
fn nul_and_control_characters() {
    assert_eq!(code(&with("/run/id", r#""12\u0000""#)), RejectCode::Invalid);
    assert_eq!(
        code(&with("/event_id", r#""e\r\nNats-Expected-Stream: x""#)),
        RejectCode::Invalid
    );
    assert_eq!(
        code(&with("/event_id", r#""e\u0007""#)),
        RejectCode::Invalid
    );
    // A NUL in metadata is carried, not stored anywhere that refuses it.
    assert!(
        check(
            &with("/metadata", r#"{"x":"a\u0000b"}"#),
            &Limits::default()
        )
        .is_ok()
    );
}

#[test]
fn limits_are_exact() {
    let l = Limits::default();
    // Strings: at the limit accepted, one byte over rejected (bytes, not characters).
    let at = "é".repeat(l.max_string_bytes / 2);
    assert!(
        check(
            &with("/run/workflow", &Value::from(at.clone()).to_string()),
            &l
        )
        .is_ok()
    );
    assert_eq!(
        code(&with("/run/workflow", &Value::from(at + "x").to_string())),
        RejectCode::Oversize
    );
    // Metadata: measured as serialized JSON.
    let meta = |n: usize| json!({ "p": "x".repeat(n) }).to_string();
    let fits = l.max_metadata_bytes - meta(0).len();
    assert!(check(&with("/metadata", &meta(fits)), &l).is_ok());
    assert_eq!(
        code(&with("/metadata", &meta(fits + 1))),
        RejectCode::Oversize
    );
    assert_eq!(code(&with("/metadata", "[1]")), RejectCode::Invalid);
    // The message: checked before parsing, even for bytes that are not JSON.
    let base = valid().to_string();
    let pad = l.max_message_bytes - base.len();
    let exact = format!("{}{}", base, " ".repeat(pad));
    assert!(check(exact.as_bytes(), &l).is_ok());
    let over = format!("{exact} ");
    let err = decode(over.as_bytes(), &l).unwrap_err();
    assert_eq!(err.code, RejectCode::Oversize);
    assert!(err.detail.contains("limit"), "{}", err.detail);
    assert_eq!(
        code(&vec![0xffu8; l.max_message_bytes + 1]),
        RejectCode::Oversize
    );
}

#[test]
fn reasons_quoting_hostile_values_are_bounded() {
    let l = Limits {
        max_string_bytes: 60_000,
        ..Limits::default()
    };
    let huge = "é".repeat(20_000);
    for pointer in ["/schema", "/provider", "/run/status", "/run/conclusion"] {
        let bytes = with(pointer, &Value::from(huge.clone()).to_string());
        let err = decode(&bytes, &l).unwrap_err();
        assert!(
            err.detail.len() <= MAX_DETAIL_BYTES,
            "{pointer}: {} bytes",
            err.detail.len()
        );
        assert!(err.detail.ends_with('…'), "{pointer}: {}", err.detail);
    }
}

#[test]
fn missing_and_mistyped_fields_say_which() {
    for p in [
        "/event_id",
        "/provider",
        "/repository",
        "/commit_sha",
        "/run",
        "/run/id",
        "/run/workflow",
        "/run/status",
        "/run/updated_at",
    ] {
        let (parent, key) = p.rsplit_once('/').unwrap();
        let mut v = valid();
        v.pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(key);
        let err = decode(v.to_string().as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(err.code, RejectCode::Invalid, "{p}: {err}");
        assert!(err.detail.contains(key), "{p}: {err}");
    }
    let mut v = valid();
    v.as_object_mut().unwrap().remove("schema");
    assert_eq!(code(v.to_string().as_bytes()), RejectCode::Schema);
    // Duplicate keys are refused, not silently resolved.
    let dup = valid().to_string().replacen(
        "\"event_id\":\"e-1\"",
        "\"event_id\":\"e-1\",\"event_id\":\"e-2\"",
        1,
    );
    assert_eq!(code(dup.as_bytes()), RejectCode::Invalid);
}
