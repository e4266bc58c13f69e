use std::collections::BTreeMap;

use super::*;
use crate::engine::RunState;
use crate::engine::{
    BudgetScope, Due, EpisodeState, GroupState, RepoRef, StreakKey, StreakRun, StreakState,
};
use crate::event::{Conclusion, Provider, Status};

const T0: &str = "2026-03-01T10:00:00Z";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn rules(toml: &str) -> RuleSet {
    RuleSet::from_toml(toml).unwrap()
}

fn run(workflow: &str, status: Status, conclusion: Option<Conclusion>, branch: &str) -> RunState {
    RunState {
        attempt: 1,
        workflow: workflow.into(),
        status,
        conclusion,
        url: None,
        updated_at: t(T0),
        event_id: format!("e-{workflow}"),
        branch: Some(branch.into()),
        failed_attempt: None,
        passed: None,
    }
}

fn group(pr: Option<u64>, runs: Vec<(&str, RunState)>) -> GroupView {
    GroupView {
        id: 7,
        repo: RepoRef {
            internal_id: 3,
            stable_key: "github:id:1".into(),
            provider: Provider::Github,
            owner: "acme".into(),
            name: "app".into(),
            external_id: Some("1".into()),
        },
        pr_number: pr,
        commit_sha: "abc".into(),
        branch: Some("feat".into()),
        updated_at: t(T0),
        state: GroupState {
            runs: runs
                .into_iter()
                .map(|(id, r)| (id.to_string(), r))
                .collect(),
            rules: BTreeMap::new(),
            pr_head: None,
            pr_status: None,
            pr_info: None,
            commit_in_pull: false,
        },
    }
}

fn one(g: &GroupView, set: &RuleSet, outbox: &[OutboxRow], shared: &Shared) -> RuleExplanation {
    explain(g, set, outbox, shared, t(T0)).rules.remove(0)
}

const ACWF: &str = "[[rules]]\nkind = \"all_completed_with_failure\"\n";
const FAILED: Option<Conclusion> = Some(Conclusion::Failure);

fn fired_group(set: &RuleSet) -> GroupView {
    let mut g = group(
        Some(1),
        vec![("1", run("build", Status::Completed, FAILED, "feat"))],
    );
    g.state.rules.insert(
        set.rules()[0].name.clone(),
        EpisodeState {
            fired: true,
            ..EpisodeState::default()
        },
    );
    g
}

fn row(id: Uuid) -> OutboxRow {
    OutboxRow {
        trigger_id: id,
        group_id: Some(7),
        trigger: None,
        created_at: t("2026-03-01T10:00:01Z"),
        sent_at: None,
        attempts: 2,
        last_error: Some("nats: timed out".into()),
        set_aside_at: None,
        set_aside_reason: None,
    }
}

#[test]
fn fired_states_say_where_the_trigger_is() {
    let set = rules(ACWF);
    let g = fired_group(&set);
    let id = set.rules()[0].group_trigger_id(&g.repo, g.pr_number, &g.commit_sha, 0);
    let e = one(&g, &set, &[row(id)], &Shared::default());
    assert_eq!(
        e.reason,
        format!(
            "fired in episode 0 at 2026-03-01T10:00:01Z: trigger {id}, still in the outbox, not published yet (relay attempts: 2); last error: nats: timed out"
        )
    );
    let mut aside = row(id);
    aside.set_aside_at = Some(t(T0));
    aside.set_aside_reason = Some("payload is not a trigger".into());
    let e = one(&g, &set, &[aside], &Shared::default());
    assert!(
        e.reason
            .ends_with("set aside in the outbox and not published: payload is not a trigger"),
        "{}",
        e.reason
    );
    let e = one(&g, &set, &[], &Shared::default());
    assert_eq!(
        e.reason,
        format!("fired in episode 0: trigger {id}, no longer in the outbox (purged)")
    );
    let Verdict::Fired { triggers } = &e.verdict else {
        panic!("{e:?}")
    };
    assert_eq!(
        (triggers[0].delivery, triggers[0].fired_at),
        (Delivery::Missing, None)
    );
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["verdict"], "fired");
    assert_eq!(json["triggers"][0]["delivery"], "missing");
}

