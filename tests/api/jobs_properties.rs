//! Jobs in every order (docs/design.md "Jobs and steps"): with a `settle` longer than the
//! trace, so every decision is taken once everything has arrived, any permutation and
//! duplication of runs and jobs (including reports that reuse an event id for other content)
//! gives the same triggers, jobs and steps included, in `simulate` and through the store
//! (batches of a shuffled trace recorded in Postgres, then the timers swept). Without
//! `settle`, a copy of an input delivered again never changes the triggers, and the store,
//! recording the stream in batches, lists the jobs `simulate` lists for the same order (a
//! decision sees the jobs before it in its batch, not those after it).

use std::sync::Arc;

use crate::helpers::env::TestEnv;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use runwatch::engine::{Clock, Engine, RuleSet};
use runwatch::event::Limits;
use runwatch::pull_request::decode_input;
use runwatch::simulate::Simulation;
use runwatch::store::{Store, StoreOptions};
use runwatch::trigger::Trigger;
use serde_json::{Value, json};

const CONCLUSIONS: [&str; 4] = ["success", "failure", "cancelled", "timed_out"];

#[derive(Debug, Clone)]
struct RunSpec {
    group: usize,
    attempts: u32,
    /// Per attempt, the run's conclusion.
    conclusions: Vec<usize>,
    /// Per attempt, its jobs: (conclusion, failed steps).
    jobs: Vec<Vec<(usize, usize)>>,
}

fn run_spec() -> impl Strategy<Value = RunSpec> {
    (
        0usize..4,
        1u32..=2,
        prop::collection::vec(0usize..4, 2),
        prop::collection::vec(prop::collection::vec((0usize..4, 0usize..3), 0..4), 2),
    )
        .prop_map(|(group, attempts, conclusions, jobs)| RunSpec {
            group,
            attempts,
            conclusions,
            jobs,
        })
}

fn at(s: i64) -> String {
    DateTime::<Utc>::from_timestamp(1_700_000_000 + s, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The messages of a trace: per run and attempt, the run's three phases and each job's three
/// reports, plus, for some completed jobs, a report reusing the event id with other content.
fn trace(owner: &str, runs: &[RunSpec]) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let sha = format!("{:040x}", r.group);
        let pr = r.group as u64 % 3 + 1;
        for a in 1..=r.attempts {
            let base = i64::from(a) * 1000 + i as i64 * 10;
            let ai = (a - 1) as usize;
            for (p, status) in ["queued", "in_progress", "completed"].iter().enumerate() {
                let mut run = json!({"id": format!("run-{i}"), "attempt": a, "workflow": format!("wf-{i}"),
                    "status": status, "updated_at": at(base + p as i64 * 3)});
                if *status == "completed" {
                    run["conclusion"] = CONCLUSIONS[r.conclusions[ai]].into();
                }
                out.push(json!({"schema": "runwatch.workflow_run.v1",
                    "event_id": format!("{owner}-run-{i}-{a}-{p}"), "provider": "github",
                    "repository": {"owner": owner, "name": "app"}, "commit_sha": sha,
                    "pr_number": pr, "run": run}));
            }
            for (j, (c, steps)) in r.jobs[ai].iter().enumerate() {
                for (p, status) in ["queued", "in_progress", "completed"].iter().enumerate() {
                    let mut job = json!({"id": format!("job-{i}-{a}-{j}"), "name": format!("job {j}"),
                        "status": status, "updated_at": at(base + p as i64 * 3 + 1),
                        "runner_labels": ["linux"]});
                    if *status == "completed" {
                        job["conclusion"] = CONCLUSIONS[*c].into();
                        job["failed_steps"] = Value::Array(
                            (0..*steps)
                                .map(|s| json!({"number": s + 1, "name": format!("step {s}")}))
                                .collect(),
                        );
                    }
                    let msg = json!({"schema": "runwatch.workflow_job.v1",
                        "event_id": format!("{owner}-job-{i}-{a}-{j}-{p}"), "provider": "github",
                        "repository": {"owner": owner, "name": "app"}, "commit_sha": sha,
                        "run": {"id": format!("run-{i}"), "attempt": a}, "job": job});
                    if *status == "completed" && (i + j) % 3 == 0 {
                        let mut other = msg.clone();
                        other["job"]["name"] = format!("job {j} (reported again)").into();
                        out.push(other);
                    }
                    out.push(msg);
                }
            }
        }
    }
    out
}

fn shuffled(trace: &[Value], order: &[usize], dups: &[usize]) -> Vec<Value> {
    let mut all: Vec<Value> = trace.to_vec();
    for d in dups {
        all.push(trace[d % trace.len()].clone());
    }
    let n = all.len();
    let mut keyed: Vec<(usize, usize, Value)> = all
        .into_iter()
        .enumerate()
        .map(|(i, v)| (order.get(i).copied().unwrap_or(i) % (n * 7 + 1), i, v))
        .collect();
    keyed.sort_by_key(|(k, i, _)| (*k, *i));
    keyed.into_iter().map(|(_, _, v)| v).collect()
}

