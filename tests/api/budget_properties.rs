//! Properties of trigger budgets (docs/design.md "Budgets"), on the pure engine and on
//! `simulate`: in any order and duplication of a trace, no pull request and no repository
//! gets more triggers than its budget, a budget only withholds triggers (never invents or
//! changes one), and a pull request budget alone publishes exactly the first `limit`
//! decisions; in time order, over a sliding window, a decision is withheld exactly when
//! `limit` triggers were published within the window before it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use runwatch::engine::{Clock, Engine, GroupCtx, GroupState, Ledger, RepoRef, RuleSet};
use runwatch::event::{Conclusion, Event, Limits, Provider, Repository, Run, SCHEMA, Status};
use runwatch::simulate::Simulation;
use runwatch::trigger::Trigger;

const T0: i64 = 1_700_000_000;

/// One run of a trace: its group (repository, pull request or none, commit), its attempts'
/// conclusions (failure or success), when it starts (seconds after T0).
#[derive(Debug, Clone)]
struct RunSpec {
    repo: usize,
    pr: Option<u64>,
    commit: usize,
    failed: Vec<bool>,
    start: i64,
}

fn run_spec() -> impl Strategy<Value = RunSpec> {
    (
        0usize..2,
        prop::option::weighted(0.85, 1u64..4),
        0usize..6,
        prop::collection::vec(any::<bool>(), 1..3),
        0i64..3600,
    )
        .prop_map(|(repo, pr, commit, failed, start)| RunSpec {
            repo,
            pr,
            commit,
            failed,
            start,
        })
}

fn events_of(runs: &[RunSpec]) -> Vec<Event> {
    let mut out = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        for (a, failed) in r.failed.iter().enumerate() {
            let attempt = a as u32 + 1;
            for (phase, status) in [Status::Queued, Status::Completed].into_iter().enumerate() {
                let t = T0 + r.start + (a as i64) * 600 + phase as i64 * 60;
                out.push(Event {
                    schema: SCHEMA.into(),
                    event_id: format!("ev-{i}-{attempt}-{phase}"),
                    provider: Provider::Github,
                    repository: Repository {
                        owner: "acme".into(),
                        name: format!("repo{}", r.repo),
                        id: None,
                        host: None,
                    },
                    commit_sha: format!("{:040x}", r.commit * 10 + r.pr.unwrap_or(0) as usize),
                    branch: Some("agent/fix".into()),
                    pr_number: r.pr,
                    run: Run {
                        id: format!("run-{i}"),
                        attempt,
                        workflow: format!("wf-{}", i % 3),
                        status,
                        conclusion: (status == Status::Completed).then_some(if *failed {
                            Conclusion::Failure
                        } else {
                            Conclusion::Success
                        }),
                        url: None,
                        updated_at: DateTime::from_timestamp(t, 0).unwrap(),
                    },
                    metadata: serde_json::Value::Null,
                });
            }
        }
    }
    out
}

/// A permutation of `events` with copies of some of them.
fn shuffled(events: Vec<Event>, keys: &[usize], dups: &[usize]) -> Vec<Event> {
    let mut all = events.clone();
    for d in dups {
        if !events.is_empty() {
            all.push(events[d % events.len()].clone());
        }
    }
    let mut keyed: Vec<(usize, usize, Event)> = all
        .into_iter()
        .enumerate()
        .map(|(i, e)| (keys.get(i).copied().unwrap_or(i), i, e))
        .collect();
    keyed.sort_by_key(|(k, i, _)| (*k, *i));
    keyed.into_iter().map(|(_, _, e)| e).collect()
}

fn rules(extra: &str, refire: bool) -> RuleSet {
    RuleSet::from_toml(&format!(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nrequire_pr = false\nrefire_on_rerun = {refire}\n{extra}"
    ))
    .unwrap()
}

fn simulate(events: &[Event], rules: RuleSet) -> Vec<Trigger> {
    let mut sim = Simulation::new(Engine::new(rules, Limits::default()), Limits::default());
    let mut out = Vec::new();
    for e in events {
        out.extend(sim.feed_line(&serde_json::to_vec(e).unwrap()).unwrap());
    }
    out.extend(sim.fire_timers_until(None));
    out
}

fn per<K: Ord>(triggers: &[Trigger], key: impl Fn(&Trigger) -> Option<K>) -> BTreeMap<K, usize> {
    let mut m = BTreeMap::new();
    for t in triggers {
        if let Some(k) = key(t) {
            *m.entry(k).or_insert(0) += 1;
        }
    }
    m
}

