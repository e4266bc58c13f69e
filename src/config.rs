//! Layered configuration: the defaults in `config/default.toml` (compiled in), then an
//! optional `--config FILE`, then `RUNWATCH_<SECTION>__<KEY>` environment variables, then
//! `DATABASE_URL` and `NATS_URL`. Everything is validated before anything connects, and an
//! error names the key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;

use crate::engine::rules::{RuleConfig, RuleSet, RulesError};
use crate::event::Limits;
use crate::secret::Secret;

/// The defaults shipped with the binary.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Figment(Box<figment::Error>),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("configuration key `rules_file`: cannot read {path}: {source}")]
    RulesFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Rules(#[from] RulesError),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Figment(Box::new(e))
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    pub create_if_missing: bool,
    /// `lock_timeout` of every connection: a statement waiting longer for a lock fails
    /// (SQLSTATE 55P03) instead of blocking the worker silently.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// `statement_timeout` of every connection (SQLSTATE 57014 when it strikes).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// The query parameters of a connection URL whose value is hidden: sqlx and libpq take a
/// password from `?password=` as well as from the user-info part.
const SECRET_QUERY_KEYS: [&str; 2] = ["password", "sslpassword"];

/// A URL fit for logs and errors: the user-info password becomes `***`, and so does the
/// value of a `password` / `sslpassword` query parameter (sqlx accepts
/// `postgres://u@h/db?password=…`). A string that is not a URL is not shown at all, since
/// where its password would be cannot be known.
pub fn redact_url(raw: &str) -> String {
    // NATS takes a comma-separated list of servers.
    if raw.contains(',') {
        return raw
            .split(',')
            .map(redact_one_url)
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one_url(raw)
}

fn redact_one_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        // `host:port` without a scheme (NATS accepts it) has nowhere to hold a password.
        if raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
        {
            return raw.to_string();
        }
        return "<not a valid URL; not shown>".to_string();
    };
    if url.password().is_some() {
        // Fails only for URLs that cannot have a user-info part, which have no password.
        let _ = url.set_password(Some("***"));
    }
    let hides = |k: &str| SECRET_QUERY_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s));
    if url.query_pairs().any(|(k, _)| hides(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if hides(&k) {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    pub url: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// User name, with `password` or `password_file`.
    #[serde(default)]
    pub user: Option<String>,
    /// Password of `user`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password of `user` (read at start-up).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Token authentication.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// NKey authentication: the user's seed (`SU…`).
    #[serde(default)]
    pub nkey_seed: Option<Secret>,
    /// A file holding the nkey seed.
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed) for decentralized (operator) authentication.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// PEM file of the CA certificate(s) that sign the server's certificate.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `tls_key_file`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Refuse to connect without TLS (also implied by a `tls://` URL).
    #[serde(default)]
    pub tls_required: bool,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("connect_timeout", &self.connect_timeout)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("token", &self.token)
            .field("token_file", &self.token_file)
            .field("nkey_seed", &self.nkey_seed)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("creds_file", &self.creds_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_required", &self.tls_required)
            .finish()
    }
}

/// Credentials written into `nats.url` (`nats://user:password@host`, or
/// `nats://token@host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    /// `user:password@`.
    UserPassword { user: String, password: Secret },
    /// `token@`.
    Token(Secret),
}

/// Splits `nats.url` (one URL or a comma-separated list) into the URLs without their
/// user-info and the credentials that were in it, so that no client library is handed,
/// and may log, a URL with a password in it (async-nats logs the server URL at debug
/// level). Every URL of a list must carry the same credentials, or none.
pub fn split_nats_url(raw: &str) -> Result<(String, Option<UrlCredentials>), ConfigError> {
    let invalid = |message: &str| ConfigError::Invalid {
        key: "nats.url".into(),
        message: message.into(),
    };
    let mut found: Option<UrlCredentials> = None;
    let mut parts = Vec::new();
    for part in raw.split(',') {
        let part = part.trim();
        if !part.contains('@') {
            parts.push(part.to_string());
            continue;
        }
        let with_scheme = if part.contains("://") {
            part.to_string()
        } else {
            format!("nats://{part}")
        };
        let mut url = url::Url::parse(&with_scheme)
            .map_err(|_| invalid("is not a valid URL (value not shown: it has credentials)"))?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|d| d.into_owned())
                .map_err(|_| invalid("has user-info that is not valid UTF-8"))
        };
        let user = decode(url.username())?;
        let creds = match url.password() {
            Some(p) => UrlCredentials::UserPassword {
                user,
                password: Secret::new(decode(p)?),
            },
            None => UrlCredentials::Token(Secret::new(user)),
        };
        match &found {
            Some(f) if *f != creds => {
                return Err(invalid(
                    "the servers of the list carry different credentials",
                ));
            }
            _ => found = Some(creds),
        }
        let stripped = url.set_username("").is_ok() && url.set_password(None).is_ok();
        if !stripped {
            return Err(invalid("credentials cannot be removed from this URL"));
        }
        parts.push(url.to_string());
    }
    Ok((parts.join(","), found))
}

/// How runwatch authenticates to NATS, resolved from the `[nats]` keys (secret files read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials (or only those in the URL).
    None,
    /// `user` and `password` / `password_file`.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `token` / `token_file`.
    Token(Secret),
    /// `nkey_seed` / `nkey_seed_file`.
    NKey(Secret),
    /// The content of `creds_file`.
    Creds(Secret),
}

/// A secret given inline (`key`) or in a file (`key_file`), not both; the file is read now.
fn inline_or_file(
    section: &str,
    key: &str,
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    let secret = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                key: format!("{section}.{key}"),
                message: format!("give either {section}.{key} or {section}.{key}_file, not both"),
            });
        }
        (Some(s), None) => s.clone(),
        (None, Some(path)) => Secret::from_file(path).map_err(|e| ConfigError::Invalid {
            key: format!("{section}.{key}_file"),
            message: format!("cannot read {}: {e}", path.display()),
        })?,
        (None, None) => return Ok(None),
    };
    if secret.is_empty() {
        let key = match file {
            Some(_) => format!("{section}.{key}_file"),
            None => format!("{section}.{key}"),
        };
        return Err(ConfigError::Invalid {
            key,
            message: "is empty".into(),
        });
    }
    Ok(Some(secret))
}

