//! A test environment on the real services: a fresh database and unique stream, subject
//! and consumer names per test, so tests run in parallel and leave nothing behind.

use runwatch::config::Config;
use sqlx::Connection;

pub use super::services::{database_url, nats_url, unique, with_database};

pub struct TestEnv {
    pub config: Config,
    pub db_name: String,
    admin_url: String,
    cleaned: bool,
}

impl Drop for TestEnv {
    /// A test that panicked before `cleanup` still leaves nothing behind.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let env = TestEnv {
            config: self.config.clone(),
            db_name: self.db_name.clone(),
            admin_url: self.admin_url.clone(),
            cleaned: true,
        };
        super::services::clean_up_blocking(async move { env.remove().await });
    }
}

impl TestEnv {
    /// A fresh database (migrated) and unique JetStream names.
    pub async fn new() -> TestEnv {
        TestEnv::on_server(&database_url()).await
    }

    /// [`TestEnv::new`] with its database on the Postgres server of `base` (a URL; its
    /// database name is replaced) instead of the run's.
    pub async fn on_server(base: &str) -> TestEnv {
        let base = base.to_string();
        let admin_url = with_database(&base, "postgres");
        let db_name = unique("rwtest");
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect admin db");
        sqlx::query(&(format!("CREATE DATABASE {db_name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();

        let mut config = super::config::test_config_for(&nats_url(), &unique("t"));
        config.database.url = with_database(&base, &db_name);
        config.database.max_connections = 5;
        config.validate().expect("test config is valid");

        let pool = runwatch::store::connect(&config.database)
            .await
            .expect("pool");
        runwatch::store::migrate(&pool).await.expect("migrate");
        pool.close().await;
        TestEnv {
            config,
            db_name,
            admin_url,
            cleaned: false,
        }
    }

    /// The environment that configures the `runwatch` binary like `self.config`.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let c = &self.config;
        vec![
            ("DATABASE_URL".into(), c.database.url.clone()),
            ("NATS_URL".into(), c.nats.url.clone()),
            ("RUNWATCH_STREAMS__EVENTS".into(), c.streams.events.clone()),
            (
                "RUNWATCH_STREAMS__TRIGGERS".into(),
                c.streams.triggers.clone(),
            ),
            ("RUNWATCH_STREAMS__DEAD".into(), c.streams.dead.clone()),
            (
                "RUNWATCH_STREAMS__EVENTS_SUBJECT_PREFIX".into(),
                c.streams.events_subject_prefix.clone(),
            ),
            (
                "RUNWATCH_STREAMS__TRIGGERS_SUBJECT_PREFIX".into(),
                c.streams.triggers_subject_prefix.clone(),
            ),
            (
                "RUNWATCH_STREAMS__DEAD_SUBJECT_PREFIX".into(),
                c.streams.dead_subject_prefix.clone(),
            ),
            (
                "RUNWATCH_CONSUMER__DURABLE".into(),
                c.consumer.durable.clone(),
            ),
            (
                "RUNWATCH_CONSUMER__LANES".into(),
                c.consumer.lanes.to_string(),
            ),
            ("RUNWATCH_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            (
                "RUNWATCH_OUTBOX__LEASE".into(),
                format!("{}ms", c.outbox.lease.as_millis()),
            ),
            (
                "RUNWATCH_SHUTDOWN__TIMEOUT".into(),
                format!("{}ms", c.shutdown.timeout.as_millis()),
            ),
        ]
    }

    /// Drops the database and the streams.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        self.remove().await;
    }

    async fn remove(&self) {
        if let Ok(client) = async_nats::connect(&self.config.nats.url).await {
            let js = async_nats::jetstream::new(client);
            for s in [
                &self.config.streams.events,
                &self.config.streams.triggers,
                &self.config.streams.dead,
            ] {
                let _ = js.delete_stream(s).await;
            }
        }
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ =
                sqlx::query(&(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name)))
                    .execute(&mut admin)
                    .await;
        }
    }
}
