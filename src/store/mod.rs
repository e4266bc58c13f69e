//! The Postgres store: repositories, groups and runs, failure streaks, cooldowns, the
//! trigger outbox, timers and purge.
//!
//! Recording events is one transaction per batch: insert the groups that are absent, lock
//! them (`SELECT … FOR UPDATE`, in a stable order so replicas never deadlock on each other),
//! lock the streak and cooldown rows the rules need, run the pure engine, write the new
//! states and the triggers (into the outbox), commit. Nothing but the database is called
//! while the locks are held. Serialization failures and deadlocks retry the transaction.

mod association;
mod budgets;
mod groups;
mod health;
mod jobs;
mod lenient;
mod outbox;
mod purge;
mod repositories;
pub mod sql;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::config::{DatabaseConfig, redact_url};
use crate::engine::Engine;

pub use association::{commit_in_pull, load_pull};
pub use groups::{BatchOutcome, EventOutcome};
pub use health::{ErrorKind, Health, Op, count as count_database_error};
pub use lenient::Lenient;
pub use outbox::Pending;
pub use purge::PurgePace;
pub use repositories::RepoCache;

/// Embedded migrations (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database url {url}: {message}")]
    Url { url: String, message: String },
    #[error("state of group {group_id} cannot be read: {source}")]
    State {
        group_id: i64,
        source: serde_json::Error,
    },
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(
        "the database schema is behind this binary: migration(s) {missing} not applied; run `runwatch migrate` (or `run` without --no-migrate) with a role that may change the schema"
    )]
    SchemaBehind { missing: String },
    #[error(
        "cannot check the database schema: this role may not read _sqlx_migrations; grant it SELECT (re-run deploy/postgres/roles.sql)"
    )]
    SchemaUnreadable,
}

impl StoreError {
    /// A serialization failure or a deadlock: run the transaction again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("40001") | Some("40P01")))
    }

    /// Whether retrying later may succeed: every error but the input's own (see
    /// [`ErrorKind`]). The database refusing, blocking or missing is never the input's fault.
    pub fn is_transient(&self) -> bool {
        self.kind() != ErrorKind::Input
    }
}

/// A pooled connection idle for longer than this is pinged before it is used.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Connects a pool. The URL's password is never logged.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions =
        config
            .url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Url {
                url: redact_url(&config.url),
                message: e.to_string(),
            })?;
    // Every session gets the configured lock and statement timeouts (startup options, so
    // no round trip): a blocked statement fails (55P03 / 57014) and is reported, never a
    // silent hang. And custom plans only: a prepared statement (and every statement of the
    // PL/pgSQL functions) is otherwise planned once generically, and that plan is kept
    // until the table's statistics change; one made while `groups` was small (a hash join
    // over a sequential scan) then read the whole table on every decision as it grew, until
    // the worker fell behind (`tests/api/size.rs`). A custom plan sees the table's current size.
    let options = options
        .options([
            ("lock_timeout", config.lock_timeout.as_millis().to_string()),
            (
                "statement_timeout",
                config.statement_timeout.as_millis().to_string(),
            ),
            ("plan_cache_mode", "force_custom_plan".to_string()),
            // A purge batch over a large table is estimated costly enough for JIT, whose
            // compilation takes longer than the statement; runwatch's statements are index
            // lookups and short ranges.
            ("jit", "off".to_string()),
        ])
        .application_name("runwatch")
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        // sqlx pings every connection it takes from the pool by default: one more round
        // trip per transaction on the hot path. Ping only connections idle for a while; a
        // connection that broke meanwhile fails its statement, which is transient (the
        // batch is nak'd and redelivered) and drops the connection from the pool.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options);
    Ok(pool)
}

