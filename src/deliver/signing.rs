//! How a target signs its requests: [Standard Webhooks](https://www.standardwebhooks.com/)
//! or runwatch's own `Runwatch-Signature-256`, and the choice between them.
//!
//! Standard Webhooks: `webhook-id` = the trigger id (the same on every retry, the
//! receiver's idempotency key), `webhook-timestamp` = the attempt's Unix time in seconds
//! (each retry is signed anew, so a retry hours later still passes the receiver's
//! tolerance window), `webhook-signature` = `v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`,
//! one per secret, space-separated (rotation). A secret is `whsec_<base64 key>`, the key 24
//! to 64 bytes (the specification's bounds).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

use super::config::SignatureScheme;
use crate::secret::Secret;

/// The prefix of a Standard Webhooks secret.
pub const WHSEC_PREFIX: &str = "whsec_";

/// The most secrets one target holds at once (a rotation needs two).
pub const MAX_SECRETS: usize = 8;

/// The bounds of a decoded Standard Webhooks key, in bytes.
pub const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A target's signing.
pub enum Signing {
    /// No secret: requests are not signed.
    None,
    /// `Runwatch-Signature-256` with this secret (its bytes as written).
    Runwatch(Secret),
    /// Standard Webhooks with these keys (decoded from `whsec_`), in the configured order.
    StandardWebhooks(Vec<SecretSlice<u8>>),
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signing::None => f.write_str("None"),
            Signing::Runwatch(_) => f.write_str("Runwatch([REDACTED])"),
            Signing::StandardWebhooks(keys) => write!(f, "StandardWebhooks({} keys)", keys.len()),
        }
    }
}

impl Signing {
    /// The scheme in use (`None` without a secret).
    pub fn scheme(&self) -> Option<SignatureScheme> {
        match self {
            Signing::None => None,
            Signing::Runwatch(_) => Some(SignatureScheme::Runwatch),
            Signing::StandardWebhooks(_) => Some(SignatureScheme::StandardWebhooks),
        }
    }
}

/// The signing of a target from its `signature` key and its secret (`None`: no secret, or
/// a secret file not read yet). The error says what is wrong with the secret without ever
/// quoting it.
pub fn resolve(
    scheme: Option<SignatureScheme>,
    secret: Option<&Secret>,
) -> Result<Signing, String> {
    let Some(secret) = secret else {
        return match scheme {
            Some(SignatureScheme::StandardWebhooks) => Err(
                "signature = \"standard-webhooks\" needs a secret (secret or secret_file)".into(),
            ),
            _ => Ok(Signing::None),
        };
    };
    let text = secret.expose();
    let looks_standard = text.split_whitespace().any(|s| s.starts_with(WHSEC_PREFIX));
    match scheme {
        Some(SignatureScheme::Runwatch) => Ok(Signing::Runwatch(secret.clone())),
        None if !looks_standard => Ok(Signing::Runwatch(secret.clone())),
        Some(SignatureScheme::StandardWebhooks) | None => {
            let parts: Vec<&str> = text.split_whitespace().collect();
            if parts.is_empty() {
                return Err("is empty".into());
            }
            if parts.len() > MAX_SECRETS {
                return Err(format!(
                    "holds {} secrets; at most {MAX_SECRETS} (whitespace-separated)",
                    parts.len()
                ));
            }
            let mut keys = Vec::with_capacity(parts.len());
            for (n, part) in parts.iter().enumerate() {
                let which = n.saturating_add(1);
                let encoded = part.strip_prefix(WHSEC_PREFIX).ok_or_else(|| {
                    format!(
                        "secret #{which} is not in the Standard Webhooks form whsec_<base64> (value not shown)"
                    )
                })?;
                let key = decode_key(encoded).ok_or_else(|| {
                    format!(
                        "secret #{which}: the part after whsec_ is not base64 (value not shown)"
                    )
                })?;
                if !KEY_BYTES.contains(&key.len()) {
                    return Err(format!(
                        "secret #{which}: its key is {} bytes; Standard Webhooks keys are {} to {} bytes",
                        key.len(),
                        KEY_BYTES.start(),
                        KEY_BYTES.end()
                    ));
                }
                keys.push(SecretSlice::from(key));
            }
            Ok(Signing::StandardWebhooks(keys))
        }
    }
}

/// Standard base64, padded or not (the reference libraries accept both).
fn decode_key(encoded: &str) -> Option<Vec<u8>> {
    let trimmed = encoded.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .ok()
}

/// `v1,<sig> v1,<sig>...`: one signature per key of `id.timestamp.body`.
pub fn standard_webhooks_signature(
    keys: &[SecretSlice<u8>],
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> String {
    let mut out = String::new();
    for key in keys {
        // HMAC takes keys of any length.
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        out.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn the_reference_example_signs_alike() {
        // The test vector of the Standard Webhooks reference libraries.
        let Signing::StandardWebhooks(keys) = resolve(None, Some(&Secret::new(KEY))).unwrap()
        else {
            panic!("not standard webhooks")
        };
        let sig = standard_webhooks_signature(
            &keys,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn the_default_follows_the_secret() {
        let s = |t: &str| Secret::new(t);
        assert!(matches!(
            resolve(None, Some(&s("plain"))),
            Ok(Signing::Runwatch(_))
        ));
        assert!(matches!(resolve(None, None), Ok(Signing::None)));
        assert!(matches!(
            resolve(Some(SignatureScheme::Runwatch), Some(&s(KEY))),
            Ok(Signing::Runwatch(_))
        ));
        let two = format!("{KEY}\n{KEY}");
        assert!(
            matches!(resolve(None, Some(&s(&two))), Ok(Signing::StandardWebhooks(k)) if k.len() == 2)
        );
        for bad in [
            "whsec_!!!",
            "whsec_c2hvcnQ=",
            &format!("{KEY} plain"),
            &format!("{KEY} ").repeat(MAX_SECRETS + 1),
        ] {
            let e = resolve(None, Some(&s(bad))).unwrap_err();
            assert!(!e.contains(bad.trim()), "{e}");
        }
        assert!(resolve(Some(SignatureScheme::StandardWebhooks), Some(&s("plain"))).is_err());
        assert!(resolve(Some(SignatureScheme::StandardWebhooks), None).is_err());
    }
}
