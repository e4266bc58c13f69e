//! Cost that stays flat as the table grows, on a table the test grows itself the way a live
//! one grows: statistics taken when it was small (and most of its timers were due), then a
//! hundred times more rows with autovacuum and analyze held off. Plans that depend on
//! statistics flip on such a table; a freshly analyzed prefill hides it.
//!
//! Each sweep statement (`runwatch::store::sql`: timers, relay, purge) is explained with the
//! buffers it touches at 2,000 and at 200,000 groups; it must touch about as many at both.
//! The decision transaction (`Store::record`, whose statements run inside PL/pgSQL
//! functions that EXPLAIN cannot see into) must scan no table sequentially at 200,000.
//! Buffers are counted, never milliseconds: the figures do not depend on the machine.

use std::sync::Arc;
use std::time::Duration;

use crate::helpers::env::TestEnv;
use crate::helpers::procs::PgProc;
use chrono::{DateTime, Utc};
use runwatch::engine::{Clock, Engine};
use runwatch::store::{self, Store, StoreOptions, sql};
use sqlx::PgPool;

const SMALL: i64 = 2_000;

/// A transaction that holds a transaction id anywhere in the cluster (another test's
/// pre-fill, in its own database; any test of this binary running beside these) keeps the
/// first run of an explained sweep from marking the index entries of dead rows, and the
/// control of the sweeps test (the id-ordered timer sweep at 2,000 groups) touched 2,957
/// buffers instead of about 450. So each test here has a Postgres server of its own
/// ([`own_server`]), and holds this lock so that no two of them grow tables at once.
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Postgres server of the test's own (stopped when dropped) and a [`TestEnv`] on it.
async fn own_server() -> (TestEnv, PgProc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = PgProc::start(&dir.path().join("pg")).expect("start a Postgres server");
    let env = TestEnv::on_server(&pg.url("postgres")).await;
    (env, pg, dir)
}
const LARGE: i64 = 200_000;

/// Adds groups `from..=to` over 50 repositories, with the mix a live table has: a few
/// timers set (in the future: nothing due), one group in 20 with a trigger in the outbox
/// (one in 1,000 of them unsent but claimed), one commit in four linked to its pull
/// request, pull request heads, a flip per ten groups.
async fn grow(pool: &PgPool, from: i64, to: i64) {
    for sql in [
        "INSERT INTO groups (repository_id, pr_number, commit_sha, branch, state, due_event_at, due_wall_at)
         SELECT r.id, i, md5(i::text), 'main', '{\"runs\":{}}'::json,
                CASE WHEN i % 100 = 0 THEN now() + interval '1 hour' END,
                CASE WHEN i % 1000 = 0 THEN now() + interval '1 hour' END
         FROM generate_series($1::bigint, $2::bigint) AS i
         JOIN repositories r ON r.external_id = (i % 50)::text",
        "INSERT INTO outbox (trigger_id, group_id, subject, payload, sent_at, claimed_until)
         SELECT gen_random_uuid(), g.id, 's', '\\x00',
                CASE WHEN g.pr_number % 20000 = 0 THEN NULL ELSE now() END, now() + interval '1 hour'
         FROM groups g WHERE g.pr_number BETWEEN $1 AND $2 AND g.pr_number % 20 = 0",
        "INSERT INTO commit_pulls (repository_id, commit_sha, pr_number)
         SELECT repository_id, commit_sha, pr_number FROM groups
         WHERE pr_number BETWEEN $1 AND $2 AND pr_number % 4 = 0",
        "INSERT INTO pull_heads (repository_id, pr_number, head_sha, head_at)
         SELECT repository_id, pr_number, commit_sha, now() FROM groups
         WHERE pr_number BETWEEN $1 AND $2 AND pr_number % 4 = 0",
        // One flip of `ci` (the decisions' workflow) per ten groups, within the window.
        "INSERT INTO flips (repository_id, workflow, run_id, attempt, flipped_at)
         SELECT r.id, 'ci', i::text, 2, now() - make_interval(days => (i % 5)::int)
         FROM generate_series($1::bigint, $2::bigint) AS i
         JOIN repositories r ON r.external_id = (i % 50)::text
         WHERE i % 10 = 0",
    ] {
        sqlx::query(sql).bind(from).bind(to).execute(pool).await.expect(sql);
    }
}

