//! Rule kinds and compiled rules (docs/design.md "Rules"); their TOML form is compiled in
//! `config.rs`.

mod config;
mod filter;

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use crate::event::Conclusion;

pub use config::RuleConfig;
pub use filter::Filter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    AllCompletedWithFailure,
    RepeatedFailure,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::AllCompletedWithFailure => "all_completed_with_failure",
            RuleKind::RepeatedFailure => "repeated_failure",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct RulesError {
    pub key: String,
    pub message: String,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub failure_conclusions: HashSet<Conclusion>,
    pub require_pr: bool,
    pub settle: Duration,
    pub refire_on_rerun: bool,
    pub only_head_commit: bool,
    pub only_open: bool,
    pub skip_draft: bool,
    /// `authors`: `None` when the rule does not list any.
    pub authors: Option<Filter>,
    pub exclude_authors: Option<Filter>,
    pub skip_bots: bool,
    pub threshold: u32,
    pub repositories: Filter,
    pub branches: Filter,
    pub workflows: Filter,
    pub cooldown: Duration,
    /// Budgets (`all_completed_with_failure` only; `None`: no cap).
    pub max_triggers_per_pull_request: Option<u32>,
    pub max_triggers_per_repository: Option<u32>,
    /// The budgets' window (default 24h, meaningful with a budget).
    pub budget_window: Duration,
    pub flaky_window: Duration,
    pub flaky_threshold: u32,
    pub skip_flaky: bool,
}

/// `budget_window` when not given.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// `flaky_window`'s default: 7 days.
pub const DEFAULT_FLAKY_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// `flaky_threshold`'s default: two flips (one can be a runner's bad day).
pub const DEFAULT_FLAKY_THRESHOLD: u32 = 2;

/// The most flips a workflow is counted with: counts saturate here (a workflow with more is
/// as flaky as one can say), and the store loads at most this many per key. `flaky_threshold`
/// is at most this.
pub const MAX_FLIPS_COUNTED: u32 = 1000;

pub const DEFAULT_FAILURE_CONCLUSIONS: [Conclusion; 3] = [
    Conclusion::Failure,
    Conclusion::TimedOut,
    Conclusion::StartupFailure,
];

/// Conclusions of a run that passed (GitHub counts `neutral` and `skipped` as passing
/// checks): never allowed in `failure_conclusions`.
pub const PASSING_CONCLUSIONS: [Conclusion; 3] = [
    Conclusion::Success,
    Conclusion::Neutral,
    Conclusion::Skipped,
];

impl Rule {
    pub fn is_failure(&self, c: Option<Conclusion>) -> bool {
        c.is_some_and(|c| self.failure_conclusions.contains(&c))
    }

    /// `owner/name`, compared case-insensitively.
    pub fn matches_repository(&self, owner: &str, name: &str) -> bool {
        self.repositories.any || self.repositories.matches(&format!("{owner}/{name}"))
    }

    /// Whether a run with this workflow and branch exists for the rule.
    pub fn matches_run(&self, workflow: &str, branch: Option<&str>) -> bool {
        self.workflows.matches(workflow) && self.branches.matches(branch.unwrap_or(""))
    }

    /// Whether the rule caps its triggers (`max_triggers_per_*`).
    pub fn has_budget(&self) -> bool {
        self.max_triggers_per_pull_request.is_some() || self.max_triggers_per_repository.is_some()
    }
}

/// The rules in force, in order.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// DESIGN.md's default: one `all_completed_with_failure` rule with its defaults.
    pub fn default_rules() -> RuleSet {
        let config = RuleConfig {
            kind: RuleKind::AllCompletedWithFailure,
            name: None,
            failure_conclusions: None,
            require_pr: None,
            settle: None,
            refire_on_rerun: None,
            only_head_commit: None,
            only_open: None,
            skip_draft: None,
            authors: None,
            exclude_authors: None,
            skip_bots: None,
            threshold: None,
            repositories: None,
            branches: None,
            workflows: None,
            cooldown: None,
            max_triggers_per_pull_request: None,
            max_triggers_per_repository: None,
            budget_window: None,
            flaky_window: None,
            flaky_threshold: None,
            skip_flaky: None,
        };
        match RuleSet::compile(&[config]) {
            Ok(set) => set,
            // The default configuration compiles; a failure here is a programming error.
            Err(e) => unreachable!("default rule set does not compile: {e}"),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn has_kind(&self, kind: RuleKind) -> bool {
        self.rules.iter().any(|r| r.kind == kind)
    }

    /// Rules whose per-repository cooldown is set (their state must be loaded and locked).
    pub fn uses_cooldowns(&self) -> bool {
        self.rules.iter().any(|r| !r.cooldown.is_zero())
    }

    /// Rules with a trigger budget (their budget rows must be loaded and locked).
    pub fn uses_budgets(&self) -> bool {
        self.rules.iter().any(Rule::has_budget)
    }

    /// Whether the rules count flips (`all_completed_with_failure` does, for `known_flaky`
    /// and `skip_flaky`): the engine records flips and the caller loads them.
    pub fn counts_flips(&self) -> bool {
        self.has_kind(RuleKind::AllCompletedWithFailure)
    }

    /// The longest `flaky_window` of the rules that count flips (zero when none does): the
    /// caller loads flips dated after its event clock minus this, and purge keeps them.
    pub fn longest_flaky_window(&self) -> Duration {
        self.rules
            .iter()
            .filter(|r| r.kind == RuleKind::AllCompletedWithFailure)
            .map(|r| r.flaky_window)
            .max()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
