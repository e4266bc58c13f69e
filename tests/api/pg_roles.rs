//! The least-privilege roles of `deploy/postgres/roles.sql`, applied with psql to a fresh
//! database with role names of this test: migrations run as the owner; everything the
//! worker does with `--no-migrate` (record a batch, fire timers, relay claim and mark sent,
//! purge, repo-id) works as the restricted worker role; DDL, TRUNCATE and migrating are
//! refused to it. Also: `sslmode=require` in the URL gives an encrypted connection. The
//! database and both roles are dropped at the end, also when the test fails.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::env::{database_url, unique, with_database};
use chrono::{DateTime, Utc};
use runwatch::config::{Config, DEFAULT_TOML};
use runwatch::engine::{Clock, Engine, RuleSet};
use runwatch::event::{Limits, Provider, decode};
use runwatch::store::{self, PurgePace, Store, StoreOptions};
use sqlx::{Connection, Row};

/// Replaces the user of a Postgres URL (trust authentication in the test cluster).
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

fn psql() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        let p = PathBuf::from(dir).join("psql");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("psql")
}

/// Drops the database and the roles, also on panic.
struct Cleanup {
    admin_url: String,
    db: String,
    roles: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (admin_url, db, roles) = (self.admin_url.clone(), self.db.clone(), self.roles.clone());
        crate::helpers::services::clean_up_blocking(async move {
            let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await else {
                return;
            };
            let _ = sqlx::query(&(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")))
                .execute(&mut admin)
                .await;
            for role in roles {
                let _ = sqlx::query(&(format!("DROP ROLE IF EXISTS \"{role}\"")))
                    .execute(&mut admin)
                    .await;
            }
        });
    }
}

fn apply_roles_sql(url: &str, owner: &str, worker: &str) {
    // -w: never prompt for a password (a prompt on a terminal would hang the test); the
    // timeouts turn a lock wait into an error.
    let out = Command::new(psql())
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGOPTIONS", "-c lock_timeout=30s -c statement_timeout=60s")
        .args([
            "-X",
            "-w",
            "-q",
            "-d",
            url,
            "-v",
            &format!("owner={owner}"),
            "-v",
            &format!("worker={worker}"),
        ])
        .arg("-f")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/postgres/roles.sql"
        ))
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "roles.sql failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config_for(url: &str) -> Config {
    let mut config: Config = figment::Figment::new()
        .merge(<figment::providers::Toml as figment::providers::Format>::string(DEFAULT_TOML))
        .extract()
        .expect("defaults");
    config.database.url = url.to_string();
    config.database.max_connections = 3;
    config.outbox.lease = Duration::from_secs(1);
    config
}

fn event(id: &str, run: &str, conclusion: &str, at: i64) -> runwatch::event::Event {
    let updated: DateTime<Utc> = DateTime::from_timestamp(at, 0).expect("time");
    let line = serde_json::json!({
        "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
        "repository": {"owner": "Least", "name": "Privilege", "id": "777"},
        "commit_sha": "c0ffee", "branch": "feature", "pr_number": 5,
        "run": {"id": run, "workflow": format!("wf-{run}"), "status": "completed",
                "conclusion": conclusion, "updated_at": updated.to_rfc3339()}
    });
    decode(line.to_string().as_bytes(), &Limits::default()).expect("valid event")
}

