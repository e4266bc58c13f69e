//! Properties of the merge and the rules (DESIGN.md "Order, and what is guaranteed"):
//! any permutation and duplication of a trace yields the same merged state; duplicates never
//! change the triggers; the merge never regresses a run; for traces where every run completes
//! and nothing is re-run, exactly the groups with a pull request and a failing run fire.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use runwatch::engine::{Clock, Engine, GroupCtx, GroupState, Ledger, RepoRef, RuleSet, RunState};
use runwatch::event::{Conclusion, Event, Limits, Provider, Repository, Run, SCHEMA, Status};
use runwatch::simulate::Simulation;

const CONCLUSIONS: [Conclusion; 6] = [
    Conclusion::Success,
    Conclusion::Failure,
    Conclusion::Cancelled,
    Conclusion::TimedOut,
    Conclusion::Skipped,
    Conclusion::StartupFailure,
];

#[derive(Debug, Clone)]
struct RunSpec {
    group: usize,
    attempts: u32,
    conclusions: Vec<usize>,
}

fn group_of(g: usize) -> (String, Option<u64>, String) {
    let repo = format!("repo{}", g % 2);
    let pr = if g % 5 == 4 { None } else { Some((g / 2) as u64 + 1) };
    (repo, pr, format!("{:040x}", g))
}

/// The events of a trace: per run and attempt, queued, in_progress, completed.
fn events_of(runs: &[RunSpec]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut n = 0;
    for (i, r) in runs.iter().enumerate() {
        let (repo, pr, sha) = group_of(r.group);
        for attempt in 1..=r.attempts {
            for (phase, status) in [Status::Queued, Status::InProgress, Status::Completed]
                .into_iter()
                .enumerate()
            {
                n += 1;
                let t = 1_700_000_000 + (attempt as i64) * 1000 + (i as i64) * 10 + phase as i64;
                out.push(Event {
                    schema: SCHEMA.into(),
                    event_id: format!("ev-{n}"),
                    provider: Provider::Github,
                    repository: Repository {
                        owner: "acme".into(),
                        name: repo.clone(),
                        id: None,
                    },
                    commit_sha: sha.clone(),
                    branch: Some("feature".into()),
                    pr_number: pr,
                    run: Run {
                        id: format!("run-{i}"),
                        attempt,
                        workflow: format!("wf-{i}"),
                        status,
                        conclusion: (status == Status::Completed)
                            .then(|| CONCLUSIONS[r.conclusions[(attempt - 1) as usize] % CONCLUSIONS.len()]),
                        url: None,
                        updated_at: chrono::DateTime::from_timestamp(t, 0).unwrap(),
                    },
                    metadata: serde_json::Value::Null,
                });
            }
        }
    }
    out
}

fn run_spec(max_attempts: u32) -> impl Strategy<Value = RunSpec> {
    (0usize..6, 1..=max_attempts, prop::collection::vec(0usize..6, 3)).prop_map(
        |(group, attempts, conclusions)| RunSpec {
            group,
            attempts,
            conclusions,
        },
    )
}

/// A permutation plus duplicates of a trace.
fn shuffled_with_duplicates(
    events: Vec<Event>,
    order: Vec<usize>,
    dups: Vec<usize>,
) -> Vec<Event> {
    let mut keyed: Vec<(usize, Event)> = events.iter().cloned().enumerate().collect();
    for (k, d) in dups.iter().enumerate() {
        if !events.is_empty() {
            keyed.push((events.len() + k, events[d % events.len()].clone()));
        }
    }
    let n = keyed.len();
    let mut with_keys: Vec<(usize, usize, Event)> = keyed
        .into_iter()
        .enumerate()
        .map(|(i, (_, e))| (order.get(i).copied().unwrap_or(i) % (n * 7 + 1), i, e))
        .collect();
    with_keys.sort_by_key(|(k, i, _)| (*k, *i));
    with_keys.into_iter().map(|(_, _, e)| e).collect()
}

type Key = (String, Option<u64>, String);

