//! `[deliver]`: the retry delays of `runwatch deliver` and its `[[deliver.targets]]`, as
//! written. [`super::target`] turns a target into its runtime form and checks it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

/// The `[deliver]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverConfig {
    /// First retry delay (exponential, jittered).
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    /// Largest retry delay.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured; a longer one is cut to this.
    #[serde(with = "humantime_serde")]
    pub retry_after_max: Duration,
    /// The endpoints.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
}

/// Where a new target's consumer starts in the triggers stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// Triggers published after the consumer was first created.
    #[default]
    New,
    /// Every trigger the stream still holds.
    All,
}

/// How a target signs its requests (`signature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SignatureScheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`
    /// with `whsec_` secrets, one signature per secret (rotation).
    #[serde(rename = "standard-webhooks")]
    StandardWebhooks,
    /// `Runwatch-Signature-256: sha256=<hex HMAC-SHA256 of the body>` (GitHub's scheme).
    #[serde(rename = "runwatch")]
    Runwatch,
}

/// Whether and how a target's requests are CloudEvents (`cloudevents`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudEventsMode {
    /// Plain JSON (the trigger or the template's output).
    #[default]
    Off,
    /// `ce-*` headers, the body unchanged (`Content-Type: application/json`).
    Binary,
    /// One `application/cloudevents+json` envelope, the body as its `data`.
    Structured,
}

/// One `[[deliver.targets]]` entry as written.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Names the target (metrics, logs, dead letters) and its durable consumer.
    pub name: String,
    /// `http://` or `https://`. Never logged (only the target's name is), since some
    /// endpoints carry their credential in the URL (Slack's incoming webhooks).
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the URL (read at start-up), instead of `url`.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// The signing key: one secret for `signature = "runwatch"`, or one to
    /// [`super::target::MAX_SECRETS`] whitespace-separated `whsec_<base64>` secrets for
    /// Standard Webhooks (several during a rotation: one signature each).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// A file holding the secret (read at start-up).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The signature scheme; unset: Standard Webhooks when the secret is in the `whsec_`
    /// form, else `runwatch` (so an existing secret keeps its receivers working).
    #[serde(default)]
    pub signature: Option<SignatureScheme>,
    /// CloudEvents HTTP binding of the requests.
    #[serde(default)]
    pub cloudevents: CloudEventsMode,
    /// Glob patterns over the trigger's rule name or kind.
    #[serde(default)]
    pub rules: Option<Vec<String>>,
    /// Glob patterns over `owner/name` (case-insensitive).
    #[serde(default)]
    pub repositories: Option<Vec<String>>,
    /// Glob patterns over the provider (`github`, `gitlab`, ...).
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Bound on one request, response included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts before a trigger that keeps failing is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Extra request headers (not secret: they may be logged in a Debug dump of names).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Secret request headers: header name → environment variable holding its value.
    #[serde(default)]
    pub headers_from_env: BTreeMap<String, String>,
    /// A minijinja template of the JSON body (default: the trigger as published).
    #[serde(default)]
    pub template: Option<String>,
    /// A file holding the template.
    #[serde(default)]
    pub template_file: Option<PathBuf>,
    /// Where a new consumer starts.
    #[serde(default)]
    pub from: StartFrom,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_attempts() -> u32 {
    10
}
fn default_concurrency() -> u32 {
    4
}

impl TargetConfig {
    /// A target with the defaults (the `--url` quick start).
    pub fn quick(name: &str, url: &str, secret_file: Option<PathBuf>) -> TargetConfig {
        TargetConfig {
            name: name.into(),
            url: Some(url.into()),
            url_file: None,
            secret: None,
            secret_file,
            signature: None,
            cloudevents: CloudEventsMode::Off,
            rules: None,
            repositories: None,
            providers: None,
            timeout: default_timeout(),
            max_attempts: default_max_attempts(),
            concurrency: default_concurrency(),
            headers: BTreeMap::new(),
            headers_from_env: BTreeMap::new(),
            template: None,
            template_file: None,
            from: StartFrom::New,
        }
    }
}

/// Never shows a secret, a header value or the URL's password.
impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetConfig")
            .field("name", &self.name)
            .field("url", &self.url.as_ref().map(|_| "[not shown]"))
            .field("url_file", &self.url_file)
            .field("secret", &self.secret)
            .field("secret_file", &self.secret_file)
            .field("signature", &self.signature)
            .field("cloudevents", &self.cloudevents)
            .field("rules", &self.rules)
            .field("repositories", &self.repositories)
            .field("providers", &self.providers)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("concurrency", &self.concurrency)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("headers_from_env", &self.headers_from_env)
            .field("template", &self.template.is_some())
            .field("template_file", &self.template_file)
            .field("from", &self.from)
            .finish()
    }
}