impl NatsConfig {
    /// The authentication method, reading `password_file`, `token_file`, `nkey_seed_file`
    /// and `creds_file`. At most one method may be configured; an error names the key and
    /// never contains a secret.
    pub fn auth(&self) -> Result<NatsAuth, ConfigError> {
        let password = inline_or_file(
            "nats",
            "password",
            self.password.as_ref(),
            self.password_file.as_deref(),
        )?;
        let token = inline_or_file(
            "nats",
            "token",
            self.token.as_ref(),
            self.token_file.as_deref(),
        )?;
        let seed = inline_or_file(
            "nats",
            "nkey_seed",
            self.nkey_seed.as_ref(),
            self.nkey_seed_file.as_deref(),
        )?;
        let creds = match &self.creds_file {
            // Read as is: the parser needs the line break after the last delimiter.
            Some(path) => Some(Secret::new(std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Invalid {
                    key: "nats.creds_file".into(),
                    message: format!("cannot read {}: {e}", path.display()),
                }
            })?)),
            None => None,
        };
        let (_, from_url) = split_nats_url(&self.url)?;
        let methods = [
            ("nats.url", from_url.is_some()),
            ("nats.user", self.user.is_some() || password.is_some()),
            ("nats.token", token.is_some()),
            ("nats.nkey_seed", seed.is_some()),
            ("nats.creds_file", creds.is_some()),
        ];
        let given: Vec<&str> = methods.iter().filter(|m| m.1).map(|m| m.0).collect();
        if given.len() > 1 {
            return Err(ConfigError::Invalid {
                key: given[1].into(),
                message: format!(
                    "only one NATS authentication method may be given, found {}",
                    given.join(", ")
                ),
            });
        }
        if let Some(seed) = &seed
            && !(seed.expose().starts_with("SU") && seed.expose().len() == 58)
        {
            let key = if self.nkey_seed_file.is_some() {
                "nats.nkey_seed_file"
            } else {
                "nats.nkey_seed"
            };
            return Err(ConfigError::Invalid {
                key: key.into(),
                message: "is not a user nkey seed (58 characters starting with SU)".into(),
            });
        }
        match from_url {
            Some(UrlCredentials::UserPassword { user, password }) => {
                return Ok(NatsAuth::UserPassword { user, password });
            }
            Some(UrlCredentials::Token(token)) => return Ok(NatsAuth::Token(token)),
            None => {}
        }
        Ok(match (self.user.as_ref(), password, token, seed, creds) {
            (Some(user), Some(password), ..) => NatsAuth::UserPassword {
                user: user.clone(),
                password,
            },
            (Some(_), None, ..) => {
                return Err(ConfigError::Invalid {
                    key: "nats.password".into(),
                    message: "nats.user needs nats.password or nats.password_file".into(),
                });
            }
            (None, Some(_), ..) => {
                return Err(ConfigError::Invalid {
                    key: "nats.user".into(),
                    message: "nats.password needs nats.user".into(),
                });
            }
            (None, None, Some(token), ..) => NatsAuth::Token(token),
            (None, None, None, Some(seed), _) => NatsAuth::NKey(seed),
            (None, None, None, None, Some(creds)) => NatsAuth::Creds(creds),
            (None, None, None, None, None) => NatsAuth::None,
        })
    }

    /// Checks the TLS keys: files exist, and a client certificate comes with its key.
    pub fn validate_tls(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: "nats.tls_key_file".into(),
                    message: "nats.tls_cert_file needs nats.tls_key_file".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "nats.tls_cert_file".into(),
                    message: "nats.tls_key_file needs nats.tls_cert_file".into(),
                });
            }
            _ => {}
        }
        for (key, path) in [
            ("nats.tls_ca_file", &self.tls_ca_file),
            ("nats.tls_cert_file", &self.tls_cert_file),
            ("nats.tls_key_file", &self.tls_key_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    message: format!("file {} does not exist", path.display()),
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    pub events: String,
    pub events_subject_prefix: String,
    pub triggers: String,
    pub triggers_subject_prefix: String,
    pub dead: String,
    pub dead_subject_prefix: String,
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    pub replicas: usize,
    /// How long the events stream keeps a message (JetStream `max_age`).
    #[serde(with = "humantime_serde")]
    pub events_max_age: Duration,
    /// The events stream's size bound (`max_bytes`); the oldest messages go first.
    pub events_max_bytes: i64,
    /// How long the triggers stream keeps a trigger.
    #[serde(with = "humantime_serde")]
    pub triggers_max_age: Duration,
    /// The triggers stream's size bound.
    pub triggers_max_bytes: i64,
    /// How long the dead-letter stream keeps a letter.
    #[serde(with = "humantime_serde")]
    pub dead_max_age: Duration,
    /// The dead-letter stream's size bound.
    pub dead_max_bytes: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    pub durable: String,
    pub batch_size: usize,
    /// Record transactions of one batch in flight at once, on disjoint repositories
    /// (`worker::lanes`).
    pub lanes: usize,
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    pub max_deliver: u32,
    pub max_ack_pending: i64,
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    pub factor: f32,
    pub transaction_attempts: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    #[serde(with = "humantime_serde")]
    pub relay_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    pub relay_batch: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimersConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub batch: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub older_than: Duration,
    pub batch: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// `[telemetry]`: where spans are exported (OTLP over HTTP/protobuf).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); spans are posted to
    /// `<otlp_endpoint>/v1/traces`. Unset: `OTEL_EXPORTER_OTLP_ENDPOINT` if that is set,
    /// else no export. An empty string turns export off whatever the environment says.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The share of new traces sampled (exported), in [0, 1]; a trace that came with a
    /// `traceparent` keeps its sampled flag. Unset: `OTEL_TRACES_SAMPLER_ARG` when
    /// `OTEL_TRACES_SAMPLER` is `traceidratio` or `parentbased_traceidratio`, else 1.
    #[serde(default)]
    pub trace_sample_ratio: Option<f64>,
}

/// The standard OpenTelemetry variable read when `telemetry.otlp_endpoint` is not set.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard OpenTelemetry sampler variables, read when `telemetry.trace_sample_ratio`
/// is not set: a ratio sampler's argument is taken, other samplers are refused by name.
pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
/// See [`OTEL_TRACES_SAMPLER`].
pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

/// The longest OTLP endpoint accepted.
pub const MAX_OTLP_ENDPOINT: usize = 2048;

impl TelemetryConfig {
    /// The share of new traces sampled, checked (a number in [0, 1]), the error naming the
    /// key or the variable it came from.
    pub fn sample_ratio(&self) -> Result<f64, ConfigError> {
        let (key, ratio) =
            match self.trace_sample_ratio {
                Some(r) => ("telemetry.trace_sample_ratio", r),
                None => match std::env::var(OTEL_TRACES_SAMPLER)
                    .ok()
                    .as_deref()
                    .map(str::trim)
                {
                    None | Some("") | Some("always_on") | Some("parentbased_always_on") => {
                        return Ok(1.0);
                    }
                    Some("always_off") | Some("parentbased_always_off") => return Ok(0.0),
                    Some("traceidratio") | Some("parentbased_traceidratio") => {
                        let arg = std::env::var(OTEL_TRACES_SAMPLER_ARG).unwrap_or_default();
                        let r = arg.trim().parse::<f64>().map_err(|_| ConfigError::Invalid {
                        key: OTEL_TRACES_SAMPLER_ARG.into(),
                        message: format!(
                            "`{}` is not a number: give the share of traces sampled, in [0, 1]",
                            arg.chars().take(64).collect::<String>()
                        ),
                    })?;
                        (OTEL_TRACES_SAMPLER_ARG, r)
                    }
                    Some(other) => {
                        return Err(ConfigError::Invalid {
                            key: OTEL_TRACES_SAMPLER.into(),
                            message: format!(
                                "`{}` is not supported: runwatch samples by trace-id ratio \
                             (always_on, always_off, traceidratio and their parentbased_ forms)",
                                other.chars().take(64).collect::<String>()
                            ),
                        });
                    }
                },
            };
        if !ratio.is_finite() || !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::Invalid {
                key: key.into(),
                message: format!("{ratio} is not in [0, 1]"),
            });
        }
        Ok(ratio)
    }

    /// The endpoint spans are exported to, `None` when export is off: checked (an http or
    /// https URL with a host, no credentials, query or fragment, at most
    /// [`MAX_OTLP_ENDPOINT`] bytes), the error naming the key or the variable it came from.
    pub fn endpoint(&self) -> Result<Option<url::Url>, ConfigError> {
        let (key, value) = match &self.otlp_endpoint {
            Some(v) => ("telemetry.otlp_endpoint", v.clone()),
            None => match std::env::var(OTEL_EXPORTER_OTLP_ENDPOINT) {
                Ok(v) => (OTEL_EXPORTER_OTLP_ENDPOINT, v),
                Err(_) => return Ok(None),
            },
        };
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let invalid = |message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if value.len() > MAX_OTLP_ENDPOINT {
            return Err(invalid(format!("longer than {MAX_OTLP_ENDPOINT} bytes")));
        }
        let url = url::Url::parse(value).map_err(|e| {
            invalid(format!(
                "not a URL ({e}): give the collector's OTLP/HTTP base URL, e.g. http://collector:4318"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "scheme `{}` is not http or https",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("has no host".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "must not carry credentials (they would be logged)".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("must not have a query or a fragment".into()));
        }
        Ok(Some(url))
    }
}

/// The whole configuration, as read from its layers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub nats: NatsConfig,
    pub streams: StreamsConfig,
    pub consumer: ConsumerConfig,
    pub retry: RetryConfig,
    pub outbox: OutboxConfig,
    pub timers: TimersConfig,
    pub purge: PurgeConfig,
    pub http: HttpConfig,
    pub shutdown: ShutdownConfig,
    pub limits: Limits,
    pub log: LogConfig,
    /// `[ingest]`: the webhook server of `runwatch ingest`.
    pub ingest: crate::ingest::IngestConfig,
    /// `[deliver]`: `runwatch deliver` and its targets.
    pub deliver: crate::deliver::DeliverConfig,
    /// `[telemetry]`: OpenTelemetry export of traces (off unless an endpoint is given).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub rules: Option<Vec<RuleConfig>>,
    #[serde(default)]
    pub rules_file: Option<PathBuf>,
}

/// The bounds of one numeric configuration key. Durations are inclusive ranges; `off`
/// also accepts `0s` (which turns the feature off) below `min`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bounds {
    /// An integer in `min..=max`, or `0` when `off`.
    Int { min: i128, max: i128, off: bool },
    /// A number in `min..=max`.
    Float { min: f64, max: f64 },
    /// A duration in `min..=max`, or `0s` when `off`.
    Duration {
        min: Duration,
        max: Duration,
        off: bool,
    },
}

