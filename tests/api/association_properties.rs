//! The commit → pull request association (docs/design.md "Pull requests of a commit") keeps
//! the merge's order guarantees: whatever the order of the runs that carry a pull request,
//! the runs that do not (commit statuses, a fork's runs), and the `runwatch.pull_request.v1`
//! messages that link the commit to its pull requests, and with duplicates, each pull
//! request's group ends with the same runs — the merge of every run of the commit — and the
//! same triggers: exactly the known pull requests whose commit has a failing run fire, once
//! each (through `runwatch::simulate`, the engine the worker runs).

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use proptest::prelude::*;
use runwatch::engine::{Engine, RuleSet, RunState};
use runwatch::event::{Conclusion, Event, Limits, Provider, Repository, Run, SCHEMA, Status};
use runwatch::pull_request::{PULL_REQUEST_SCHEMA, PullRequestLink};
use runwatch::simulate::Simulation;

use crate::helpers::trace::reordered;

const SHA: &str = "cccccccccccccccccccccccccccccccccccccccc";

fn repository() -> Repository {
    Repository {
        owner: "acme".into(),
        name: "widgets".into(),
        id: Some("1".into()),
        host: None,
    }
}

/// One run: whether it carries pull request `pr` (else none), and whether it fails.
#[derive(Debug, Clone)]
struct RunSpec {
    pr: Option<u64>,
    fails: bool,
}

fn run_spec() -> impl Strategy<Value = RunSpec> {
    (prop::option::of(1u64..3), any::<bool>()).prop_map(|(pr, fails)| RunSpec { pr, fails })
}

/// The lines of a trace: per run queued, in_progress, completed; plus one pull request
/// message per pull request in `links`.
fn lines_of(runs: &[RunSpec], links: &[u64]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        for (phase, status) in [Status::Queued, Status::InProgress, Status::Completed]
            .into_iter()
            .enumerate()
        {
            let at = DateTime::from_timestamp(1_700_000_000 + (i as i64) * 10 + phase as i64, 0)
                .unwrap();
            let e = Event {
                schema: SCHEMA.into(),
                event_id: format!("run-{i}-{phase}"),
                provider: Provider::Github,
                repository: repository(),
                commit_sha: SHA.into(),
                branch: Some(
                    if r.pr.is_some() {
                        "feature"
                    } else {
                        "forker:feature"
                    }
                    .into(),
                ),
                pr_number: r.pr,
                run: Run {
                    id: format!("run-{i}"),
                    attempt: 1,
                    workflow: format!("wf-{i}"),
                    status,
                    conclusion: (status == Status::Completed).then_some(if r.fails {
                        Conclusion::Failure
                    } else {
                        Conclusion::Success
                    }),
                    url: None,
                    updated_at: at,
                },
                metadata: serde_json::Value::Null,
            };
            out.push(serde_json::to_vec(&e).unwrap());
        }
    }
    for (j, pr) in links.iter().enumerate() {
        let link = PullRequestLink {
            schema: PULL_REQUEST_SCHEMA.into(),
            event_id: format!("link-{j}"),
            provider: Provider::Github,
            repository: repository(),
            commit_sha: SHA.into(),
            pr_number: *pr,
            branch: Some("forker:feature".into()),
            updated_at: DateTime::from_timestamp(1_700_000_500, 0).unwrap(),
            state: None,
            draft: None,
            merged: None,
            state_at: None,
            title: None,
            author: None,
            base_branch: None,
            url: None,
            metadata: serde_json::Value::Null,
        };
        out.push(serde_json::to_vec(&link).unwrap());
    }
    out
}

type Groups = BTreeMap<(i64, Option<u64>, String), BTreeMap<String, RunState>>;

