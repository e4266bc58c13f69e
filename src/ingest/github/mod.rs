//! GitHub webhooks, pure: signature verification (`X-Hub-Signature-256`) and the
//! normalization of `workflow_run` deliveries into `runwatch.workflow_run.v1` events and of
//! `workflow_job` deliveries into `runwatch.workflow_job.v1` jobs
//! (`check_suite`, `check_run` and `status` are in [`checks`]).
//!
//! Choices (README "Webhooks"):
//! - The run's state is taken from `workflow_run.status` (the `action` only when the status
//!   is absent): `requested`, `waiting`, `pending`, `queued` → `queued`.
//! - One event per pull request in `workflow_run.pull_requests`. With none or one, the
//!   event id is the delivery id; with several it is `<delivery>:<pr number>` for each.
//! - A run from a fork (`head_repository.id` differs from `repository.id`) has no pull
//!   requests in the payload (GitHub leaves the list empty): it is published with
//!   `pr_number: null` and branch `<fork owner>:<head_branch>`, so it never fires a
//!   `require_pr` rule and never mixes into the base repository's branch streaks.
//! - Workflow name: `workflow_run.name`, else `workflow.name`, else `workflow_run.path`.

mod checks;
mod job;
mod payload;
mod pull_request;
mod workflow_run;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::config::{GithubOptions, Secret};
use super::{NormalizeError, Normalized};

/// Verifies `X-Hub-Signature-256` (`sha256=<hex>`): HMAC-SHA256 of the raw body under any
/// of `secrets`, compared in constant time. False for a missing or malformed header.
pub fn verify_signature(secrets: &[Secret], header: Option<&str>, body: &[u8]) -> bool {
    let Some(header) = header else { return false };
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hex) else {
        return false;
    };
    let mut ok = false;
    for secret in secrets {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        else {
            continue;
        };
        mac.update(body);
        // verify_slice compares in constant time; every secret is tried.
        ok |= mac.verify_slice(&tag).is_ok();
    }
    ok
}

/// The `X-Hub-Signature-256` value of `body` under `secret` (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!("sha256={}", hex::encode(tag))
}

/// The JSON of a delivery. A webhook with content type `application/x-www-form-urlencoded`
/// (GitHub's default for repository and organization webhooks created through the API) sends
/// `payload=<url-encoded JSON>`; `application/json` (and no content type) sends the JSON
/// itself. The signature is checked over the raw body before this, as GitHub computes it.
pub fn json_body<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, NormalizeError> {
    let form = content_type.is_some_and(|c| {
        c.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !form {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| std::borrow::Cow::Owned(v.into_owned().into_bytes()))
        .ok_or(NormalizeError::Field("payload"))
}

/// Normalizes one delivery. `event_name` is `X-GitHub-Event`, `delivery` is
/// `X-GitHub-Delivery`. `ping` answers [`Normalized::Ping`]; `workflow_run`, `check_suite`,
/// `check_run` and `status` become events (as `options` says); other event types are
/// [`Normalized::Ignored`].
pub fn normalize(
    event_name: &str,
    delivery: &str,
    body: &[u8],
    options: &GithubOptions,
) -> Result<Normalized, NormalizeError> {
    match event_name {
        "ping" => return Ok(Normalized::Ping),
        "workflow_run" | "workflow_job" | "check_suite" | "check_run" | "status"
        | "pull_request" => {}
        other => {
            return Ok(Normalized::Ignored {
                kind: other.to_string(),
            });
        }
    }
    if delivery.trim().is_empty() {
        return Err(NormalizeError::MissingHeader("X-GitHub-Delivery"));
    }
    match event_name {
        "check_suite" => return checks::check_suite(delivery, body, options),
        "check_run" => return checks::check_run(delivery, body, options),
        "status" => return checks::status(delivery, body, options),
        "pull_request" => return pull_request::pull_request(delivery, body),
        "workflow_job" => return job::workflow_job(delivery, body),
        _ => {}
    }
    workflow_run::workflow_run(delivery, body)
}

#[cfg(test)]
mod tests;
