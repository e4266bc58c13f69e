//! Flaky workflows through NATS and Postgres (docs/design.md "Flaky workflows"): a flip
//! that one group's decision records (a failed attempt, then a passing re-run of the same
//! run) makes another group's failure of that workflow known flaky in a later transaction:
//! with `skip_flaky`, a group whose every failure is known flaky does not fire, and one with
//! another failure fires and marks the flaky workflow. Both decision paths read the flips:
//! the record transaction (the worker, over the bus) and the timer sweep (a settle timer set
//! before the flip was known). A replay of the flip's events counts it once; `explain` says
//! why the skipped group does not fire.

use std::sync::Arc;
use std::time::Duration;

use crate::helpers::env::TestEnv;
use crate::helpers::live::{all_triggers, publish_in_order, start_worker, wait_quiet};
use chrono::{DateTime, Utc};
use runwatch::engine::{Clock, Engine, RuleSet};
use runwatch::event::{Conclusion, Event, Provider, Repository, Run, SCHEMA, Status};
use runwatch::explain::Verdict;
use runwatch::explain::verdict::Cause;
use runwatch::store::{PurgePace, Store, StoreOptions};
use sqlx::Row;

fn at(s: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_760_000_000 + s, 0).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn event(
    repo: &str,
    pr: u64,
    run: &str,
    workflow: &str,
    attempt: u32,
    status: Status,
    conclusion: Option<Conclusion>,
    t: i64,
) -> Event {
    Event {
        schema: SCHEMA.into(),
        event_id: format!("{repo}-{run}-{attempt}-{status:?}"),
        provider: Provider::Github,
        repository: Repository {
            owner: "acme".into(),
            name: repo.into(),
            id: None,
            host: None,
        },
        commit_sha: format!("{pr:040}"),
        branch: Some(format!("feature/{pr}")),
        pr_number: Some(pr),
        run: Run {
            id: run.into(),
            attempt,
            workflow: workflow.into(),
            status,
            conclusion,
            url: None,
            updated_at: at(t),
        },
        metadata: serde_json::Value::Null,
    }
}

/// Run `run` of `workflow` on pull request `pr`: attempt 1 fails, attempt 2 passes.
fn flip(repo: &str, pr: u64, run: &str, workflow: &str, t: i64) -> Vec<Event> {
    vec![
        event(repo, pr, run, workflow, 1, Status::Queued, None, t),
        event(
            repo,
            pr,
            run,
            workflow,
            1,
            Status::Completed,
            Some(Conclusion::Failure),
            t + 60,
        ),
        event(repo, pr, run, workflow, 2, Status::Queued, None, t + 120),
        event(
            repo,
            pr,
            run,
            workflow,
            2,
            Status::Completed,
            Some(Conclusion::Success),
            t + 300,
        ),
    ]
}

fn fails(repo: &str, pr: u64, run: &str, workflow: &str, t: i64) -> Event {
    event(
        repo,
        pr,
        run,
        workflow,
        1,
        Status::Completed,
        Some(Conclusion::Failure),
        t,
    )
}

fn lines(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect()
}

async fn flip_rows(pool: &sqlx::PgPool, repo: &str) -> Vec<(String, String, i64)> {
    sqlx::query(
        "SELECT f.workflow, f.run_id, f.attempt FROM flips f JOIN repositories r ON r.id = f.repository_id
         WHERE r.name = $1 ORDER BY 1, 2",
    )
    .bind(repo)
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("workflow"), r.get("run_id"), r.get("attempt")))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flip_in_one_group_makes_another_groups_failure_known_flaky() {
    let mut env = TestEnv::new().await;
    let rules = "[[rules]]\nkind = \"all_completed_with_failure\"\nskip_flaky = true\nflaky_threshold = 1\n";
    let rules_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rules_file.path(), rules).unwrap();
    env.config.rules_file = Some(rules_file.path().to_path_buf());
    let bus = crate::helpers::app::bus(&env.config).await;
    let pool = runwatch::store::connect(&env.config.database)
        .await
        .unwrap();
    let worker = start_worker(&env.config);

    // The flip, decided and committed on its own (pull request 1 fires on its first failure,
    // before the re-run passes).
    publish_in_order(&bus, &lines(&flip("widgets", 1, "101", "ci", 0))).await;
    wait_quiet(&env.config, &bus, Duration::from_secs(60)).await;
    assert_eq!(
        flip_rows(&pool, "widgets").await,
        vec![("ci".to_string(), "101".to_string(), 2)]
    );
    // Later transactions: `ci` alone fails on pull request 2; `ci` and `lint` on 3.
    let later = vec![
        fails("widgets", 2, "201", "ci", 3_600),
        fails("widgets", 3, "301", "ci", 3_700),
        fails("widgets", 3, "302", "lint", 3_710),
    ];
    publish_in_order(&bus, &lines(&later)).await;
    wait_quiet(&env.config, &bus, Duration::from_secs(60)).await;
    // The flip's events again, as a replay would bring them (other event ids, so JetStream's
    // duplicate window lets them through): still one flip.
    let mut again = flip("widgets", 1, "101", "ci", 0);
    for e in &mut again {
        e.event_id.push_str("-again");
    }
    publish_in_order(&bus, &lines(&again)).await;
    wait_quiet(&env.config, &bus, Duration::from_secs(60)).await;
    let triggers = all_triggers(&bus).await;
    worker.shutdown().await;

    let fired: Vec<(u64, serde_json::Value)> = triggers
        .iter()
        .map(|t| (t["pr_number"].as_u64().unwrap(), t["known_flaky"].clone()))
        .collect();
    assert_eq!(
        fired,
        vec![
            (1, serde_json::Value::Null),
            (
                3,
                serde_json::json!([{"workflow": "ci", "flips": 1, "window_seconds": 604800}])
            ),
        ],
        "{triggers:#?}"
    );
    assert_eq!(
        flip_rows(&pool, "widgets").await,
        vec![("ci".to_string(), "101".to_string(), 2)]
    );

    // explain: pull request 2 does not fire because every failure is known flaky.
    let set = RuleSet::from_toml(rules).unwrap();
    let target = runwatch::explain::Target::Group {
        provider: Provider::Github,
        repository: "acme/widgets".into(),
        pr_number: Some(2),
        commit: format!("{:040}", 2),
    };
    let x = runwatch::explain::query::explain(&pool, &set, &target)
        .await
        .unwrap()
        .unwrap();
    let rule = &x.rules[0];
    assert_eq!(
        rule.reason,
        "will not fire: every failure is known flaky: ci (1 flip in 7d) (the rule has skip_flaky = true)"
    );
    let Verdict::WillNotFire {
        cause, known_flaky, ..
    } = &rule.verdict
    else {
        panic!("{rule:?}")
    };
    assert_eq!(*cause, Cause::KnownFlaky);
    assert_eq!(known_flaky.len(), 1);
    let json = serde_json::to_value(rule).unwrap();
    assert_eq!(json["cause"], "known_flaky");
    assert_eq!(json["known_flaky"][0]["flips"], 1);
    pool.close().await;
    env.cleanup().await;
}

