//! The HMAC-SHA256 signatures of webhook deliveries (GitHub, Buildkite, CircleCI).

use super::config::Secret;

/// Whether `tag` is the HMAC-SHA256 of the concatenated `parts` under any of `secrets`,
/// compared in constant time (every secret is tried).
pub(crate) fn hmac_matches(secrets: &[Secret], parts: &[&[u8]], tag: &[u8]) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let mut ok = false;
    for secret in secrets {
        let Ok(mut mac) =
            <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        else {
            continue;
        };
        for p in parts {
            mac.update(p);
        }
        ok |= mac.verify_slice(tag).is_ok();
    }
    ok
}

/// The hex HMAC-SHA256 of the concatenated `parts` under `key` (for tests and tools).
pub fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let Ok(mut mac) = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) else {
        // HMAC accepts keys of any length.
        return String::new();
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
