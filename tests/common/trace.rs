//! Seeded traces for the replica and fault tests: groups of runs that all complete, no
//! re-runs, a share of groups with a failing run, duplicates and a shuffled order.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeSet;

pub struct Trace {
    /// JSON lines, in publish order.
    pub lines: Vec<String>,
    /// Commit shas of the groups (all have a pull request) that must fire.
    pub failing: BTreeSet<String>,
    pub groups: usize,
}

pub fn generate(
    seed: u64,
    groups: usize,
    runs_per_group: usize,
    fail_share: f64,
    dup_share: f64,
) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut lines = Vec::new();
    let mut failing = BTreeSet::new();
    let mut n = 0u64;
    for g in 0..groups {
        let sha = format!("{:040x}", (seed << 32) ^ g as u64);
        let repo = g % 50;
        let fails = rng.random_bool(fail_share);
        let bad_run = rng.random_range(0..runs_per_group);
        if fails {
            failing.insert(sha.clone());
        }
        for r in 0..runs_per_group {
            let conclusion = if fails && r == bad_run {
                "failure"
            } else {
                "success"
            };
            for (k, status) in ["queued", "completed"].iter().enumerate() {
                n += 1;
                let mut run = serde_json::json!({
                    "id": format!("{g}-{r}"), "attempt": 1, "workflow": format!("wf-{r}"),
                    "status": status,
                    "updated_at": format!("2026-03-01T10:{:02}:{:02}Z", (r * 2 + k) / 60, (r * 2 + k) % 60),
                });
                if *status == "completed" {
                    run["conclusion"] = serde_json::json!(conclusion);
                }
                let e = serde_json::json!({
                    "schema": "runwatch.workflow_run.v1", "event_id": format!("ev-{seed}-{n}"),
                    "provider": "github",
                    "repository": {"owner": "acme", "name": format!("repo-{repo}"), "id": format!("{}", 1000 + repo)},
                    "commit_sha": sha, "branch": "feature", "pr_number": g + 1, "run": run,
                });
                lines.push(e.to_string());
            }
        }
    }
    let dups = (lines.len() as f64 * dup_share) as usize;
    for _ in 0..dups {
        let i = rng.random_range(0..lines.len());
        lines.push(lines[i].clone());
    }
    // Fisher-Yates.
    for i in (1..lines.len()).rev() {
        let j = rng.random_range(0..=i);
        lines.swap(i, j);
    }
    Trace {
        lines,
        failing,
        groups,
    }
}