/// Shared buffers (hit + read) that `statement` touches, explained in a transaction that
/// is rolled back; the second of two runs, so that index entries of rows changed since the
/// last vacuum have been marked dead by the first (as a sweep that runs every 100 ms sees).
async fn buffers(pool: &PgPool, statement: &str, args: (f64, i64)) -> i64 {
    let mut touched = 0;
    for _ in 0..2 {
        let mut tx = pool.begin().await.expect("tx");
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}");
        let mut query = sqlx::query_scalar::<_, serde_json::Value>(&explain);
        if statement.contains("$1::timestamptz") || statement.contains("due_event_at <= $1") {
            let at: DateTime<Utc> = Utc::now();
            query = query.bind(at).bind(args.1);
        } else {
            query = query.bind(args.0).bind(args.1);
        }
        let plan = query.fetch_one(&mut *tx).await.expect(statement);
        tx.rollback().await.expect("rollback");
        let top = &plan[0]["Plan"];
        touched = top["Shared Hit Blocks"].as_i64().expect("hit blocks")
            + top["Shared Read Blocks"].as_i64().expect("read blocks");
    }
    touched
}

/// The sweeps: (name, statement, ($1 when not a time, $2)).
fn sweeps() -> Vec<(&'static str, &'static str, (f64, i64))> {
    let day = 86_400.0;
    let mut out = vec![
        ("timers", sql::TIMERS_DUE, (0.0, 64)),
        ("relay claim", sql::RELAY_CLAIM, (64.0, 30)),
        ("purge groups", sql::PURGE_GROUPS, (30.0 * day, 1000)),
        (
            "purge groups without a day",
            sql::PURGE_GROUPS_UNSTAMPED,
            (30.0 * day, 1000),
        ),
    ];
    for (name, statement) in [
        "purge outbox",
        "purge streaks",
        "purge commit_pulls",
        "purge pull_heads",
        "purge trigger_budgets",
        "purge jobs",
    ]
    .into_iter()
    .zip(sql::PURGE_REST)
    {
        out.push((name, statement, (30.0 * day, 1000)));
    }
    out.push(("purge flips", sql::PURGE_FLIPS, (30.0 * day, 1000)));
    out
}

/// The sweep as it was written before `timers_due.sql`: one OR over both due columns, in
/// id order. On this table it walks the primary key (the check that the table reproduces
/// what makes plans flip).
const TIMERS_BY_ID: &str =
    "SELECT id, repository_id, pr_number, commit_sha, branch, state FROM groups
     WHERE due_wall_at <= now() OR due_event_at <= $1
     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED";

/// (table, sequential scans, index scans) as `pg_stat_user_tables` has them now.
async fn counts(env: &TestEnv) -> Vec<(String, i64, i64)> {
    let pool = store::connect(&env.config.database).await.expect("pool");
    let counts = sqlx::query_as(
        "SELECT relname::text, seq_scan, COALESCE(idx_scan, 0) FROM pg_stat_user_tables
         WHERE relname IN ('groups', 'commit_pulls', 'pull_heads', 'outbox', 'streaks', 'cooldowns', 'flips')
         ORDER BY relname",
    )
    .fetch_all(&pool)
    .await
    .expect("pg_stat_user_tables");
    pool.close().await;
    counts
}

