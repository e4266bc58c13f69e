//! Purge finds old groups through `touched_on` (indexed, the UTC day of the last write) and
//! decides by `updated_at` (exact, unindexed so that group updates stay HOT). Rows written
//! before `touched_on` existed have it NULL: they are purged when old, kept when recent.
//! And updates of a group are HOT (no index written); `purge.pause` paces the batches.

use crate::helpers::app::eventually;
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::env::TestEnv;
use chrono::{DateTime, Utc};
use runwatch::engine::{Clock, Engine};
use runwatch::store::{self, PurgePace, Store, StoreOptions};

fn event(id: &str, sha: &str, status: &str, at: i64) -> runwatch::event::Event {
    let updated: DateTime<Utc> = DateTime::from_timestamp(at, 0).expect("time");
    let mut run = serde_json::json!({"id": "1", "workflow": "ci", "status": status,
                                     "updated_at": updated.to_rfc3339()});
    if status == "completed" {
        run["conclusion"] = "success".into();
    }
    let line = serde_json::json!({
        "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
        "repository": {"owner": "o", "name": "r", "id": "1"},
        "commit_sha": sha, "branch": "b", "pr_number": 1, "run": run,
    });
    runwatch::event::decode(line.to_string().as_bytes(), &Default::default()).expect("valid event")
}

/// A pool and a store on the test's database, as the worker opens them.
async fn open(env: &TestEnv) -> (sqlx::PgPool, Store) {
    let pool = store::connect(&env.config.database).await.expect("pool");
    let engine = Arc::new(Engine::new(
        env.config.rule_set().expect("rules"),
        env.config.limits,
    ));
    let store = Store::new(pool.clone(), engine, StoreOptions::from_config(&env.config));
    (pool, store)
}

