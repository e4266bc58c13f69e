//! The verdicts of `runwatch explain` agree with the engine: seeded random event sequences
//! (re-runs, pending runs, push builds, filters, settle, cooldown, refire_on_rerun, streaks)
//! go through `Engine::apply` (and, for half the seeds, the due timers), then every rule's
//! verdict on every group is checked against what the engine did:
//! - `fired` exactly when the engine's state says the rule fired in the current episode, and
//!   the trigger id `explain` reconstructs is one the engine emitted;
//! - `settle_due` / `cooldown` exactly when the rule has a pending timer;
//! - `waiting` only when a run the rule considers is not completed;
//! - never `not_judged` (the engine judges every state it writes), also with pull requests
//!   closed, merged or drafts (`only_open`, `skip_draft`) as the store hands them over;
//! - a streak `explain` calls fired has a trigger id the engine emitted.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use runwatch::engine::{
    Clock, Engine, GroupCtx, GroupState, Ledger, PullState, PullStatus, RepoRef, RuleKind, RuleSet,
};
use runwatch::event::{Limits, Status, decode};
use runwatch::explain::verdict::{self, GroupView, OutboxRow, Shared, Verdict};
use runwatch::repository::{MemoryRegistry, RepoClaim};
use runwatch::trigger::Trigger;

const RULES: &str = r#"
[[rules]]
kind = "all_completed_with_failure"
name = "a"
workflows = ["build", "test"]

[[rules]]
kind = "all_completed_with_failure"
name = "s"
settle = "5m"
refire_on_rerun = true
skip_draft = true
repositories = ["acme/one"]

[[rules]]
kind = "all_completed_with_failure"
name = "c"
cooldown = "30m"
require_pr = false

[[rules]]
kind = "repeated_failure"
name = "r"
threshold = 2
branches = ["main"]
"#;

type Key = (i64, Option<u64>, String);

struct Group {
    repo: RepoRef,
    branch: Option<String>,
    state: GroupState,
    id: i64,
}

fn event(rng: &mut StdRng, n: u64, at: DateTime<Utc>) -> String {
    let repo = if rng.random_bool(0.5) { "one" } else { "two" };
    let pr = [None, Some(1u64), Some(2)][rng.random_range(0..3usize)];
    let sha = ["c1", "c2"][rng.random_range(0..2usize)];
    let branch = if sha == "c1" { "main" } else { "feat" };
    let run = rng.random_range(1..=3u32);
    let workflow = ["build", "test", "docs"][(run - 1) as usize];
    let attempt = rng.random_range(1..=2u32);
    let status = ["queued", "in_progress", "completed", "completed"][rng.random_range(0..4usize)];
    let mut r = serde_json::json!({"id": run.to_string(), "attempt": attempt, "workflow": workflow,
                                   "status": status, "updated_at": at.to_rfc3339()});
    if status == "completed" {
        r["conclusion"] = ["failure", "success", "cancelled"][rng.random_range(0..3usize)].into();
    }
    serde_json::json!({"schema": "runwatch.workflow_run.v1", "event_id": format!("e{n}"), "provider": "github",
        "repository": {"owner": "acme", "name": repo, "id": repo}, "commit_sha": sha, "branch": branch,
        "pr_number": pr, "run": r})
    .to_string()
}

