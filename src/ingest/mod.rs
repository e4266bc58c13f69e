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
//! The normalization itself is pure, in [`github`] (with its check suites, check runs and statuses), [`gitlab`],
//! [`buildkite`] and [`circleci`].

pub mod buildkite;
pub mod circleci;
pub mod config;
pub mod github;
pub mod gitlab;
mod hooks;
pub mod normalized;
pub mod server;
pub mod signature;
mod traced;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;

use axum::routing::post;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusError};
use crate::config::{Config, ConfigError};
use crate::service::endpoints::{self, Readiness};
use crate::service::{Supervisor, TaskEnded};

pub use config::{CheckGranularity, Credentials, GithubOptions, IngestConfig, Secret};

use hooks::{AppState, buildkite_hook, circleci_hook, github_hook, gitlab_hook};
pub use hooks::{KNOWN_EVENTS, event_label};
pub use normalized::{
    NormalizeError, Normalized, encode_events, encode_jobs, encode_link, report_attempt,
};
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
    tasks.spawn("trace-export", crate::trace_export::watch(stop.clone()));
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