/// A value of a numeric key, as [`Bounds`] checks it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i128),
    Float(f64),
    Duration(Duration),
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Number::Int(v) => write!(f, "{v}"),
            Number::Float(v) => write!(f, "{v}"),
            Number::Duration(d) => f.write_str(&short_duration(*d)),
        }
    }
}

/// `d` in its largest exact unit (`365d`, `5m`, `100ms`), as humantime reads it back.
pub fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}ns", d.as_nanos());
    }
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms == 0 {
        "0s".into()
    } else {
        format!("{ms}ms")
    }
}

impl Bounds {
    /// Whether `v` is within the bounds.
    pub fn contains(&self, v: Number) -> bool {
        match (*self, v) {
            (Bounds::Int { min, max, off }, Number::Int(v)) => {
                (off && v == 0) || (min..=max).contains(&v)
            }
            (Bounds::Float { min, max }, Number::Float(v)) => {
                v.is_finite() && (min..=max).contains(&v)
            }
            (Bounds::Duration { min, max, off }, Number::Duration(v)) => {
                (off && v.is_zero()) || (min..=max).contains(&v)
            }
            _ => false,
        }
    }

    /// The range as the README's configuration table shows it: `1..=10000`,
    /// `1ms..=1h`, `0s or 1m..=30d`.
    pub fn text(&self) -> String {
        match *self {
            Bounds::Int { min, max, off } => {
                format!("{}{min}..={max}", if off { "0 or " } else { "" })
            }
            Bounds::Float { min, max } => format!("{min:?}..={max:?}"),
            Bounds::Duration { min, max, off } => format!(
                "{}{}..={}",
                if off { "0s or " } else { "" },
                short_duration(min),
                short_duration(max)
            ),
        }
    }
}

