//! The `[ingest]` configuration section: where the webhook server listens, its body limit,
//! and the GitHub secrets / GitLab tokens it accepts. Secrets are never shown: their
//! `Debug` prints `***`, and a wrongly typed value is reported without its content.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::config::ConfigError;
pub use crate::secret::Secret;

/// A secret list: one secret (any scalar, as its text) or a list of them. Elements are
/// read by [`Secret`]'s own deserializer, so a number or a boolean is its text and a nested
/// list is refused without being quoted.
struct SecretListVisitor;

macro_rules! one {
    ($($name:ident: $t:ty),*) => {
        $(fn $name<E: de::Error>(self, v: $t) -> Result<Self::Value, E> {
            Ok(vec![Secret::new(v.to_string())])
        })*
    };
}

impl<'de> Visitor<'de> for SecretListVisitor {
    type Value = Vec<Secret>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret string or a list of them")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Secret>, A::Error> {
        let mut out = Vec::new();
        while let Some(s) = seq.next_element::<Secret>()? {
            out.push(s);
        }
        Ok(out)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Vec<Secret>, A::Error> {
        Err(de::Error::custom(crate::secret::NOT_A_STRING))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Vec<Secret>, E> {
        Err(E::custom(crate::secret::NOT_A_STRING))
    }
    one!(visit_str: &str, visit_bool: bool, visit_char: char, visit_i64: i64, visit_u64: u64,
        visit_f64: f64, visit_i128: i128, visit_u128: u128);
}

fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    d.deserialize_any(SecretListVisitor)
}

/// `[ingest]`: the webhook server of `runwatch ingest`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Address of the webhook server.
    pub listen: SocketAddr,
    /// Largest request body accepted; a larger one is answered 413.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's line and headers (and how long a kept-alive
    /// connection may stay idle); past it the connection is closed without an answer.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body once its headers are in; past it the
    /// request is answered 408 and the connection closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Connections open at once; a connection past the bound is answered 503 and closed.
    pub max_connections: usize,
    /// Webhook requests handled at once; a request past the bound is answered 503.
    pub max_requests_in_flight: usize,
    /// Request bodies held in memory at once (those being read and those being handled),
    /// in bytes: a request is charged its `Content-Length` (or `max_body_bytes` without
    /// one) before its body is read, and answered 503 when the budget cannot cover it.
    pub max_buffered_bytes: usize,
    /// GitHub webhook secrets (any one may sign a delivery: rotation).
    #[serde(default, deserialize_with = "secret_list")]
    pub github_secrets: Vec<Secret>,
    /// A file with one more GitHub secret per line (blank lines and `#` lines skipped).
    #[serde(default)]
    pub github_secrets_file: Option<PathBuf>,
    /// GitLab webhook tokens (`X-Gitlab-Token`), any one accepted.
    #[serde(default, deserialize_with = "secret_list")]
    pub gitlab_tokens: Vec<Secret>,
    /// A file with one more GitLab token per line.
    #[serde(default)]
    pub gitlab_tokens_file: Option<PathBuf>,
    /// Buildkite webhook tokens (`X-Buildkite-Token`, or the HMAC key of
    /// `X-Buildkite-Signature`), any one accepted.
    #[serde(default, deserialize_with = "secret_list")]
    pub buildkite_tokens: Vec<Secret>,
    /// A file with one more Buildkite token per line.
    #[serde(default)]
    pub buildkite_tokens_file: Option<PathBuf>,
    /// CircleCI webhook signing secrets (`circleci-signature`), any one accepted.
    #[serde(default, deserialize_with = "secret_list")]
    pub circleci_secrets: Vec<Secret>,
    /// A file with one more CircleCI secret per line.
    #[serde(default)]
    pub circleci_secrets_file: Option<PathBuf>,
    /// `[ingest.github]`: how checks and commit statuses become runs.
    #[serde(default)]
    pub github: GithubOptions,
}

/// Per-check granularity of `check_suite` / `check_run` deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckGranularity {
    /// One run per check suite (`check_suite` deliveries; `check_run` ones are ignored).
    #[default]
    Suite,
    /// One run per check run name within its suite (`check_run` deliveries; `check_suite`
    /// ones are ignored, so nothing is counted twice).
    Run,
}

/// `[ingest.github]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubOptions {
    /// Apps (by slug) whose check suites and check runs are ignored. GitHub Actions creates
    /// a check suite for every workflow run, already counted through `workflow_run`.
    pub ignore_check_apps: Vec<String>,
    /// `suite` (default) or `run`.
    pub checks: CheckGranularity,
    /// The conclusion a commit status in state `error` gets (default `failure`).
    pub status_error: crate::event::Conclusion,
}

impl Default for GithubOptions {
    fn default() -> Self {
        GithubOptions {
            ignore_check_apps: vec!["github-actions".to_string()],
            checks: CheckGranularity::Suite,
            status_error: crate::event::Conclusion::Failure,
        }
    }
}

