//! The phase's database: pre-filled old groups, and EXPLAIN ANALYZE of the hot path.

use std::time::Instant;

use anyhow::Result;
use sqlx::{Connection, Row};

/// A group state with five completed runs, made by the engine itself, so the pre-filled
/// rows look like real ones.
pub fn completed_state() -> Result<String> {
    let config = runwatch::config::Config::load(None)?;
    let engine = runwatch::engine::Engine::new(config.rule_set()?, config.limits);
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
        let e = serde_json::json!({
            "schema": "runwatch.workflow_run.v1", "event_id": format!("p{r}"), "provider": "github",
            "repository": {"owner": "acme", "name": "repo-0", "id": "1000"},
            "commit_sha": "0", "branch": "old", "pr_number": 1,
            "run": {"id": format!("old-{r}"), "attempt": 1, "workflow": format!("wf-{r}"), "status": "completed",
                    "conclusion": "success", "url": "https://ci.example/acme/runs/old",
                    "updated_at": "2026-01-01T00:00:00Z"},
        });
        let event = runwatch::event::decode(e.to_string().as_bytes(), &config.limits)
            .map_err(|r| anyhow::anyhow!("prefill event: {}", r.detail))?;
        let clock = runwatch::engine::Clock::event_time(event.run.updated_at);
        let mut ctx = runwatch::engine::GroupCtx {
            repo: &repo,
            pr_number: Some(1),
            commit_sha: "0",
            branch: &mut branch,
            state: &mut state,
        };
        engine
            .apply(&mut ctx, &mut ledger, &event, clock)
            .map_err(|r| anyhow::anyhow!("prefill apply: {}", r.detail))?;
    }
    Ok(serde_json::to_string(&state)?)
}

/// What a pre-fill left: its groups and what the `groups` table takes per group.
#[derive(Debug, Clone)]
pub struct Prefilled {
    pub groups: u64,
    /// `pg_total_relation_size('groups')` (heap, TOAST and every index) per group.
    pub bytes_per_group: f64,
}

/// Rows per pre-fill statement: a statement per million groups, so the WAL of one is
/// bounded and the progress shows.
const PREFILL_CHUNK: u64 = 1_000_000;

/// Writes `n` old groups with five completed runs each, spread over the trace's 50
/// repositories (registered here as the worker would), with commits the trace never uses,
/// and the mix a live table has (set-based SQL, not through the worker): one group in 100
/// with a settle timer pending and one in 1,000 with a cooldown timer (both due in a day);
/// one in 20 with a trigger in the outbox, one in 1,000 of those unsent (claimed for a day,
/// so the relay leaves them alone during the run); one commit in four linked to its pull
/// request, with the pull request's head. Groups were last written half a day to 30.5 days
/// ago, a day's worth each (`updated_at`, `touched_on`), oldest first, so that a day's groups
/// lie together in the heap as in a table grown over a month, and `purge --older-than 30d`
/// finds one day of them. The first chunk is analyzed, the rest are not (the planner keeps
/// statistics of a table a tenth the size). The tables are then vacuumed and a checkpoint
/// written: the rows of a month-old table have long been vacuumed (hint bits and visibility
/// map set) and written out, so neither the first vacuum of ten million fresh rows nor the
/// flush of the pre-fill's dirty pages falls into the measured run. A table the worker grows
/// itself, with autovacuum and analyze as they come, is the soak's.
pub async fn prefill(url: &str, n: u64) -> Result<Prefilled> {
    let started = Instant::now();
    let state = completed_state()?;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(
        "INSERT INTO repositories (provider, external_id, owner, name, stable_key)
         SELECT 'github', (1000 + i)::text, 'acme', 'repo-' || i, 'github:id:' || (1000 + i)
         FROM generate_series(0, 49) AS i ON CONFLICT DO NOTHING",
    )
    .execute(&mut conn)
    .await?;
    let mut from = 1u64;
    while from <= n {
        let to = n.min(from.saturating_add(PREFILL_CHUNK - 1));
        sqlx::query(
            "INSERT INTO groups (repository_id, pr_number, commit_sha, branch, state, due_event_at, due_wall_at,
                                 created_at, updated_at, touched_on)
             SELECT r.id, 1000000 + i, md5(i::text) || 'prefill', 'old', $3::json,
                    CASE WHEN i % 100 = 0 THEN now() + interval '1 day' END,
                    CASE WHEN i % 1000 = 0 THEN now() + interval '1 day' END,
                    a.at, a.at, (a.at AT TIME ZONE 'UTC')::date
             FROM generate_series($1::bigint, $2::bigint) AS i
             CROSS JOIN LATERAL (SELECT now() - (30 - (i - 1) * 31 / $4::bigint) * interval '1 day'
                                            - interval '12 hours' AS at) a
             JOIN repositories r ON r.external_id = (1000 + i % 50)::text",
        )
        .bind(from as i64)
        .bind(to as i64)
        .bind(&state)
        .bind(n.max(1) as i64)
        .execute(&mut conn)
        .await?;
        for sql in [
            // Keys computed as the groups' were: every statement reads an index, none the table.
            "INSERT INTO outbox (trigger_id, group_id, subject, payload, sent_at, claimed_until)
             SELECT gen_random_uuid(), g.id, 'prefill', '\\x00'::bytea,
                    CASE WHEN i % 20000 = 0 THEN NULL ELSE now() - interval '1 day' END,
                    now() + interval '1 day'
             FROM generate_series($1::bigint, $2::bigint) AS i
             JOIN repositories r ON r.external_id = (1000 + i % 50)::text
             JOIN groups g ON g.repository_id = r.id AND COALESCE(g.pr_number, 0) = 1000000 + i
                          AND g.commit_sha = md5(i::text) || 'prefill'
             WHERE i % 20 = 0",
            "INSERT INTO commit_pulls (repository_id, commit_sha, pr_number)
             SELECT r.id, md5(i::text) || 'prefill', 1000000 + i
             FROM generate_series($1::bigint, $2::bigint) AS i
             JOIN repositories r ON r.external_id = (1000 + i % 50)::text
             WHERE i % 4 = 0",
            "INSERT INTO pull_heads (repository_id, pr_number, head_sha, head_at)
             SELECT r.id, 1000000 + i, md5(i::text) || 'prefill', now() - interval '1 day'
             FROM generate_series($1::bigint, $2::bigint) AS i
             JOIN repositories r ON r.external_id = (1000 + i % 50)::text
             WHERE i % 4 = 0",
        ] {
            sqlx::query(sql)
                .bind(from as i64)
                .bind(to as i64)
                .execute(&mut conn)
                .await?;
        }
        if from == 1 {
            sqlx::query("ANALYZE").execute(&mut conn).await?;
        }
        println!(
            "prefill: {to} of {n} groups after {:.0}s",
            started.elapsed().as_secs_f64()
        );
        from = to + 1;
    }
    let settle = Instant::now();
    for sql in [
        "VACUUM groups, outbox, commit_pulls, pull_heads",
        "CHECKPOINT",
    ] {
        sqlx::query(sql).execute(&mut conn).await?;
    }
    println!(
        "prefill: vacuumed and checkpointed in {:.0}s",
        settle.elapsed().as_secs_f64()
    );
    let (size, bytes): (String, i64) = sqlx::query_as(
        "SELECT pg_size_pretty(pg_total_relation_size('groups')), pg_total_relation_size('groups')",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    let bytes_per_group = bytes as f64 / n.max(1) as f64;
    println!(
        "prefill: {n} groups in {:.1}s (groups table with indexes: {size}, {bytes_per_group:.0} bytes per group)",
        started.elapsed().as_secs_f64()
    );
    Ok(Prefilled {
        groups: n,
        bytes_per_group,
    })
}

