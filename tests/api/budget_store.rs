//! The `trigger_budgets` rows on the real Postgres: only rules with a budget touch them; a
//! row holds the triggers within the window with its expiry; the purge deletes the rows
//! that count nothing any more and keeps the others.

use std::sync::Arc;
use std::time::Duration;

use crate::helpers::env::TestEnv;
use chrono::{DateTime, Utc};
use runwatch::engine::{Clock, Engine, RuleSet};
use runwatch::store::{self, PurgePace, Store, StoreOptions};
use sqlx::Row;

fn event(id: &str, pr: u64, status: &str) -> runwatch::event::Event {
    let mut run = serde_json::json!({"id": format!("run-{pr}"), "workflow": "ci", "status": status,
                                     "updated_at": "2026-12-04T10:00:00Z"});
    if status == "completed" {
        run["conclusion"] = "failure".into();
    }
    let line = serde_json::json!({
        "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
        "repository": {"owner": "o", "name": "r", "id": "1"},
        "commit_sha": format!("{pr:040x}"), "branch": "b", "pr_number": pr, "run": run,
    });
    runwatch::event::decode(line.to_string().as_bytes(), &Default::default()).expect("event")
}

async fn store_with(env: &TestEnv, rules: &str) -> (Store, sqlx::PgPool) {
    let pool = store::connect(&env.config.database).await.expect("pool");
    let engine = Arc::new(Engine::new(
        RuleSet::from_toml(rules).expect("rules"),
        env.config.limits,
    ));
    (
        Store::new(pool.clone(), engine, StoreOptions::from_config(&env.config)),
        pool,
    )
}

fn now() -> Clock {
    Clock {
        event: DateTime::from_timestamp(1_800_000_000, 0).expect("time"),
        wall: Utc::now(),
    }
}

