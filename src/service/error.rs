//! What stops a supervised service before or while it runs.

use super::supervisor::TaskEnded;
use crate::startup::StartupError;

/// Start-up, the HTTP listener, or a task that ended by itself.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("http listener on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    TaskEnded(#[from] TaskEnded),
}
