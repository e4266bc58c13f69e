//! libFuzzer over `runwatch::event::decode`: it must never panic, and its outcome must keep
//! the promises of `tests/api/decode_fuzz.rs` (documented codes, a bounded non-empty reason,
//! accepted events within the limits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use runwatch::event::{Limits, MAX_DETAIL_BYTES, RejectCode, decode};

fuzz_target!(|data: &[u8]| {
    for limits in [
        Limits::default(),
        Limits {
            max_message_bytes: 4096,
            max_metadata_bytes: 256,
            max_string_bytes: 48,
            max_runs_per_group: 500,
        },
    ] {
        match decode(data, &limits) {
            Ok(event) => {
                assert!(event.event_id.len() <= limits.max_string_bytes);
                assert!(event.run.id.len() <= limits.max_string_bytes);
                assert!(!event.event_id.chars().any(char::is_control));
            }
            Err(r) => {
                assert!(matches!(
                    r.code,
                    RejectCode::NotJson | RejectCode::Schema | RejectCode::Invalid | RejectCode::Oversize
                ));
                assert!(!r.detail.is_empty() && r.detail.len() <= MAX_DETAIL_BYTES);
            }
        }
    }
});