#[tokio::test]
async fn budget_rows_are_written_only_for_budgets_and_purged_when_they_count_nothing() {
    let env = TestEnv::new().await;

    // Without a budget: no row.
    let (plain, pool) =
        store_with(&env, "[[rules]]\nkind = \"all_completed_with_failure\"\n").await;
    let out = plain
        .record(
            &[event("p-q", 9, "queued"), event("p-c", 9, "completed")],
            now(),
        )
        .await
        .expect("record");
    assert_eq!(out.triggers.len(), 1);
    assert!(out.triggers[0].budget.is_none());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM trigger_budgets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a rule without a budget touches no budget row");

    // With budgets (another rule name: fresh state).
    let (store, pool) = store_with(
        &env,
        "[[rules]]\nkind = \"all_completed_with_failure\"\nname = \"capped\"\n\
         max_triggers_per_pull_request = 2\nmax_triggers_per_repository = 10\nbudget_window = \"1h\"\n",
    )
    .await;
    let before = Utc::now();
    // PR 1 and 3 fail, PR 2 stays queued.
    let out = store
        .record(
            &[
                event("1q", 1, "queued"),
                event("1c", 1, "completed"),
                event("2q", 2, "queued"),
                event("3q", 3, "queued"),
                event("3c", 3, "completed"),
            ],
            now(),
        )
        .await
        .expect("record");
    let after = Utc::now();
    assert_eq!(out.triggers.len(), 2);
    let used: Vec<(u32, u32)> = out
        .triggers
        .iter()
        .map(|t| {
            let b = t.budget.clone().expect("budget");
            (b.pull_request.unwrap().used, b.repository.unwrap().used)
        })
        .collect();
    assert_eq!(used, vec![(1, 1), (1, 2)]);

    let rows = sqlx::query(
        "SELECT pr_number, jsonb_array_length(state->'fired') AS n, expires_at
         FROM trigger_budgets WHERE rule = 'capped' ORDER BY pr_number",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let got: Vec<(i64, i32)> = rows
        .iter()
        .map(|r| (r.get("pr_number"), r.get("n")))
        .collect();
    // The repository's row (0) with both triggers, one per pull request, PR 2's empty.
    assert_eq!(got, vec![(0, 2), (1, 1), (2, 0), (3, 1)]);
    let hour = chrono::Duration::hours(1);
    for r in &rows {
        let pr: i64 = r.get("pr_number");
        let exp: DateTime<Utc> = r.get("expires_at");
        if pr != 2 {
            // The newest trigger plus the window.
            assert!(
                exp >= before + hour - chrono::Duration::seconds(1) && exp <= after + hour,
                "{pr}: {exp}"
            );
        }
    }

    // The purge deletes rows expired for `older_than`: PR 1's (as if it fired 40 days ago)
    // and PR 2's (empty, created 40 days ago); it keeps PR 3's and the repository's.
    sqlx::query(
        "UPDATE trigger_budgets SET expires_at = now() - interval '40 days'
         WHERE rule = 'capped' AND pr_number IN (1, 2)",
    )
    .execute(&pool)
    .await
    .unwrap();
    store
        .purge(PurgePace {
            older_than: Duration::from_secs(30 * 86_400),
            batch: 1,
            pause: Duration::ZERO,
        })
        .await
        .expect("purge");
    let left: Vec<i64> = sqlx::query_scalar(
        "SELECT pr_number FROM trigger_budgets WHERE rule = 'capped' ORDER BY pr_number",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(left, vec![0, 3]);

    // A purged pull request's budget starts empty again: its next failing commit fires as 1.
    let mut again = event("1c2", 1, "completed");
    again.commit_sha = format!("{:040x}", 100);
    again.run.id = "run-1b".into();
    let out = store.record(&[again], now()).await.expect("record");
    assert_eq!(out.triggers.len(), 1);
    let b = out.triggers[0].budget.clone().unwrap();
    assert_eq!(
        (b.pull_request.unwrap().used, b.repository.unwrap().used),
        (1, 3)
    );

    pool.close().await;
    env.cleanup().await;
}

/// The timer sweep decides against the same rows: two groups of one pull request whose
/// settle timers come due in two sweeps, with a budget of one: the first sweep publishes,
/// the second reads the stored budget and records its group over budget.
#[tokio::test]
async fn the_timer_sweep_keeps_the_budget() {
    let env = TestEnv::new().await;
    let (store, pool) = store_with(
        &env,
        "[[rules]]\nkind = \"all_completed_with_failure\"\nsettle = \"1h\"\n\
         max_triggers_per_pull_request = 1\n",
    )
    .await;
    let base = now();
    for (i, sha) in ["a", "b"].iter().enumerate() {
        let mut events = Vec::new();
        for status in ["queued", "completed"] {
            let mut e = event(&format!("{sha}-{status}"), 4, status);
            e.commit_sha = sha.repeat(40);
            e.run.id = format!("run-{i}");
            events.push(e);
        }
        // b's condition holds 30 minutes (event time) after a's.
        let clock = Clock {
            event: base.event + chrono::Duration::minutes(30 * i as i64),
            wall: Utc::now(),
        };
        let out = store.record(&events, clock).await.expect("record");
        assert!(out.triggers.is_empty(), "settle defers");
    }
    let sweep =
        |minutes: i64| store.fire_due_timers(base.event + chrono::Duration::minutes(minutes), 100);
    let fired = sweep(61).await.expect("sweep");
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].commit_sha, "a".repeat(40));
    let b = fired[0].budget.clone().unwrap().pull_request.unwrap();
    assert_eq!((b.used, b.limit), (1, 1));
    let fired = sweep(120).await.expect("sweep");
    assert!(fired.is_empty(), "b is over budget: {fired:?}");
    let over: Vec<String> = sqlx::query_scalar(
        "SELECT commit_sha FROM groups
         WHERE state::jsonb->'rules'->'all_completed_with_failure' ? 'over_budget'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(over, vec!["b".repeat(40)]);
    let timers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM groups WHERE due_wall_at IS NOT NULL OR due_event_at IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(timers, 0, "both timers done");
    pool.close().await;
    env.cleanup().await;
}