/// (table, sequential scans, index scans) once every other backend of the test's database
/// has ended (a backend reports its counters when it ends).
async fn seq_scans(env: &TestEnv) -> Vec<(String, i64, i64)> {
    let pool = store::connect(&env.config.database).await.expect("pool");
    for _ in 0..200 {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await
        .expect("pg_stat_activity");
        if others == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = sqlx::query_as(
        "SELECT relname::text, seq_scan, COALESCE(idx_scan, 0) FROM pg_stat_user_tables
         WHERE relname IN ('groups', 'commit_pulls', 'pull_heads', 'outbox', 'streaks', 'cooldowns', 'flips')
         ORDER BY relname",
    )
    .fetch_all(&pool)
    .await
    .expect("pg_stat_user_tables");
    pool.close().await;
    counts
}

fn event(id: &str, sha: &str, pr: Option<u64>, at: i64) -> runwatch::event::Event {
    let updated: DateTime<Utc> = DateTime::from_timestamp(at, 0).expect("time");
    let line = serde_json::json!({
        "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
        "repository": {"owner": "acme", "name": format!("repo-{}", at % 50), "id": (at % 50).to_string()},
        "commit_sha": sha, "branch": "main", "pr_number": pr,
        "run": {"id": id, "workflow": "ci", "status": "completed", "conclusion": "failure",
                "updated_at": updated.to_rfc3339()},
    });
    runwatch::event::decode(line.to_string().as_bytes(), &Default::default()).expect("valid event")
}

/// A batch of a young table: 32 new pull request groups and the push builds of their
/// commits.
fn fresh_batch(round: i64) -> Vec<runwatch::event::Event> {
    let mut batch = Vec::new();
    for k in 0..32i64 {
        let n = 3_000_000 + round * 32 + k;
        batch.push(event(
            &format!("w{round}-{k}"),
            &format!("w{n}"),
            Some(n as u64),
            n,
        ));
        batch.push(event(&format!("v{round}-{k}"), &format!("w{n}"), None, n));
    }
    batch
}

/// A decision batch: 64 existing groups of pull requests from `first` on, 64 new ones from
/// `fresh` on, and 64 push builds of commits linked to pull requests.
async fn decision_batch(
    pool: &PgPool,
    round: i64,
    first: i64,
    fresh: i64,
) -> Vec<runwatch::event::Event> {
    let mut batch = Vec::new();
    for k in 0..64i64 {
        let existing = (first + k * 17 - 1) % SMALL + 1 + (first / SMALL) * SMALL;
        let sha = sha_of(pool, existing).await;
        batch.push(event(
            &format!("e{round}-{k}"),
            &sha,
            Some(existing as u64),
            existing,
        ));
        let new = fresh + round * 64 + k;
        batch.push(event(
            &format!("n{round}-{k}"),
            &format!("new{new}"),
            Some(new as u64),
            new,
        ));
        let linked = 4 * ((existing / 4).max(1));
        batch.push(event(
            &format!("p{round}-{k}"),
            &sha_of(pool, linked).await,
            None,
            linked,
        ));
    }
    batch
}

/// The commit of the prefilled group of pull request `pr`.
async fn sha_of(pool: &PgPool, pr: i64) -> String {
    sqlx::query_scalar(
        "SELECT commit_sha FROM groups WHERE repository_id = (SELECT id FROM repositories WHERE external_id = ($1 % 50)::text)
           AND COALESCE(pr_number, 0) = $1",
    )
        .bind(pr)
        .fetch_one(pool)
        .await
        .expect("prefilled group")
}

/// The decisions' counters moved, and no sequential scan among them.
fn assert_no_sequential_scan(
    before: &[(String, i64, i64)],
    after: &[(String, i64, i64)],
    what: &str,
) {
    let index_scans =
        |counts: &[(String, i64, i64)]| counts.iter().find(|c| c.0 == "groups").map_or(0, |c| c.2);
    assert!(
        index_scans(after) > index_scans(before),
        "the decisions' counters reached pg_stat_user_tables"
    );
    let seq = |counts: &[(String, i64, i64)]| {
        counts
            .iter()
            .map(|c| (c.0.clone(), c.1))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seq(before),
        seq(after),
        "a decision scanned a table sequentially at {LARGE} groups, {what}"
    );
}

#[tokio::test]
async fn sweeps_and_decisions_cost_the_same_at_two_hundred_thousand_groups_with_stale_statistics() {
    let _counting = COUNTING.lock().await;
    let (env, _pg, _dir) = own_server().await;
    let pool = store::connect(&env.config.database).await.expect("pool");
    for table in [
        "groups",
        "outbox",
        "commit_pulls",
        "pull_heads",
        "streaks",
        "repositories",
        "flips",
    ] {
        sqlx::query(&format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false)"
        ))
        .execute(&pool)
        .await
        .expect("autovacuum off");
    }
    sqlx::query(
        "INSERT INTO repositories (provider, external_id, owner, name, stable_key)
         SELECT 'github', i::text, 'acme', 'repo-' || i, 'github:id:' || i FROM generate_series(0, 49) AS i",
    )
    .execute(&pool)
    .await
    .expect("repositories");

    // Small, analyzed when most of its timers are due, half its triggers unsent and the rest
    // old, and its associations old; then the sweeps catch up (as they would) and the
    // statistics stay as they were.
    grow(&pool, 1, SMALL).await;
    sqlx::query("UPDATE groups SET due_event_at = now() - interval '1 hour', due_wall_at = now() - interval '1 hour' WHERE pr_number % 3 <> 0")
        .execute(&pool)
        .await
        .expect("due");
    for sql in [
        "UPDATE outbox SET sent_at = CASE WHEN group_id % 2 = 0 THEN now() - interval '40 days' END, claimed_until = NULL",
        "UPDATE commit_pulls SET created_at = now() - interval '40 days'",
        "UPDATE pull_heads SET updated_at = now() - interval '40 days'",
        "ANALYZE",
        "UPDATE groups SET due_event_at = NULL, due_wall_at = NULL WHERE due_event_at < now()",
        "UPDATE outbox SET sent_at = now()",
        "UPDATE commit_pulls SET created_at = now()",
        "UPDATE pull_heads SET updated_at = now()",
    ] {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }

    let mut small = Vec::new();
    for (name, statement, args) in sweeps() {
        small.push((name, buffers(&pool, statement, args).await));
    }
    let naive_small = buffers(&pool, TIMERS_BY_ID, (0.0, 64)).await;

    grow(&pool, SMALL + 1, LARGE).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM groups")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(rows >= LARGE, "{rows} groups");

    let naive_large = buffers(&pool, TIMERS_BY_ID, (0.0, 64)).await;
    assert!(
        naive_large > 5 * naive_small.max(1),
        "the table must reproduce a plan that flips: the id-ordered sweep touched {naive_small} buffers at {SMALL} groups and {naive_large} at {LARGE}"
    );
    let mut report = Vec::new();
    for ((name, statement, args), (_, at_small)) in sweeps().into_iter().zip(&small) {
        let at_large = buffers(&pool, statement, args).await;
        report.push(format!("{name}: {at_small} -> {at_large}"));
        assert!(
            at_large <= 2 * at_small + 40,
            "{name} touched {at_small} buffers at {SMALL} groups and {at_large} at {LARGE}: its cost grows with the table\n{}",
            report.join("\n")
        );
    }
    println!(
        "buffers at {SMALL} -> {LARGE} groups:\n{}",
        report.join("\n")
    );

    // The decision transaction on the large table, on connections opened now: 64 existing
    // groups of pull requests, 64 new ones, and 64 push builds of commits linked to pull
    // requests, per batch.
    let mut batches = Vec::new();
    for round in 0..3i64 {
        batches.push(decision_batch(&pool, round + 100, 1_000 + round * 20_000, LARGE + 1).await);
    }
    // Every backend reports its counters when it ends: the set-up's first.
    pool.close().await;
    let before = seq_scans(&env).await;
    let worker_pool = store::connect(&env.config.database).await.expect("pool");
    let store = Store::new(
        worker_pool.clone(),
        Arc::new(Engine::new(
            env.config.rule_set().expect("rules"),
            env.config.limits,
        )),
        StoreOptions::from_config(&env.config),
    );
    let now = Utc::now().timestamp();
    for batch in &batches {
        let clock = Clock {
            event: DateTime::from_timestamp(now, 0).expect("time"),
            wall: Utc::now(),
        };
        store.record(batch, clock).await.expect("record");
    }
    worker_pool.close().await;
    let after = seq_scans(&env).await;
    assert_no_sequential_scan(&before, &after, "on connections opened at 200,000 groups");
    env.cleanup().await;
}