#[test]
fn over_budget_says_which_budget_from_the_recorded_decision() {
    let set = rules(&format!("{ACWF}max_triggers_per_pull_request = 3\n"));
    let mut g = fired_group(&set);
    let over = crate::engine::OverBudget {
        scope: BudgetScope::PullRequest,
        used: 3,
        limit: 3,
        window_seconds: 86_400,
        at: t("2026-03-01T10:00:01Z"),
    };
    if let Some(st) = g.state.rules.get_mut(&set.rules()[0].name) {
        st.over_budget = Some(over.clone());
    }
    let e = one(&g, &set, &[], &Shared::default());
    assert_eq!(
        e.reason,
        "over budget: 3 of 3 triggers for this pull request within 24h (decided at 2026-03-01T10:00:01Z in episode 0, not published; not judged again for this commit)"
    );
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["verdict"], "over_budget");
    assert_eq!(json["budget"], "pull_request");
    assert_eq!(
        (json["used"].as_u64(), json["limit"].as_u64()),
        (Some(3), Some(3))
    );
    // Its trigger id is not looked up: it was never published.
    assert!(trigger_ids_to_load(&g, &set, &Shared::default()).is_empty());
    // The words come from the recorded decision, not from the rule as configured now;
    // with refire_on_rerun, a re-run is judged again.
    let set = rules(&format!(
        "{ACWF}max_triggers_per_repository = 10\nrefire_on_rerun = true\n"
    ));
    if let Some(st) = g.state.rules.get_mut(&set.rules()[0].name) {
        st.over_budget = Some(crate::engine::OverBudget {
            scope: BudgetScope::Repository,
            used: 5,
            limit: 5,
            window_seconds: 7 * 86_400,
            ..over
        });
    }
    let e = one(&g, &set, &[], &Shared::default());
    assert!(
        e.reason
            .starts_with("over budget: 5 of 5 triggers for this repository within 7d")
            && e.reason
                .ends_with("a re-run opens a new episode, judged again)"),
        "{}",
        e.reason
    );
}

#[test]
fn a_holding_condition_without_a_decision_is_not_judged() {
    let set = rules(ACWF);
    let g = group(
        Some(1),
        vec![("1", run("build", Status::Completed, FAILED, "feat"))],
    );
    let e = one(&g, &set, &[], &Shared::default());
    assert_eq!(e.verdict, Verdict::NotJudged);
    assert_eq!(serde_json::to_value(&e).unwrap()["verdict"], "not_judged");
}

#[test]
fn a_timer_is_settle_or_cooldown_by_what_the_rule_has() {
    let both = rules(&format!("{ACWF}settle = \"10m\"\ncooldown = \"1h\"\n"));
    let mut g = group(
        Some(1),
        vec![("1", run("build", Status::Completed, FAILED, "feat"))],
    );
    let due = Due {
        event: t("2026-03-01T10:10:00Z"),
        wall: t("2026-03-01T12:00:00Z"),
    };
    g.state.rules.insert(
        "all_completed_with_failure".into(),
        EpisodeState {
            due: Some(due),
            ..EpisodeState::default()
        },
    );
    // No cooldown running: the settle timer.
    let e = one(&g, &both, &[], &Shared::default());
    assert_eq!(e.verdict, Verdict::SettleDue { due });
    // The repository's cooldown ends exactly then: the cooldown.
    let shared = Shared {
        cooldowns: [(
            "all_completed_with_failure".to_string(),
            t("2026-03-01T11:00:00Z"),
        )]
        .into(),
        ..Shared::default()
    };
    let e = one(&g, &both, &[], &shared);
    assert_eq!(
        e.verdict,
        Verdict::Cooldown {
            until: due.wall,
            due
        }
    );
    // A rule with only a cooldown: always the cooldown.
    let cooldown_only = rules(&format!("{ACWF}cooldown = \"1h\"\n"));
    assert_eq!(
        one(&g, &cooldown_only, &[], &Shared::default())
            .verdict
            .name(),
        "cooldown"
    );
}

#[test]
fn filters_name_themselves_and_push_builds_say_so() {
    let set = rules(&format!(
        "{ACWF}workflows = [\"build\"]\nbranches = [\"main\"]\n"
    ));
    let g = group(
        Some(1),
        vec![
            ("1", run("docs", Status::Completed, FAILED, "main")),
            ("2", run("build", Status::Completed, FAILED, "feat")),
        ],
    );
    let e = one(&g, &set, &[], &Shared::default());
    assert_eq!(
        e.reason,
        "will not fire: filtered out by `workflows` and `branches`: no run of the group passes the rule's filters"
    );
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(
        (json["cause"].as_str(), json["filters"].clone()),
        (
            Some("filtered_out"),
            serde_json::json!(["workflows", "branches"])
        )
    );
    let g = group(
        None,
        vec![("1", run("build", Status::InProgress, None, "feat"))],
    );
    assert_eq!(
        one(&g, &rules(ACWF), &[], &Shared::default()).reason,
        "will not fire: no pull request (a push build; the rule has require_pr = true)"
    );
    let g = group(None, vec![]);
    assert_eq!(
        one(&g, &rules(ACWF), &[], &Shared::default()).reason,
        "will not fire: the group holds no run"
    );
}

#[test]
fn a_commit_the_pull_request_moved_past_is_named_for_only_head_commit_rules() {
    let mut g = group(
        Some(1),
        vec![("1", run("build", Status::Completed, FAILED, "feat"))],
    );
    g.state.pr_head = Some("def".into());
    let e = one(
        &g,
        &rules(&format!("{ACWF}only_head_commit = true\n")),
        &[],
        &Shared::default(),
    );
    assert_eq!(
        e.reason,
        "will not fire: the pull request has moved past this commit (its head is def; the rule has only_head_commit = true)"
    );
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["cause"].as_str(), Some("not_head"));
    // Without the option, or when the commit is the head, the rule judges the runs.
    assert_eq!(
        one(&g, &rules(ACWF), &[], &Shared::default()).verdict,
        Verdict::NotJudged
    );
    g.state.pr_head = Some("abc".into());
    let set = rules(&format!("{ACWF}only_head_commit = true\n"));
    assert_eq!(
        one(&g, &set, &[], &Shared::default()).verdict,
        Verdict::NotJudged
    );
}

