//! The database, streams, subjects and durable consumer of one phase, all its own.

use async_nats::jetstream;
use sqlx::Connection;

use crate::services::{database_url, nats_url, unique, with_database};

pub struct Names {
    pub db: String,
    pub url: String,
    pub events: String,
    pub triggers: String,
    pub dead: String,
    pub events_prefix: String,
    pub triggers_prefix: String,
    pub dead_prefix: String,
    pub durable: String,
}

impl Names {
    pub fn new() -> Names {
        let tag = unique("b");
        let db = format!("rwbench_{tag}");
        let subj = tag.to_lowercase();
        let up = tag.to_uppercase();
        Names {
            url: with_database(&database_url(), &db),
            db,
            events: format!("BEV_{up}"),
            triggers: format!("BTR_{up}"),
            dead: format!("BDL_{up}"),
            events_prefix: format!("bench.{subj}.events"),
            triggers_prefix: format!("bench.{subj}.triggers"),
            dead_prefix: format!("bench.{subj}.dead"),
            durable: format!("bench_{subj}"),
        }
    }

    /// The environment that points a worker at these names.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.url.clone()),
            ("NATS_URL".into(), nats_url()),
            ("RUNWATCH_STREAMS__EVENTS".into(), self.events.clone()),
            ("RUNWATCH_STREAMS__TRIGGERS".into(), self.triggers.clone()),
            ("RUNWATCH_STREAMS__DEAD".into(), self.dead.clone()),
            (
                "RUNWATCH_STREAMS__EVENTS_SUBJECT_PREFIX".into(),
                self.events_prefix.clone(),
            ),
            (
                "RUNWATCH_STREAMS__TRIGGERS_SUBJECT_PREFIX".into(),
                self.triggers_prefix.clone(),
            ),
            (
                "RUNWATCH_STREAMS__DEAD_SUBJECT_PREFIX".into(),
                self.dead_prefix.clone(),
            ),
            ("RUNWATCH_CONSUMER__DURABLE".into(), self.durable.clone()),
            ("RUNWATCH_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            ("RUNWATCH_PURGE__INTERVAL".into(), "0s".into()),
            ("RUNWATCH_LOG__LEVEL".into(), "warn".into()),
            ("RUST_LOG".into(), "warn".into()),
        ]
    }

    /// Deletes the streams and drops the database.
    pub async fn remove(&self, js: &jetstream::Context) {
        for s in [&self.events, &self.triggers, &self.dead] {
            let _ = js.delete_stream(s).await;
        }
        let admin = with_database(&database_url(), "postgres");
        if let Ok(mut admin) = sqlx::PgConnection::connect(&admin).await {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db);
            let _ = sqlx::query(&drop).execute(&mut admin).await;
        }
    }
}
