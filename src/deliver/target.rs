//! A delivery target at run time: its checked configuration, its filter, its HTTP client,
//! its headers and body template. [`build`] checks every key of every target and names
//! the one at fault (`deliver.targets[N].<key>`); with `read_files` it also reads the
//! secret file and the secret header variables, without ever printing a value.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::config::{CloudEventsMode, StartFrom, TargetConfig};
use super::signing::{self, Signing};
use super::template::BodyTemplate;
use crate::config::{ConfigError, Number, TARGET_RANGES};
use crate::engine::rules::Filter;
use crate::secret::Secret;
use crate::trigger::Trigger;

/// The durable consumer of target `name` is `<CONSUMER_PREFIX><name>`.
pub const CONSUMER_PREFIX: &str = "runwatch-deliver-";

/// Headers runwatch sets itself; a target may not set them.
const RESERVED_HEADERS: [&str; 10] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "runwatch-trigger-id",
    "runwatch-delivery-attempt",
    "runwatch-signature-256",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// The prefix of the CloudEvents headers, reserved when a target sends CloudEvents.
const CE_HEADER_PREFIX: &str = "ce-";

/// The User-Agent of every request (a target's `headers` may replace it).
pub const USER_AGENT: &str = concat!("runwatch/", env!("CARGO_PKG_VERSION"));

/// The target's filters: a trigger is delivered when each matches.
#[derive(Debug, Clone)]
pub struct TargetFilter {
    rules: Filter,
    repositories: Filter,
    providers: Filter,
}

impl TargetFilter {
    /// Whether `trigger` is for this target: its rule name or kind, `owner/name` and
    /// provider each match a pattern.
    pub fn matches(&self, trigger: &Trigger) -> bool {
        (self.rules.matches(&trigger.rule_name) || self.rules.matches(&trigger.rule))
            && self.repositories.matches(&format!(
                "{}/{}",
                trigger.repository.owner, trigger.repository.name
            ))
            && self.providers.matches(trigger.provider.as_str())
    }
}

/// A checked target. Its Debug shows the name only (the URL may hold a credential).
pub struct Target {
    pub name: String,
    /// `<CONSUMER_PREFIX><name>`.
    pub consumer: String,
    pub url: reqwest::Url,
    /// How requests are signed (from `signature` and the secret).
    pub signing: Signing,
    /// Whether requests are CloudEvents, and in which mode.
    pub cloudevents: CloudEventsMode,
    pub filter: TargetFilter,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub concurrency: usize,
    /// Extra headers; the secret ones are marked sensitive.
    pub headers: HeaderMap,
    pub template: Option<BodyTemplate>,
    pub from: StartFrom,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The HTTP client of this target: its timeout, no redirects, runwatch's User-Agent.
    pub fn client(&self) -> Result<reqwest::Client, ConfigError> {
        reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| ConfigError::Invalid {
                key: format!("deliver target `{}`", self.name),
                message: format!("cannot build its HTTP client: {e}"),
            })
    }
}

/// The error of a target's file that cannot be read (never its content).
fn unreadable(key: String, target: &str, path: &std::path::Path, e: std::io::Error) -> ConfigError {
    invalid(
        key,
        format!("target `{target}`: cannot read {}: {e}", path.display()),
    )
}

