//! The webhook handlers: check the signature or token, normalize, publish, answer (the
//! status codes are in the module documentation of `ingest`), and count each delivery.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::config::{Credentials, GithubOptions};
use super::normalized::{NormalizeError, Normalized, encode_events, encode_jobs, encode_link};
use super::{buildkite, circleci, github, gitlab, traced};
use crate::bus::Bus;
use crate::event::Limits;

#[derive(Clone)]
pub(super) struct AppState {
    pub(super) bus: Bus,
    pub(super) credentials: Arc<Credentials>,
    pub(super) github: Arc<GithubOptions>,
    pub(super) limits: Limits,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The event names that get a label value of their own in `runwatch_webhooks_total`, per
/// provider: those runwatch reads and the common ones it ignores. Any other name (a sender
/// chooses it, signed or not) is counted as `other`, so the series stay a fixed set.
pub const KNOWN_EVENTS: &[(&str, &[&str])] = &[
    ("github", GITHUB_EVENTS),
    ("gitlab", GITLAB_EVENTS),
    ("buildkite", BUILDKITE_EVENTS),
    ("circleci", &["ping", "workflow-completed", "job-completed"]),
];
const GITHUB_EVENTS: &[&str] = &[
    "ping",
    "workflow_run",
    "workflow_job",
    "check_suite",
    "check_run",
    "status",
    "pull_request",
    "push",
];
const GITLAB_EVENTS: &[&str] = &[
    "Pipeline Hook",
    "Job Hook",
    "Push Hook",
    "Tag Push Hook",
    "Merge Request Hook",
];
const BUILDKITE_EVENTS: &[&str] = &[
    "ping",
    "build.scheduled",
    "build.running",
    "build.failing",
    "build.finished",
    "build.skipped",
    "job.scheduled",
    "job.started",
    "job.finished",
    "job.activated",
];

/// The `event` label of a delivery: its name when [`KNOWN_EVENTS`] lists it for the
/// provider, `-` when it is not known yet (refused before the name is read), else `other`.
/// A GitHub `pull_request.<action>` that runwatch ignores counts as `pull_request`.
pub fn event_label(provider: &str, event: &str) -> &'static str {
    if event == "-" {
        return "-";
    }
    let event = match provider {
        "github" => event.split('.').next().unwrap_or(event),
        _ => event,
    };
    KNOWN_EVENTS
        .iter()
        .filter(|(p, _)| *p == provider)
        .flat_map(|(_, names)| names.iter())
        .find(|name| **name == event)
        .copied()
        .unwrap_or("other")
}

fn count(provider: &'static str, event: &str, outcome: &'static str) {
    let event = event_label(provider, event);
    metrics::counter!("runwatch_webhooks_total", "provider" => provider, "event" => event, "outcome" => outcome)
        .increment(1);
}

pub(super) async fn github_hook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !github::verify_signature(
        &s.credentials.github,
        header(&headers, "x-hub-signature-256"),
        &body,
    ) {
        return refuse(
            "github",
            StatusCode::UNAUTHORIZED,
            "missing or invalid X-Hub-Signature-256",
        );
    }
    let Some(event) = header(&headers, "x-github-event") else {
        return refuse(
            "github",
            StatusCode::BAD_REQUEST,
            "missing header X-GitHub-Event",
        );
    };
    let delivery = header(&headers, "x-github-delivery").unwrap_or("");
    // Signed over the raw body above; a form-encoded delivery's JSON is its `payload`.
    let normalized = github::json_body(header(&headers, "content-type"), &body)
        .and_then(|json| github::normalize(event, delivery, &json, &s.github));
    finish(&s, "github", event, normalized).await
}

pub(super) async fn gitlab_hook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !gitlab::verify_token(&s.credentials.gitlab, header(&headers, "x-gitlab-token")) {
        return refuse(
            "gitlab",
            StatusCode::UNAUTHORIZED,
            "missing or invalid X-Gitlab-Token",
        );
    }
    let Some(event) = header(&headers, "x-gitlab-event") else {
        return refuse(
            "gitlab",
            StatusCode::BAD_REQUEST,
            "missing header X-Gitlab-Event",
        );
    };
    let event_id = match header(&headers, "x-gitlab-event-uuid").filter(|v| !v.trim().is_empty()) {
        Some(id) => id.to_string(),
        None => gitlab::body_event_id(&body),
    };
    let normalized = gitlab::normalize(event, &event_id, &body);
    finish(&s, "gitlab", event, normalized).await
}

pub(super) async fn buildkite_hook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !buildkite::verify(
        &s.credentials.buildkite,
        header(&headers, "x-buildkite-token"),
        header(&headers, "x-buildkite-signature"),
        &body,
        chrono::Utc::now(),
    ) {
        return refuse(
            "buildkite",
            StatusCode::UNAUTHORIZED,
            "missing or invalid X-Buildkite-Signature / X-Buildkite-Token",
        );
    }
    let event = match required_event("buildkite", &headers, "X-Buildkite-Event", &body, "event") {
        Ok(e) => e,
        Err(refused) => return *refused,
    };
    let normalized = buildkite::normalize(&event, &body);
    finish(&s, "buildkite", &event, normalized).await
}

pub(super) async fn circleci_hook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !circleci::verify(
        &s.credentials.circleci,
        header(&headers, "circleci-signature"),
        &body,
    ) {
        return refuse(
            "circleci",
            StatusCode::UNAUTHORIZED,
            "missing or invalid circleci-signature",
        );
    }
    let event = match required_event("circleci", &headers, "circleci-event-type", &body, "type") {
        Ok(e) => e,
        Err(refused) => return *refused,
    };
    let normalized = circleci::normalize(&event, &body);
    finish(&s, "circleci", &event, normalized).await
}