/// One numeric configuration key and its range.
#[derive(Debug, Clone, Copy)]
pub struct KeyRange {
    /// `section.key`.
    pub key: &'static str,
    /// What is accepted.
    pub bounds: Bounds,
    /// Reads the value from a configuration.
    pub get: fn(&Config) -> Number,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
const MIB: i128 = 1 << 20;
const TIB: i128 = 1 << 40;

const fn int(min: i128, max: i128) -> Bounds {
    Bounds::Int {
        min,
        max,
        off: false,
    }
}
/// `min..=max`, or `0` for "no bound".
const fn int_or_off(min: i128, max: i128) -> Bounds {
    Bounds::Int {
        min,
        max,
        off: true,
    }
}
const fn dur(min: Duration, max: Duration) -> Bounds {
    Bounds::Duration {
        min,
        max,
        off: false,
    }
}
fn n<T: Into<i128>>(v: T) -> Number {
    Number::Int(v.into())
}
fn size(v: usize) -> Number {
    Number::Int(i128::try_from(v).unwrap_or(i128::MAX))
}

/// Every numeric configuration key and its range: [`Config::validate`] checks exactly
/// these, a test checks both ends of each, and another that the README shows the same.
/// The upper ends keep every sum and product on these values far from overflow (a settle
/// or cooldown of at most 365 days added to any time an event can carry, for instance).
pub const RANGES: &[KeyRange] = &[
    KeyRange {
        key: "database.max_connections",
        bounds: int(1, 1000),
        get: |c| n(c.database.max_connections),
    },
    KeyRange {
        key: "database.acquire_timeout",
        bounds: dur(millis(10), secs(10 * MINUTE)),
        get: |c| Number::Duration(c.database.acquire_timeout),
    },
    KeyRange {
        key: "database.lock_timeout",
        bounds: dur(millis(10), secs(10 * MINUTE)),
        get: |c| Number::Duration(c.database.lock_timeout),
    },
    KeyRange {
        key: "database.statement_timeout",
        bounds: dur(millis(100), secs(HOUR)),
        get: |c| Number::Duration(c.database.statement_timeout),
    },
    KeyRange {
        key: "nats.connect_timeout",
        bounds: dur(millis(100), secs(10 * MINUTE)),
        get: |c| Number::Duration(c.nats.connect_timeout),
    },
    KeyRange {
        key: "nats.request_timeout",
        bounds: dur(millis(100), secs(10 * MINUTE)),
        get: |c| Number::Duration(c.nats.request_timeout),
    },
    KeyRange {
        key: "streams.duplicate_window",
        bounds: dur(secs(10), secs(DAY)),
        get: |c| Number::Duration(c.streams.duplicate_window),
    },
    KeyRange {
        key: "streams.replicas",
        bounds: int(1, 5),
        get: |c| size(c.streams.replicas),
    },
    KeyRange {
        key: "streams.events_max_age",
        bounds: dur(secs(HOUR), secs(3650 * DAY)),
        get: |c| Number::Duration(c.streams.events_max_age),
    },
    KeyRange {
        key: "streams.events_max_bytes",
        bounds: int_or_off(MIB, 64 * TIB),
        get: |c| n(c.streams.events_max_bytes),
    },
    KeyRange {
        key: "streams.triggers_max_age",
        bounds: dur(secs(HOUR), secs(3650 * DAY)),
        get: |c| Number::Duration(c.streams.triggers_max_age),
    },
    KeyRange {
        key: "streams.triggers_max_bytes",
        bounds: int_or_off(MIB, 64 * TIB),
        get: |c| n(c.streams.triggers_max_bytes),
    },
    KeyRange {
        key: "streams.dead_max_age",
        bounds: dur(secs(HOUR), secs(3650 * DAY)),
        get: |c| Number::Duration(c.streams.dead_max_age),
    },
    KeyRange {
        key: "streams.dead_max_bytes",
        bounds: int_or_off(MIB, 64 * TIB),
        get: |c| n(c.streams.dead_max_bytes),
    },
    KeyRange {
        key: "consumer.batch_size",
        bounds: int(1, 4096),
        get: |c| size(c.consumer.batch_size),
    },
    KeyRange {
        key: "consumer.lanes",
        bounds: int(1, 64),
        get: |c| size(c.consumer.lanes),
    },
    KeyRange {
        key: "consumer.linger",
        bounds: dur(secs(0), secs(10)),
        get: |c| Number::Duration(c.consumer.linger),
    },
    KeyRange {
        key: "consumer.ack_wait",
        bounds: dur(secs(1), secs(HOUR)),
        get: |c| Number::Duration(c.consumer.ack_wait),
    },
    KeyRange {
        key: "consumer.max_deliver",
        bounds: int(1, 1000),
        get: |c| n(c.consumer.max_deliver),
    },
    KeyRange {
        key: "consumer.max_ack_pending",
        bounds: int(1, 1_000_000),
        get: |c| n(c.consumer.max_ack_pending),
    },
    KeyRange {
        key: "consumer.heartbeat",
        bounds: dur(millis(100), secs(MINUTE)),
        get: |c| Number::Duration(c.consumer.heartbeat),
    },
    KeyRange {
        key: "retry.min_delay",
        bounds: dur(millis(1), secs(HOUR)),
        get: |c| Number::Duration(c.retry.min_delay),
    },
    KeyRange {
        key: "retry.max_delay",
        bounds: dur(millis(1), secs(HOUR)),
        get: |c| Number::Duration(c.retry.max_delay),
    },
    KeyRange {
        key: "retry.factor",
        bounds: Bounds::Float {
            min: 1.0,
            max: 10.0,
        },
        get: |c| Number::Float(f64::from(c.retry.factor)),
    },
    KeyRange {
        key: "retry.transaction_attempts",
        bounds: int(1, 100),
        get: |c| n(c.retry.transaction_attempts),
    },
    KeyRange {
        key: "outbox.relay_interval",
        bounds: dur(millis(10), secs(HOUR)),
        get: |c| Number::Duration(c.outbox.relay_interval),
    },
    KeyRange {
        key: "outbox.lease",
        bounds: dur(secs(1), secs(30 * MINUTE)),
        get: |c| Number::Duration(c.outbox.lease),
    },
    KeyRange {
        key: "outbox.relay_batch",
        bounds: int(1, 10_000),
        get: |c| n(c.outbox.relay_batch),
    },
    KeyRange {
        key: "timers.interval",
        bounds: dur(millis(10), secs(HOUR)),
        get: |c| Number::Duration(c.timers.interval),
    },
    KeyRange {
        key: "timers.batch",
        bounds: int(1, 10_000),
        get: |c| n(c.timers.batch),
    },
    KeyRange {
        key: "purge.interval",
        bounds: Bounds::Duration {
            min: secs(1),
            max: secs(30 * DAY),
            off: true,
        },
        get: |c| Number::Duration(c.purge.interval),
    },
    KeyRange {
        key: "purge.older_than",
        bounds: PURGE_OLDER_THAN,
        get: |c| Number::Duration(c.purge.older_than),
    },
    KeyRange {
        key: "purge.batch",
        bounds: int(1, 100_000),
        get: |c| n(c.purge.batch),
    },
    KeyRange {
        key: "shutdown.timeout",
        bounds: dur(secs(1), secs(HOUR)),
        get: |c| Number::Duration(c.shutdown.timeout),
    },
    KeyRange {
        key: "limits.max_message_bytes",
        bounds: int(1024, 64 * MIB),
        get: |c| size(c.limits.max_message_bytes),
    },
    KeyRange {
        key: "limits.max_metadata_bytes",
        bounds: int(16, 64 * MIB),
        get: |c| size(c.limits.max_metadata_bytes),
    },
    KeyRange {
        key: "limits.max_string_bytes",
        bounds: int(64, MIB),
        get: |c| size(c.limits.max_string_bytes),
    },
    KeyRange {
        key: "limits.max_runs_per_group",
        bounds: int(1, 100_000),
        get: |c| size(c.limits.max_runs_per_group),
    },
    KeyRange {
        key: "limits.max_clock_skew",
        bounds: dur(secs(1), secs(DAY)),
        get: |c| Number::Duration(c.limits.max_clock_skew),
    },
    KeyRange {
        key: "ingest.max_body_bytes",
        bounds: int(1024, 64 * MIB),
        get: |c| size(c.ingest.max_body_bytes),
    },
    KeyRange {
        key: "ingest.header_read_timeout",
        bounds: dur(millis(100), secs(5 * MINUTE)),
        get: |c| Number::Duration(c.ingest.header_read_timeout),
    },
    KeyRange {
        key: "ingest.body_read_timeout",
        bounds: dur(millis(100), secs(10 * MINUTE)),
        get: |c| Number::Duration(c.ingest.body_read_timeout),
    },
    KeyRange {
        key: "ingest.max_connections",
        bounds: int(1, 65_536),
        get: |c| size(c.ingest.max_connections),
    },
    KeyRange {
        key: "ingest.max_requests_in_flight",
        bounds: int(1, 65_536),
        get: |c| size(c.ingest.max_requests_in_flight),
    },
    KeyRange {
        key: "ingest.max_buffered_bytes",
        bounds: int(1024, 1024 * MIB),
        get: |c| size(c.ingest.max_buffered_bytes),
    },
    KeyRange {
        key: "deliver.min_delay",
        bounds: dur(millis(10), secs(HOUR)),
        get: |c| Number::Duration(c.deliver.min_delay),
    },
    KeyRange {
        key: "deliver.max_delay",
        bounds: dur(millis(10), secs(HOUR)),
        get: |c| Number::Duration(c.deliver.max_delay),
    },
    KeyRange {
        key: "deliver.retry_after_max",
        bounds: dur(secs(1), secs(DAY)),
        get: |c| Number::Duration(c.deliver.retry_after_max),
    },
];

/// The numeric keys of a delivery target, checked per target as
/// `deliver.targets[N].<key>`. A request's `timeout` plus a margin is its consumer's
/// `ack_wait`, so the bound keeps that sum small.
pub const TARGET_RANGES: &[(&str, Bounds)] = &[
    ("timeout", dur(millis(100), secs(10 * MINUTE))),
    ("max_attempts", int(1, 1000)),
    ("concurrency", int(1, 256)),
];

/// `purge.older_than`, and `runwatch purge --older-than`.
pub const PURGE_OLDER_THAN: Bounds = dur(secs(HOUR), secs(3650 * DAY));

/// The numeric keys of a rule (`[[rules]]` or a rules file), checked per rule as
/// `rules[N].<key>`.
pub const RULE_RANGES: &[(&str, Bounds)] = &[
    ("settle", dur(secs(0), secs(365 * DAY))),
    ("cooldown", dur(secs(0), secs(365 * DAY))),
    ("threshold", int(1, 1000)),
    ("max_triggers_per_pull_request", int(1, 1000)),
    ("max_triggers_per_repository", int(1, 1000)),
    ("budget_window", dur(secs(1), secs(365 * DAY))),
    ("flaky_window", dur(secs(MINUTE), secs(365 * DAY))),
    ("flaky_threshold", int(1, 1000)),
];

/// The value of a rule's numeric key (see [`RULE_RANGES`]); `None` for a budget the rule
/// does not set.
fn rule_number(rule: &crate::engine::rules::Rule, key: &str) -> Option<Number> {
    Some(match key {
        "settle" => Number::Duration(rule.settle),
        "cooldown" => Number::Duration(rule.cooldown),
        "max_triggers_per_pull_request" => n(rule.max_triggers_per_pull_request?),
        "max_triggers_per_repository" => n(rule.max_triggers_per_repository?),
        "budget_window" => Number::Duration(rule.budget_window),
        "flaky_window" => Number::Duration(rule.flaky_window),
        "flaky_threshold" => n(rule.flaky_threshold),
        _ => n(rule.threshold),
    })
}

/// Checks every rule of `set` against [`RULE_RANGES`].
pub fn check_rule_ranges(set: &RuleSet) -> Result<(), ConfigError> {
    for (i, rule) in set.rules().iter().enumerate() {
        for (key, bounds) in RULE_RANGES {
            let Some(v) = rule_number(rule, key) else {
                continue;
            };
            if !bounds.contains(v) {
                return Err(out_of_range(&format!("rules[{i}].{key}"), bounds, v));
            }
        }
    }
    Ok(())
}

fn out_of_range(key: &str, bounds: &Bounds, v: Number) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: format!("{v} is out of range; accepted: {}", bounds.text()),
    }
}