/// Merged run states per group, applying with the engine directly.
fn merged(events: &[Event]) -> BTreeMap<Key, BTreeMap<String, RunState>> {
    let engine = Engine::new(RuleSet::default_rules(), Limits::default());
    let mut groups: BTreeMap<Key, (Option<String>, GroupState)> = BTreeMap::new();
    let mut ledger = Ledger::default();
    for e in events {
        let repo = RepoRef {
            internal_id: 1,
            stable_key: format!("github:name:acme/{}", e.repository.name),
            provider: Provider::Github,
            owner: "acme".into(),
            name: e.repository.name.clone(),
            external_id: None,
        };
        let key = (e.repository.name.clone(), e.pr_number, e.commit_sha.clone());
        let (branch, state) = groups.entry(key).or_default();
        let before = state.runs.get(&e.run.id).cloned();
        let mut ctx = GroupCtx {
            repo: &repo,
            pr_number: e.pr_number,
            commit_sha: &e.commit_sha,
            branch,
            state,
        };
        engine
            .apply(&mut ctx, &mut ledger, e, Clock::event_time(e.run.updated_at))
            .unwrap();
        // The merge never regresses a run.
        if let Some(before) = before {
            let after = &ctx.state.runs[&e.run.id];
            assert_ne!(after.order(&before), std::cmp::Ordering::Less);
        }
    }
    groups.into_iter().map(|(k, (_, s))| (k, s.runs)).collect()
}

fn simulate(events: &[Event], rules: RuleSet) -> Vec<runwatch::trigger::Trigger> {
    let mut sim = Simulation::new(Engine::new(rules, Limits::default()), Limits::default());
    let mut out = Vec::new();
    for e in events {
        out.extend(sim.feed_line(&serde_json::to_vec(e).unwrap()).unwrap());
    }
    out.extend(sim.fire_timers_until(None));
    out
}

fn projection(t: &[runwatch::trigger::Trigger]) -> BTreeSet<(uuid::Uuid, Option<u64>, String, Vec<String>)> {
    t.iter()
        .map(|t| (t.trigger_id, t.pr_number, t.commit_sha.clone(), t.failed_workflows.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_order_and_duplication_gives_the_same_merged_state(
        runs in prop::collection::vec(run_spec(3), 1..12),
        order in prop::collection::vec(0usize..10_000, 200),
        dups in prop::collection::vec(0usize..1000, 0..20),
    ) {
        let events = events_of(&runs);
        let reference = merged(&events);
        let shuffled = shuffled_with_duplicates(events, order, dups);
        prop_assert_eq!(merged(&shuffled), reference);
    }

    #[test]
    fn duplicates_never_change_the_triggers(
        runs in prop::collection::vec(run_spec(3), 1..12),
        order in prop::collection::vec(0usize..10_000, 200),
        dup_at in prop::collection::vec((0usize..1000, 0usize..1000), 1..20),
        refire in any::<bool>(),
    ) {
        let rules = RuleSet::from_toml(&format!(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nrefire_on_rerun = {refire}\n\n[[rules]]\nkind = \"repeated_failure\"\nthreshold = 2\n"
        )).unwrap();
        let events = shuffled_with_duplicates(events_of(&runs), order, vec![]);
        let once = simulate(&events, rules.clone());
        // Insert copies of earlier events at later positions.
        let mut dup = events.clone();
        for (src, extra) in dup_at {
            let i = src % events.len();
            let pos = (i + 1 + extra % (dup.len() - i)).min(dup.len());
            dup.insert(pos, events[i].clone());
        }
        let twice = simulate(&dup, rules);
        prop_assert_eq!(projection(&once), projection(&twice));
    }

    #[test]
    fn without_reruns_exactly_the_failing_groups_with_a_pr_fire_once(
        runs in prop::collection::vec(run_spec(1), 1..16),
        order in prop::collection::vec(0usize..10_000, 200),
        dups in prop::collection::vec(0usize..1000, 0..20),
    ) {
        let events = events_of(&runs);
        let mut expected = BTreeSet::new();
        for r in &runs {
            let (_, pr, sha) = group_of(r.group);
            let c = CONCLUSIONS[r.conclusions[0] % CONCLUSIONS.len()];
            if pr.is_some() && matches!(c, Conclusion::Failure | Conclusion::TimedOut | Conclusion::StartupFailure) {
                expected.insert(sha);
            }
        }
        let shuffled = shuffled_with_duplicates(events, order, dups);
        let triggers = simulate(&shuffled, RuleSet::default_rules());
        let fired: Vec<String> = triggers.iter().map(|t| t.commit_sha.clone()).collect();
        let fired_set: BTreeSet<String> = fired.iter().cloned().collect();
        prop_assert_eq!(fired.len(), fired_set.len(), "a group fired twice");
        prop_assert_eq!(fired_set, expected);
        // No invention: every failed workflow listed had a failure conclusion.
        for t in &triggers {
            for w in &t.failed_workflows {
                let run = t.runs.values().find(|r| &r.workflow == w).unwrap();
                prop_assert!(matches!(run.conclusion, Some(Conclusion::Failure | Conclusion::TimedOut | Conclusion::StartupFailure)));
            }
        }
    }
}
