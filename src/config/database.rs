//! `[database]`, and URLs fit for logs.

use std::time::Duration;

use serde::Deserialize;

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