/// Checks a duration given on the command line against a key's bounds.
pub fn check_duration(what: &str, bounds: &Bounds, d: Duration) -> Result<(), ConfigError> {
    if bounds.contains(Number::Duration(d)) {
        Ok(())
    } else {
        Err(out_of_range(what, bounds, Number::Duration(d)))
    }
}

/// Keys whose environment variables are taken as raw strings, never parsed as TOML-ish
/// values: a secret (or a URL, which may carry one) is whatever text it is, so
/// `RUNWATCH_NATS__PASSWORD=123456`, `=true`, `=[1]` or `=1e3` is that text, and a parse
/// error can never quote it.
pub const RAW_STRING_KEYS: [&str; 6] = [
    "database.url",
    "nats.url",
    "nats.user",
    "nats.password",
    "nats.token",
    "nats.nkey_seed",
];

/// Secret lists: from the environment, a TOML array of quoted strings
/// (`RUNWATCH_INGEST__GITHUB_SECRETS='["a", "b"]'`) is a list, anything else is one secret,
/// taken as it is.
pub const RAW_SECRET_LIST_KEYS: [&str; 2] = ["ingest.github_secrets", "ingest.gitlab_tokens"];

/// The `RUNWATCH_*` variable of a configuration key (`nats.password` →
/// `RUNWATCH_NATS__PASSWORD`).
pub fn env_var_of(key: &str) -> String {
    format!("RUNWATCH_{}", key.replace('.', "__").to_uppercase())
}

