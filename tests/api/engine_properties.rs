//! Properties of the merge and the rules (docs/design.md "What holds in every order"):
//! any permutation and duplication of a trace, including events that reuse an id for other
//! content, yields the same merged state; duplicates never change the triggers; the merge
//! never regresses a run; for traces where every run completes and nothing is re-run,
//! exactly the groups with a pull request and a failing run fire. With `refire_on_rerun`, in
//! every order: a group whose final state fails has fired, its last trigger shows every run
//! at its final attempt, and a group fires at most once per re-run. For `repeated_failure`,
//! in every order: a key whose newest `threshold` completed runs (each by its latest
//! completed attempt) all failed has fired, and every streak trigger lists `threshold` failed
//! runs; in time order without re-runs it fires exactly once per streak. Flips (a failed
//! attempt followed by a passing attempt of the same run) are the same in every order, and
//! with `skip_flaky` and a settle that outlasts the trace so are the triggers and what they
//! mark as known flaky.

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
    /// The run's workflow among a few shared names (streaks), or its own (`None`).
    workflow: Option<usize>,
}

impl RunSpec {
    fn conclusion(&self, attempt: u32) -> Conclusion {
        CONCLUSIONS[self.conclusions[(attempt - 1) as usize] % CONCLUSIONS.len()]
    }

    fn final_conclusion(&self) -> Conclusion {
        self.conclusion(self.attempts)
    }
}

fn is_failure(c: Conclusion) -> bool {
    matches!(
        c,
        Conclusion::Failure | Conclusion::TimedOut | Conclusion::StartupFailure
    )
}

/// When run `i`'s `attempt` reaches `phase` (0 queued, 1 in progress, 2 completed): later
/// attempts are later, as on a real CI.
fn time_of(i: usize, attempt: u32, phase: usize) -> i64 {
    1_700_000_000 + (attempt as i64) * 1000 + (i as i64) * 10 + phase as i64
}

