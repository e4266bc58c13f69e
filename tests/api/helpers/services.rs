//! Where the services are and unique names on them: pure functions shared by the test
//! helpers (`env.rs`, `nats.rs`), tests that manage their own databases and the bench
//! (`#[path]`).
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A short unique name: the prefix, process id, a counter and the clock.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{}_{}", std::process::id(), n, t % 1_000_000)
}

/// The Postgres server of the run: `DATABASE_URL`, default the local one.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/runwatch".into())
}

/// The NATS server of the run: `NATS_URL`, default `nats://127.0.0.1:4222`.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Replaces the database name of a Postgres URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// Runs a clean-up future to its end on a runtime of its own, in a thread of its own, so
/// that a `Drop` can call it inside and outside a runtime (also while panicking).
pub fn clean_up_blocking<F>(work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(work);
        }
    })
    .join();
}

/// Names the configuration's streams, subjects and durable consumer after `suffix` (from
/// [`unique`]), so that parallel tests never share them.
pub fn name_uniquely(config: &mut runwatch::config::Config, suffix: &str) {
    let upper = suffix.to_uppercase();
    config.streams.events = format!("RWT_{upper}_EVENTS");
    config.streams.triggers = format!("RWT_{upper}_TRIGGERS");
    config.streams.dead = format!("RWT_{upper}_DEAD");
    config.streams.events_subject_prefix = format!("rwt.{suffix}.events");
    config.streams.triggers_subject_prefix = format!("rwt.{suffix}.triggers");
    config.streams.dead_subject_prefix = format!("rwt.{suffix}.dead");
    config.consumer.durable = format!("rwt-{suffix}");
}

/// `PYTHONPATH` holding the packages of `tests/protocols/requirements.txt`
/// (`scripts/python-protocol-deps.sh`, run once per process: the tests run in parallel).
pub fn protocol_pythonpath() -> String {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts/python-protocol-deps.sh");
        let out = std::process::Command::new(script)
            .output()
            .expect("run scripts/python-protocol-deps.sh");
        assert!(
            out.status.success(),
            "python-protocol-deps.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
    .clone()
}