/// The value of an environment variable as it is, or an error that names the key (and not
/// the value) when it is not UTF-8. Names compare case-insensitively, as figment does.
fn raw_env(name: &str, key: &str) -> Result<Option<String>, ConfigError> {
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.eq_ignore_ascii_case(name)) {
            return match v.into_string() {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(ConfigError::Invalid {
                    key: key.into(),
                    message: format!("{name} is not valid UTF-8"),
                }),
            };
        }
    }
    Ok(None)
}

/// A secret list from an environment variable (see [`RAW_SECRET_LIST_KEYS`]).
fn secret_list_from_env(raw: &str) -> Vec<String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct List {
        v: Vec<String>,
    }
    if raw.trim_start().starts_with('[')
        && let Ok(list) = toml::from_str::<List>(&format!("v = {raw}"))
    {
        return list.v;
    }
    vec![raw.to_string()]
}

/// Reads a TOML configuration file and checks its syntax here, so that a syntax error is
/// reported by line and column only: the TOML parser's own message quotes the line, which
/// may hold a secret.
fn read_toml_file(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        key: "--config".into(),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    if let Err(e) = toml::from_str::<toml::Table>(&text) {
        let at = e.span().map_or_else(String::new, |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        });
        return Err(ConfigError::Invalid {
            key: "--config".into(),
            message: format!(
                "{} is not valid TOML{at}: {} (the line is not shown: it may hold a secret)",
                path.display(),
                e.message()
            ),
        });
    }
    Ok(text)
}

impl Config {
    /// Reads the layers: defaults, `file` (if given), `RUNWATCH_*` and the two URL variables,
    /// then the NATS secret files, so a missing or unreadable one is reported before
    /// anything connects.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let config = Self::load_without_nats_secrets(file)?;
        config.nats.auth()?;
        Ok(config)
    }

    /// [`Config::load`] without reading the NATS secret files: for `runwatch migrate`,
    /// which needs the database only (its Kubernetes init container mounts no NATS creds).
    pub fn load_without_nats_secrets(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::new().merge(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid {
                    key: "--config".into(),
                    message: format!("file {} does not exist", path.display()),
                });
            }
            fig = fig.merge(Toml::string(&read_toml_file(path)?));
        }
        let raw: Vec<&str> = RAW_STRING_KEYS
            .iter()
            .chain(&RAW_SECRET_LIST_KEYS)
            .copied()
            .collect();
        fig = fig
            // Only RUNWATCH_<SECTION>__<KEY> and RUNWATCH_RULES_FILE are configuration;
            // other RUNWATCH_* variables (fault injection, tests) are not. Secrets and URLs
            // are read below as raw strings.
            .merge(
                Env::prefixed("RUNWATCH_")
                    .filter(|k| k.as_str().contains("__") || k == "rules_file")
                    .split("__")
                    .filter(move |k| !raw.iter().any(|r| k.as_str().eq_ignore_ascii_case(r))),
            );
        for key in RAW_STRING_KEYS {
            if let Some(v) = raw_env(&env_var_of(key), key)? {
                fig = fig.merge(Serialized::default(key, v));
            }
        }
        for key in RAW_SECRET_LIST_KEYS {
            if let Some(v) = raw_env(&env_var_of(key), key)? {
                fig = fig.merge(Serialized::default(key, secret_list_from_env(&v)));
            }
        }
        for (name, key) in [("DATABASE_URL", "database.url"), ("NATS_URL", "nats.url")] {
            if let Some(v) = raw_env(name, key)? {
                fig = fig.merge(Serialized::default(key, v));
            }
        }
        let config: Config = fig.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: message.into(),
            })
        };
        if !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return invalid(
                "database.url",
                "must start with postgres:// or postgresql://",
            );
        }
        for r in RANGES {
            let v = (r.get)(self);
            if !r.bounds.contains(v) {
                return Err(out_of_range(r.key, &r.bounds, v));
            }
        }
        if self.consumer.max_ack_pending < self.consumer.batch_size as i64 {
            return invalid(
                "consumer.max_ack_pending",
                "must be at least consumer.batch_size",
            );
        }
        if self.consumer.heartbeat >= self.consumer.ack_wait {
            return invalid("consumer.heartbeat", "must be below consumer.ack_wait");
        }
        if self.database.lock_timeout > self.database.statement_timeout {
            return invalid(
                "database.lock_timeout",
                "must not exceed database.statement_timeout (a lock wait counts toward the statement's time)",
            );
        }
        if self.retry.min_delay > self.retry.max_delay {
            return invalid("retry.min_delay", "must not exceed retry.max_delay");
        }
        if self.outbox.lease >= self.streams.duplicate_window {
            return invalid(
                "outbox.lease",
                "must be shorter than streams.duplicate_window, so a republish is deduplicated",
            );
        }
        for (key, value) in [
            ("streams.events", &self.streams.events),
            ("streams.triggers", &self.streams.triggers),
            ("streams.dead", &self.streams.dead),
            ("consumer.durable", &self.consumer.durable),
        ] {
            if value.is_empty()
                || value
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
            {
                return invalid(
                    key,
                    "must be a non-empty name without spaces, '.', '*', '>', '/'",
                );
            }
        }
        for (key, value) in [
            (
                "streams.events_subject_prefix",
                &self.streams.events_subject_prefix,
            ),
            (
                "streams.triggers_subject_prefix",
                &self.streams.triggers_subject_prefix,
            ),
            (
                "streams.dead_subject_prefix",
                &self.streams.dead_subject_prefix,
            ),
        ] {
            if value.is_empty()
                || value.ends_with('.')
                || value
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '*' | '>'))
            {
                return invalid(
                    key,
                    "must be a subject prefix without wildcards or a trailing '.'",
                );
            }
        }
        self.nats.validate_tls()?;
        for (key, max_age) in [
            ("streams.events_max_age", self.streams.events_max_age),
            ("streams.triggers_max_age", self.streams.triggers_max_age),
            ("streams.dead_max_age", self.streams.dead_max_age),
        ] {
            if self.streams.duplicate_window > max_age {
                return Err(ConfigError::Invalid {
                    key: "streams.duplicate_window".into(),
                    message: format!("must not exceed {key} (JetStream refuses it)"),
                });
            }
        }
        if self.rules.is_some() && self.rules_file.is_some() {
            return invalid(
                "rules_file",
                "give either [[rules]] or rules_file, not both",
            );
        }
        self.ingest.validate()?;
        self.telemetry.endpoint()?;
        self.telemetry.sample_ratio()?;
        if self.deliver.min_delay > self.deliver.max_delay {
            return invalid("deliver.min_delay", "must not exceed deliver.max_delay");
        }
        // Secret files and variables are read by `runwatch deliver` only.
        crate::deliver::target::build(&self.deliver.targets, false)?;
        // Compiling the rules reports their own errors with the key.
        self.rule_set()?;
        Ok(())
    }

    /// The rule set in force: `rules_file`, else `[[rules]]`, else the default rule.
    pub fn rule_set(&self) -> Result<RuleSet, ConfigError> {
        if let Some(path) = &self.rules_file {
            return load_rules_file(path);
        }
        let set = match &self.rules {
            Some(rules) => RuleSet::compile(rules)?,
            None => RuleSet::default_rules(),
        };
        check_rule_ranges(&set)?;
        Ok(set)
    }
}