#[test]
fn verdicts_agree_with_the_engine() {
    let rules = RuleSet::from_toml(RULES).unwrap();
    let mut seen = HashMap::<&'static str, usize>::new();
    let mut causes = std::collections::BTreeSet::<String>::new();
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let engine = Engine::new(rules.clone(), Limits::default());
        let mut registry = MemoryRegistry::default();
        let mut ledger = Ledger::default();
        let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
        // Each pull request's state as the store would hand it to the engine.
        let mut statuses: HashMap<(i64, u64), PullStatus> = HashMap::new();
        let mut emitted: Vec<(i64, Trigger)> = Vec::new();
        let start: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        let mut now = start;
        for n in 0..rng.random_range(1..30u64) {
            now += Duration::seconds(rng.random_range(0..400i64));
            let e = decode(event(&mut rng, n, now).as_bytes(), &Limits::default()).unwrap();
            let repo = registry.resolve(&RepoClaim::from_event(&e));
            let key: Key = (repo.internal_id, e.pr_number, e.commit_sha.clone());
            let next_id = i64::try_from(groups.len()).unwrap() + 1;
            let g = groups.entry(key).or_insert_with(|| Group {
                repo: repo.clone(),
                branch: None,
                state: GroupState::default(),
                id: next_id,
            });
            if let Some(pr) = e.pr_number {
                if rng.random_bool(0.2) {
                    let state = [
                        PullState::Open,
                        PullState::Open,
                        PullState::Closed,
                        PullState::Merged,
                    ][rng.random_range(0..4usize)];
                    statuses.insert(
                        (repo.internal_id, pr),
                        PullStatus {
                            state,
                            draft: rng.random_bool(0.3),
                            at: now,
                        },
                    );
                }
                g.state.pr_status = statuses.get(&(repo.internal_id, pr)).copied();
            }
            let mut ctx = GroupCtx {
                repo: &g.repo,
                pr_number: e.pr_number,
                commit_sha: &e.commit_sha,
                branch: &mut g.branch,
                state: &mut g.state,
            };
            let fired = engine
                .apply(&mut ctx, &mut ledger, &e, Clock::event_time(now))
                .unwrap();
            emitted.extend(fired.into_iter().map(|t| (g.id, t)));
        }
        if seed % 2 == 1 {
            let later = Clock::event_time(now + Duration::minutes(10));
            for ((_, pr, sha), g) in groups.iter_mut() {
                let mut ctx = GroupCtx {
                    repo: &g.repo,
                    pr_number: *pr,
                    commit_sha: sha,
                    branch: &mut g.branch,
                    state: &mut g.state,
                };
                let fired = engine.fire_due(&mut ctx, &mut ledger, later);
                emitted.extend(fired.into_iter().map(|t| (g.id, t)));
            }
        }
        let ids: HashSet<uuid::Uuid> = emitted.iter().map(|(_, t)| t.trigger_id).collect();
        let outbox: Vec<OutboxRow> = emitted
            .iter()
            .map(|(gid, t)| OutboxRow {
                trigger_id: t.trigger_id,
                group_id: Some(*gid),
                trigger: Some(t.clone()),
                created_at: t.fired_at,
                sent_at: Some(t.fired_at),
                attempts: 0,
                last_error: None,
                set_aside_at: None,
                set_aside_reason: None,
            })
            .collect();
        for ((_, pr, sha), g) in &groups {
            let view = GroupView {
                id: g.id,
                repo: g.repo.clone(),
                pr_number: *pr,
                commit_sha: sha.clone(),
                branch: g.branch.clone(),
                updated_at: now,
                state: g.state.clone(),
            };
            let shared = Shared {
                streaks: ledger
                    .streaks
                    .iter()
                    .filter(|(k, _)| k.repository_id == g.repo.internal_id)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                cooldowns: ledger
                    .cooldowns
                    .iter()
                    .filter(|(k, _)| k.repository_id == g.repo.internal_id)
                    .map(|(k, v)| (k.rule.clone(), *v))
                    .collect(),
                flips: ledger
                    .flips
                    .iter()
                    .filter(|(k, _)| k.repository_id == g.repo.internal_id)
                    .map(|(k, v)| (k.workflow.clone(), v.clone()))
                    .collect(),
            };
            let e = verdict::explain(&view, &rules, &outbox, &shared, now);
            for (rule, x) in rules.rules().iter().zip(&e.rules) {
                *seen.entry(x.verdict.name()).or_default() += 1;
                let ctx = format!(
                    "seed {seed} group {sha} pr {pr:?} repo {}: {x:?}",
                    g.repo.name
                );
                assert_ne!(x.verdict, Verdict::NotJudged, "{ctx}");
                let st = g.state.rules.get(&rule.name).cloned().unwrap_or_default();
                if rule.kind == RuleKind::AllCompletedWithFailure {
                    assert_eq!(
                        matches!(x.verdict, Verdict::Fired { .. }),
                        st.fired,
                        "{ctx}"
                    );
                    assert_eq!(
                        matches!(
                            x.verdict,
                            Verdict::SettleDue { .. } | Verdict::Cooldown { .. }
                        ),
                        !st.fired
                            && rule.matches_repository(&g.repo.owner, &g.repo.name)
                            && st.due.is_some(),
                        "{ctx}"
                    );
                }
                match &x.verdict {
                    Verdict::Fired { triggers } => {
                        for t in triggers {
                            assert!(
                                ids.contains(&t.trigger_id),
                                "{ctx}: a trigger the engine did not emit"
                            );
                        }
                    }
                    Verdict::Waiting { runs } => {
                        assert!(!runs.is_empty(), "{ctx}");
                        for r in runs {
                            assert_ne!(g.state.runs[&r.run_id].status, Status::Completed, "{ctx}");
                        }
                    }
                    Verdict::WillNotFire { streaks, cause, .. } => {
                        let name = serde_json::to_value(cause).unwrap();
                        causes.insert(name.as_str().unwrap_or("").to_string());
                        for s in streaks.iter().filter(|s| s.fired) {
                            let id = s.trigger_id.expect("a fired streak has an id");
                            assert!(ids.contains(&id), "{ctx}: streak id {id} not emitted");
                            assert_eq!(s.trigger_in_outbox, Some(true), "{ctx}");
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    // The pull request's state was a reason.
    assert!(
        causes.contains("closed") && causes.contains("merged") && causes.contains("draft"),
        "{causes:?}"
    );
    // Every verdict kind occurred (the generator reaches them all).
    for kind in [
        "fired",
        "waiting",
        "settle_due",
        "cooldown",
        "will_not_fire",
    ] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 0,
            "{kind} never occurred: {seen:?}"
        );
    }
}
