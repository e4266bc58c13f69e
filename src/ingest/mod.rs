//! Webhook ingest (`runwatch ingest`): an HTTP server that verifies GitHub, GitLab,
//! Buildkite and CircleCI deliveries, normalizes them into `runwatch.workflow_run.v1` events
//! (and `runwatch.workflow_job.v1` jobs, `runwatch.pull_request.v1` heads) and publishes them to
//! the inbound stream with `Nats-Msg-Id = event_id`. It answers 2xx only after JetStream's
//! PubAck, so the sender redelivers whatever was not stored.
//!
//! | answer | when |
//! |---|---|
//! | 200 | published (or a duplicate of a delivery already stored), or `ping` |
//! | 202 | accepted, not published: another event type (`push`, `job-completed`, …) |
//! | 400 | the body or a header is unusable (the reason is in the body) |
//! | 401 | the signature / token is missing or matches no configured secret |
//! | 408 | the body did not arrive within `ingest.body_read_timeout` |
//! | 413 | the body is over `ingest.max_body_bytes` |
//! | 503 | NATS did not acknowledge, or a bound of [`server`] is reached: the sender should redeliver |
//!
//! The normalization itself is pure, in [`github`], [`github_checks`], [`gitlab`],
//! [`buildkite`] and [`circleci`].

pub mod buildkite;
pub mod circleci;
pub mod config;
pub mod github;
pub mod github_checks;
mod github_payload;
pub mod gitlab;
pub mod normalized;
pub mod server;
pub mod signature;
mod traced;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusError};
use crate::config::{Config, ConfigError};
use crate::event::{Event, Limits, decode};
use crate::service::endpoints::{self, Readiness};
use crate::service::{Supervisor, TaskEnded};

pub use config::{CheckGranularity, Credentials, GithubOptions, IngestConfig, Secret};

pub use normalized::{NormalizeError, Normalized, report_attempt};
pub use signature::hmac_hex;
pub(crate) use signature::hmac_matches;

/// What can stop `runwatch ingest`.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Bad `[ingest]` configuration (or an unreadable secrets file).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS could not be reached or the streams set up.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Neither a GitHub secret nor a GitLab token is configured.
    #[error(
        "no webhook secret configured: set ingest.github_secrets / gitlab_tokens / buildkite_tokens / circleci_secrets (or their *_file keys)"
    )]
    NoCredentials,
    /// The server (its only task) ended by itself.
    #[error(transparent)]
    TaskEnded(#[from] TaskEnded),
    /// The listener could not be bound or served.
    #[error("ingest listener on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Cuts each job to the bounds ([`crate::job::JobReport::fit`]), serializes it and checks it
/// against the message contract, returning the bytes to publish.
pub fn encode_jobs(
    jobs: Vec<crate::job::JobReport>,
    limits: &Limits,
) -> Result<Vec<(crate::job::JobReport, Vec<u8>)>, NormalizeError> {
    let mut out = Vec::with_capacity(jobs.len());
    for mut j in jobs {
        j.fit(limits);
        let bytes = serde_json::to_vec(&j).map_err(NormalizeError::Json)?;
        crate::pull_request::decode_input(&bytes, limits)?;
        out.push((j, bytes));
    }
    Ok(out)
}

/// Serializes events and checks each against the event contract (what the worker will
/// accept), returning the bytes to publish.
pub fn encode_events(
    events: &[Event],
    limits: &Limits,
) -> Result<Vec<(Event, Vec<u8>)>, NormalizeError> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let bytes = serde_json::to_vec(e).map_err(NormalizeError::Json)?;
        let checked = decode(&bytes, limits)?;
        out.push((checked, bytes));
    }
    Ok(out)
}

#[derive(Clone)]
struct AppState {
    bus: Bus,
    credentials: Arc<Credentials>,
    github: Arc<GithubOptions>,
    limits: Limits,
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

async fn github_hook(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !github::verify_signature(
        &s.credentials.github,
        header(&headers, "x-hub-signature-256"),
        &body,
    ) {
        count("github", "-", "unauthorized");
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or invalid X-Hub-Signature-256"}),
        );
    }
    let Some(event) = header(&headers, "x-github-event") else {
        count("github", "-", "bad_request");
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "missing header X-GitHub-Event"}),
        );
    };
    let delivery = header(&headers, "x-github-delivery").unwrap_or("");
    // Signed over the raw body above; a form-encoded delivery's JSON is its `payload`.
    let normalized = github::json_body(header(&headers, "content-type"), &body)
        .and_then(|json| github::normalize(event, delivery, &json, &s.github));
    finish(&s, "github", event, normalized).await
}

async fn gitlab_hook(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !gitlab::verify_token(&s.credentials.gitlab, header(&headers, "x-gitlab-token")) {
        count("gitlab", "-", "unauthorized");
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or invalid X-Gitlab-Token"}),
        );
    }
    let Some(event) = header(&headers, "x-gitlab-event") else {
        count("gitlab", "-", "bad_request");
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "missing header X-Gitlab-Event"}),
        );
    };
    let event_id = match header(&headers, "x-gitlab-event-uuid").filter(|v| !v.trim().is_empty()) {
        Some(id) => id.to_string(),
        None => gitlab::body_event_id(&body),
    };
    let normalized = gitlab::normalize(event, &event_id, &body);
    finish(&s, "gitlab", event, normalized).await
}