/// The SQLSTATE of a failed statement.
async fn sqlstate(pool: &sqlx::PgPool, sql: &str) -> String {
    match sqlx::query(sql).execute(pool).await {
        Ok(_) => panic!("the worker role may run {sql:?}"),
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.to_string()).unwrap_or_default(),
        Err(e) => panic!("{sql:?}: unexpected error {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_role_runs_the_store_and_cannot_change_the_schema() {
    let base = database_url();
    let admin_url = with_database(&base, "postgres");
    let tag = unique("rwroles").to_lowercase();
    let (owner, worker) = (format!("{tag}_owner"), format!("{tag}_worker"));
    let _cleanup = Cleanup {
        admin_url: admin_url.clone(),
        db: tag.clone(),
        roles: vec![worker.clone(), owner.clone()],
    };
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("admin");
    sqlx::query(&(format!("CREATE DATABASE \"{tag}\"")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let db_url = with_database(&base, &tag);
    apply_roles_sql(&db_url, &owner, &worker);

    // Migrate as the owner, then re-run the script (idempotent; revokes the history table).
    let owner_config = config_for(&with_user(&db_url, &owner));
    let owner_pool = store::connect(&owner_config.database)
        .await
        .expect("owner pool");
    store::migrate(&owner_pool)
        .await
        .expect("migrate as the owner");
    owner_pool.close().await;
    apply_roles_sql(&db_url, &owner, &worker);
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT tablename::text, tableowner::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut sqlx::PgConnection::connect(&db_url).await.expect("db as admin"))
    .await
    .expect("tables");
    assert!(tables.len() >= 5, "{tables:?}");
    assert!(tables.iter().all(|(_, o)| *o == owner), "{tables:?}");

    // The worker's operations.
    let worker_url = with_user(&db_url, &worker);
    let config = config_for(&worker_url);
    let pool = store::connect(&config.database).await.expect("worker pool");
    let engine = Arc::new(Engine::new(RuleSet::default_rules(), config.limits));
    let store = Store::new(pool.clone(), engine, StoreOptions::from_config(&config));
    store.ping().await.expect("ping as the worker");
    let batch = [
        event("r-1", "1", "success", 1_700_000_000),
        event("r-2", "2", "failure", 1_700_000_060),
    ];
    let clock = Clock {
        event: batch[1].run.updated_at,
        wall: Utc::now(),
    };
    let outcome = store
        .record(&batch, clock)
        .await
        .expect("record a batch as the worker");
    assert_eq!(outcome.triggers.len(), 1, "one failing group fires");
    store
        .fire_due_timers(Utc::now(), 10)
        .await
        .expect("timers as the worker");
    // The decider's claim lasts `lease` (1 s); then the relay claims it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let pending = loop {
        let pending = store
            .claim_unsent(10)
            .await
            .expect("relay claim as the worker");
        if !pending.is_empty() || std::time::Instant::now() > deadline {
            break pending;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pending.len(), 1);
    let ids: Vec<_> = pending.iter().map(|p| p.trigger_id).collect();
    store
        .mark_sent(&ids)
        .await
        .expect("mark sent as the worker");
    assert_eq!(store.unsent_count().await.expect("count"), 0);
    assert_eq!(
        store
            .repo_id(Provider::Github, "least/privilege")
            .await
            .expect("repo-id as the worker"),
        outcome.triggers[0].repository.internal_id.into()
    );
    let purged = store
        .purge(PurgePace {
            older_than: Duration::ZERO,
            batch: 100,
            pause: Duration::ZERO,
        })
        .await
        .expect("purge as the worker");
    assert!(purged >= 1, "purged {purged}");

    // No DDL, no TRUNCATE, no migration history.
    for sql in [
        "CREATE TABLE intruder (i int)",
        "DROP TABLE groups",
        "ALTER TABLE groups ADD COLUMN x int",
        "CREATE INDEX intruder_idx ON outbox (subject)",
        "TRUNCATE outbox",
        "DELETE FROM _sqlx_migrations",
        "UPDATE _sqlx_migrations SET success = false",
    ] {
        assert_eq!(sqlstate(&pool, sql).await, "42501", "{sql}");
    }
    let err = store::migrate(&pool)
        .await
        .expect_err("the worker cannot migrate");
    assert!(err.to_string().contains("permission denied"), "{err}");
    pool.close().await;

    // The binary with the worker's URL: repo-id and purge work, migrate is refused.
    let bin = env!("CARGO_BIN_EXE_runwatch");
    let run = |args: &[&str]| {
        Command::new(bin)
            .args(args)
            .env("DATABASE_URL", &worker_url)
            .env("RUNWATCH_DATABASE__CREATE_IF_MISSING", "false")
            .output()
            .expect("run runwatch")
    };
    let out = run(&["purge", "--older-than", "30d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["migrate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));

    // Only the owner role can log in with DDL rights: check the role attributes.
    let row =
        sqlx::query("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = $1")
            .bind(&worker)
            .fetch_one(&mut admin)
            .await
            .expect("worker role");
    assert!(!row.get::<bool, _>(0) && !row.get::<bool, _>(1) && !row.get::<bool, _>(2));
    admin.close().await.ok();
}

/// `sslmode` goes in the URL; the local server has TLS on (Debian's default). Skipped with
/// a message when the server has `ssl = off`.
#[tokio::test]
async fn sslmode_require_encrypts_the_connection() {
    let base = database_url();
    let admin_url = with_database(&base, "postgres");
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("admin");
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .expect("show ssl");
    if ssl != "on" {
        eprintln!("skipped: the server runs with ssl = {ssl}");
        return;
    }
    let sep = if admin_url.contains('?') { '&' } else { '?' };
    let config = config_for(&format!("{admin_url}{sep}sslmode=require"));
    let pool = store::connect(&config.database).await.expect("pool");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("sslmode=require connects");
    assert!(encrypted);
    let config = config_for(&format!("{admin_url}{sep}sslmode=disable"));
    let pool = store::connect(&config.database).await.expect("pool");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("sslmode=disable connects");
    assert!(!encrypted);
}
