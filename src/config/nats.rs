//! `[nats]`: the server URL, its credentials (one method at most) and TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::database::redact_url;
use super::error::ConfigError;
use crate::secret::Secret;

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
