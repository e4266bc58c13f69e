//! runwatch: watches CI/CD workflow runs and decides, exactly once, when a pull request's CI
//! has finished badly enough that someone should step in. See README.md and docs/design.md.
//!
//! Data flows one way: bus → event → engine → store → outbox → bus. The [`engine`] at the
//! centre is pure and knows nothing of NATS, Postgres or HTTP.

pub mod bus;
pub mod cli;
pub mod config;
pub mod dead_letters;
pub mod deliver;
pub mod engine;
pub mod event;
pub mod explain;
pub mod ingest;
pub mod input;
pub mod job;
pub mod outbox_publisher;
pub mod printable;
pub mod pull_request;
pub mod replay;
pub mod repository;
pub mod secret;
pub mod service;
pub mod simulate;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod trace_context;
pub mod trace_export;
pub mod trigger;
pub mod worker;
