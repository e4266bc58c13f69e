//! Layered configuration: the defaults in `config/default.toml` (compiled in), then an
//! optional `--config FILE`, then `RUNWATCH_<SECTION>__<KEY>` environment variables, then
//! `DATABASE_URL` and `NATS_URL` ([`layers`]). Everything is validated before anything
//! connects, and an error names the key at fault.
//!
//! Each section's type lives in a leaf module that imports no runtime code (`[ingest]` and
//! `[deliver]` in `ingest::config` and `deliver::config`); this module aggregates them into
//! [`Config`] and checks what holds across sections.

pub mod bounds;
pub mod database;
pub mod error;
pub mod layers;
pub mod nats;
pub mod ranges;
pub mod rules;
pub mod sections;
pub mod streams;
pub mod telemetry;
#[cfg(test)]
mod tests;
pub mod worker;

use std::path::Path;

pub use bounds::{Bounds, Number, PURGE_OLDER_THAN, TARGET_RANGES, check_duration, short_duration};
pub use database::{DatabaseConfig, redact_url};
pub use error::ConfigError;
pub use layers::{DEFAULT_TOML, RAW_SECRET_LIST_KEYS, RAW_STRING_KEYS, env_var_of};
pub use nats::{NatsAuth, NatsConfig, UrlCredentials, split_nats_url};
pub use ranges::{KeyRange, RANGES};
pub use rules::{RULE_RANGES, check_rule_ranges, load_rules_file};
pub use sections::Config;
pub use streams::{ConsumerConfig, StreamsConfig};
pub use telemetry::{
    LogConfig, LogFormat, MAX_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG, TelemetryConfig,
};
pub use worker::{
    HttpConfig, OutboxConfig, PurgeConfig, RetryConfig, ShutdownConfig, TimersConfig,
};

use crate::engine::rules::RuleSet;
use bounds::out_of_range;

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
        let config: Config = layers::layered(file)?.extract()?;
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
        // The targets' own keys (URL, headers, templates, filters, signing) are checked by
        // `deliver::target::check`, which every command runs after loading (`cli::dispatch`).
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
