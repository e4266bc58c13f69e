//! Why a rule fires or not on a group. [`Check`]: the checks of
//! `all_completed_with_failure` (docs/design.md "Rules"), each named, computed once; the
//! engine fires on [`Check::Holds`] only, and `explain` renders the same value; neither
//! re-derives a check. [`Reason`]: what one evaluation decided, the checks, a timer, a
//! cooldown or a budget included ([`super::Engine::judge`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::repo::RepoRef;
use super::{
    AuthorBlock, Due, FlakySkip, Flips, GroupState, OverBudget, PullBlock, Rule, RunState,
    StreakKey, StreakState,
};
use crate::event::Status;
use crate::trigger::{KnownFlaky, trigger_id};

/// The first check of `all_completed_with_failure` that fails on a group, in the order
/// `explain` names them, or [`Check::Holds`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `repositories` leaves the group's repository out.
    Repository,
    /// The group holds no run.
    NoRuns,
    /// No run passes the filters; the filters that drop them (`workflows` first).
    FilteredOut(Vec<&'static str>),
    /// `require_pr` and the group has no pull request.
    NoPullRequest,
    /// `only_head_commit` and the pull request has moved past the commit to `head`.
    NotHead(String),
    /// A group without a pull request whose commit belongs to one: judged there.
    InPullRequest,
    /// `only_open` / `skip_draft`.
    Pull(PullBlock),
    /// `authors` / `exclude_authors` / `skip_bots`.
    Author(AuthorBlock),
    /// Some run the rule considers has not completed.
    Pending,
    /// Every run completed and none failed.
    NoFailure,
    /// `skip_flaky`: every failed workflow is known flaky.
    KnownFlaky(FlakySkip),
    /// Every check passes: the failed workflows (sorted, each once) and those of them
    /// known flaky.
    Holds {
        failed_workflows: Vec<String>,
        known_flaky: Vec<KnownFlaky>,
    },
}

impl Check {
    pub fn holds(&self) -> bool {
        matches!(self, Check::Holds { .. })
    }
}

/// What one evaluation of an `all_completed_with_failure` rule decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A check fails (the repository filter included).
    Unmet(Check),
    /// The rule fired (or decided over budget) in the current episode already.
    AlreadyFired,
    /// The checks hold; the settle timer judges again at `due`.
    Settling(Due),
    /// The checks hold during the repository's cooldown; judged again at `due`.
    Cooldown(Due),
    /// Decided, but over a trigger budget: recorded, not published.
    OverBudget(OverBudget),
    /// Fired: the trigger's id.
    Fired(Uuid),
}

/// A rule's [`Reason`], by the rule's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgment {
    pub rule: String,
    pub reason: Reason,
}

/// The group a check reads.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub repo: &'a RepoRef,
    pub pr_number: Option<u64>,
    pub commit_sha: &'a str,
    pub state: &'a GroupState,
}

