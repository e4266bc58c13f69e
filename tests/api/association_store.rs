//! The commit → pull request association through Postgres (store/association.rs): in every
//! order of a commit status, a run carrying a pull request and a pull request message, and
//! under concurrency (many transactions learning associations and fanning statuses out for
//! one commit at once), every pull request group of the commit ends with every status of the
//! commit, and fires once.

use std::sync::Arc;

use crate::helpers::env::TestEnv;
use chrono::{DateTime, Utc};
use runwatch::engine::{Clock, Engine, RuleSet};
use runwatch::event::{Conclusion, Event, Provider, Repository, Run, SCHEMA, Status};
use runwatch::pull_request::{Input, PULL_REQUEST_SCHEMA, PullRequestLink};
use runwatch::store::{Store, StoreOptions};
use sqlx::Row;

fn repository() -> Repository {
    Repository {
        owner: "acme".into(),
        name: "assoc".into(),
        id: Some("77".into()),
        host: None,
    }
}

fn at(s: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000 + s, 0).unwrap()
}

fn run(id: &str, sha: &str, pr: Option<u64>, fails: bool, t: i64) -> Input {
    Input::Run(Event {
        schema: SCHEMA.into(),
        event_id: format!("{sha}-{id}-{}", pr.unwrap_or(0)),
        provider: Provider::Github,
        repository: repository(),
        commit_sha: sha.into(),
        branch: None,
        pr_number: pr,
        run: Run {
            id: id.into(),
            attempt: 1,
            workflow: id.into(),
            status: Status::Completed,
            conclusion: Some(if fails {
                Conclusion::Failure
            } else {
                Conclusion::Success
            }),
            url: None,
            updated_at: at(t),
        },
        metadata: serde_json::Value::Null,
    })
}

fn link(sha: &str, pr: u64, t: i64) -> Input {
    Input::PullRequest(PullRequestLink {
        schema: PULL_REQUEST_SCHEMA.into(),
        event_id: format!("{sha}-link-{pr}"),
        provider: Provider::Github,
        repository: repository(),
        commit_sha: sha.into(),
        pr_number: pr,
        branch: None,
        updated_at: at(t),
        state: None,
        draft: None,
        merged: None,
        state_at: None,
        title: None,
        author: None,
        base_branch: None,
        url: None,
        metadata: serde_json::Value::Null,
    })
}

async fn store(env: &TestEnv) -> (Store, sqlx::PgPool) {
    let pool = runwatch::store::connect(&env.config.database)
        .await
        .unwrap();
    let engine = Arc::new(Engine::new(RuleSet::default_rules(), env.config.limits));
    (
        Store::new(pool.clone(), engine, StoreOptions::from_config(&env.config)),
        pool,
    )
}

/// The run ids of the group (commit, pr).
async fn group_runs(pool: &sqlx::PgPool, sha: &str, pr: i64) -> Vec<String> {
    sqlx::query(
        "SELECT k FROM groups, json_object_keys(state->'runs') AS k
         WHERE commit_sha = $1 AND COALESCE(pr_number, 0) = $2 ORDER BY k",
    )
    .bind(sha)
    .bind(pr)
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>("k"))
    .collect()
}

async fn outbox_prs(pool: &sqlx::PgPool, sha: &str) -> Vec<i64> {
    sqlx::query(
        "SELECT g.pr_number FROM outbox o JOIN groups g ON g.id = o.group_id
         WHERE g.commit_sha = $1 ORDER BY 1",
    )
    .bind(sha)
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<i64, _>("pr_number"))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_of_a_status_a_pull_request_run_and_a_pull_request_message() {
    let env = TestEnv::new().await;
    let (store, pool) = store(&env).await;
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for (n, order) in orders.iter().enumerate() {
        let sha = format!("{n:040}");
        let inputs = [
            run("status:ci/jenkins", &sha, None, true, 1),
            run("build", &sha, Some(5), false, 2),
            link(&sha, 6, 3),
        ];
        for i in order {
            let input = inputs[*i].clone();
            let clock = Clock {
                event: input.updated_at(),
                wall: Utc::now(),
            };
            store.record_inputs(&[input], clock).await.unwrap();
        }
        assert_eq!(
            group_runs(&pool, &sha, 5).await,
            vec!["build", "status:ci/jenkins"],
            "order {order:?}"
        );
        assert_eq!(
            group_runs(&pool, &sha, 6).await,
            vec!["status:ci/jenkins"],
            "order {order:?}"
        );
        assert_eq!(
            outbox_prs(&pool, &sha).await,
            vec![5, 6],
            "order {order:?}: each pull request fires once"
        );
    }
    // The association side without a pull request creates no group row of its own.
    let sha = "f".repeat(40);
    store
        .record_inputs(
            &[link(&sha, 9, 1)],
            Clock {
                event: at(1),
                wall: Utc::now(),
            },
        )
        .await
        .unwrap();
    let rows: i64 = sqlx::query("SELECT count(*) AS n FROM groups WHERE commit_sha = $1")
        .bind(&sha)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!(rows, 1, "only the pull request's group");
    pool.close().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_statuses_and_associations_never_miss_each_other() {
    let mut env = TestEnv::new().await;
    env.config.database.max_connections = 40;
    let (store, pool) = store(&env).await;
    for round in 0..4 {
        let sha = format!("{round:0>40}").replace('0', "a");
        let mut inputs = Vec::new();
        for s in 0..24 {
            inputs.push(run(&format!("status:ctx-{s}"), &sha, None, s == 7, s));
        }
        for pr in 1..=3u64 {
            inputs.push(link(&sha, pr, 100));
            inputs.push(run(&format!("build-{pr}"), &sha, Some(pr), false, 100));
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(inputs.len()));
        let mut tasks = Vec::new();
        for input in inputs {
            let store = store.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let clock = Clock {
                    event: input.updated_at(),
                    wall: Utc::now(),
                };
                store.record_inputs(&[input], clock).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for pr in 1..=3i64 {
            let runs = group_runs(&pool, &sha, pr).await;
            assert_eq!(
                runs.len(),
                25,
                "round {round}, pr {pr}: its run and all 24 statuses: {runs:?}"
            );
        }
        assert_eq!(
            outbox_prs(&pool, &sha).await,
            vec![1, 2, 3],
            "round {round}: each fires once"
        );
    }
    pool.close().await;
    env.cleanup().await;
}
