//! The layers a configuration is read from: the defaults in `config/default.toml`, an
//! optional file, the `RUNWATCH_*` variables, `DATABASE_URL` and `NATS_URL`.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;

use super::error::ConfigError;

/// The defaults shipped with the binary.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

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

/// Every layer merged, in order; what they say is extracted and checked by the caller.
pub fn layered(file: Option<&Path>) -> Result<Figment, ConfigError> {
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
    Ok(fig)
}