async fn buildkite_hook(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !buildkite::verify(
        &s.credentials.buildkite,
        header(&headers, "x-buildkite-token"),
        header(&headers, "x-buildkite-signature"),
        &body,
        chrono::Utc::now(),
    ) {
        count("buildkite", "-", "unauthorized");
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or invalid X-Buildkite-Signature / X-Buildkite-Token"}),
        );
    }
    let event = match header(&headers, "x-buildkite-event").filter(|e| !e.trim().is_empty()) {
        Some(e) => e.to_string(),
        None => body_field(&body, "event").unwrap_or_default(),
    };
    if event.is_empty() {
        count("buildkite", "-", "bad_request");
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "missing header X-Buildkite-Event"}),
        );
    }
    let normalized = buildkite::normalize(&event, &body);
    finish(&s, "buildkite", &event, normalized).await
}

async fn circleci_hook(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !circleci::verify(
        &s.credentials.circleci,
        header(&headers, "circleci-signature"),
        &body,
    ) {
        count("circleci", "-", "unauthorized");
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or invalid circleci-signature"}),
        );
    }
    let event = match header(&headers, "circleci-event-type").filter(|e| !e.trim().is_empty()) {
        Some(e) => e.to_string(),
        None => body_field(&body, "type").unwrap_or_default(),
    };
    if event.is_empty() {
        count("circleci", "-", "bad_request");
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "missing header circleci-event-type"}),
        );
    }
    let normalized = circleci::normalize(&event, &body);
    finish(&s, "circleci", &event, normalized).await
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

/// Serializes a pull request's head and checks it against the message contract.
pub fn encode_link(
    link: &crate::pull_request::PullRequestLink,
    limits: &Limits,
) -> Result<Vec<u8>, NormalizeError> {
    let bytes = serde_json::to_vec(link).map_err(NormalizeError::Json)?;
    crate::pull_request::decode_input(&bytes, limits)?;
    Ok(bytes)
}

/// The ingest routes: `/webhooks/{github,gitlab,buildkite,circleci}` behind the bounds on
/// requests in flight and on bytes buffered ([`server`]), and `/healthz`, `/readyz`,
/// `/metrics` outside them (probes keep answering while webhooks are shed).
fn router(state: AppState, ingest: &IngestConfig, endpoints: Router<AppState>) -> Router {
    let in_flight = tower::ServiceBuilder::new()
        .layer(HandleErrorLayer::new(server::shed))
        .layer(tower::load_shed::LoadShedLayer::new())
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            ingest.max_requests_in_flight,
        ));
    let webhooks = Router::new()
        .route("/webhooks/github", post(github_hook))
        .route("/webhooks/gitlab", post(gitlab_hook))
        .route("/webhooks/buildkite", post(buildkite_hook))
        .route("/webhooks/circleci", post(circleci_hook))
        // The body is read by `bounded_body`; this limit stays as a second guard.
        .layer(DefaultBodyLimit::max(ingest.max_body_bytes))
        .route_layer(axum::middleware::from_fn(traced::traced))
        .route_layer(axum::middleware::from_fn_with_state(
            server::BodyBudget::new(ingest),
            server::bounded_body,
        ))
        .route_layer(in_flight);
    endpoints.merge(webhooks).with_state(state)
}

/// Binds `config.ingest.listen` and serves until `shutdown` (in-flight requests finish).
/// Returns the bound address (port 0 picks one) and the server task. The streams must
/// exist (see [`Bus::ensure_streams`]).
pub async fn serve(
    config: &Config,
    bus: Bus,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), IngestError> {
    serve_with(
        config,
        bus,
        metrics,
        Arc::new(AtomicBool::new(false)),
        shutdown,
    )
    .await
}

/// [`serve`] with readiness's flag: `/readyz` answers 503 once `not_ready` is set.
async fn serve_with(
    config: &Config,
    bus: Bus,
    metrics: Option<PrometheusHandle>,
    not_ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), IngestError> {
    let credentials = config.ingest.credentials()?;
    if credentials.is_empty() {
        return Err(IngestError::NoCredentials);
    }
    if credentials.github.is_empty() {
        tracing::warn!("no GitHub secret configured: /webhooks/github answers 401");
    }
    if credentials.gitlab.is_empty() {
        tracing::warn!("no GitLab token configured: /webhooks/gitlab answers 401");
    }
    if credentials.buildkite.is_empty() {
        tracing::info!("no Buildkite token configured: /webhooks/buildkite answers 401");
    }
    if credentials.circleci.is_empty() {
        tracing::info!("no CircleCI secret configured: /webhooks/circleci answers 401");
    }
    let ready = Readiness {
        store: None,
        nats: bus.client().clone(),
        shutting_down: not_ready,
    };
    let state = AppState {
        bus,
        credentials: Arc::new(credentials),
        github: Arc::new(config.ingest.github.clone()),
        limits: config.limits,
    };
    let addr = config.ingest.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| IngestError::Http { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| IngestError::Http { addr, source })?;
    let app = router(state, &config.ingest, endpoints::routes(ready, metrics));
    let ingest = config.ingest.clone();
    let shutdown_timeout = config.shutdown.timeout;
    let handle = tokio::spawn(async move {
        server::serve_connections(listener, app, &ingest, shutdown_timeout, shutdown).await;
    });
    Ok((bound, handle))
}