impl fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestConfig")
            .field("listen", &self.listen)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_requests_in_flight", &self.max_requests_in_flight)
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("github_secrets", &self.github_secrets.len())
            .field("github_secrets_file", &self.github_secrets_file)
            .field("gitlab_tokens", &self.gitlab_tokens.len())
            .field("gitlab_tokens_file", &self.gitlab_tokens_file)
            .field("buildkite_tokens", &self.buildkite_tokens.len())
            .field("buildkite_tokens_file", &self.buildkite_tokens_file)
            .field("circleci_secrets", &self.circleci_secrets.len())
            .field("circleci_secrets_file", &self.circleci_secrets_file)
            .field("github", &self.github)
            .finish()
    }
}

/// The secrets in force, from the lists and the files together.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// GitHub webhook secrets.
    pub github: Vec<Secret>,
    /// GitLab tokens.
    pub gitlab: Vec<Secret>,
    /// Buildkite tokens.
    pub buildkite: Vec<Secret>,
    /// CircleCI signing secrets.
    pub circleci: Vec<Secret>,
}

impl Credentials {
    /// Whether no provider has a secret.
    pub fn is_empty(&self) -> bool {
        self.github.is_empty()
            && self.gitlab.is_empty()
            && self.buildkite.is_empty()
            && self.circleci.is_empty()
    }
}

impl IngestConfig {
    /// Checks what types alone cannot (secrets are checked without being shown).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "ingest.max_body_bytes".into(),
                message: "must be above 0".into(),
            });
        }
        if self.max_buffered_bytes < self.max_body_bytes {
            return Err(ConfigError::Invalid {
                key: "ingest.max_buffered_bytes".into(),
                message: format!(
                    "must be at least ingest.max_body_bytes ({}), or a body of the accepted size could never be read",
                    self.max_body_bytes
                ),
            });
        }
        for (key, list) in [
            ("ingest.github_secrets", &self.github_secrets),
            ("ingest.gitlab_tokens", &self.gitlab_tokens),
            ("ingest.buildkite_tokens", &self.buildkite_tokens),
            ("ingest.circleci_secrets", &self.circleci_secrets),
        ] {
            if list.iter().any(|s| s.expose().trim().is_empty()) {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    message: "must not contain an empty secret".into(),
                });
            }
        }
        Ok(())
    }

    /// The configured secrets plus those of the `*_file` keys.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let mut github = self.github_secrets.clone();
        if let Some(path) = &self.github_secrets_file {
            github.extend(read_secrets("ingest.github_secrets_file", path)?);
        }
        let mut gitlab = self.gitlab_tokens.clone();
        if let Some(path) = &self.gitlab_tokens_file {
            gitlab.extend(read_secrets("ingest.gitlab_tokens_file", path)?);
        }
        let mut buildkite = self.buildkite_tokens.clone();
        if let Some(path) = &self.buildkite_tokens_file {
            buildkite.extend(read_secrets("ingest.buildkite_tokens_file", path)?);
        }
        let mut circleci = self.circleci_secrets.clone();
        if let Some(path) = &self.circleci_secrets_file {
            circleci.extend(read_secrets("ingest.circleci_secrets_file", path)?);
        }
        Ok(Credentials {
            github,
            gitlab,
            buildkite,
            circleci,
        })
    }
}

/// One secret per line; blank lines and lines starting with `#` are skipped.
fn read_secrets(key: &str, path: &Path) -> Result<Vec<Secret>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        key: key.into(),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Secret::new)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct W {
        #[serde(deserialize_with = "secret_list")]
        s: Vec<Secret>,
    }

    #[test]
    fn secrets_are_never_shown() {
        let w: W = toml::from_str("s = [\"hunter2\", \"x\"]").unwrap();
        assert_eq!(w.s.len(), 2);
        assert!(!format!("{:?}", w.s).contains("hunter2"));
        let one: W = toml::from_str("s = \"hunter2\"").unwrap();
        assert_eq!(one.s[0].expose(), "hunter2");
        // Through figment, as Config::load reads a file: scalars are their text, nested
        // lists are refused without being shown.
        let fig = |text: &str| {
            figment::Figment::new()
                .merge(<figment::providers::Toml as figment::providers::Format>::string(text))
                .extract::<W>()
                .map_err(|e| e.to_string())
        };
        for (text, want) in [
            ("s = 987654321", vec!["987654321"]),
            ("s = [987654321, true]", vec!["987654321", "true"]),
            ("s = true", vec!["true"]),
        ] {
            let got: Vec<String> = fig(text)
                .unwrap()
                .s
                .iter()
                .map(|s| s.expose().to_string())
                .collect();
            assert_eq!(got, want, "{text}");
        }
        let err = fig("s = [[987654321]]").err().unwrap();
        assert!(
            !err.contains("987654321") && err.contains("value not shown"),
            "{err}"
        );
    }

    #[test]
    fn files_add_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "# comment\n\n one \ntwo\n").unwrap();
        let got = read_secrets("k", &path).unwrap();
        assert_eq!(got, vec![Secret::new("one"), Secret::new("two")]);
        let err = read_secrets("k", &dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`k`"), "{err}");
    }
}