/// Counts a refused delivery (`unauthorized` for 401, else `bad_request`) and answers it.
fn refuse(provider: &'static str, status: StatusCode, error: &str) -> Response {
    let outcome = if status == StatusCode::UNAUTHORIZED {
        "unauthorized"
    } else {
        "bad_request"
    };
    count(provider, "-", outcome);
    answer(status, json!({ "error": error }))
}

/// The event name from header `name` (matched without case), else from the body's
/// top-level `field`; neither is a 400 that names the header.
fn required_event(
    provider: &'static str,
    headers: &HeaderMap,
    name: &str,
    body: &[u8],
    field: &str,
) -> Result<String, Box<Response>> {
    let event = match header(headers, &name.to_ascii_lowercase()).filter(|e| !e.trim().is_empty()) {
        Some(e) => e.to_string(),
        None => body_field(body, field).unwrap_or_default(),
    };
    if event.is_empty() {
        return Err(Box::new(refuse(
            provider,
            StatusCode::BAD_REQUEST,
            &format!("missing header {name}"),
        )));
    }
    Ok(event)
}

/// A top-level string field of a JSON body (the event name when a header is absent).
fn body_field(body: &[u8], field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(field)?.as_str().map(str::to_string)
}

/// Publishes what a delivery normalized to and answers.
async fn finish(
    s: &AppState,
    provider: &'static str,
    event: &str,
    normalized: Result<Normalized, NormalizeError>,
) -> Response {
    let (events, jobs) = match normalized {
        Ok(Normalized::Ping) => {
            count(provider, event, "ping");
            return answer(StatusCode::OK, json!({"status": "pong"}));
        }
        Ok(Normalized::Ignored { kind }) => {
            count(provider, &kind, "ignored");
            return answer(
                StatusCode::ACCEPTED,
                json!({"status": "ignored", "event": kind}),
            );
        }
        Ok(Normalized::Events(events)) => (events, Vec::new()),
        Ok(Normalized::RunsAndJobs { events, jobs }) => (events, jobs),
        Ok(Normalized::PullRequest(link)) => return publish_link(s, provider, event, *link).await,
        Err(e) => {
            count(provider, event, "bad_request");
            tracing::info!(provider, event, error = %e, "webhook refused");
            return answer(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}));
        }
    };
    let encoded = match encode_jobs(jobs, &s.limits).and_then(|jobs| {
        let events = encode_events(&events, &s.limits)?;
        // Jobs first: see `Normalized::RunsAndJobs`.
        Ok(jobs
            .into_iter()
            .map(|(j, b)| (j.provider, j.event_id, b))
            .chain(events.into_iter().map(|(e, b)| (e.provider, e.event_id, b)))
            .collect::<Vec<_>>())
    }) {
        Ok(e) => e,
        Err(e) => {
            count(provider, event, "bad_request");
            return answer(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}));
        }
    };
    let (mut published, mut duplicates) = (0u64, 0u64);
    let mut ids = Vec::with_capacity(encoded.len());
    let trace = traced::current();
    let mut sequences = traced::Published::default();
    for (message_provider, event_id, bytes) in encoded {
        match s
            .bus
            .publish_event_traced(
                message_provider,
                &event_id,
                Bytes::from(bytes),
                trace.as_ref(),
            )
            .await
        {
            Ok(ack) if ack.duplicate => duplicates += 1,
            Ok(ack) => {
                published += 1;
                sequences.0.push((event_id.clone(), ack.sequence));
            }
            Err(err) => {
                count(provider, event, "unavailable");
                tracing::warn!(provider, event_id = %event_id, error = %err, "webhook not published; answering 503");
                let status = if err.is_transient() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::BAD_REQUEST
                };
                return answer(status, json!({"error": err.to_string()}));
            }
        }
        ids.push(event_id);
    }
    count(
        provider,
        event,
        if published > 0 {
            "published"
        } else {
            "duplicate"
        },
    );
    tracing::debug!(provider, published, duplicates, "webhook published");
    let mut response = answer(
        StatusCode::OK,
        json!({"status": "published", "published": published, "duplicates": duplicates, "event_ids": ids}),
    );
    response.extensions_mut().insert(sequences);
    response
}

/// Publishes a pull request's head (checked as the worker will decode it) and answers.
async fn publish_link(
    s: &AppState,
    provider: &'static str,
    event: &str,
    link: crate::pull_request::PullRequestLink,
) -> Response {
    let bytes = match encode_link(&link, &s.limits) {
        Ok(b) => b,
        Err(e) => {
            count(provider, event, "bad_request");
            return answer(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}));
        }
    };
    let trace = traced::current();
    match s
        .bus
        .publish_event_traced(
            link.provider,
            &link.event_id,
            Bytes::from(bytes),
            trace.as_ref(),
        )
        .await
    {
        Ok(ack) => {
            let (published, duplicates) = if ack.duplicate { (0, 1) } else { (1, 0) };
            count(
                provider,
                event,
                if published > 0 {
                    "published"
                } else {
                    "duplicate"
                },
            );
            answer(
                StatusCode::OK,
                json!({"status": "published", "published": published, "duplicates": duplicates, "event_ids": [link.event_id]}),
            )
        }
        Err(err) => {
            count(provider, event, "unavailable");
            tracing::warn!(provider, event_id = %link.event_id, error = %err, "webhook not published");
            let status = if err.is_transient() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_REQUEST
            };
            answer(status, json!({"error": err.to_string()}))
        }
    }
}
