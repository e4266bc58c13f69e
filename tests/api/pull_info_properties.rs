//! Runs and `runwatch.pull_request.v1` reports that say what the pull request is (title,
//! author, branches), in any order and with duplicates, through `runwatch::simulate` (the
//! engine the worker runs):
//! - every pull request ends with the same info (the newest report, ties ordered);
//! - a rule with `authors` fires the same triggers in every order (it waits for the
//!   author), and each of them names the author;
//! - a rule with `exclude_authors` / `skip_bots` never fires for an excluded author or a
//!   bot whose report came before the run completed: in any order it fires at least the
//!   triggers it fires when every report comes first (an unknown author is not blocked).

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use proptest::prelude::*;
use runwatch::engine::{Engine, PullInfo, RuleSet};
use runwatch::event::{Conclusion, Event, Limits, Provider, Repository, Run, SCHEMA, Status};
use runwatch::pull_request::{LinkAuthor, PULL_REQUEST_SCHEMA, PullRequestLink};
use runwatch::simulate::Simulation;

use crate::helpers::trace::reordered;

fn repository() -> Repository {
    Repository {
        owner: "acme".into(),
        name: "widgets".into(),
        id: Some("1".into()),
        host: None,
    }
}

const AUTHORS: [(&str, bool); 4] = [
    ("alice", false),
    ("Mallory", false),
    ("dependabot[bot]", true),
    ("bob", false),
];

/// A pull request: its author (index into AUTHORS), its runs (fails or not), and its
/// reports (time offset, title).
#[derive(Debug, Clone)]
struct PullSpec {
    author: usize,
    runs: Vec<bool>,
    reports: Vec<(i64, u8)>,
}

fn pull_spec() -> impl Strategy<Value = PullSpec> {
    (
        0usize..AUTHORS.len(),
        prop::collection::vec(any::<bool>(), 1..4),
        prop::collection::vec((0i64..3, 0u8..3), 0..4),
    )
        .prop_map(|(author, runs, reports)| PullSpec {
            author,
            runs,
            reports,
        })
}

fn sha(pr: usize) -> String {
    format!("{pr:040}")
}

/// (run lines, report lines).
fn lines_of(pulls: &[PullSpec]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut runs = Vec::new();
    let mut reports = Vec::new();
    for (p, spec) in pulls.iter().enumerate() {
        let pr = p as u64 + 1;
        for (i, fails) in spec.runs.iter().enumerate() {
            for (phase, status) in [Status::Queued, Status::Completed].into_iter().enumerate() {
                let t = 1_700_000_000 + (i as i64) * 10 + phase as i64;
                let e = Event {
                    schema: SCHEMA.into(),
                    event_id: format!("run-{pr}-{i}-{phase}"),
                    provider: Provider::Github,
                    repository: repository(),
                    commit_sha: sha(p),
                    branch: Some("feature".into()),
                    pr_number: Some(pr),
                    run: Run {
                        id: format!("run-{pr}-{i}"),
                        attempt: 1,
                        workflow: format!("wf-{i}"),
                        status,
                        conclusion: (status == Status::Completed).then_some(if *fails {
                            Conclusion::Failure
                        } else {
                            Conclusion::Success
                        }),
                        url: None,
                        updated_at: DateTime::from_timestamp(t, 0).unwrap(),
                    },
                    metadata: serde_json::Value::Null,
                };
                runs.push(serde_json::to_vec(&e).unwrap());
            }
        }
        let (login, bot) = AUTHORS[spec.author];
        for (j, (dt, title)) in spec.reports.iter().enumerate() {
            let link = PullRequestLink {
                schema: PULL_REQUEST_SCHEMA.into(),
                event_id: format!("report-{pr}-{j}"),
                provider: Provider::Github,
                repository: repository(),
                commit_sha: sha(p),
                pr_number: pr,
                branch: Some("feature".into()),
                updated_at: DateTime::from_timestamp(1_700_000_000 + dt, 0).unwrap(),
                state: None,
                draft: None,
                merged: None,
                state_at: None,
                title: Some(format!("title {title}")),
                author: Some(LinkAuthor {
                    login: login.into(),
                    bot,
                }),
                base_branch: Some("main".into()),
                url: None,
                metadata: serde_json::Value::Null,
            };
            reports.push(serde_json::to_vec(&link).unwrap());
        }
    }
    (runs, reports)
}

const RULES: &str = r#"
[[rules]]
kind = "all_completed_with_failure"
name = "mine"
authors = ["ALICE"]

[[rules]]
kind = "all_completed_with_failure"
name = "humans"
exclude_authors = ["mallory"]
skip_bots = true
"#;

/// (trigger id, pull request, the author the trigger names).
type Fired = BTreeSet<(uuid::Uuid, Option<u64>, Option<String>)>;

struct Outcome {
    /// Per rule: (trigger id, pull request, author the trigger names).
    triggers: BTreeMap<String, Fired>,
    infos: BTreeMap<u64, Option<PullInfo>>,
}