/// The timer sweep reads the flips too: a settle timer set before the flip was known fires
/// into a skip; a group with another failure fires with the flaky workflow marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_sweep_counts_flips_recorded_after_the_timer_was_set() {
    let env = TestEnv::new().await;
    let pool = runwatch::store::connect(&env.config.database)
        .await
        .unwrap();
    let rules = RuleSet::from_toml(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nsettle = \"10m\"\nskip_flaky = true\nflaky_threshold = 1\n",
    )
    .unwrap();
    let engine = Arc::new(Engine::new(rules, env.config.limits));
    let store = Store::new(pool.clone(), engine, StoreOptions::from_config(&env.config));
    let record = |events: Vec<Event>| {
        let store = &store;
        async move {
            let t = events.iter().map(|e| e.run.updated_at).max().unwrap();
            let clock = Clock {
                event: t,
                wall: Utc::now(),
            };
            store.record(&events, clock).await.unwrap().triggers
        }
    };
    // Settle timers set: pull request 4 (`e2e` fails), 5 (`e2e` and `unit` fail).
    assert!(
        record(vec![fails("gadgets", 4, "401", "e2e", 0)])
            .await
            .is_empty()
    );
    assert!(
        record(vec![
            fails("gadgets", 5, "501", "e2e", 10),
            fails("gadgets", 5, "502", "unit", 20),
        ])
        .await
        .is_empty()
    );
    // Then `e2e` flips on pull request 6, in transactions of their own.
    for e in flip("gadgets", 6, "601", "e2e", 30) {
        assert!(record(vec![e]).await.is_empty());
    }
    assert_eq!(flip_rows(&pool, "gadgets").await.len(), 1);
    // The timers are due by event time.
    let fired = store.fire_due_timers(at(3_600), 100).await.unwrap();
    let fired: Vec<(Option<u64>, Vec<String>)> = fired
        .iter()
        .map(|t| {
            (
                t.pr_number,
                t.known_flaky.iter().map(|k| k.workflow.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(fired, vec![(Some(5), vec!["e2e".to_string()])]);
    // Nothing is left pending: pull request 4's timer fired into the skip.
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM groups WHERE due_event_at IS NOT NULL OR due_wall_at IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(pending, 0);
    // Purge keeps the flips a window still counts (7 days here), whatever `older_than` says,
    // and drops the older ones.
    let repo_id: i64 = sqlx::query_scalar("SELECT repository_id FROM flips LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO flips (repository_id, workflow, run_id, attempt, flipped_at)
         VALUES ($1, 'x', 'recent', 2, now() - interval '2 days'),
                ($1, 'x', 'old', 2, now() - interval '8 days')",
    )
    .bind(repo_id)
    .execute(&pool)
    .await
    .unwrap();
    store
        .purge(PurgePace {
            older_than: Duration::from_secs(3600),
            batch: 1000,
            pause: Duration::ZERO,
        })
        .await
        .unwrap();
    let kept: Vec<String> = sqlx::query_scalar("SELECT run_id FROM flips ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(kept, vec!["recent".to_string()]);
    pool.close().await;
    env.cleanup().await;
}
