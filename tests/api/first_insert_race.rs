//! Weakness 1 of the original: 50 concurrent first events of one new group must give one
//! group row and one trigger.

use std::sync::Arc;

use crate::helpers::env::TestEnv;
use chrono::{DateTime, Utc};
use runwatch::engine::{Clock, Engine, RuleSet};
use runwatch::event::{Conclusion, Event, Provider, Repository, Run, SCHEMA, Status};
use runwatch::store::{Store, StoreOptions};
use sqlx::Row;

fn event(i: usize) -> Event {
    Event {
        schema: SCHEMA.into(),
        event_id: format!("race-{i}"),
        provider: Provider::Github,
        repository: Repository {
            owner: "acme".into(),
            name: "race".into(),
            id: Some("42".into()),
            host: None,
        },
        commit_sha: "abc123".into(),
        branch: Some("feature".into()),
        pr_number: Some(9),
        run: Run {
            id: format!("run-{i}"),
            attempt: 1,
            workflow: format!("wf-{i}"),
            status: Status::Completed,
            conclusion: Some(if i.is_multiple_of(3) {
                Conclusion::Failure
            } else {
                Conclusion::Success
            }),
            url: None,
            updated_at: DateTime::<Utc>::from_timestamp(1_700_000_000 + i as i64, 0).unwrap(),
        },
        metadata: serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_first_events_make_one_group_and_one_trigger() {
    let mut env = TestEnv::new().await;
    env.config.database.max_connections = 50;
    let pool = runwatch::store::connect(&env.config.database)
        .await
        .unwrap();
    let engine = Arc::new(Engine::new(RuleSet::default_rules(), env.config.limits));
    let store = Store::new(pool.clone(), engine, StoreOptions::from_config(&env.config));
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let e = event(i);
            barrier.wait().await;
            let clock = Clock {
                event: e.run.updated_at,
                wall: Utc::now(),
            };
            store.record(&[e], clock).await.unwrap().triggers.len()
        }));
    }
    let mut fired = 0;
    for t in tasks {
        fired += t.await.unwrap();
    }
    let groups: i64 = sqlx::query("SELECT count(*) AS n FROM groups")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    let outbox: i64 = sqlx::query("SELECT count(*) AS n FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    let runs: i64 =
        sqlx::query("SELECT count(*) AS n FROM groups, json_object_keys(state->'runs')")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("n");
    pool.close().await;
    env.cleanup().await;
    assert_eq!(groups, 1, "one group row");
    assert_eq!(runs, 50, "every run merged into it");
    assert_eq!(outbox, 1, "one trigger in the outbox");
    assert_eq!(fired, 1, "one trigger decided");
}