fn simulate(lines: &[Vec<u8>], pulls: usize) -> Outcome {
    let rules = RuleSet::from_toml(RULES).unwrap();
    let mut sim = Simulation::new(Engine::new(rules, Limits::default()), Limits::default());
    let mut triggers = Vec::new();
    for l in lines {
        triggers.extend(sim.feed_line(l).unwrap());
    }
    triggers.extend(sim.fire_timers_until(None));
    let mut by_rule: BTreeMap<String, BTreeSet<_>> = BTreeMap::new();
    for t in &triggers {
        by_rule.entry(t.rule_name.clone()).or_default().insert((
            t.trigger_id,
            t.pr_number,
            t.pull_request.as_ref().and_then(|p| p.author.clone()),
        ));
    }
    // The single repository is the registry's first.
    let repo = triggers.first().map_or(1, |t| t.repository.internal_id);
    Outcome {
        triggers: by_rule,
        infos: (1..=pulls as u64)
            .map(|pr| (pr, sim.pull_info(repo, pr)))
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_order_and_duplicates_give_the_same_pull_info_and_author_triggers(
        pulls in prop::collection::vec(pull_spec(), 1..4),
        order in prop::collection::vec(0usize..10_000, 64),
        dups in prop::collection::vec(0usize..1000, 0..6),
    ) {
        let (runs, reports) = lines_of(&pulls);
        // Reference: every report first, then the runs in time order.
        let mut reference_lines = reports.clone();
        reference_lines.extend(runs.iter().cloned());
        let reference = simulate(&reference_lines, pulls.len());
        let mut all = runs.clone();
        all.extend(reports.iter().cloned());
        let got = simulate(&reordered(all, &order, &dups), pulls.len());

        prop_assert_eq!(&got.infos, &reference.infos);
        let none = BTreeSet::new();
        let mine = got.triggers.get("mine").unwrap_or(&none);
        prop_assert_eq!(mine, reference.triggers.get("mine").unwrap_or(&none));
        // Exactly alice's reported pull requests with a failing run, each naming her.
        let expected: BTreeSet<u64> = pulls
            .iter()
            .enumerate()
            .filter(|(_, p)| p.author == 0 && !p.reports.is_empty() && p.runs.iter().any(|f| *f))
            .map(|(i, _)| i as u64 + 1)
            .collect();
        let fired: BTreeSet<u64> = mine.iter().filter_map(|(_, pr, _)| *pr).collect();
        prop_assert_eq!(fired, expected);
        prop_assert!(mine.iter().all(|(_, _, a)| a.as_deref() == Some("alice")));

        let humans = got.triggers.get("humans").unwrap_or(&none);
        let humans_ids: BTreeSet<_> = humans.iter().map(|(id, pr, _)| (*id, *pr)).collect();
        let first: BTreeSet<_> = reference
            .triggers
            .get("humans")
            .unwrap_or(&none)
            .iter()
            .map(|(id, pr, _)| (*id, *pr))
            .collect();
        prop_assert!(first.is_subset(&humans_ids));
        // Reports first: never for an excluded author or a bot.
        for (_, pr, author) in reference.triggers.get("humans").unwrap_or(&none) {
            let spec = &pulls[(pr.unwrap_or(1) - 1) as usize];
            prop_assert!(spec.reports.is_empty() || (spec.author == 0 || spec.author == 3), "{:?}", author);
        }
        // A trigger names an author only as reported.
        for (_, pr, author) in humans {
            if let Some(a) = author {
                prop_assert_eq!(a.as_str(), AUTHORS[pulls[(pr.unwrap_or(1) - 1) as usize].author].0);
            }
        }
    }
}

/// The pull request schema describes the new fields as the decoder reads them.
#[test]
fn the_pull_request_schema_takes_what_the_decoder_takes() {
    let (_, reports) = lines_of(&[PullSpec {
        author: 2,
        runs: vec![true],
        reports: vec![(0, 0)],
    }]);
    let mut v: serde_json::Value = serde_json::from_slice(&reports[0]).unwrap();
    v["url"] = "https://example.com/pull/1".into();
    let schema = crate::helpers::schemas::pull_request_schema();
    assert_eq!(crate::helpers::schemas::errors(schema, &v), "");
    assert!(
        runwatch::pull_request::decode_input(&serde_json::to_vec(&v).unwrap(), &Limits::default())
            .is_ok()
    );
    for (field, bad) in [
        ("author", serde_json::json!("octo")),
        ("author", serde_json::json!({"login": ""})),
        ("author", serde_json::json!({"login": "a", "admin": true})),
        ("author", serde_json::json!({"login": "a", "bot": "yes"})),
        ("base_branch", serde_json::json!("a\nb")),
        ("title", serde_json::json!(5)),
    ] {
        let mut w = v.clone();
        w[field] = bad.clone();
        assert_ne!(
            crate::helpers::schemas::errors(schema, &w),
            "",
            "{field}: {bad}"
        );
        assert!(
            runwatch::pull_request::decode_input(
                &serde_json::to_vec(&w).unwrap(),
                &Limits::default()
            )
            .is_err(),
            "{field}: {bad}"
        );
    }
}
