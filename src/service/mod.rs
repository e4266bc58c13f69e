//! What every long-running service shares (the worker, `runwatch deliver`, `runwatch
//! ingest`): the supervisor of its named tasks and its bounded shutdown ([`supervisor`]),
//! the `/healthz`, `/readyz` and `/metrics` endpoints ([`endpoints`]) and the errors that
//! stop it ([`error`]).

pub mod endpoints;
pub mod error;
pub mod supervisor;

pub use endpoints::{Endpoints, Readiness};
pub use error::ServiceError;
pub use supervisor::{HttpServer, Supervisor, TaskEnded, TaskResult};
