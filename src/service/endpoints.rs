//! The HTTP endpoints of every service (the worker, `runwatch deliver`, `runwatch ingest`):
//! `/healthz` (the process answers), `/readyz` (NATS and, for the worker, the database
//! answer, and the process is not shutting down) and `/metrics` (Prometheus). The worker and
//! deliver serve them on `http.listen` ([`Endpoints`]); ingest merges [`routes`] into its
//! webhook server on `ingest.listen`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::error::ServiceError;
use crate::config::Config;
use crate::store::Store;

/// What `/readyz` looks at.
#[derive(Clone)]
pub struct Readiness {
    /// The database, for processes that use one.
    pub store: Option<Store>,
    pub nats: async_nats::Client,
    pub shutting_down: Arc<AtomicBool>,
}

impl Readiness {
    /// Ready when not shutting down, NATS is connected and the database (if any) answers
    /// within 1 s and is not refusing the process's own work (an episode of
    /// [`crate::store::Health`]: a permission, a lock or statement timeout, a read-only
    /// database... until the operation that failed succeeds again).
    pub async fn check(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err("nats: not connected".into());
        }
        let Some(store) = &self.store else {
            return Ok(());
        };
        if let Some(reason) = store.health().unavailable() {
            return Err(reason);
        }
        match tokio::time::timeout(Duration::from_secs(1), store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("database: {e}")),
            Err(_) => Err("database: no answer within 1s".into()),
        }
    }
}

#[derive(Clone)]
struct AppState {
    ready: Readiness,
    metrics: Option<PrometheusHandle>,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.ready.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_endpoint(State(s): State<AppState>) -> impl IntoResponse {
    match &s.metrics {
        Some(h) => (StatusCode::OK, crate::telemetry::render(h)),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled\n".to_string(),
        ),
    }
}

/// `/healthz`, `/readyz` and `/metrics`, for any router to merge.
pub fn routes<S: Clone + Send + Sync + 'static>(
    ready: Readiness,
    metrics: Option<PrometheusHandle>,
) -> Router<S> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
        .with_state(AppState { ready, metrics })
}

/// Binds `addr` and serves until `shutdown`. Returns the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    ready: Readiness,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app: Router = routes(ready, metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok((bound, handle))
}

/// The HTTP endpoints of a supervised process (the worker, `runwatch deliver`), serving.
pub struct Endpoints {
    /// The address bound (`http.listen`; port 0 picks one).
    pub bound: SocketAddr,
    /// The server, until `stop`.
    pub server: tokio::task::JoinHandle<()>,
    pub stop: CancellationToken,
    /// Readiness's flag: set when the process shuts down.
    pub not_ready: Arc<AtomicBool>,
}

impl Endpoints {
    /// Serves `/healthz`, `/readyz` (NATS, and `store` when given) and `/metrics` on
    /// `http.listen`.
    pub async fn serve(
        config: &Config,
        store: Option<Store>,
        nats: &async_nats::Client,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Endpoints, ServiceError> {
        let not_ready = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let ready = Readiness {
            store,
            nats: nats.clone(),
            shutting_down: not_ready.clone(),
        };
        let addr = config.http.listen;
        let (bound, server) = serve(addr, ready, metrics, stop.clone())
            .await
            .map_err(|source| ServiceError::Http { addr, source })?;
        Ok(Endpoints {
            bound,
            server,
            stop,
            not_ready,
        })
    }
}