/// The triggers by id and pull request (which runs a trigger lists depends on the order, as
/// for any group: it fires as soon as every run it knows of has completed).
fn simulate(lines: &[Vec<u8>]) -> (Groups, BTreeSet<(uuid::Uuid, Option<u64>)>) {
    let rules = RuleSet::from_toml("[[rules]]\nkind = \"all_completed_with_failure\"\n").unwrap();
    let mut sim = Simulation::new(Engine::new(rules, Limits::default()), Limits::default());
    let mut triggers = Vec::new();
    for l in lines {
        triggers.extend(sim.feed_line(l).unwrap());
    }
    triggers.extend(sim.fire_timers_until(None));
    let projected = triggers
        .iter()
        .map(|t| (t.trigger_id, t.pr_number))
        .collect();
    (sim.group_runs(), projected)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_pull_request_group_is_the_merge_of_every_run_of_its_commit_in_every_order(
        runs in prop::collection::vec(run_spec(), 1..8),
        links in prop::collection::vec(1u64..3, 0..3),
        order in prop::collection::vec(0usize..10_000, 64),
        dups in prop::collection::vec(0usize..1000, 0..6),
    ) {
        let lines = lines_of(&runs, &links);
        // Reference: the links first, then the runs in time order.
        let mut reference_order = lines[runs.len() * 3..].to_vec();
        reference_order.extend_from_slice(&lines[..runs.len() * 3]);
        let (reference, reference_triggers) = simulate(&reference_order);
        let (got, got_triggers) = simulate(&reordered(lines, &order, &dups));

        // The pull requests the commit is known to belong to.
        let known: BTreeSet<u64> = runs.iter().filter_map(|r| r.pr).chain(links.iter().copied()).collect();
        let pr_less: BTreeMap<String, RunState> = reference
            .iter()
            .filter(|((_, pr, _), _)| pr.is_none())
            .flat_map(|(_, runs)| runs.clone())
            .collect();
        prop_assert_eq!(pr_less.len(), runs.iter().filter(|r| r.pr.is_none()).count());
        for pr in &known {
            let group = got.iter().find(|((_, p, _), _)| *p == Some(*pr)).map(|(_, r)| r.clone()).unwrap_or_default();
            // Every run without a pull request is in every known pull request's group.
            for (id, run) in &pr_less {
                prop_assert_eq!(group.get(id), Some(run), "pr {} lacks {}", pr, id);
            }
        }
        prop_assert_eq!(&got, &reference);
        prop_assert_eq!(&got_triggers, &reference_triggers);
        // Exactly the known pull requests whose commit has a failing run fire, once each.
        let fired: BTreeSet<u64> = got_triggers.iter().filter_map(|(_, pr)| *pr).collect();
        let expected: BTreeSet<u64> = known
            .iter()
            .copied()
            .filter(|pr| runs.iter().any(|r| r.fails && (r.pr.is_none() || r.pr == Some(*pr))))
            .collect();
        prop_assert_eq!(fired, expected);
        prop_assert_eq!(got_triggers.len(), got_triggers.iter().map(|(_, pr)| pr).collect::<BTreeSet<_>>().len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// `decode_input` never panics, on any bytes and on a pull request message with any one
    /// field replaced by any JSON scalar; what it accepts as a pull request message keeps
    /// the contract (pull request 1..=i64::MAX, a commit, an event id) and re-encodes to
    /// the same message.
    #[test]
    fn decode_input_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        field in 0usize..9,
        value in prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
        ],
    ) {
        let limits = Limits::default();
        let _ = runwatch::pull_request::decode_input(&bytes, &limits);
        let mut v = serde_json::to_value(PullRequestLink {
            schema: PULL_REQUEST_SCHEMA.into(),
            event_id: "e".into(),
            provider: Provider::Github,
            repository: repository(),
            commit_sha: SHA.into(),
            pr_number: 1,
            branch: None,
            updated_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            state: None,
            draft: None,
            merged: None,
            state_at: None,
            title: None,
            author: None,
            base_branch: None,
            url: None,
            metadata: serde_json::Value::Null,
        })
        .unwrap();
        let keys = ["schema", "event_id", "provider", "repository", "commit_sha", "pr_number", "branch", "updated_at", "metadata"];
        v[keys[field]] = value;
        let text = serde_json::to_vec(&v).unwrap();
        if let Ok(runwatch::pull_request::Input::PullRequest(link)) = runwatch::pull_request::decode_input(&text, &limits) {
            prop_assert!(link.pr_number >= 1 && link.pr_number <= runwatch::event::MAX_PR_NUMBER);
            prop_assert!(!link.commit_sha.trim().is_empty() && !link.event_id.trim().is_empty());
            prop_assert!(link.metadata.is_null() || link.metadata.is_object());
            let again = runwatch::pull_request::decode_input(&serde_json::to_vec(&link).unwrap(), &limits);
            prop_assert_eq!(again, Ok(runwatch::pull_request::Input::PullRequest(link)));
        }
    }
}