/// Creates the database named in the URL when it does not exist.
pub async fn create_database_if_missing(url: &str) -> Result<(), StoreError> {
    use sqlx::migrate::MigrateDatabase;
    if !sqlx::Postgres::database_exists(url).await? {
        tracing::info!(url = %redact_url(url), "creating database");
        match sqlx::Postgres::create_database(url).await {
            Ok(()) => {}
            // Another replica created it meanwhile: 42P04 (duplicate_database) when its
            // CREATE DATABASE had committed, 23505 (unique_violation on
            // pg_database_datname_index) when both ran at the same moment.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// How long `migrate` waits for a lock (sqlx's advisory lock held by another replica's
/// migration, or a table lock a DDL statement needs) before it fails instead of hanging.
pub const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Applies the migrations (idempotent; sqlx takes an advisory lock, so concurrent replicas
/// are safe). They run on a connection of their own, closed afterwards: sqlx keeps its
/// session advisory lock when a migration fails, and a pooled connection would hold it
/// for as long as the pool lives. A lock wait longer than [`MIGRATION_LOCK_TIMEOUT`] is an
/// error (SQLSTATE 55P03), never a silent hang.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    migrate_on(pool).await
}

/// Checks that every migration this binary embeds has been applied (for `run --no-migrate`,
/// where the worker's role may not change the schema). A missing one is an error naming it.
pub async fn check_schema(pool: &PgPool) -> Result<(), StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    let applied: Vec<i64> = if exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.code().as_deref() == Some("42501") => {
                    StoreError::SchemaUnreadable
                }
                _ => StoreError::Db(e),
            })?
    } else {
        Vec::new()
    };
    let missing: Vec<String> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} ({})", m.version, m.description))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::SchemaBehind {
            missing: missing.join(", "),
        })
    }
}

async fn migrate_on(pool: &PgPool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?.detach();
    let timeout_ms = MIGRATION_LOCK_TIMEOUT.as_millis();
    // No statement_timeout for the migrations themselves (DDL on a large table may take
    // long); the lock wait stays bounded.
    let set = format!("SET lock_timeout = {timeout_ms}");
    let mut set_timeouts = sqlx::query(&set).execute(&mut conn).await;
    if set_timeouts.is_ok() {
        set_timeouts = sqlx::query!("SET statement_timeout = 0")
            .execute(&mut conn)
            .await;
    }
    let result = match set_timeouts {
        Ok(_) => MIGRATOR
            .run_direct(&mut conn)
            .await
            .map_err(StoreError::from),
        Err(e) => Err(e.into()),
    };
    // Closing ends the session, and with it any advisory lock a failed run kept.
    let _ = sqlx::Connection::close(conn).await;
    result
}

/// Settings of the store taken from the configuration.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Attempts of one transaction on serialization failure / deadlock.
    pub transaction_attempts: u32,
    /// How long a trigger decided by a worker stays claimed by it before any relay may
    /// publish it.
    pub lease: Duration,
    /// Outbound subjects are `<prefix>.<provider>`.
    pub triggers_subject_prefix: String,
}

impl StoreOptions {
    pub fn from_config(config: &crate::config::Config) -> StoreOptions {
        StoreOptions {
            transaction_attempts: config.retry.transaction_attempts,
            lease: config.outbox.lease,
            triggers_subject_prefix: config.streams.triggers_subject_prefix.clone(),
        }
    }
}

/// The store: a pool, the engine it runs under the locks, and a cache of the registry.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    engine: Arc<Engine>,
    repos: Arc<RepoCache>,
    health: Arc<Health>,
    transaction_attempts: u32,
    lease: Duration,
    triggers_subject_prefix: String,
}

impl Store {
    pub fn new(pool: PgPool, engine: Arc<Engine>, options: StoreOptions) -> Store {
        Store {
            pool,
            engine,
            repos: Arc::new(RepoCache::default()),
            health: Arc::new(Health::default()),
            transaction_attempts: options.transaction_attempts.max(1),
            lease: options.lease,
            triggers_subject_prefix: options.triggers_subject_prefix,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the database currently refuses this process (shared by its clones).
    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// `SELECT 1`, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Runs `f` as a transaction body, again on serialization failure or deadlock, with a
    /// short jittered exponential backoff (backon).
    async fn with_retry<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        use backon::{ExponentialBuilder, Retryable};
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_millis(500))
            .with_jitter()
            .with_max_times(self.transaction_attempts.saturating_sub(1) as usize);
        f.retry(policy)
            .when(StoreError::is_conflict)
            .notify(|e, d| {
                metrics::counter!("runwatch_transaction_conflicts_total", "op" => what).increment(1);
                tracing::debug!(error = %e, delay = ?d, op = what, "transaction conflict, retrying");
            })
            .await
    }
}
