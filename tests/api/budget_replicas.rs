//! Trigger budgets under three replicas (issue 20, "a budget is never exceeded under three
//! replicas"): three workers on their own connections, small batches so their record
//! transactions overlap, an agent's loop of many failing commits on one pull request, and
//! four more pull requests of another repository sharing a repository budget, all
//! published at once in a shuffled order (three rounds, three seeds). Exactly the budget is published, every other decision is recorded
//! over budget in its group and counted in `runwatch_triggers_over_budget_total`.
//!
//! The metrics recorder is global (one per process): the test runs in a process of its own
//! (`own_process!`).

use crate::helpers::own_process::own_process;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::helpers::env::TestEnv;
use crate::helpers::live::{all_triggers, publish_lines, start_worker, wait_quiet};
use sqlx::Row;

const PER_PR: u32 = 3;
const PER_REPO: u32 = 5;
/// Failing commits of the looping pull request (repository `loop`).
const LOOP_COMMITS: usize = 40;
/// Pull requests of repository `many`, and failing commits of each.
const MANY_PRS: u64 = 4;
const MANY_COMMITS: usize = 10;

fn event(id: &str, repo: &str, pr: u64, sha: &str, run: &str, completed: bool) -> String {
    let mut run_obj = serde_json::json!({
        "id": run, "attempt": 1, "workflow": "test",
        "status": if completed { "completed" } else { "queued" },
        "updated_at": if completed { "2026-12-04T10:00:09Z" } else { "2026-12-04T10:00:05Z" },
    });
    if completed {
        run_obj["conclusion"] = serde_json::json!("failure");
    }
    serde_json::json!({
        "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
        "repository": {"owner": "acme", "name": repo},
        "commit_sha": sha, "branch": "agent/fix", "pr_number": pr, "run": run_obj,
    })
    .to_string()
}

fn commits() -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    for c in 0..LOOP_COMMITS {
        out.push(("loop".to_string(), 1, format!("{:040x}", c)));
    }
    for pr in 1..=MANY_PRS {
        for c in 0..MANY_COMMITS {
            out.push((
                "many".to_string(),
                pr,
                format!("{:040x}", 1000 * pr as usize + c),
            ));
        }
    }
    out
}

