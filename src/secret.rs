//! A string that must never be shown: passwords, tokens, nkey seeds, credentials.
//!
//! [`Secret`] wraps [`secrecy::SecretString`]: the value lives in one heap allocation that
//! is zeroed when the last copy is dropped, its `Debug` and `Display` print `[REDACTED]`,
//! so a `{:?}` of the configuration, a log line or an error message cannot carry it, and
//! the value is reachable only through [`Secret::expose`], which makes every place that
//! hands it on (to the NATS client, to the Postgres driver) easy to find.
//!
//! It deserializes from any scalar: a string as it is, and an unquoted number or boolean
//! (`password = 123456` in a TOML file) as the text of that value, because a secret is
//! whatever its owner chose and a type error would both refuse it and quote it. A list or
//! a table is refused with a message that never contains the value. (Environment
//! variables holding secrets are read as raw strings by `Config::load`, so there
//! `RUNWATCH_NATS__PASSWORD=[1]` or `=1e3` is exactly that text.)

use std::fmt;
use std::path::Path;

use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// What a secret prints as.
pub const REDACTED: &str = "[REDACTED]";

/// The message of a secret of the wrong shape (a list or a table): it never quotes it.
pub const NOT_A_STRING: &str = "a secret must be a string (quote it); value not shown";

/// A secret string. Equality compares the value; printing never shows it.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        let mut value: String = value.into();
        let secret = Secret(SecretString::from(value.as_str()));
        value.zeroize();
        secret
    }

    /// Reads a secret from a file (e.g. a mounted Kubernetes or Docker secret). One trailing
    /// line break (`\n` or `\r\n`) is removed, as editors and `echo` add one; other
    /// whitespace is kept. The error never contains the file's content.
    pub fn from_file(path: &Path) -> std::io::Result<Secret> {
        let mut value = std::fs::read_to_string(path)?;
        let mut end = value.len();
        if value.ends_with('\n') {
            end -= 1;
            if value[..end].ends_with('\r') {
                end -= 1;
            }
        }
        let secret = Secret(SecretString::from(&value[..end]));
        value.zeroize();
        Ok(secret)
    }

    /// The value itself, to hand to a client library. Never log or format it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Accepts any scalar as its text; refuses lists and tables without quoting them.
struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<Secret, E> {
        Ok(Secret::new(v.to_string()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Secret, E> {
        Ok(Secret::new(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secret, E> {
        Ok(Secret::new(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secret, E> {
        Ok(Secret::new(v.to_string()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Secret, E> {
        Ok(Secret::new(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Secret, E> {
        Ok(Secret::new(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secret, E> {
        // The shortest text that reads back as the same number (`1e3` is 1000 by then).
        Ok(Secret::new(v.to_string()))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Err(E::custom(NOT_A_STRING))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(de::Error::custom(NOT_A_STRING))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(de::Error::custom(NOT_A_STRING))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&s)), format!("Some({REDACTED})"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn deserializes_any_scalar_as_its_text_and_reads_files() {
        let s: Secret = serde_json::from_str("\"tok\"").unwrap();
        assert_eq!(s.expose(), "tok");
        for (json, text) in [
            ("123456", "123456"),
            ("true", "true"),
            ("-7", "-7"),
            ("1e3", "1000"),
        ] {
            let s: Secret = serde_json::from_str(json).unwrap();
            assert_eq!(s.expose(), text);
        }
        for json in ["[98765]", "{\"a\":98765}"] {
            let e = serde_json::from_str::<Secret>(json)
                .err()
                .unwrap()
                .to_string();
            assert!(!e.contains("98765") && e.contains("value not shown"), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "p4ss word\r\n").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "p4ss word");
        std::fs::write(&path, "no-newline").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "no-newline");
        assert!(Secret::from_file(&dir.path().join("absent")).is_err());
    }
}