/// A worker that started on an empty table keeps its connections while the table grows
/// (here with no ANALYZE, as with autovacuum off): its prepared statements and the
/// PL/pgSQL functions' statements must not keep plans made for the empty table (a generic
/// plan is kept until the statistics change), or every decision reads the whole table.
#[tokio::test]
async fn a_connection_that_started_on_an_empty_table_scans_no_table_once_it_has_grown() {
    let _counting = COUNTING.lock().await;
    let (env, _pg, _dir) = own_server().await;
    let pool = store::connect(&env.config.database).await.expect("pool");
    for table in [
        "groups",
        "outbox",
        "commit_pulls",
        "pull_heads",
        "streaks",
        "repositories",
        "flips",
    ] {
        sqlx::query(&format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false)"
        ))
        .execute(&pool)
        .await
        .expect("autovacuum off");
    }
    sqlx::query(
        "INSERT INTO repositories (provider, external_id, owner, name, stable_key)
         SELECT 'github', i::text, 'acme', 'repo-' || i, 'github:id:' || i FROM generate_series(0, 49) AS i",
    )
    .execute(&pool)
    .await
    .expect("repositories");
    // A worker whose one connection decides while the table is empty: its prepared
    // statements and the PL/pgSQL functions' plans are made now, as a worker's are when it
    // starts on a young table and keeps its connections for months.
    let engine = Arc::new(Engine::new(
        env.config.rule_set().expect("rules"),
        env.config.limits,
    ));
    let mut one_connection = env.config.database.clone();
    one_connection.max_connections = 1;
    let worker_pool = store::connect(&one_connection).await.expect("pool");
    let store = Store::new(
        worker_pool.clone(),
        engine,
        StoreOptions::from_config(&env.config),
    );
    let now = Utc::now().timestamp();
    let clock = || Clock {
        event: DateTime::from_timestamp(now, 0).expect("time"),
        wall: Utc::now(),
    };
    for round in 0..10i64 {
        store
            .record(&fresh_batch(round), clock())
            .await
            .expect("record");
    }
    let warmed = std::time::Instant::now();
    grow(&pool, 1, LARGE).await;
    let mut batches = Vec::new();
    for round in 0..3i64 {
        batches.push(decision_batch(&pool, round + 100, 1_000 + round * 20_000, LARGE + 1).await);
    }
    pool.close().await;
    // A backend reports its counters at the end of a transaction at most once a second,
    // and within 10 s when it then stays idle; the worker's connection has been idle since
    // its warm-up.
    let idle = Duration::from_secs(11).saturating_sub(warmed.elapsed());
    tokio::time::sleep(idle).await;
    let before = counts(&env).await;
    for batch in &batches {
        store.record(batch, clock()).await.expect("record");
    }
    worker_pool.close().await;
    let after = seq_scans(&env).await;
    assert_no_sequential_scan(
        &before,
        &after,
        "on a connection that first decided on an empty table",
    );
    env.cleanup().await;
}