fn invalid(key: String, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Checks every target's keys without reading a file or a variable: what every command
/// runs on the loaded configuration (`cli::dispatch`), so a bad target stops a worker too.
pub fn check(targets: &[TargetConfig]) -> Result<(), ConfigError> {
    build(targets, false).map(|_| ())
}

/// Checks and builds every target. Without `read_files` (every command's configuration
/// check), files and variables are not read: `secret`, a file's template and a file's URL
/// are left unset or a placeholder.
pub fn build(targets: &[TargetConfig], read_files: bool) -> Result<Vec<Target>, ConfigError> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let key = |k: &str| format!("deliver.targets[{i}].{k}");
        if t.name.is_empty()
            || t.name.len() > 64
            || !t
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                key("name"),
                format!("{:?} must be 1 to 64 letters, digits, '-' or '_'", t.name),
            ));
        }
        if !names.insert(t.name.clone()) {
            return Err(invalid(
                key("name"),
                format!("target name {:?} is used twice", t.name),
            ));
        }
        let (raw_url, url_key) = match (&t.url, &t.url_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(key("url"), "give either url or url_file, not both"));
            }
            (None, None) => return Err(invalid(key("url"), "is missing (give url or url_file)")),
            (Some(u), None) => (Secret::new(u.as_str()), "url"),
            (None, Some(path)) if read_files => {
                let u = Secret::from_file(path)
                    .map_err(|e| unreadable(key("url_file"), &t.name, path, e))?;
                (u, "url_file")
            }
            // Checked when `runwatch deliver` reads it.
            (None, Some(_)) => (Secret::new("http://url-file.invalid/"), "url_file"),
        };
        // The message never quotes the URL: it may hold a credential.
        let url = reqwest::Url::parse(raw_url.expose().trim()).map_err(|e| {
            invalid(
                key(url_key),
                format!("is not a valid URL ({e}; value not shown)"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(
                key(url_key),
                "must be an http:// or https:// URL with a host",
            ));
        }
        for (k, bounds) in TARGET_RANGES {
            let v = match *k {
                "timeout" => Number::Duration(t.timeout),
                "max_attempts" => Number::Int(t.max_attempts.into()),
                _ => Number::Int(t.concurrency.into()),
            };
            if !bounds.contains(v) {
                return Err(invalid(
                    key(k),
                    format!("{v} is out of range; accepted: {}", bounds.text()),
                ));
            }
        }
        let filter = |k: &str, p: &Option<Vec<String>>, ci: bool| match p {
            Some(p) => Filter::compile(&key(k), p, ci).map_err(|e| invalid(e.key, e.message)),
            None => Ok(Filter::any()),
        };
        let filter = TargetFilter {
            rules: filter("rules", &t.rules, false)?,
            repositories: filter("repositories", &t.repositories, true)?,
            providers: filter("providers", &t.providers, true)?,
        };
        let secret_key = if t.secret_file.is_some() {
            "secret_file"
        } else {
            "secret"
        };
        let secret = match (&t.secret, &t.secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    key("secret"),
                    "give either secret or secret_file, not both",
                ));
            }
            (Some(s), None) if s.is_empty() => return Err(invalid(key("secret"), "is empty")),
            (Some(s), None) => Some(s.clone()),
            (None, Some(path)) if read_files => {
                let s = Secret::from_file(path)
                    .map_err(|e| unreadable(key("secret_file"), &t.name, path, e))?;
                if s.is_empty() {
                    return Err(invalid(
                        key("secret_file"),
                        format!("target `{}`: {} is empty", t.name, path.display()),
                    ));
                }
                Some(s)
            }
            (None, _) => None,
        };
        let signing = if t.secret_file.is_some() && !read_files {
            // Checked when `runwatch deliver` reads the file.
            Signing::None
        } else {
            signing::resolve(t.signature, secret.as_ref()).map_err(|m| {
                let k = if secret.is_some() {
                    secret_key
                } else {
                    "signature"
                };
                invalid(key(k), format!("target `{}`: {m}", t.name))
            })?
        };
        drop(secret);
        let mut headers = HeaderMap::new();
        let header_name = |k: &str, name: &str| {
            let parsed = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(key(k), format!("{name:?} is not a valid header name")))?;
            if RESERVED_HEADERS.contains(&parsed.as_str())
                || (t.cloudevents != CloudEventsMode::Off
                    && parsed.as_str().starts_with(CE_HEADER_PREFIX))
            {
                return Err(invalid(
                    key(k),
                    format!("{name:?} is set by runwatch and cannot be configured"),
                ));
            }
            Ok(parsed)
        };
        for (name, value) in &t.headers {
            let parsed = header_name("headers", name)?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                invalid(
                    key("headers"),
                    format!("the value of {name:?} is not a valid header value"),
                )
            })?;
            headers.insert(parsed, value);
        }
        for (name, var) in &t.headers_from_env {
            let parsed = header_name("headers_from_env", name)?;
            if !read_files {
                continue;
            }
            let raw = std::env::var(var).map_err(|_| {
                invalid(
                    key("headers_from_env"),
                    format!(
                        "target `{}`: {name}: environment variable {var} is not set (or not UTF-8)",
                        t.name
                    ),
                )
            })?;
            let mut value = HeaderValue::from_str(&raw).map_err(|_| {
                invalid(key("headers_from_env"), format!("target `{}`: {name}: the value of {var} is not a valid header value (not shown)", t.name))
            })?;
            value.set_sensitive(true);
            headers.insert(parsed, value);
        }
        let source = match (&t.template, &t.template_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    key("template"),
                    "give either template or template_file, not both",
                ));
            }
            (Some(s), None) => Some((s.clone(), "template")),
            (None, Some(_)) if !read_files => None,
            (None, Some(path)) => Some((
                std::fs::read_to_string(path)
                    .map_err(|e| unreadable(key("template_file"), &t.name, path, e))?,
                "template_file",
            )),
            (None, None) => None,
        };
        let template = match source {
            Some((text, k)) => Some(
                BodyTemplate::parse(text)
                    .map_err(|e| invalid(key(k), format!("target `{}`: {e}", t.name)))?,
            ),
            None => None,
        };
        // Bounded by TARGET_RANGES above.
        let concurrency = usize::try_from(t.concurrency).unwrap_or(1);
        out.push(Target {
            name: t.name.clone(),
            consumer: format!("{CONSUMER_PREFIX}{}", t.name),
            url,
            signing,
            cloudevents: t.cloudevents,
            filter,
            timeout: t.timeout,
            max_attempts: t.max_attempts,
            concurrency,
            headers,
            template,
            from: t.from,
        });
    }
    Ok(out)
}