fn rules(settle: &str) -> RuleSet {
    RuleSet::from_toml(&format!(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nsettle = \"{settle}\"\n"
    ))
    .unwrap()
}

fn simulate(lines: &[Value], rules: RuleSet) -> Vec<Trigger> {
    let mut sim = Simulation::new(Engine::new(rules, Limits::default()), Limits::default());
    let mut out = Vec::new();
    for l in lines {
        out.extend(sim.feed_line(l.to_string().as_bytes()).unwrap());
    }
    out.extend(sim.fire_timers_until(None));
    out
}

/// Triggers as compared: sorted, without what depends on when and where they fired
/// (`fired_at`, the repository's internal id).
fn comparable(triggers: &[Trigger]) -> Vec<String> {
    let mut out: Vec<String> = triggers
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.fired_at = DateTime::<Utc>::UNIX_EPOCH;
            t.repository.internal_id = 0;
            serde_json::to_string(&t).unwrap()
        })
        .collect();
    out.sort();
    out
}

fn listed_jobs(triggers: &[Trigger]) -> usize {
    triggers
        .iter()
        .flat_map(|t| t.runs.values())
        .map(|r| r.jobs.len())
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A job message with any one field replaced by any JSON value never makes
    /// `decode_input` panic; what it accepts keeps the bounds and re-encodes to the same
    /// message.
    #[test]
    fn a_job_message_with_any_field_replaced_never_panics(
        field in 0usize..24,
        value in prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
            prop::collection::vec(".{0,8}", 0..60).prop_map(|v| json!(v)),
            prop::collection::vec(".{0,8}", 0..60)
                .prop_map(|v| Value::Array(v.into_iter().map(|n| json!({"name": n})).collect())),
        ],
    ) {
        let limits = Limits::default();
        let mut v = json!({
            "schema": "runwatch.workflow_job.v1", "event_id": "e", "provider": "github",
            "repository": {"owner": "o", "name": "r"}, "commit_sha": "abc",
            "run": {"id": "1", "attempt": 1, "workflow": "ci"},
            "job": {"id": "2", "name": "test", "status": "completed", "conclusion": "failure",
                "url": "u", "stage": "s", "failure_reason": "r", "title": "t", "summary": "m",
                "failed_steps": [{"number": 1, "name": "x"}], "failed_steps_omitted": 0,
                "runner_labels": ["l"], "started_at": "2026-01-01T00:00:00Z",
                "completed_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
        });
        let top = ["schema", "event_id", "provider", "repository", "commit_sha", "run", "metadata"];
        let job = ["id", "name", "status", "conclusion", "url", "stage", "failure_reason", "title",
            "summary", "failed_steps", "failed_steps_omitted", "runner_labels", "started_at",
            "completed_at", "updated_at"];
        if field < top.len() {
            v[top[field]] = value;
        } else if field - top.len() < job.len() {
            v["job"][job[field - top.len()]] = value;
        } else {
            v["run"]["attempt"] = value;
        }
        let text = serde_json::to_vec(&v).unwrap();
        if let Ok(runwatch::pull_request::Input::Job(j)) = decode_input(&text, &limits) {
            prop_assert!(j.job.failed_steps.len() <= runwatch::job::MAX_FAILED_STEPS);
            prop_assert!(j.job.runner_labels.len() <= runwatch::job::MAX_RUNNER_LABELS);
            prop_assert!(j.run.attempt >= 1);
            let again = decode_input(&serde_json::to_vec(&j).unwrap(), &limits);
            prop_assert_eq!(again, Ok(runwatch::pull_request::Input::Job(j)));
        }
    }

    #[test]
    fn with_settle_any_order_and_duplication_gives_the_same_triggers_and_jobs(
        runs in prop::collection::vec(run_spec(), 1..6),
        order in prop::collection::vec(0usize..10_000, 400),
        dups in prop::collection::vec(0usize..1000, 0..30),
    ) {
        let t = trace("acme", &runs);
        let reference = simulate(&t, rules("300d"));
        let other = simulate(&shuffled(&t, &order, &dups), rules("300d"));
        prop_assert_eq!(comparable(&other), comparable(&reference));
        // Only failed jobs of failed runs, of the run's attempt.
        for tr in &reference {
            for r in tr.runs.values() {
                for j in &r.jobs {
                    prop_assert!(matches!(j.conclusion.map(|c| c.as_str()), Some("failure" | "timed_out")));
                    prop_assert!(matches!(r.conclusion.map(|c| c.as_str()), Some("failure" | "timed_out")));
                }
            }
        }
    }

    #[test]
    fn a_copy_delivered_again_never_changes_the_triggers(
        runs in prop::collection::vec(run_spec(), 1..6),
        order in prop::collection::vec(0usize..10_000, 400),
        dup_at in prop::collection::vec((0usize..1000, 0usize..1000), 1..20),
    ) {
        let lines = shuffled(&trace("acme", &runs), &order, &[]);
        let once = simulate(&lines, rules("0s"));
        let mut dup = Vec::new();
        for (k, l) in lines.iter().enumerate() {
            dup.push(l.clone());
            for (src, when) in &dup_at {
                if when % lines.len() == k {
                    dup.push(lines[src % (k + 1)].clone());
                }
            }
        }
        let twice = simulate(&dup, rules("0s"));
        prop_assert_eq!(comparable(&twice), comparable(&once));
    }
}