/// A seeded shuffle key (splitmix64).
fn mix(seed: u64, i: usize) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(i as u64)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The sum of `runwatch_triggers_over_budget_total` over its series.
fn over_budget_counted(handle: &metrics_exporter_prometheus::PrometheusHandle) -> f64 {
    runwatch::telemetry::render(handle)
        .lines()
        .filter(|l| l.starts_with("runwatch_triggers_over_budget_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Three rounds, each with its own database, streams and publishing order (seeded shuffles,
/// completions before their `queued` included).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_never_publish_past_a_budget() {
    own_process!(three_replicas_never_publish_past_a_budget);
    let handle = runwatch::telemetry::init_metrics().expect("install the metrics recorder");
    for seed in [1, 2, 3] {
        round(seed, &handle).await;
    }
}

async fn round(seed: u64, handle: &metrics_exporter_prometheus::PrometheusHandle) {
    let counted_before = over_budget_counted(handle);
    let mut env = TestEnv::new().await;
    env.config.rules = Some(vec![
        serde_json::from_value(serde_json::json!({
            "kind": "all_completed_with_failure",
            "max_triggers_per_pull_request": PER_PR,
            "max_triggers_per_repository": PER_REPO,
        }))
        .expect("rule"),
    ]);
    // Small batches, so the three workers' transactions interleave on the budget rows.
    env.config.consumer.batch_size = 2;
    env.config.validate().expect("config");
    let bus = crate::helpers::app::bus(&env.config).await;

    let commits = commits();
    let mut lines = Vec::new();
    for (i, (repo, pr, sha)) in commits.iter().enumerate() {
        lines.push(event(
            &format!("q{i}"),
            repo,
            *pr,
            sha,
            &format!("r{i}"),
            false,
        ));
        lines.push(event(
            &format!("c{i}"),
            repo,
            *pr,
            sha,
            &format!("r{i}"),
            true,
        ));
    }
    let mut keyed: Vec<(u64, String)> = lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| (mix(seed, i), l))
        .collect();
    keyed.sort();
    let lines: Vec<String> = keyed.into_iter().map(|(_, l)| l).collect();
    let workers: Vec<_> = (0..3).map(|_| start_worker(&env.config)).collect();
    publish_lines(&bus, &lines).await;
    wait_quiet(&env.config, &bus, Duration::from_secs(300)).await;
    let triggers = all_triggers(&bus).await;

    let pool = runwatch::store::connect(&env.config.database)
        .await
        .expect("pool");
    let over: Vec<(String, i64, serde_json::Value)> = sqlx::query(
        "SELECT r.name, g.pr_number, g.state::jsonb->'rules'->'all_completed_with_failure'->'over_budget' AS o
         FROM groups g JOIN repositories r ON r.id = g.repository_id
         WHERE g.state::jsonb->'rules'->'all_completed_with_failure' ? 'over_budget'",
    )
    .fetch_all(&pool)
    .await
    .expect("over-budget groups")
    .iter()
    .map(|row| (row.get("name"), row.get("pr_number"), row.get("o")))
    .collect();
    let counted = over_budget_counted(handle) - counted_before;
    pool.close().await;
    for w in workers {
        w.shutdown().await;
    }
    env.cleanup().await;

    // Published: exactly the budgets.
    let mut per_pr: BTreeMap<(String, u64), Vec<u32>> = BTreeMap::new();
    for t in &triggers {
        let key = (
            t["repository"]["name"].as_str().unwrap().to_string(),
            t["pr_number"].as_u64().unwrap(),
        );
        per_pr
            .entry(key)
            .or_default()
            .push(t["budget"]["pull_request"]["used"].as_u64().unwrap() as u32);
        assert_eq!(t["budget"]["pull_request"]["limit"], PER_PR, "{t}");
        assert_eq!(t["budget"]["repository"]["limit"], PER_REPO, "{t}");
    }
    let loop_n = per_pr.get(&("loop".into(), 1)).map_or(0, Vec::len);
    assert_eq!(
        loop_n, PER_PR as usize,
        "the looping pull request: {per_pr:?}"
    );
    let mut used = per_pr[&("loop".to_string(), 1)].clone();
    used.sort_unstable();
    assert_eq!(
        used,
        (1..=PER_PR).collect::<Vec<_>>(),
        "trigger 1, 2, 3 of 3"
    );
    let many: usize = per_pr
        .iter()
        .filter(|((r, _), _)| r == "many")
        .map(|(_, v)| v.len())
        .sum();
    assert_eq!(many, PER_REPO as usize, "the repository budget: {per_pr:?}");
    assert!(
        per_pr.values().all(|v| v.len() <= PER_PR as usize),
        "{per_pr:?}"
    );
    let mut repo_used: Vec<u64> = triggers
        .iter()
        .filter(|t| t["repository"]["name"] == "many")
        .map(|t| t["budget"]["repository"]["used"].as_u64().unwrap())
        .collect();
    repo_used.sort_unstable();
    assert_eq!(repo_used, (1..=u64::from(PER_REPO)).collect::<Vec<_>>());

    // Every other failing commit is recorded over budget, naming the budget it hit.
    let decisions = commits.len();
    assert_eq!(over.len() + triggers.len(), decisions, "{over:?}");
    for (repo, pr, o) in &over {
        let scope = o["scope"].as_str().unwrap();
        let limit = o["limit"].as_u64().unwrap();
        match (repo.as_str(), scope) {
            ("loop", "pull_request") => assert_eq!(limit, u64::from(PER_PR)),
            ("many", "repository") => assert_eq!(limit, u64::from(PER_REPO)),
            // A pull request of `many` that got 3 of the repository's 5.
            ("many", "pull_request") => assert_eq!(limit, u64::from(PER_PR)),
            other => panic!("{other:?} over budget: pr {pr} {o}"),
        }
        assert!(o["used"].as_u64().unwrap() >= limit, "{o}");
        assert_eq!(o["window_seconds"], 86_400);
    }

    // Counted once each.
    assert_eq!(counted, over.len() as f64, "seed {seed}");
}