/// Reads a rules file: a TOML document with a `[[rules]]` array. It replaces the default set.
pub fn load_rules_file(path: &Path) -> Result<RuleSet, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::RulesFile {
        path: path.to_path_buf(),
        source,
    })?;
    let set = RuleSet::from_toml(&text)?;
    check_rule_ranges(&set)?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let c: Config = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .extract()
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c.consumer.batch_size, 256);
        assert_eq!(c.rule_set().unwrap().rules().len(), 1);
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[consumer]\nbatch_size = \"lots\""))
            .extract::<Config>()
            .unwrap_err();
        assert!(err.to_string().contains("batch_size"), "{err}");

        let mut c: Config = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .extract()
            .unwrap();
        c.consumer.batch_size = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("consumer.batch_size"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let err = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[consumer]\nbatchsize = 3"))
            .extract::<Config>()
            .unwrap_err();
        assert!(err.to_string().contains("batchsize"), "{err}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        // sqlx and libpq also take the password from the query string.
        for url in [
            "postgres://u@h/db?password=s3cr3t-q",
            "postgres://u@h/db?sslmode=disable&PASSWORD=s3cr3t-q",
            "postgres://u:s3cr3t-q@h/db?sslpassword=s3cr3t-q&application_name=x",
            "postgresql://u:s3cr3t%40q@[::1]:5432/db",
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        assert!(
            redact_url("postgres://u@h/db?sslmode=disable&password=x").contains("sslmode=disable")
        );
        assert!(!redact_url("not a url s3cr3t").contains("s3cr3t"));
    }

    #[test]
    fn nats_url_credentials_are_split_off() {
        let (url, creds) = split_nats_url("nats://u:p%40ss@h:4222").unwrap();
        assert_eq!(url, "nats://h:4222");
        assert_eq!(
            creds,
            Some(UrlCredentials::UserPassword {
                user: "u".into(),
                password: Secret::new("p@ss")
            })
        );
        let (url, creds) = split_nats_url("tok123@h1:4222, tls://tok123@h2:4222").unwrap();
        assert_eq!(url, "nats://h1:4222,tls://h2:4222");
        assert_eq!(creds, Some(UrlCredentials::Token(Secret::new("tok123"))));
        let (url, creds) = split_nats_url("nats://h1:4222,h2:4222").unwrap();
        assert_eq!((url.as_str(), creds), ("nats://h1:4222,h2:4222", None));
        let err = split_nats_url("nats://u:a1@h1,nats://u:b2@h2")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`nats.url`") && !err.contains("a1") && !err.contains("b2"),
            "{err}"
        );
        // With another method too: one method only.
        let mut c: Config = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .extract()
            .unwrap();
        c.nats.url = "nats://u:pw-9@h:4222".into();
        assert_eq!(
            c.nats.auth().unwrap(),
            NatsAuth::UserPassword {
                user: "u".into(),
                password: Secret::new("pw-9")
            }
        );
        c.nats.token = Some(Secret::new("t"));
        let err = c.nats.auth().unwrap_err().to_string();
        assert!(err.contains("only one") && !err.contains("pw-9"), "{err}");
        assert_eq!(
            redact_url("nats://u:pw-9@h1:4222,h2:4222"),
            "nats://u:***@h1:4222,h2:4222"
        );
    }

    /// Settings under which each key's extremes are compatible with the cross-key rules
    /// (heartbeat < ack_wait, lease < duplicate_window <= every max_age, batch_size <=
    /// max_ack_pending, min_delay <= max_delay), so each bound is tested alone.
    const ROOMY: &str = r#"
        [database]
        lock_timeout = "10ms"
        statement_timeout = "1h"
        [consumer]
        heartbeat = "100ms"
        ack_wait = "1h"
        batch_size = 1
        max_ack_pending = 1000000
        [retry]
        min_delay = "1ms"
        max_delay = "1h"
        [outbox]
        lease = "1s"
        [streams]
        duplicate_window = "1h"
        [deliver]
        min_delay = "10ms"
        max_delay = "1h"
        [ingest]
        max_body_bytes = 1024
        max_buffered_bytes = 1073741824
    "#;

    /// The configuration with `key = value` (a TOML literal) over [`ROOMY`], validated.
    fn with_key(key: &str, value: &str) -> Result<Config, ConfigError> {
        let (section, field) = key.split_once('.').unwrap();
        let c: Config = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(ROOMY))
            .merge(Toml::string(&format!("[{section}]\n{field} = {value}\n")))
            .extract()?;
        c.validate()?;
        Ok(c)
    }

    /// TOML literals just inside and just outside the bounds: (in, out).
    fn extremes(b: &Bounds) -> (Vec<String>, Vec<String>) {
        let d = |d: Duration| format!("\"{}\"", short_duration(d));
        match *b {
            Bounds::Int { min, max, off } => {
                let mut inside = vec![min.to_string(), max.to_string()];
                if off {
                    inside.push("0".into());
                }
                let outside = [min - 1, max + 1]
                    .into_iter()
                    .filter(|v| !(off && *v == 0))
                    .map(|v| v.to_string());
                (inside, outside.collect())
            }
            Bounds::Float { min, max } => (
                vec![format!("{min:?}"), format!("{max:?}")],
                vec![format!("{:?}", min - 0.01), format!("{:?}", max + 0.01)],
            ),
            Bounds::Duration { min, max, off } => {
                let mut inside = vec![d(min), d(max)];
                let mut outside = vec![d(max + Duration::from_millis(1))];
                if !min.is_zero() {
                    outside.push(d(min - Duration::from_millis(1)));
                }
                if off {
                    inside.push("\"0s\"".into());
                }
                (inside, outside)
            }
        }
    }

    #[test]
    fn every_key_accepts_its_range_and_names_itself_outside_it() {
        with_key("log.level", "\"info\"").expect("the roomy base is valid");
        for r in RANGES {
            let (inside, outside) = extremes(&r.bounds);
            for v in inside {
                if let Err(e) = with_key(r.key, &v) {
                    panic!("{} = {v} must be accepted: {e}", r.key);
                }
            }
            for v in outside {
                let err = with_key(r.key, &v)
                    .err()
                    .unwrap_or_else(|| panic!("{} = {v} accepted", r.key));
                let text = err.to_string();
                assert!(
                    text.contains(&format!("`{}`", r.key)),
                    "{} = {v}: {text}",
                    r.key
                );
                assert!(text.contains(&r.bounds.text()), "{} = {v}: {text}", r.key);
            }
        }
    }

    #[test]
    fn a_lock_timeout_above_the_statement_timeout_is_refused_naming_the_key() {
        let err = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(
                "[database]\nlock_timeout = \"31s\"\nstatement_timeout = \"30s\"\n",
            ))
            .extract::<Config>()
            .map_err(ConfigError::from)
            .and_then(|c| c.validate())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`database.lock_timeout`"), "{err}");
        assert!(err.contains("database.statement_timeout"), "{err}");
        let c: Config = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .extract()
            .unwrap();
        assert_eq!(c.database.lock_timeout, Duration::from_secs(5));
        assert_eq!(c.database.statement_timeout, Duration::from_secs(30));
    }

    #[test]
    fn every_numeric_key_has_a_range() {
        // Each numeric leaf of the defaults (and the new stream limits) is in RANGES.
        let table: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
        let mut numeric = Vec::new();
        for (section, v) in &table {
            let Some(t) = v.as_table() else { continue };
            for (k, v) in t {
                let is_duration = v
                    .as_str()
                    .is_some_and(|s| humantime::parse_duration(s).is_ok());
                if v.is_integer() || v.is_float() || is_duration {
                    numeric.push(format!("{section}.{k}"));
                }
            }
        }
        assert!(numeric.len() > 30, "{numeric:?}");
        for key in numeric {
            assert!(
                RANGES.iter().any(|r| r.key == key),
                "{key} has no range in RANGES"
            );
        }
    }

    #[test]
    fn rule_keys_have_ranges() {
        let rules = |body: &str| {
            let c: Result<Config, _> = Figment::new()
                .merge(Toml::string(DEFAULT_TOML))
                .merge(Toml::string(&format!("[[rules]]\n{body}\n")))
                .extract();
            c.map_err(ConfigError::from).and_then(|c| c.validate())
        };
        for ok in [
            "kind = \"all_completed_with_failure\"\nsettle = \"365d\"\ncooldown = \"365d\"",
            "kind = \"repeated_failure\"\nthreshold = 1000",
            "kind = \"all_completed_with_failure\"\nmax_triggers_per_pull_request = 1000\nmax_triggers_per_repository = 1\nbudget_window = \"365d\"",
            "kind = \"all_completed_with_failure\"\nmax_triggers_per_repository = 1000\nbudget_window = \"1s\"",
            "kind = \"all_completed_with_failure\"\nflaky_window = \"1m\"\nflaky_threshold = 1000",
            "kind = \"all_completed_with_failure\"\nflaky_window = \"365d\"\nflaky_threshold = 1",
        ] {
            rules(ok).unwrap();
        }
        for (bad, key) in [
            (
                "kind = \"all_completed_with_failure\"\nsettle = \"500000y\"",
                "rules[0].settle",
            ),
            (
                "kind = \"all_completed_with_failure\"\ncooldown = \"366d\"",
                "rules[0].cooldown",
            ),
            (
                "kind = \"repeated_failure\"\nthreshold = 1001",
                "rules[0].threshold",
            ),
            (
                "kind = \"all_completed_with_failure\"\nmax_triggers_per_pull_request = 1001",
                "rules[0].max_triggers_per_pull_request",
            ),
            (
                "kind = \"all_completed_with_failure\"\nmax_triggers_per_repository = 99999999999",
                "rules[0].max_triggers_per_repository",
            ),
            (
                "kind = \"all_completed_with_failure\"\nmax_triggers_per_repository = 5\nbudget_window = \"366d\"",
                "rules[0].budget_window",
            ),
            (
                "kind = \"all_completed_with_failure\"\nmax_triggers_per_repository = 5\nbudget_window = \"500ms\"",
                "rules[0].budget_window",
            ),
            (
                "kind = \"all_completed_with_failure\"\nflaky_window = \"59s\"",
                "rules[0].flaky_window",
            ),
            (
                "kind = \"all_completed_with_failure\"\nflaky_window = \"366d\"",
                "rules[0].flaky_window",
            ),
        ] {
            let e = rules(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{key}`")) && e.contains("out of range"),
                "{e}"
            );
        }
    }

    #[test]
    fn ingest_buffer_holds_at_least_one_body() {
        let with = |extra: &str| {
            let c: Config = Figment::new()
                .merge(Toml::string(DEFAULT_TOML))
                .merge(Toml::string(extra))
                .extract()
                .unwrap();
            c.validate()
        };
        with("[ingest]\nmax_body_bytes = 2048\nmax_buffered_bytes = 2048\n").unwrap();
        let e = with("[ingest]\nmax_body_bytes = 2048\nmax_buffered_bytes = 2047\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`ingest.max_buffered_bytes`") && e.contains("ingest.max_body_bytes (2048)"),
            "{e}"
        );
    }

    /// The README's configuration table shows each key's range exactly as the code checks
    /// it: the row that names the key has the range in its `range` column.
    #[test]
    fn readme_shows_every_range() {
        let readme = include_str!("../README.md");
        let rows: Vec<Vec<&str>> = readme
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| l.split(" | ").collect())
            .collect();
        let header = readme
            .lines()
            .find(|l| l.starts_with("| key | default |"))
            .expect("configuration table");
        assert!(header.contains("| range |"), "{header}");
        let mut keys: Vec<(String, String)> = RANGES
            .iter()
            .map(|r| (r.key.to_string(), r.bounds.text()))
            .collect();
        keys.extend(
            RULE_RANGES
                .iter()
                .map(|(k, b)| (format!("rules[].{k}"), b.text())),
        );
        keys.extend(
            TARGET_RANGES
                .iter()
                .map(|(k, b)| (format!("deliver.targets[].{k}"), b.text())),
        );
        for (key, range) in keys {
            let (section, field) = key.split_once('.').unwrap();
            // A row names the key in full, or its section in full and the field after it.
            let row = rows.iter().find(|cells| {
                let first = cells[0];
                first.contains(&format!("`{key}`"))
                    || (first.contains(&format!("`{section}."))
                        && first.contains(&format!("`{field}`")))
            });
            let row = row.unwrap_or_else(|| panic!("no README configuration row names {key}"));
            assert!(row.len() >= 4, "{row:?}");
            assert!(
                row[2].contains(&range),
                "{key}: README says {:?}, the code {range}",
                row[2]
            );
        }
    }
}
