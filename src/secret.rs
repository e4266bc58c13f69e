//! A string that must never be shown: passwords, tokens, nkey seeds, credentials.
//!
//! [`Secret`] deserializes from a plain string (configuration file, `RUNWATCH_*` variable)
//! or is read from a file with [`Secret::from_file`]; its `Debug` and `Display` print
//! `[REDACTED]`, so a `{:?}` of the configuration, a log line or an error message cannot
//! carry it. The value is reachable only through [`Secret::expose`], which makes every
//! place that hands it on (to the NATS client, to the Postgres driver) easy to find.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// What a secret prints as.
pub const REDACTED: &str = "[REDACTED]";

/// A secret string. Equality compares the value; printing never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Reads a secret from a file (e.g. a mounted Kubernetes or Docker secret). One trailing
    /// line break (`\n` or `\r\n`) is removed, as editors and `echo` add one; other
    /// whitespace is kept. The error never contains the file's content.
    pub fn from_file(path: &Path) -> std::io::Result<Secret> {
        let mut value = std::fs::read_to_string(path)?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        Ok(Secret(value))
    }

    /// The value itself, to hand to a client library. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

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
    fn deserializes_from_a_string_and_reads_files() {
        let s: Secret = serde_json::from_str("\"tok\"").unwrap();
        assert_eq!(s.expose(), "tok");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "p4ss word\r\n").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "p4ss word");
        std::fs::write(&path, "no-newline").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "no-newline");
        assert!(Secret::from_file(&dir.path().join("absent")).is_err());
    }
}