/// `runwatch ingest`: connects NATS, creates the streams if missing, and serves as a
/// supervised task (`http`) until `shutdown`, or until the server ends by itself (a failure:
/// logged, readiness off, an error). Then, within `shutdown.timeout`: stop accepting, let
/// the requests in flight finish, drain the NATS connection.
pub async fn run(
    config: Config,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let bus = Bus::connect(&config).await?;
    bus.ensure_streams().await?;
    let not_ready = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let (bound, server) = serve_with(
        &config,
        bus.clone(),
        metrics,
        not_ready.clone(),
        stop.clone(),
    )
    .await?;
    tracing::info!(listen = %bound, events = %config.streams.events, "runwatch ingest started");
    let mut tasks = Supervisor::new(stop.clone(), not_ready);
    let stopped = stop.clone();
    tasks.spawn("http", async move {
        server
            .await
            .map_err(|e| format!("the HTTP server failed: {e}"))?;
        if stopped.is_cancelled() {
            Ok(())
        } else {
            Err("the HTTP server stopped".into())
        }
    });
    let ended = tasks.watch(&shutdown).await;
    let cleanup = async {
        if let Err(e) = bus.drain().await {
            tracing::warn!(error = %e, "draining the NATS connection failed");
        }
    };
    tasks
        .shut_down(
            ended,
            config.shutdown.timeout,
            None,
            cleanup,
            "runwatch ingest",
        )
        .await?;
    Ok(())
}

/// The provider of a delivery given to `runwatch normalize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--github-event NAME`.
    Github,
    /// `--gitlab-event NAME`.
    Gitlab,
    /// `--buildkite-event NAME`.
    Buildkite,
    /// `--circleci-event NAME`.
    Circleci,
}

/// `runwatch normalize`: the events a delivery normalizes to, checked against the event
/// contract as the server checks them. Without `delivery`, GitHub's delivery id is
/// `file-<first 16 hex digits of the body's SHA-256>` and GitLab's is
/// [`gitlab::body_event_id`].
pub fn normalize_delivery(
    source: Source,
    event_name: &str,
    delivery: Option<&str>,
    body: &[u8],
    config: &Config,
) -> Result<Normalized, NormalizeError> {
    let limits = &config.limits;
    let normalized = match source {
        Source::Github => {
            let default_id = || {
                let full = gitlab::body_event_id(body);
                let hex = full.trim_start_matches("gitlab-body-");
                format!("file-{}", &hex[..16.min(hex.len())])
            };
            let id = delivery.map_or_else(default_id, str::to_string);
            github::normalize(event_name, &id, body, &config.ingest.github)?
        }
        Source::Gitlab => {
            let id = delivery.map_or_else(|| gitlab::body_event_id(body), str::to_string);
            gitlab::normalize(event_name, &id, body)?
        }
        Source::Buildkite => buildkite::normalize(event_name, body)?,
        Source::Circleci => circleci::normalize(event_name, body)?,
    };
    let normalized = match normalized {
        Normalized::RunsAndJobs { events, jobs } => Normalized::RunsAndJobs {
            jobs: encode_jobs(jobs, limits)?
                .into_iter()
                .map(|(j, _)| j)
                .collect(),
            events,
        },
        other => other,
    };
    match &normalized {
        Normalized::Events(events) | Normalized::RunsAndJobs { events, .. } => {
            encode_events(events, limits)?;
        }
        Normalized::PullRequest(link) => {
            encode_link(link, limits)?;
        }
        Normalized::Ping | Normalized::Ignored { .. } => {}
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_labels_are_a_fixed_set() {
        assert_eq!(event_label("github", "workflow_run"), "workflow_run");
        assert_eq!(event_label("gitlab", "Pipeline Hook"), "Pipeline Hook");
        assert_eq!(event_label("buildkite", "build.finished"), "build.finished");
        assert_eq!(
            event_label("circleci", "workflow-completed"),
            "workflow-completed"
        );
        assert_eq!(event_label("github", "-"), "-");
        assert_eq!(
            event_label("github", "pull_request.labeled"),
            "pull_request"
        );
        // A name of another provider, an unknown name, a long one: `other`.
        assert_eq!(event_label("github", "Pipeline Hook"), "other");
        assert_eq!(event_label("github", "made_up_1"), "other");
        assert_eq!(event_label("gitlab", &"x".repeat(10_000)), "other");
    }
}