/// A group's state after five completed runs, made by the engine (as the bench's pre-fill
/// makes it), in the encoding the store writes.
fn five_run_state(env: &TestEnv) -> String {
    let engine = Engine::new(env.config.rule_set().expect("rules"), env.config.limits);
    let repo = runwatch::engine::RepoRef {
        internal_id: 1,
        stable_key: "github:id:1000".into(),
        provider: runwatch::event::Provider::Github,
        owner: "acme".into(),
        name: "repo-0".into(),
        external_id: Some("1000".into()),
    };
    let mut state = runwatch::engine::GroupState::default();
    let mut branch = None;
    let mut ledger = runwatch::engine::Ledger::default();
    for r in 0..5 {
        let line = serde_json::json!({
            "schema": "runwatch.workflow_run.v1", "event_id": format!("p{r}"), "provider": "github",
            "repository": {"owner": "acme", "name": "repo-0", "id": "1000"},
            "commit_sha": "0", "branch": "old", "pr_number": 1,
            "run": {"id": format!("old-{r}"), "attempt": 1, "workflow": format!("wf-{r}"), "status": "completed",
                    "conclusion": "success", "url": "https://ci.example/acme/runs/old",
                    "updated_at": "2026-01-01T00:00:00Z"},
        });
        let event = runwatch::event::decode(line.to_string().as_bytes(), &env.config.limits)
            .expect("event");
        let clock = Clock::event_time(event.run.updated_at);
        let mut ctx = runwatch::engine::GroupCtx {
            repo: &repo,
            pr_number: Some(1),
            commit_sha: "0",
            branch: &mut branch,
            state: &mut state,
        };
        engine
            .apply(&mut ctx, &mut ledger, &event, clock)
            .expect("apply");
    }
    assert_eq!(state.runs.len(), 5, "five runs merged");
    serde_json::to_string(&state).expect("state")
}