#[test]
fn every_failure_known_flaky_is_named_with_its_counts() {
    let set = rules(&format!(
        "{ACWF}skip_flaky = true\nflaky_threshold = 2\nflaky_window = \"1d\"\n"
    ));
    let g = group(
        Some(1),
        vec![
            ("1", run("ci", Status::Completed, FAILED, "feat")),
            ("2", run("lint", Status::Completed, FAILED, "feat")),
            (
                "3",
                run("docs", Status::Completed, Some(Conclusion::Success), "feat"),
            ),
        ],
    );
    let flip = |secs_before: i64| crate::engine::Flip {
        attempt: 2,
        at: t(T0) - chrono::Duration::seconds(secs_before),
    };
    let mut shared = Shared::default();
    for (w, ages) in [("ci", vec![60, 120, 3_600]), ("lint", vec![60, 90_000])] {
        let flips = shared.flips.entry(w.to_string()).or_default();
        for (i, age) in ages.into_iter().enumerate() {
            crate::engine::flaky::record(flips, &format!("{w}-{i}"), flip(age));
        }
    }
    // `lint` flipped once within the day (the other is 25 hours old): below the
    // threshold, so the rule has not judged yet.
    assert_eq!(one(&g, &set, &[], &shared).verdict, Verdict::NotJudged);
    crate::engine::flaky::record(
        shared.flips.entry("lint".into()).or_default(),
        "lint-9",
        flip(1),
    );
    let e = one(&g, &set, &[], &shared);
    assert_eq!(
        e.reason,
        "will not fire: every failure is known flaky: ci (3 flips in 1d), lint (2 flips in 1d) (the rule has skip_flaky = true)"
    );
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["cause"], "known_flaky");
    assert_eq!(
        json["known_flaky"],
        serde_json::json!([
            {"workflow": "ci", "flips": 3, "window_seconds": 86400},
            {"workflow": "lint", "flips": 2, "window_seconds": 86400}
        ])
    );
    // Without skip_flaky the rule is not held back.
    let marking = rules(&format!(
        "{ACWF}flaky_threshold = 2\nflaky_window = \"1d\"\n"
    ));
    assert_eq!(one(&g, &marking, &[], &shared).verdict, Verdict::NotJudged);
}

#[test]
fn a_reopened_episode_is_named() {
    let set = rules(&format!("{ACWF}refire_on_rerun = true\n"));
    let mut g = group(
        Some(1),
        vec![("1", run("build", Status::Queued, None, "feat"))],
    );
    g.state.rules.insert(
        "all_completed_with_failure".into(),
        EpisodeState {
            episode: 1,
            ..EpisodeState::default()
        },
    );
    assert_eq!(
        one(&g, &set, &[], &Shared::default()).reason,
        "waiting for runs to complete: build (run 1) is queued (episode 1: a re-run after the trigger of episode 0 opened it)"
    );
}

#[test]
fn a_streak_suppressed_by_a_cooldown_is_told_apart() {
    let set = rules("[[rules]]\nkind = \"repeated_failure\"\nthreshold = 2\ncooldown = \"1h\"\n");
    let g = group(
        None,
        vec![("2", run("nightly", Status::Completed, FAILED, "main"))],
    );
    let key = StreakKey {
        repository_id: 3,
        rule: "repeated_failure".into(),
        branch: "main".into(),
        workflow: "nightly".into(),
    };
    let mut streak = StreakState::default();
    for id in ["1", "2"] {
        let entry = StreakRun {
            run_id: id.into(),
            run: run("nightly", Status::Completed, FAILED, "main"),
            commit_sha: "abc".into(),
            pr_number: None,
            failed: true,
        };
        streak.record(entry, true, 2);
    }
    streak.mark_fired();
    let shared = Shared {
        streaks: [(key.clone(), streak.clone())].into(),
        ..Shared::default()
    };
    assert_eq!(trigger_ids_to_load(&g, &set, &shared).len(), 1);
    let id = set.rules()[0].streak_trigger_id(&g.repo, &key, &streak);
    let e = one(&g, &set, &[], &shared);
    assert_eq!(
        e.reason,
        format!(
            "will not fire: the streak of `nightly` on `main` already fired, but trigger {id} is not in the outbox (the streak ended during a cooldown, or the trigger was purged)"
        )
    );
    let Verdict::WillNotFire { streaks, .. } = &e.verdict else {
        panic!("{e:?}")
    };
    assert_eq!(
        (
            streaks[0].failures_in_a_row,
            streaks[0].fired,
            streaks[0].trigger_in_outbox
        ),
        (2, true, Some(false))
    );
}