impl Rule {
    /// The group's runs the rule considers (its `workflows` and `branches`).
    pub fn relevant_runs<'a>(
        &self,
        runs: &'a BTreeMap<String, RunState>,
    ) -> Vec<(&'a String, &'a RunState)> {
        runs.iter()
            .filter(|(_, r)| self.matches_run(&r.workflow, r.branch.as_deref()))
            .collect()
    }

    /// Which of `workflows` and `branches` drop the runs (`workflows` first).
    pub fn dropping_filters<'a>(
        &self,
        runs: impl IntoIterator<Item = &'a RunState>,
    ) -> Vec<&'static str> {
        let mut out = BTreeSet::new();
        for r in runs {
            if !self.workflows.matches(&r.workflow) {
                out.insert("workflows");
            } else if !self.branches.matches(r.branch.as_deref().unwrap_or("")) {
                out.insert("branches");
            }
        }
        let mut v: Vec<&'static str> = out.into_iter().collect();
        v.sort_by_key(|f| if *f == "workflows" { 0 } else { 1 });
        v
    }

    /// `all_completed_with_failure`'s checks on `g`; `flips` gives a workflow's flips in
    /// the group's repository, counted at event time `at`.
    pub fn check_group<'f>(
        &self,
        g: Subject<'_>,
        flips: impl Fn(&str) -> Option<&'f Flips>,
        at: DateTime<Utc>,
    ) -> Check {
        if !self.matches_repository(&g.repo.owner, &g.repo.name) {
            return Check::Repository;
        }
        let runs = self.relevant_runs(&g.state.runs);
        if g.state.runs.is_empty() {
            return Check::NoRuns;
        }
        if runs.is_empty() {
            return Check::FilteredOut(self.dropping_filters(g.state.runs.values()));
        }
        if self.require_pr && g.pr_number.is_none() {
            return Check::NoPullRequest;
        }
        if let Some(head) = g.state.pr_head.as_deref()
            && self.only_head_commit
            && head != g.commit_sha
        {
            return Check::NotHead(head.to_string());
        }
        if g.pr_number.is_none() && g.state.commit_in_pull {
            return Check::InPullRequest;
        }
        if g.pr_number.is_some()
            && let Some(block) = self.pull_block(g.state.pr_status.as_ref())
        {
            return Check::Pull(block);
        }
        if let Some(block) = self.author_block(g.state.pr_info.as_ref()) {
            return Check::Author(block);
        }
        if runs.iter().any(|(_, r)| r.status != Status::Completed) {
            return Check::Pending;
        }
        let mut failed: Vec<String> = runs
            .iter()
            .filter(|(_, r)| self.is_failure(r.conclusion))
            .map(|(_, r)| r.workflow.clone())
            .collect();
        if failed.is_empty() {
            return Check::NoFailure;
        }
        failed.sort();
        failed.dedup();
        let known_flaky = self.known_flaky(&failed, flips, at);
        if let Some(skip) = self.flaky_skip(&failed, &known_flaky) {
            return Check::KnownFlaky(skip);
        }
        Check::Holds {
            failed_workflows: failed,
            known_flaky,
        }
    }

    /// The streak `run` counts in for this `repeated_failure` rule.
    pub fn streak_key(&self, repository_id: i64, run: &RunState) -> StreakKey {
        StreakKey {
            repository_id,
            rule: self.name.clone(),
            branch: run.branch.clone().unwrap_or_default(),
            workflow: run.workflow.clone(),
        }
    }

    /// The trigger id of this `all_completed_with_failure` rule for a group in `episode`.
    pub fn group_trigger_id(
        &self,
        repo: &RepoRef,
        pr_number: Option<u64>,
        commit_sha: &str,
        episode: u32,
    ) -> Uuid {
        let pr = pr_number.map_or_else(|| "-".to_string(), |p| p.to_string());
        trigger_id(&[
            self.kind.as_str(),
            &self.name,
            &repo.stable_key,
            &pr,
            commit_sha,
            &episode.to_string(),
        ])
    }

    /// The trigger id of this `repeated_failure` rule for the streak `key` in `state`.
    pub fn streak_trigger_id(&self, repo: &RepoRef, key: &StreakKey, state: &StreakState) -> Uuid {
        trigger_id(&[
            self.kind.as_str(),
            &self.name,
            &repo.stable_key,
            &key.branch,
            &key.workflow,
            &state.streak_id(),
        ])
    }

    /// When the rule's cooldown that started at `last` ends (none without a cooldown).
    pub fn cooldown_end(&self, last: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.cooldown.is_zero() {
            return None;
        }
        chrono::Duration::from_std(self.cooldown)
            .ok()
            .and_then(|c| last.checked_add_signed(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Ledger, PullState, PullStatus, RuleSet};
    use crate::event::{Conclusion, Provider};

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    fn rule(extra: &str) -> Rule {
        let text = format!(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nname = \"r\"\nworkflows = [\"ci\"]\n{extra}"
        );
        match RuleSet::from_toml(&text) {
            Ok(set) => set.rules()[0].clone(),
            Err(e) => panic!("{e}"),
        }
    }

    fn run(workflow: &str, status: Status, conclusion: Option<Conclusion>) -> RunState {
        RunState {
            attempt: 1,
            workflow: workflow.into(),
            status,
            conclusion,
            url: None,
            updated_at: t(10),
            event_id: format!("e-{workflow}"),
            branch: Some("main".into()),
            failed_attempt: None,
            passed: None,
        }
    }

    fn repo() -> RepoRef {
        RepoRef {
            internal_id: 1,
            stable_key: "github:id:1".into(),
            provider: Provider::Github,
            owner: "o".into(),
            name: "n".into(),
            external_id: Some("1".into()),
        }
    }

    fn check(rule: &Rule, pr: Option<u64>, state: &GroupState) -> Check {
        let repo = repo();
        let g = Subject {
            repo: &repo,
            pr_number: pr,
            commit_sha: "c",
            state,
        };
        rule.check_group(g, |_| None, t(20))
    }

    fn state(runs: &[RunState]) -> GroupState {
        let mut s = GroupState::default();
        for (i, r) in runs.iter().enumerate() {
            s.runs.insert(i.to_string(), r.clone());
        }
        s
    }

    #[test]
    fn names_the_first_check_that_fails() {
        let failed = run("ci", Status::Completed, Some(Conclusion::Failure));
        let passed = run("ci", Status::Completed, Some(Conclusion::Success));
        let pending = run("ci", Status::InProgress, None);
        let other = run("lint", Status::Completed, Some(Conclusion::Failure));
        let plain = rule("");
        let mut moved = state(std::slice::from_ref(&failed));
        moved.pr_head = Some("d".into());
        let mut pushed = state(std::slice::from_ref(&failed));
        pushed.commit_in_pull = true;
        let mut closed = state(std::slice::from_ref(&failed));
        closed.pr_status = Some(PullStatus {
            state: PullState::Closed,
            draft: false,
            at: t(1),
        });
        let cases: Vec<(&str, Rule, Option<u64>, GroupState, Check)> = vec![
            (
                "another repository",
                rule("repositories = [\"x/*\"]"),
                Some(1),
                state(std::slice::from_ref(&failed)),
                Check::Repository,
            ),
            ("no run", plain.clone(), Some(1), state(&[]), Check::NoRuns),
            (
                "filtered",
                plain.clone(),
                Some(1),
                state(std::slice::from_ref(&other)),
                Check::FilteredOut(vec!["workflows"]),
            ),
            (
                "push build",
                plain.clone(),
                None,
                state(std::slice::from_ref(&failed)),
                Check::NoPullRequest,
            ),
            (
                "moved past",
                rule("only_head_commit = true"),
                Some(1),
                moved,
                Check::NotHead("d".into()),
            ),
            (
                "in a pull request",
                rule("require_pr = false"),
                None,
                pushed,
                Check::InPullRequest,
            ),
            (
                "closed",
                plain.clone(),
                Some(1),
                closed,
                Check::Pull(PullBlock::Closed),
            ),
            (
                "pending",
                plain.clone(),
                Some(1),
                state(&[failed.clone(), pending]),
                Check::Pending,
            ),
            (
                "no failure",
                plain.clone(),
                Some(1),
                state(std::slice::from_ref(&passed)),
                Check::NoFailure,
            ),
            (
                "holds",
                plain.clone(),
                Some(1),
                state(&[failed.clone(), passed, failed.clone()]),
                Check::Holds {
                    failed_workflows: vec!["ci".into()],
                    known_flaky: Vec::new(),
                },
            ),
        ];
        for (what, rule, pr, state, want) in cases {
            assert_eq!(check(&rule, pr, &state), want, "{what}");
        }
    }

    #[test]
    fn every_failure_known_flaky_is_a_check_of_its_own() {
        let rule = rule("skip_flaky = true\nflaky_threshold = 1");
        let mut flips = Flips::new();
        flips.insert(
            "9".into(),
            crate::engine::Flip {
                attempt: 2,
                at: t(15),
            },
        );
        let st = state(&[run("ci", Status::Completed, Some(Conclusion::Failure))]);
        let repo = repo();
        let g = Subject {
            repo: &repo,
            pr_number: Some(1),
            commit_sha: "c",
            state: &st,
        };
        let got = rule.check_group(g, |w| (w == "ci").then_some(&flips), t(20));
        assert!(
            matches!(got, Check::KnownFlaky(ref s) if s.known.len() == 1),
            "{got:?}"
        );
        assert!(!got.holds());
    }

    fn judged(extra: &str, state: &GroupState, ledger: &Ledger, now: i64) -> Reason {
        let text = format!(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nname = \"r\"\nworkflows = [\"ci\"]\n{extra}"
        );
        let rules = match RuleSet::from_toml(&text) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let engine = crate::engine::Engine::new(rules, crate::event::Limits::default());
        let repo = repo();
        let mut state = state.clone();
        let mut branch = None;
        let g = crate::engine::GroupCtx {
            repo: &repo,
            pr_number: Some(1),
            commit_sha: "c",
            branch: &mut branch,
            state: &mut state,
        };
        let before = g.state.clone();
        let mut judged = engine.judge(&g, ledger, crate::engine::Clock::event_time(t(now)));
        assert_eq!(*g.state, before, "judge changes nothing");
        assert_eq!(judged.len(), 1);
        judged.remove(0).reason
    }

    #[test]
    fn an_evaluation_says_why_it_fired_or_not() {
        let failed = state(&[run("ci", Status::Completed, Some(Conclusion::Failure))]);
        let none = Ledger::default();
        let mut cooling = Ledger::default();
        cooling.cooldowns.insert(
            crate::engine::CooldownKey {
                repository_id: 1,
                rule: "r".into(),
            },
            t(15),
        );
        let mut fired = failed.clone();
        fired.rules.insert(
            "r".into(),
            crate::engine::EpisodeState {
                fired: true,
                ..Default::default()
            },
        );
        let pending = state(&[run("ci", Status::InProgress, None)]);
        let id = rule("").group_trigger_id(&repo(), Some(1), "c", 0);
        let cases: Vec<(&str, &str, &GroupState, &Ledger, Reason)> = vec![
            ("fires", "", &failed, &none, Reason::Fired(id)),
            ("fired before", "", &fired, &none, Reason::AlreadyFired),
            (
                "a check fails",
                "",
                &pending,
                &none,
                Reason::Unmet(Check::Pending),
            ),
            (
                "settle",
                "settle = \"10s\"",
                &failed,
                &none,
                Reason::Settling(Due {
                    event: t(30),
                    wall: t(30),
                }),
            ),
            (
                "cooldown",
                "cooldown = \"60s\"",
                &failed,
                &cooling,
                Reason::Cooldown(Due {
                    event: t(75),
                    wall: t(75),
                }),
            ),
        ];
        for (what, extra, state, ledger, want) in cases {
            assert_eq!(judged(extra, state, ledger, 20), want, "{what}");
        }
        // A budget of one, spent by another commit of the pull request.
        let budget = "max_triggers_per_pull_request = 1";
        let rules = match RuleSet::from_toml(&format!(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nname = \"r\"\n{budget}"
        )) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let engine = crate::engine::Engine::new(rules, crate::event::Limits::default());
        let (repo, mut spent, mut branch, mut other) =
            (repo(), Ledger::default(), None, failed.clone());
        let mut g = crate::engine::GroupCtx {
            repo: &repo,
            pr_number: Some(1),
            commit_sha: "b",
            branch: &mut branch,
            state: &mut other,
        };
        let fired = engine.reconsider(&mut g, &mut spent, crate::engine::Clock::event_time(t(20)));
        assert_eq!(fired.len(), 1);
        let over = judged(budget, &failed, &spent, 20);
        assert!(matches!(over, Reason::OverBudget(_)), "{over:?}");
    }
}