/// Storage per group: the `groups` table with its indexes and TOAST
/// (`pg_total_relation_size`, the bench's `bytes_per_group`) over 20,000 groups written
/// with the bench's pre-fill mix (five completed runs each, one in 100 with a settle timer,
/// one in 1,000 with a cooldown). Bytes, not times: the figure does not depend on the
/// machine. With the runs stored as objects with their field names and `fillfactor = 70`
/// it was 2,865 bytes per group (3 rows of 1,428 bytes per page); with runs stored as
/// arrays, no entry for a rule at its defaults and `fillfactor = 85`, about 1,160 (8 rows
/// of 836 bytes per page); with the state stored as `json` text instead of `jsonb`, 959
/// (10 rows of 628 bytes per page: the target is 1,000).
#[tokio::test]
async fn a_group_with_five_runs_and_its_indexes_takes_at_most_1000_bytes() {
    const GROUPS: i64 = 20_000;
    let _counting = COUNTING.lock().await;
    let (env, _pg, _dir) = own_server().await;
    let pool = store::connect(&env.config.database).await.expect("pool");
    let state = five_run_state(&env);
    sqlx::query(
        "INSERT INTO repositories (provider, external_id, owner, name, stable_key)
         SELECT 'github', (1000 + i)::text, 'acme', 'repo-' || i, 'github:id:' || (1000 + i)
         FROM generate_series(0, 49) AS i",
    )
    .execute(&pool)
    .await
    .expect("repositories");
    sqlx::query(
        "INSERT INTO groups (repository_id, pr_number, commit_sha, branch, state, due_event_at, due_wall_at,
                             created_at, updated_at)
         SELECT r.id, 1000000 + i, md5(i::text) || 'prefill', 'old', $2::json,
                CASE WHEN i % 100 = 0 THEN now() + interval '1 day' END,
                CASE WHEN i % 1000 = 0 THEN now() + interval '1 day' END,
                now() - interval '1 day', now() - interval '1 day'
         FROM generate_series(1, $1::bigint) AS i
         JOIN repositories r ON r.external_id = (1000 + i % 50)::text",
    )
    .bind(GROUPS)
    .bind(&state)
    .execute(&pool)
    .await
    .expect("groups");
    let (groups, total, heap, row, state_bytes): (i64, i64, i64, f64, f64) = sqlx::query_as(
        "SELECT count(*), pg_total_relation_size('groups'), pg_relation_size('groups'),
                avg(pg_column_size(g.*))::float8, avg(pg_column_size(g.state))::float8
         FROM groups g",
    )
    .fetch_one(&pool)
    .await
    .expect("sizes");
    assert_eq!(groups, GROUPS);
    let per_group = total as f64 / groups as f64;
    println!(
        "{groups} groups: {per_group:.0} bytes per group ({:.0} heap), rows of {row:.0} bytes, states of {state_bytes:.0}",
        heap as f64 / groups as f64
    );
    assert!(
        per_group <= 1_000.0,
        "the groups table takes {per_group:.0} bytes per group (rows of {row:.0} bytes, states of {state_bytes:.0})"
    );
    pool.close().await;
    env.cleanup().await;
}
