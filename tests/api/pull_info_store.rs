//! What a pull request is (title, author, branches, url) through Postgres
//! (store/association.rs `write_heads`): reports of one pull request, in every order, one
//! transaction each or all at once in concurrent transactions, leave the report that
//! `PullInfo::supersedes` ranks highest (the same order in SQL as in the engine, ties
//! included); a rule with `authors` fires for a run that completed before the author was
//! known, once the report arrives.

use std::sync::Arc;

use crate::helpers::app::eventually;
use crate::helpers::env::TestEnv;
use chrono::{DateTime, Utc};
use runwatch::engine::{Clock, Engine, PullAuthor, PullInfo, RuleSet};
use runwatch::event::{Conclusion, Event, Provider, Repository, Run, SCHEMA, Status};
use runwatch::pull_request::{Input, LinkAuthor, PULL_REQUEST_SCHEMA, PullRequestLink};
use runwatch::store::{Store, StoreOptions};
use sqlx::Row;

fn repository() -> Repository {
    Repository {
        owner: "acme".into(),
        name: "info".into(),
        id: Some("78".into()),
        host: None,
    }
}

fn at(s: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000 + s, 0).unwrap()
}

fn failing_run(sha: &str, pr: u64) -> Input {
    Input::Run(Event {
        schema: SCHEMA.into(),
        event_id: format!("{sha}-run-{pr}"),
        provider: Provider::Github,
        repository: repository(),
        commit_sha: sha.into(),
        branch: Some("feature".into()),
        pr_number: Some(pr),
        run: Run {
            id: "build".into(),
            attempt: 1,
            workflow: "build".into(),
            status: Status::Completed,
            conclusion: Some(Conclusion::Failure),
            url: None,
            updated_at: at(1),
        },
        metadata: serde_json::Value::Null,
    })
}

/// Report `n` of pull request `pr`: the reports tie on their time but for the last one, and
/// differ in one field each (so only the whole order decides).
fn report(sha: &str, pr: u64, n: usize) -> PullRequestLink {
    let (t, title, base, bot) = [
        (5, "b", Some("main"), false),
        (5, "b", None, false),
        (5, "a", Some("zzz"), false),
        (5, "a", Some("main"), true),
        (4, "z", Some("main"), false),
    ][n];
    PullRequestLink {
        schema: PULL_REQUEST_SCHEMA.into(),
        event_id: format!("{sha}-{pr}-report-{n}"),
        provider: Provider::Github,
        repository: repository(),
        commit_sha: sha.into(),
        pr_number: pr,
        branch: Some("feature".into()),
        updated_at: at(t),
        state: None,
        draft: None,
        merged: None,
        state_at: None,
        title: Some(title.into()),
        author: Some(LinkAuthor {
            login: "Alice".into(),
            bot,
        }),
        base_branch: base.map(Into::into),
        url: Some(format!("https://example.com/pull/{pr}")),
        metadata: serde_json::Value::Null,
    }
}

const REPORTS: usize = 5;

async fn stored(pool: &sqlx::PgPool, pr: i64) -> PullInfo {
    let row = sqlx::query(
        "SELECT pr_title, pr_author, pr_author_bot, pr_head_branch, pr_base_branch, pr_url, info_at
         FROM pull_heads WHERE pr_number = $1",
    )
    .bind(pr)
    .fetch_one(pool)
    .await
    .unwrap();
    PullInfo {
        title: row.get("pr_title"),
        author: row
            .get::<Option<String>, _>("pr_author")
            .map(|login| PullAuthor {
                login,
                bot: row.get::<Option<bool>, _>("pr_author_bot").unwrap_or(false),
            }),
        head_branch: row.get("pr_head_branch"),
        base_branch: row.get("pr_base_branch"),
        url: row.get("pr_url"),
        at: row.get("info_at"),
    }
}

/// The report the engine's order ranks highest.
fn newest(pr: u64) -> PullInfo {
    let mut best: Option<PullInfo> = None;
    for n in 0..REPORTS {
        let info = report("x", pr, n).info().unwrap();
        if info.supersedes(best.as_ref()) {
            best = Some(info);
        }
    }
    best.unwrap()
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_order_and_concurrent_writers_keep_the_newest_report() {
    let mut env = TestEnv::new().await;
    env.config.database.max_connections = 20;
    let pool = runwatch::store::connect(&env.config.database)
        .await
        .unwrap();
    let rules = RuleSet::from_toml(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nauthors = [\"alice\"]\n",
    )
    .unwrap();
    let engine = Arc::new(Engine::new(rules, env.config.limits));
    let store = Arc::new(Store::new(
        pool.clone(),
        engine,
        StoreOptions::from_config(&env.config),
    ));
    let clock = |t: i64| Clock {
        event: at(t),
        wall: Utc::now(),
    };
    let orders = permutations(REPORTS);
    assert_eq!(orders.len(), 120);
    for (i, order) in orders.iter().enumerate() {
        let pr = i as u64 + 1;
        let sha = format!("{pr:040}");
        // The run completes first: the rule waits for the author.
        store
            .record_inputs(&[failing_run(&sha, pr)], clock(1))
            .await
            .unwrap();
        for n in order {
            let input = Input::PullRequest(report(&sha, pr, *n));
            store.record_inputs(&[input], clock(5)).await.unwrap();
        }
        assert_eq!(
            stored(&pool, pr as i64).await,
            newest(pr),
            "order {order:?}"
        );
    }
    // Fired once per pull request, after the author became known.
    let fired: i64 = sqlx::query("SELECT count(DISTINCT group_id) AS n FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    let rows: i64 = sqlx::query("SELECT count(*) AS n FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!((fired, rows), (orders.len() as i64, orders.len() as i64));
    let payload: Vec<u8> = sqlx::query("SELECT payload FROM outbox LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("payload");
    let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(payload["pull_request"]["author"], "Alice", "{payload}");

    // Concurrent writers: each report on another head commit (other commit locks, other
    // group rows), all in flight at once. The test holds the pull request's row, so each
    // transaction reads it as it was (an older report) and then waits to write it: the
    // upserts run one after the other on a row another report already changed, and the
    // order in SQL alone decides.
    for round in 0..6u64 {
        let pr = 1000 + round;
        let old = format!("{:0>40}", round).replace('0', "d");
        let mut first = report(&old, pr, 4);
        first.updated_at = at(0);
        store
            .record_inputs(&[Input::PullRequest(first)], clock(0))
            .await
            .unwrap();
        let mut hold = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM pull_heads WHERE pr_number = $1 FOR UPDATE")
            .bind(pr as i64)
            .execute(&mut *hold)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        // Another order each round.
        for k in 0..REPORTS {
            let n = (k + round as usize) % REPORTS;
            let store = store.clone();
            let sha = format!("{:0>40}", format!("{round}{n}")).replace('0', "c");
            tasks.push(tokio::spawn(async move {
                let input = Input::PullRequest(report(&sha, pr, n));
                store.record_inputs(&[input], clock(5)).await.unwrap();
            }));
        }
        let p = &pool;
        eventually(
            std::time::Duration::from_secs(30),
            "every writer waiting on the row",
            || async move {
                let waiting: i64 = sqlx::query(
                    "SELECT count(*) AS n FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(p)
                .await
                .ok()?
                .get("n");
                (waiting >= REPORTS as i64).then_some(())
            },
        )
        .await;
        hold.commit().await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(stored(&pool, pr as i64).await, newest(pr), "round {round}");
    }
    pool.close().await;
    env.cleanup().await;
}