/// The store gives the triggers `simulate` gives: shuffled traces with copies, recorded in
/// batches of a few messages (runs and jobs mixed), then the settle timers swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_lists_the_same_jobs_as_simulate_in_any_order() {
    let env = TestEnv::new().await;
    let pool = runwatch::store::connect(&env.config.database)
        .await
        .unwrap();
    let engine = Arc::new(Engine::new(rules("300d"), env.config.limits));
    let store = Store::new(pool.clone(), engine, StoreOptions::from_config(&env.config));
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let spec = (
        prop::collection::vec(run_spec(), 2..6),
        prop::collection::vec(0usize..10_000, 400),
        prop::collection::vec(0usize..1000, 0..20),
        1usize..7,
    );
    let mut listed = 0;
    for case in 0..12 {
        let (runs, order, dups, batch) = spec.new_tree(&mut runner).unwrap().current();
        let owner = format!("case{case}");
        let t = trace(&owner, &runs);
        let want = simulate(&t, rules("300d"));
        let lines = shuffled(&t, &order, &dups);
        let mut got = Vec::new();
        let mut clock = Clock {
            event: DateTime::<Utc>::UNIX_EPOCH,
            wall: Utc::now(),
        };
        for chunk in lines.chunks(batch) {
            let inputs: Vec<_> = chunk
                .iter()
                .map(|l| decode_input(l.to_string().as_bytes(), &Limits::default()).unwrap())
                .collect();
            let outcome = store.record_inputs(&inputs, clock).await.unwrap();
            clock.event = outcome.clock.event;
            got.extend(outcome.triggers);
        }
        // Every settle timer, due by an event clock past them all.
        let end = "9000-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        loop {
            let fired = store.fire_due_timers(end, 100).await.unwrap();
            if fired.is_empty() {
                break;
            }
            got.extend(fired);
        }
        assert_eq!(comparable(&got), comparable(&want), "case {case}: {runs:?}");
        listed += listed_jobs(&want);
    }
    assert!(listed > 0, "no case listed a job");
    pool.close().await;
    env.cleanup().await;
}

/// Without `settle`, decisions are taken inside batches: the store, recording one stream
/// order in batches of any size, lists what `simulate` lists for that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_lists_the_jobs_before_each_decision_as_simulate_does() {
    let env = TestEnv::new().await;
    let pool = runwatch::store::connect(&env.config.database)
        .await
        .unwrap();
    let engine = Arc::new(Engine::new(rules("0s"), env.config.limits));
    let store = Store::new(pool.clone(), engine, StoreOptions::from_config(&env.config));
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let spec = (
        prop::collection::vec(run_spec(), 2..6),
        prop::collection::vec(0usize..10_000, 400),
        4usize..24,
    );
    let (mut listed, mut differs) = (0, 0);
    for case in 0..40 {
        let (runs, order, batch) = spec.new_tree(&mut runner).unwrap().current();
        let owner = format!("order{case}");
        let lines = shuffled(&trace(&owner, &runs), &order, &[]);
        let want = simulate(&lines, rules("0s"));
        let all_known = simulate(&trace(&owner, &runs), rules("300d"));
        if comparable(&want) != comparable(&all_known) {
            differs += 1;
        }
        let mut got = Vec::new();
        let mut clock = Clock {
            event: DateTime::<Utc>::UNIX_EPOCH,
            wall: Utc::now(),
        };
        for chunk in lines.chunks(batch) {
            let inputs: Vec<_> = chunk
                .iter()
                .map(|l| decode_input(l.to_string().as_bytes(), &Limits::default()).unwrap())
                .collect();
            let outcome = store.record_inputs(&inputs, clock).await.unwrap();
            clock.event = outcome.clock.event;
            got.extend(outcome.triggers);
        }
        assert_eq!(
            comparable(&got),
            comparable(&want),
            "case {case} (batches of {batch})"
        );
        listed += listed_jobs(&want);
    }
    assert!(listed > 0, "no case listed a job");
    // Some orders decide before every job is known: the cases do test the position.
    assert!(differs > 0, "every order listed every job");
    pool.close().await;
    env.cleanup().await;
}