/// EXPLAIN ANALYZE of the decision transaction's statements for 64 existing groups (the two
/// statements of `runwatch_lock_groups` one by one: EXPLAIN does not look inside a function).
pub async fn explain(url: &str) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let keys = sqlx::query(
        "SELECT array_agg(repository_id) AS r, array_agg(COALESCE(pr_number, 0)) AS p, array_agg(commit_sha) AS s,
                array_agg(id) AS ids
         FROM (SELECT * FROM groups ORDER BY random() LIMIT 64) g",
    )
    .fetch_one(&mut conn)
    .await?;
    let r: Vec<i64> = keys.get("r");
    let p: Vec<i64> = keys.get("p");
    let s: Vec<String> = keys.get("s");
    let ids: Vec<i64> = keys.get("ids");
    let count: i64 = sqlx::query("SELECT count(*) AS n FROM groups")
        .fetch_one(&mut conn)
        .await?
        .get("n");
    println!("explain: groups table holds {count} rows; 64 random keys");
    let mut tx = conn.begin().await?;
    let statements = [
        (
            "insert absent groups",
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) INSERT INTO groups (repository_id, pr_number, commit_sha)
             SELECT u.r, NULLIF(u.p, 0), u.s FROM UNNEST($1::bigint[], $2::bigint[], $3::text[]) AS u(r, p, s)
             ON CONFLICT DO NOTHING",
        ),
        (
            "lock groups",
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT g.id, g.repository_id, g.pr_number, g.commit_sha, g.branch, g.state
             FROM groups g
             JOIN UNNEST($1::bigint[], $2::bigint[], $3::text[]) AS u(r, p, s)
               ON g.repository_id = u.r AND COALESCE(g.pr_number, 0) = u.p AND g.commit_sha = u.s
             ORDER BY g.repository_id, COALESCE(g.pr_number, 0), g.commit_sha COLLATE \"C\"
             FOR UPDATE OF g",
        ),
    ];
    for (what, sql) in statements {
        let rows = sqlx::query(sql)
            .bind(&r)
            .bind(&p)
            .bind(&s)
            .fetch_all(&mut *tx)
            .await?;
        print_plan(what, &rows);
    }
    explain_update(&mut tx, &ids).await?;
    tx.rollback().await?;
    conn.close().await?;
    Ok(())
}

/// EXPLAIN ANALYZE of the decision transaction's group update (rolled back by the caller).
async fn explain_update(tx: &mut sqlx::PgConnection, ids: &[i64]) -> Result<()> {
    let rows = sqlx::query(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) UPDATE groups SET branch = u.b, state = u.st,
                updated_at = now(), touched_on = (now() AT TIME ZONE 'UTC')::date
         FROM UNNEST($1::bigint[], $2::text[], $3::json[]) AS u(id, b, st) WHERE groups.id = u.id",
    )
    .bind(ids)
    .bind(vec!["x".to_string(); ids.len()])
    .bind(vec!["{}".to_string(); ids.len()])
    .fetch_all(&mut *tx)
    .await?;
    print_plan("update groups", &rows);
    Ok(())
}

/// The plan lines of an EXPLAIN, under a heading.
fn print_plan(what: &str, rows: &[sqlx::postgres::PgRow]) {
    println!("explain: {what}");
    for row in rows {
        let line: String = row.get(0);
        println!("  {line}");
    }
}