fn group_of(g: usize) -> (String, Option<u64>, String) {
    let repo = format!("repo{}", g % 2);
    let pr = if g % 5 == 4 {
        None
    } else {
        Some((g / 2) as u64 + 1)
    };
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
                let t = time_of(i, attempt, phase);
                out.push(Event {
                    schema: SCHEMA.into(),
                    event_id: format!("ev-{n}"),
                    provider: Provider::Github,
                    repository: Repository {
                        owner: "acme".into(),
                        name: repo.clone(),
                        id: None,
                        host: None,
                    },
                    commit_sha: sha.clone(),
                    branch: Some("feature".into()),
                    pr_number: pr,
                    run: Run {
                        id: format!("run-{i}"),
                        attempt,
                        workflow: r
                            .workflow
                            .map_or_else(|| format!("wf-{i}"), |w| format!("shared-{w}")),
                        status,
                        conclusion: (status == Status::Completed).then(|| r.conclusion(attempt)),
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
    (
        0usize..6,
        1..=max_attempts,
        prop::collection::vec(0usize..6, 3),
    )
        .prop_map(|(group, attempts, conclusions)| RunSpec {
            group,
            attempts,
            conclusions,
            workflow: None,
        })
}

/// Runs of a few groups that share two workflow names, so they form streaks.
fn streak_spec(max_attempts: u32) -> impl Strategy<Value = RunSpec> {
    (
        0usize..6,
        1..=max_attempts,
        prop::collection::vec(0usize..6, 3),
        0usize..2,
    )
        .prop_map(|(group, attempts, conclusions, w)| RunSpec {
            group,
            attempts,
            conclusions,
            workflow: Some(w),
        })
}

/// Copies of some events that keep the event id (and attempt, phase and time) but carry
/// other content: a producer reusing ids.
fn collisions(events: &[Event], picks: &[(usize, usize)]) -> Vec<Event> {
    picks
        .iter()
        .filter(|_| !events.is_empty())
        .map(|(i, variant)| {
            let mut e = events[i % events.len()].clone();
            match variant % 3 {
                0 => e.run.url = Some(format!("https://ci.example/other/{variant}")),
                1 if e.run.status == Status::Completed => {
                    e.run.conclusion = Some(CONCLUSIONS[variant % CONCLUSIONS.len()]);
                }
                _ => e.branch = Some(format!("other-{variant}")),
            }
            e
        })
        .collect()
}

/// A permutation plus duplicates of a trace.
fn shuffled_with_duplicates(events: Vec<Event>, order: Vec<usize>, dups: Vec<usize>) -> Vec<Event> {
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

/// A completed run in a streak: ((completion time, run id), failed).
type StreakPoint = ((i64, String), bool);

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
            .apply(
                &mut ctx,
                &mut ledger,
                e,
                Clock::event_time(e.run.updated_at),
            )
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

fn projection(
    t: &[runwatch::trigger::Trigger],
) -> BTreeSet<(uuid::Uuid, Option<u64>, String, Vec<String>)> {
    t.iter()
        .map(|t| {
            (
                t.trigger_id,
                t.pr_number,
                t.commit_sha.clone(),
                t.failed_workflows.clone(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_order_and_duplication_gives_the_same_merged_state(
        runs in prop::collection::vec(run_spec(3), 1..12),
        order in prop::collection::vec(0usize..10_000, 200),
        dups in prop::collection::vec(0usize..1000, 0..20),
        reused_ids in prop::collection::vec((0usize..1000, 0usize..1000), 0..6),
    ) {
        let mut events = events_of(&runs);
        let colliding = collisions(&events, &reused_ids);
        events.extend(colliding);
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
        // Copies of events delivered again after the original: after event `k`, a copy of an
        // event at or before `k`. (Inserting at an index of the growing list could put a copy
        // before its original, which is a reordering, not a duplicate.)
        let mut dup = Vec::with_capacity(events.len() + dup_at.len());
        for (k, e) in events.iter().enumerate() {
            dup.push(e.clone());
            for (src, when) in &dup_at {
                if when % events.len() == k {
                    dup.push(events[src % (k + 1)].clone());
                }
            }
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

    #[test]
    fn with_refire_on_rerun_every_order_ends_with_a_trigger_for_the_final_attempts(
        runs in prop::collection::vec(run_spec(3), 1..12),
        order in prop::collection::vec(0usize..10_000, 200),
        dups in prop::collection::vec(0usize..1000, 0..20),
    ) {
        let rules = RuleSet::from_toml("[[rules]]\nkind = \"all_completed_with_failure\"\nrefire_on_rerun = true\n").unwrap();
        let events = events_of(&runs);
        let shuffled = shuffled_with_duplicates(events, order, dups);
        let triggers = simulate(&shuffled, rules);
        // Per group (commit): the runs' final attempts and conclusions.
        let mut finals: BTreeMap<String, (Option<u64>, BTreeMap<String, &RunSpec>)> = BTreeMap::new();
        for (i, r) in runs.iter().enumerate() {
            let (_, pr, sha) = group_of(r.group);
            finals.entry(sha).or_insert_with(|| (pr, BTreeMap::new())).1.insert(format!("run-{i}"), r);
        }
        for (sha, (pr, group_runs)) in &finals {
            let fired: Vec<_> = triggers.iter().filter(|t| &t.commit_sha == sha).collect();
            // At most one trigger per episode, and at most one per re-run.
            let episodes: BTreeSet<u32> = fired.iter().map(|t| t.episode).collect();
            prop_assert_eq!(episodes.len(), fired.len(), "two triggers in one episode of {}", sha);
            let reruns: u32 = group_runs.values().map(|r| r.attempts - 1).sum();
            prop_assert!(fired.len() as u32 <= 1 + reruns, "{} triggers for {} re-runs", fired.len(), reruns);
            // No invention.
            for t in &fired {
                for w in &t.failed_workflows {
                    prop_assert!(t.runs.values().any(|r| &r.workflow == w && r.conclusion.is_some_and(is_failure)));
                }
            }
            let holds = pr.is_some() && group_runs.values().any(|r| is_failure(r.final_conclusion()));
            if !holds {
                continue;
            }
            // No loss: the last trigger saw every run that was re-run at its final attempt.
            let last = fired.last();
            prop_assert!(last.is_some(), "group {} fails in the end but never fired", sha);
            let last = last.unwrap();
            for (id, r) in group_runs {
                match last.runs.get(id) {
                    Some(seen) => prop_assert_eq!(seen.attempt, r.attempts, "run {} of {}", id, sha),
                    None => prop_assert_eq!(r.attempts, 1, "re-run {} of {} missing from the last trigger", id, sha),
                }
            }
        }
    }

    #[test]
    fn repeated_failure_in_every_order_fires_for_a_failing_newest_streak(
        runs in prop::collection::vec(streak_spec(3), 1..14),
        order in prop::collection::vec(0usize..10_000, 200),
        dups in prop::collection::vec(0usize..1000, 0..20),
        threshold in 2usize..4,
    ) {
        let rules = RuleSet::from_toml(&format!("[[rules]]\nkind = \"repeated_failure\"\nthreshold = {threshold}\n")).unwrap();
        let events = events_of(&runs);
        let shuffled = shuffled_with_duplicates(events, order, dups);
        let triggers = simulate(&shuffled, rules);
        // Per (repository, workflow): the completed runs by their final attempt, newest last.
        let mut keys: BTreeMap<(String, String), Vec<StreakPoint>> = BTreeMap::new();
        for (i, r) in runs.iter().enumerate() {
            let (repo, _, _) = group_of(r.group);
            let wf = format!("shared-{}", r.workflow.unwrap());
            let pos = (time_of(i, r.attempts, 2), format!("run-{i}"));
            keys.entry((repo, wf)).or_default().push((pos, is_failure(r.final_conclusion())));
        }
        for ((repo, wf), mut completed) in keys {
            completed.sort();
            let fired = triggers.iter().filter(|t| t.repository.name == repo && t.workflow.as_deref() == Some(wf.as_str())).count();
            let newest = &completed[completed.len().saturating_sub(threshold)..];
            if newest.len() == threshold && newest.iter().all(|(_, failed)| *failed) {
                prop_assert!(fired >= 1, "{}/{}: the newest {} runs failed, nothing fired", repo, wf, threshold);
            }
        }
        for t in &triggers {
            // No invention: `threshold` runs, each failed at the attempt listed.
            prop_assert_eq!(t.runs.len(), threshold);
            for (id, seen) in &t.runs {
                let i: usize = id.trim_start_matches("run-").parse().unwrap();
                prop_assert!(seen.attempt <= runs[i].attempts);
                prop_assert_eq!(seen.conclusion, Some(runs[i].conclusion(seen.attempt)));
                prop_assert!(seen.conclusion.is_some_and(is_failure));
            }
        }
    }

    #[test]
    fn repeated_failure_in_time_order_fires_once_per_streak(
        runs in prop::collection::vec(streak_spec(1), 1..16),
        dup_at in prop::collection::vec((0usize..1000, 0usize..1000), 0..20),
        threshold in 2usize..4,
    ) {
        let rules = RuleSet::from_toml(&format!("[[rules]]\nkind = \"repeated_failure\"\nthreshold = {threshold}\n")).unwrap();
        let mut events = events_of(&runs);
        events.sort_by_key(|e| e.run.updated_at);
        // Redeliveries: after event `k`, copies of events up to `k`.
        let mut with_dups = Vec::new();
        for (k, e) in events.iter().enumerate() {
            with_dups.push(e.clone());
            for (src, when) in &dup_at {
                if when % events.len() == k {
                    with_dups.push(events[src % (k + 1)].clone());
                }
            }
        }
        let triggers = simulate(&with_dups, rules);
        let mut keys: BTreeMap<(String, String), Vec<(i64, bool)>> = BTreeMap::new();
        for (i, r) in runs.iter().enumerate() {
            let (repo, _, _) = group_of(r.group);
            let wf = format!("shared-{}", r.workflow.unwrap());
            keys.entry((repo, wf)).or_default().push((time_of(i, 1, 2), is_failure(r.final_conclusion())));
        }
        for ((repo, wf), mut completed) in keys {
            completed.sort();
            let mut streaks = 0;
            let mut len = 0;
            for (_, failed) in completed {
                len = if failed { len + 1 } else { 0 };
                if len == threshold {
                    streaks += 1;
                }
            }
            let fired = triggers.iter().filter(|t| t.repository.name == repo && t.workflow.as_deref() == Some(wf.as_str())).count();
            prop_assert_eq!(fired, streaks, "{}/{}", repo, wf);
        }
    }
}

/// What a trace's flips are, from its specification: per (repository, workflow), the runs
/// whose lowest failed attempt is below their highest passing one, with that attempt.
fn expected_flips(runs: &[RunSpec]) -> BTreeMap<(String, String), BTreeMap<String, u32>> {
    let mut out: BTreeMap<(String, String), BTreeMap<String, u32>> = BTreeMap::new();
    for (i, r) in runs.iter().enumerate() {
        let failed = (1..=r.attempts).find(|a| is_failure(r.conclusion(*a)));
        let passed = (1..=r.attempts).rev().find(|a| {
            matches!(
                r.conclusion(*a),
                Conclusion::Success | Conclusion::Skipped | Conclusion::Neutral
            )
        });
        if let (Some(f), Some(p)) = (failed, passed)
            && f < p
        {
            let (repo, _, _) = group_of(r.group);
            let wf = format!("shared-{}", r.workflow.unwrap());
            out.entry((repo, wf))
                .or_default()
                .insert(format!("run-{i}"), p);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn flips_and_flaky_skips_are_the_same_in_every_order(
        runs in prop::collection::vec(streak_spec(3), 1..14),
        order in prop::collection::vec(0usize..10_000, 200),
        dups in prop::collection::vec(0usize..1000, 0..20),
    ) {
        // The settle timers outlast the trace: every decision is taken at the end, on every
        // flip of the trace (which only grows), so the triggers cannot depend on the order.
        let rules = RuleSet::from_toml(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nsettle = \"1d\"\nskip_flaky = true\nflaky_threshold = 1\n",
        )
        .unwrap();
        let events = shuffled_with_duplicates(events_of(&runs), order, dups);
        let mut sim = Simulation::new(Engine::new(rules, Limits::default()), Limits::default());
        let mut triggers = Vec::new();
        for e in &events {
            triggers.extend(sim.feed_line(&serde_json::to_vec(e).unwrap()).unwrap());
        }
        triggers.extend(sim.fire_timers_until(None));
        // The flips, by (repository name, workflow): simulate numbers repositories itself.
        let want = expected_flips(&runs);
        let mut got: BTreeMap<(String, String), BTreeMap<String, u32>> = BTreeMap::new();
        let names: BTreeMap<i64, String> = triggers
            .iter()
            .map(|t| (t.repository.internal_id, t.repository.name.clone()))
            .collect();
        for (k, flips) in sim.flips() {
            for (run, f) in flips {
                let i: usize = run.trim_start_matches("run-").parse().unwrap();
                let (repo, _, _) = group_of(runs[i].group);
                if let Some(name) = names.get(&k.repository_id) {
                    prop_assert_eq!(name, &repo);
                }
                got.entry((repo, k.workflow.clone())).or_default().insert(run.clone(), f.attempt);
            }
        }
        prop_assert_eq!(&got, &want);
        // Per group: it fires once iff its final state fails with a pull request and some
        // failed workflow has no flip; the trigger marks the others with their counts.
        let mut groups: BTreeMap<String, (String, Option<u64>, Vec<&RunSpec>)> = BTreeMap::new();
        for r in &runs {
            let (repo, pr, sha) = group_of(r.group);
            groups.entry(sha).or_insert_with(|| (repo, pr, Vec::new())).2.push(r);
        }
        for (sha, (repo, pr, group_runs)) in &groups {
            let mut failed: Vec<String> = group_runs
                .iter()
                .filter(|r| is_failure(r.final_conclusion()))
                .map(|r| format!("shared-{}", r.workflow.unwrap()))
                .collect();
            failed.sort();
            failed.dedup();
            let count = |w: &String| want.get(&(repo.clone(), w.clone())).map_or(0, |f| f.len() as u32);
            let flaky: Vec<(String, u32)> = failed
                .iter()
                .filter(|w| count(w) > 0)
                .map(|w| (w.clone(), count(w)))
                .collect();
            let fires = pr.is_some() && !failed.is_empty() && flaky.len() < failed.len();
            let fired: Vec<_> = triggers.iter().filter(|t| &t.commit_sha == sha).collect();
            prop_assert_eq!(fired.len(), usize::from(fires), "group {}", sha);
            if let Some(t) = fired.first() {
                prop_assert_eq!(&t.failed_workflows, &failed);
                let marked: Vec<(String, u32)> =
                    t.known_flaky.iter().map(|k| (k.workflow.clone(), k.flips)).collect();
                prop_assert_eq!(marked, flaky);
            }
        }
    }
}