/// One decision of a rule with a budget: published (a trigger) or withheld (over budget),
/// at its wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Published(DateTime<Utc>, u32),
    Withheld(DateTime<Utc>, u32, u32),
}

/// Applies `events` in order with the engine directly (one pull request, so the groups'
/// decisions are all against one budget); the clock moves with the events.
fn decisions(engine: &Engine, events: &[Event]) -> Vec<Decision> {
    let repo = RepoRef {
        internal_id: 1,
        stable_key: "github:name:acme/repo0".into(),
        provider: Provider::Github,
        owner: "acme".into(),
        name: "repo0".into(),
        external_id: None,
    };
    let mut groups: BTreeMap<String, (Option<String>, GroupState)> = BTreeMap::new();
    let mut ledger = Ledger::default();
    let mut out = Vec::new();
    let mut clock: Option<DateTime<Utc>> = None;
    for e in events {
        let now = clock.map_or(e.run.updated_at, |c| c.max(e.run.updated_at));
        clock = Some(now);
        let (branch, state) = groups.entry(e.commit_sha.clone()).or_default();
        let before = state.clone();
        let mut ctx = GroupCtx {
            repo: &repo,
            pr_number: e.pr_number,
            commit_sha: &e.commit_sha,
            branch,
            state,
        };
        let fired = engine
            .apply(&mut ctx, &mut ledger, e, Clock::event_time(now))
            .unwrap();
        for t in fired {
            let b = t.budget.and_then(|b| b.pull_request).unwrap();
            out.push(Decision::Published(t.fired_at, b.used));
        }
        for (rule, st) in &ctx.state.rules {
            if let Some(o) = &st.over_budget
                && before.rules.get(rule).and_then(|b| b.over_budget.as_ref()) != Some(o)
            {
                out.push(Decision::Withheld(o.at, o.used, o.limit));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_budget_is_exceeded_in_any_order(
        runs in prop::collection::vec(run_spec(), 1..24),
        keys in prop::collection::vec(0usize..10_000, 200),
        dups in prop::collection::vec(0usize..1000, 0..12),
        per_pr in 1u32..4,
        per_repo in 1u32..6,
        refire in any::<bool>(),
    ) {
        let events = shuffled(events_of(&runs), &keys, &dups);
        let free = simulate(&events, rules("", refire));
        let capped = simulate(&events, rules(&format!(
            "max_triggers_per_pull_request = {per_pr}\nmax_triggers_per_repository = {per_repo}\n"
        ), refire));
        for (k, n) in per(&capped, |t| t.pr_number.map(|p| (t.repository.name.clone(), p))) {
            prop_assert!(n <= per_pr as usize, "{k:?}: {n} triggers, budget {per_pr}");
        }
        for (k, n) in per(&capped, |t| Some(t.repository.name.clone())) {
            prop_assert!(n <= per_repo as usize, "{k}: {n} triggers, budget {per_repo}");
        }
        // A budget withholds triggers; it never invents or changes one.
        let free_ids: BTreeSet<_> = free.iter().map(|t| t.trigger_id).collect();
        for t in &capped {
            prop_assert!(free_ids.contains(&t.trigger_id), "{t:?}");
            let b = t.budget.clone().unwrap();
            let r = b.repository.unwrap();
            prop_assert!(r.used >= 1 && r.used <= per_repo && r.limit == per_repo);
            prop_assert_eq!(b.pull_request.is_some(), t.pr_number.is_some());
        }
        // Each trigger is the next in its repository's budget: 1, 2, … in publishing order.
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for t in &capped {
            let n = seen.entry(t.repository.name.clone()).or_insert(0);
            *n += 1;
            prop_assert_eq!(t.budget.as_ref().unwrap().repository.unwrap().used, *n);
        }
    }

    #[test]
    fn a_pull_request_budget_publishes_exactly_the_first_decisions(
        runs in prop::collection::vec(run_spec(), 1..24),
        keys in prop::collection::vec(0usize..10_000, 200),
        dups in prop::collection::vec(0usize..1000, 0..12),
        per_pr in 1u32..4,
        refire in any::<bool>(),
    ) {
        let events = shuffled(events_of(&runs), &keys, &dups);
        let free = simulate(&events, rules("", refire));
        let capped = simulate(&events, rules(&format!("max_triggers_per_pull_request = {per_pr}\n"), refire));
        let key = |t: &Trigger| Some((t.repository.name.clone(), t.pr_number));
        let free_n = per(&free, key);
        let capped_n = per(&capped, key);
        for (k, n) in &free_n {
            let want = match k.1 {
                Some(_) => (*n).min(per_pr as usize),
                None => *n,
            };
            prop_assert_eq!(capped_n.get(k).copied().unwrap_or(0), want, "{:?}", k);
        }
        // And they are the first ones, in the same order.
        let mut firsts: BTreeMap<(String, Option<u64>), Vec<uuid::Uuid>> = BTreeMap::new();
        for t in &free {
            let v = firsts.entry((t.repository.name.clone(), t.pr_number)).or_default();
            if t.pr_number.is_none() || v.len() < per_pr as usize {
                v.push(t.trigger_id);
            }
        }
        let mut got: BTreeMap<(String, Option<u64>), Vec<uuid::Uuid>> = BTreeMap::new();
        for t in &capped {
            got.entry((t.repository.name.clone(), t.pr_number)).or_default().push(t.trigger_id);
        }
        prop_assert_eq!(got, firsts);
    }

    #[test]
    fn the_window_slides(
        gaps in prop::collection::vec(0i64..1800, 1..30),
        limit in 1u32..4,
        window_minutes in 10i64..120,
    ) {
        // One pull request, one failing commit after another (an agent's loop), each
        // `gap` seconds after the previous one.
        let engine = Engine::new(
            rules(&format!(
                "max_triggers_per_pull_request = {limit}\nbudget_window = \"{window_minutes}m\"\n"
            ), false),
            Limits::default(),
        );
        let mut at = T0;
        let mut events = Vec::new();
        for (i, gap) in gaps.iter().enumerate() {
            at += gap;
            for status in [Status::Queued, Status::Completed] {
                events.push(Event {
                    schema: SCHEMA.into(),
                    event_id: format!("e{i}-{status:?}"),
                    provider: Provider::Github,
                    repository: Repository { owner: "acme".into(), name: "repo0".into(), id: None, host: None },
                    commit_sha: format!("{i:040x}"),
                    branch: Some("agent/fix".into()),
                    pr_number: Some(7),
                    run: Run {
                        id: format!("run-{i}"),
                        attempt: 1,
                        workflow: "test".into(),
                        status,
                        conclusion: (status == Status::Completed).then_some(Conclusion::Failure),
                        url: None,
                        updated_at: DateTime::from_timestamp(at, 0).unwrap(),
                    },
                    metadata: serde_json::Value::Null,
                });
            }
        }
        let window = Duration::minutes(window_minutes);
        let mut published: Vec<DateTime<Utc>> = Vec::new();
        let ds = decisions(&engine, &events);
        prop_assert_eq!(ds.len(), gaps.len(), "one decision per failing commit");
        for d in ds {
            match d {
                Decision::Published(t, used) => {
                    let before = published.iter().filter(|p| **p > t - window).count();
                    prop_assert!(before < limit as usize, "published at {t} with {before} in the window");
                    prop_assert_eq!(used as usize, before + 1);
                    published.push(t);
                }
                Decision::Withheld(t, used, l) => {
                    let before = published.iter().filter(|p| **p > t - window).count();
                    prop_assert_eq!(before, limit as usize, "withheld at {} with room", t);
                    prop_assert_eq!((used, l), (limit, limit));
                }
            }
        }
    }
}

/// The worked example of docs/design.md: 3 per pull request per hour; failing commits at 0,
/// 10, 20, 30 and 60 minutes: the third is trigger 3 of 3, the fourth is withheld, the fifth
/// fires again (the window is the hour up to now, its start excluded: the first trigger
/// left it exactly at 60 minutes).
#[test]
fn a_window_frees_room_as_it_slides() {
    let engine = Engine::new(
        rules(
            "max_triggers_per_pull_request = 3\nbudget_window = \"1h\"\n",
            false,
        ),
        Limits::default(),
    );
    let mut events = Vec::new();
    for (i, minute) in [0i64, 10, 20, 30, 60].iter().enumerate() {
        let at = DateTime::from_timestamp(T0 + minute * 60, 0).unwrap();
        events.push(Event {
            schema: SCHEMA.into(),
            event_id: format!("e{i}"),
            provider: Provider::Github,
            repository: Repository {
                owner: "acme".into(),
                name: "repo0".into(),
                id: None,
                host: None,
            },
            commit_sha: format!("{i:040x}"),
            branch: None,
            pr_number: Some(7),
            run: Run {
                id: format!("run-{i}"),
                attempt: 1,
                workflow: "test".into(),
                status: Status::Completed,
                conclusion: Some(Conclusion::Failure),
                url: None,
                updated_at: at,
            },
            metadata: serde_json::Value::Null,
        });
    }
    let at = |m: i64| DateTime::from_timestamp(T0 + m * 60, 0).unwrap();
    assert_eq!(
        decisions(&engine, &events),
        vec![
            Decision::Published(at(0), 1),
            Decision::Published(at(10), 2),
            Decision::Published(at(20), 3),
            Decision::Withheld(at(30), 3, 3),
            Decision::Published(at(60), 3),
        ]
    );
}

fn failing(id: &str, sha: &str, run: &str, attempt: u32, minute: i64) -> Event {
    Event {
        schema: SCHEMA.into(),
        event_id: id.into(),
        provider: Provider::Github,
        repository: Repository {
            owner: "acme".into(),
            name: "repo0".into(),
            id: None,
            host: None,
        },
        commit_sha: sha.into(),
        branch: None,
        pr_number: Some(7),
        run: Run {
            id: run.into(),
            attempt,
            workflow: "test".into(),
            status: Status::Completed,
            conclusion: Some(Conclusion::Failure),
            url: None,
            updated_at: DateTime::from_timestamp(T0 + minute * 60, 0).unwrap(),
        },
        metadata: serde_json::Value::Null,
    }
}

/// An episode decided over budget is final without `refire_on_rerun`; with it, a re-run
/// opens the next episode, judged again by the normal rules (budget included).
#[test]
fn a_rerun_after_an_over_budget_decision_is_judged_again_with_refire_on_rerun() {
    let at = |m: i64| DateTime::from_timestamp(T0 + m * 60, 0).unwrap();
    let (a, b) = ("a".repeat(40), "b".repeat(40));
    let trace = [
        failing("1", &a, "ra", 1, 0),
        failing("2", &b, "rb", 1, 10),
        // Commit b's run re-run at minute 30 (budget still full) and at minute 70 (room).
        failing("3", &b, "rb", 2, 30),
        failing("4", &b, "rb", 3, 70),
    ];
    let budget = "max_triggers_per_pull_request = 1\nbudget_window = \"1h\"\n";
    let engine = Engine::new(rules(budget, true), Limits::default());
    assert_eq!(
        decisions(&engine, &trace),
        vec![
            Decision::Published(at(0), 1),
            Decision::Withheld(at(10), 1, 1),
            Decision::Withheld(at(30), 1, 1),
            Decision::Published(at(70), 1),
        ]
    );
    let engine = Engine::new(rules(budget, false), Limits::default());
    assert_eq!(
        decisions(&engine, &trace),
        vec![
            Decision::Published(at(0), 1),
            Decision::Withheld(at(10), 1, 1)
        ]
    );
    // The re-run's trigger is episode 2 of commit b.
    let out = simulate(&trace, rules(budget, true));
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[1].commit_sha.as_str(), out[1].episode),
        (b.as_str(), 2)
    );
}

/// A cooldown defers before a budget is judged: the deferred group is judged again when
/// the cooldown ends, against the budget as it is then, and an over-budget decision does
/// not start a cooldown.
#[test]
fn a_cooldown_defers_before_the_budget_is_judged() {
    let (a, b, c) = ("a".repeat(40), "b".repeat(40), "c".repeat(40));
    let rules = rules(
        "cooldown = \"20m\"\nmax_triggers_per_pull_request = 1\nbudget_window = \"30m\"\n",
        false,
    );
    // a fires at 0; b at 10 is in the cooldown (until 20) and over budget (until 30): it
    // waits for the cooldown, then is over budget at 20. c at 31: the budget has room and
    // no cooldown runs (b's over-budget decision did not start one): it fires at once.
    let trace = [
        failing("1", &a, "ra", 1, 0),
        failing("2", &b, "rb", 1, 10),
        failing("3", &c, "rc", 1, 31),
    ];
    let out = simulate(&trace, rules);
    let fired: Vec<(&str, DateTime<Utc>)> = out
        .iter()
        .map(|t| (t.commit_sha.as_str(), t.fired_at))
        .collect();
    assert_eq!(
        fired,
        vec![
            (a.as_str(), DateTime::from_timestamp(T0, 0).unwrap()),
            (
                c.as_str(),
                DateTime::from_timestamp(T0 + 31 * 60, 0).unwrap()
            ),
        ]
    );
}