#[tokio::test]
async fn purge_by_touched_day_and_exact_update_time_and_updates_are_hot() {
    let env = TestEnv::new().await;
    let (pool, store) = open(&env).await;
    let clock = |at: i64| Clock {
        event: DateTime::from_timestamp(at, 0).expect("time"),
        wall: Utc::now(),
    };
    for (i, sha) in ["old-null", "new-null", "old-day", "fresh"]
        .iter()
        .enumerate()
    {
        let at = 1_700_000_000 + i as i64;
        store
            .record(&[event(&format!("{sha}-q"), sha, "queued", at)], clock(at))
            .await
            .expect("record");
    }
    // Updates of existing groups (queued -> completed), each in a transaction of its own:
    // HOT, no index written. (A new group is inserted and updated in one transaction.)
    for (i, sha) in ["old-null", "new-null", "old-day", "fresh"]
        .iter()
        .enumerate()
    {
        let at = 1_700_000_100 + i as i64;
        store
            .record(
                &[event(&format!("{sha}-c"), sha, "completed", at)],
                clock(at),
            )
            .await
            .expect("record");
    }
    // Statistics reach pg_stat_user_tables shortly after the transactions end.
    let (updates, hot): (i64, i64) = eventually(
        Duration::from_secs(10),
        "8 updates of groups counted",
        || async {
            let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
                .execute(&pool)
                .await;
            let got: (i64, i64) = sqlx::query_as(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'groups'",
            )
            .fetch_one(&pool)
            .await
            .expect("stats");
            (got.0 >= 8).then_some(got)
        },
    )
    .await;
    assert_eq!((updates, hot), (8, 8), "every update of a group is HOT");

    // As rows written before the migration look, or aged (the trigger bypassed).
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("replica");
    for (sha, touched, updated) in [
        ("old-null", "NULL", "now() - interval '40 days'"),
        ("new-null", "NULL", "now() - interval '1 day'"),
        (
            "old-day",
            "((now() - interval '40 days') AT TIME ZONE 'UTC')::date",
            "now() - interval '40 days'",
        ),
    ] {
        sqlx::query(&format!(
            "UPDATE groups SET touched_on = {touched}, updated_at = {updated} WHERE commit_sha = $1"
        ))
        .bind(sha)
        .execute(&mut *tx)
        .await
        .expect("age");
    }
    tx.commit().await.expect("commit");

    assert_eq!(
        store
            .purge(PurgePace {
                older_than: Duration::from_secs(30 * 86_400),
                batch: 1,
                pause: Duration::ZERO
            })
            .await
            .expect("purge"),
        2
    );
    let mut left: Vec<String> = sqlx::query_scalar("SELECT commit_sha FROM groups")
        .fetch_all(&pool)
        .await
        .expect("groups");
    left.sort();
    assert_eq!(left, ["fresh", "new-null"]);
    // A purge by a shorter age takes the recent row whose day is unknown, not today's row.
    assert_eq!(
        store
            .purge(PurgePace {
                older_than: Duration::from_secs(3600),
                batch: 10,
                pause: Duration::ZERO
            })
            .await
            .expect("purge"),
        1
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT commit_sha FROM groups")
        .fetch_all(&pool)
        .await
        .expect("groups");
    assert_eq!(left, ["fresh"]);

    // Another writer that leaves updated_at alone still has it (and touched_on) kept by
    // the trigger.
    sqlx::query("UPDATE groups SET updated_at = now() - interval '40 days', touched_on = NULL")
        .execute(&pool)
        .await
        .expect("backdate (sets updated_at itself: no trigger)");
    sqlx::query("UPDATE groups SET branch = 'elsewhere'")
        .execute(&pool)
        .await
        .expect("update");
    let (recent, today): (bool, bool) = sqlx::query_as(
        "SELECT updated_at > now() - interval '1 minute',
                touched_on = (now() AT TIME ZONE 'UTC')::date FROM groups",
    )
    .fetch_one(&pool)
    .await
    .expect("group");
    assert!(
        recent && today,
        "the trigger keeps updated_at and touched_on"
    );
    pool.close().await;
    env.cleanup().await;
}

/// Jobs are purged by their last write (`jobs_updated_at`), in batches; a recent one stays.
#[tokio::test]
async fn jobs_not_written_for_the_age_are_purged_in_batches() {
    let env = TestEnv::new().await;
    let (pool, store) = open(&env).await;
    let job = |id: &str| {
        let line = serde_json::json!({
            "schema": "runwatch.workflow_job.v1", "event_id": format!("e-{id}"),
            "provider": "github", "repository": {"owner": "o", "name": "r", "id": "1"},
            "commit_sha": "abc", "run": {"id": "1"},
            "job": {"id": id, "name": "test", "status": "completed", "conclusion": "failure",
                    "updated_at": "2026-01-01T00:00:00Z"}
        });
        runwatch::pull_request::decode_input(line.to_string().as_bytes(), &Default::default())
            .expect("valid job")
    };
    let inputs: Vec<_> = ["a", "b", "c", "fresh"].iter().map(|id| job(id)).collect();
    let clock = Clock {
        event: DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
        wall: Utc::now(),
    };
    store.record_inputs(&inputs, clock).await.expect("record");
    sqlx::query("UPDATE jobs SET updated_at = now() - interval '40 days' WHERE job_id <> 'fresh'")
        .execute(&pool)
        .await
        .expect("age");
    store
        .purge(PurgePace {
            older_than: Duration::from_secs(30 * 86_400),
            batch: 2,
            pause: Duration::ZERO,
        })
        .await
        .expect("purge");
    let left: Vec<String> = sqlx::query_scalar("SELECT job_id FROM jobs ORDER BY job_id")
        .fetch_all(&pool)
        .await
        .expect("jobs");
    assert_eq!(left, vec!["fresh".to_string()]);
    pool.close().await;
    env.cleanup().await;
}

/// `purge.pause` comes after every full batch: three old groups in batches of one are three
/// full batches, so three pauses before the statement that finds nothing left.
#[tokio::test]
async fn the_pause_comes_between_full_batches() {
    let env = TestEnv::new().await;
    let (pool, store) = open(&env).await;
    for (i, sha) in ["a", "b", "c"].iter().enumerate() {
        let at = 1_700_000_000 + i as i64;
        let clock = Clock {
            event: DateTime::from_timestamp(at, 0).expect("time"),
            wall: Utc::now(),
        };
        store
            .record(&[event(&format!("{sha}-q"), sha, "queued", at)], clock)
            .await
            .expect("record");
    }
    sqlx::query(
        "UPDATE groups SET updated_at = now() - interval '40 days',
                touched_on = ((now() - interval '40 days') AT TIME ZONE 'UTC')::date",
    )
    .execute(&pool)
    .await
    .expect("age");
    let pause = Duration::from_millis(400);
    let started = std::time::Instant::now();
    let purged = store
        .purge(PurgePace {
            older_than: Duration::from_secs(30 * 86_400),
            batch: 1,
            pause,
        })
        .await
        .expect("purge");
    assert_eq!(purged, 3);
    assert!(
        started.elapsed() >= pause * 3,
        "three full batches, three pauses: {:?}",
        started.elapsed()
    );
    pool.close().await;
    env.cleanup().await;
}
