//! Rule kinds, their TOML form and their filters (DESIGN.md "Rules").

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::event::Conclusion;

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

/// One `[[rules]]` entry as written. Keys that do not apply to the kind are errors.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub kind: RuleKind,
    /// Names the rule in trigger ids and state; defaults to the kind (`kind#N` for the
    /// N-th rule of a kind after the first).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub failure_conclusions: Option<Vec<Conclusion>>,
    #[serde(default)]
    pub require_pr: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub settle: Option<Duration>,
    #[serde(default)]
    pub refire_on_rerun: Option<bool>,
    /// `all_completed_with_failure`: do not fire for a commit the pull request has moved
    /// past (its head, as the latest `runwatch.pull_request.v1` message says, is another
    /// commit). Default false.
    #[serde(default)]
    pub only_head_commit: Option<bool>,
    /// `all_completed_with_failure`: do not fire for a pull request known to be closed or
    /// merged. Default true.
    #[serde(default)]
    pub only_open: Option<bool>,
    /// `all_completed_with_failure`: do not fire for a pull request known to be a draft.
    /// Default false.
    #[serde(default)]
    pub skip_draft: Option<bool>,
    /// `all_completed_with_failure`: fire only for pull requests whose author's login
    /// matches one of these globs (case-insensitive); while the author is unknown (no
    /// `pull_request` delivery yet) the rule waits. Default: every author.
    #[serde(default)]
    pub authors: Option<Vec<String>>,
    /// `all_completed_with_failure`: do not fire for pull requests whose author's login
    /// matches one of these globs (case-insensitive). An unknown author is not excluded.
    #[serde(default)]
    pub exclude_authors: Option<Vec<String>>,
    /// `all_completed_with_failure`: do not fire for pull requests opened by a bot. An
    /// unknown author is not a bot. Default false.
    #[serde(default)]
    pub skip_bots: Option<bool>,
    #[serde(default)]
    pub threshold: Option<u32>,
    #[serde(default)]
    pub repositories: Option<Vec<String>>,
    #[serde(default)]
    pub branches: Option<Vec<String>>,
    #[serde(default)]
    pub workflows: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
    /// `all_completed_with_failure`: at most this many triggers for one pull request
    /// within `budget_window` (docs/design.md "Budgets"). Default: no cap.
    #[serde(default)]
    pub max_triggers_per_pull_request: Option<i64>,
    /// `all_completed_with_failure`: at most this many triggers for one repository within
    /// `budget_window`. Default: no cap.
    #[serde(default)]
    pub max_triggers_per_repository: Option<i64>,
    /// The sliding window of the two budgets above (wall clock). Default 24h.
    #[serde(default, with = "humantime_serde")]
    pub budget_window: Option<Duration>,
    /// `all_completed_with_failure`: how far back flips count (docs/design.md "Flaky
    /// workflows"). Default 7 days.
    #[serde(default, with = "humantime_serde")]
    pub flaky_window: Option<Duration>,
    /// `all_completed_with_failure`: flips within the window that make a workflow known
    /// flaky. Default 2.
    #[serde(default)]
    pub flaky_threshold: Option<u32>,
    /// `all_completed_with_failure`: do not fire when every failed workflow is known flaky.
    /// Default false.
    #[serde(default)]
    pub skip_flaky: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct RulesError {
    pub key: String,
    pub message: String,
}

/// Glob patterns over a string; `*` matches everything, `/` included.
#[derive(Debug, Clone)]
pub struct Filter {
    set: GlobSet,
    any: bool,
}

impl Filter {
    /// Compiles `patterns` (at least one); an error names `key`.
    pub fn compile(
        key: &str,
        patterns: &[String],
        case_insensitive: bool,
    ) -> Result<Filter, RulesError> {
        if patterns.is_empty() {
            return Err(RulesError {
                key: key.into(),
                message: "must list at least one pattern (use [\"*\"] for all)".into(),
            });
        }
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let g = globset::GlobBuilder::new(p)
                .case_insensitive(case_insensitive)
                .literal_separator(false)
                .build()
                .map_err(|e| RulesError {
                    key: key.into(),
                    message: format!("bad pattern {p:?}: {e}"),
                })?;
            b.add(g);
        }
        let set = b.build().map_err(|e| RulesError {
            key: key.into(),
            message: e.to_string(),
        })?;
        Ok(Filter {
            set,
            any: patterns.iter().any(|p| p == "*"),
        })
    }

    /// Matches everything (`["*"]`).
    pub fn any() -> Filter {
        let mut b = GlobSetBuilder::new();
        if let Ok(g) = Glob::new("*") {
            b.add(g);
        }
        Filter {
            set: b.build().unwrap_or_else(|_| GlobSet::empty()),
            any: true,
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        self.any || self.set.is_match(s)
    }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<RuleConfig>,
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

    /// Parses a rules file (a TOML document with a `[[rules]]` array).
    pub fn from_toml(text: &str) -> Result<RuleSet, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| RulesError {
            key: "rules".into(),
            message: e.to_string(),
        })?;
        RuleSet::compile(&file.rules)
    }

    pub fn compile(configs: &[RuleConfig]) -> Result<RuleSet, RulesError> {
        if configs.is_empty() {
            return Err(RulesError {
                key: "rules".into(),
                message: "the rule set is empty; remove it to use the default rule".into(),
            });
        }
        let mut rules = Vec::with_capacity(configs.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut meanings: Vec<Meaning> = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let key = |field: &str| format!("rules[{i}].{field}");
            let err = |field: &str, message: &str| RulesError {
                key: key(field),
                message: message.into(),
            };
            let acwf = c.kind == RuleKind::AllCompletedWithFailure;
            if !acwf {
                for (field, set) in [
                    ("require_pr", c.require_pr.is_some()),
                    ("settle", c.settle.is_some()),
                    ("refire_on_rerun", c.refire_on_rerun.is_some()),
                    ("only_head_commit", c.only_head_commit.is_some()),
                    ("only_open", c.only_open.is_some()),
                    ("skip_draft", c.skip_draft.is_some()),
                    (
                        "max_triggers_per_pull_request",
                        c.max_triggers_per_pull_request.is_some(),
                    ),
                    (
                        "max_triggers_per_repository",
                        c.max_triggers_per_repository.is_some(),
                    ),
                    ("budget_window", c.budget_window.is_some()),
                    ("authors", c.authors.is_some()),
                    ("exclude_authors", c.exclude_authors.is_some()),
                    ("skip_bots", c.skip_bots.is_some()),
                    ("flaky_window", c.flaky_window.is_some()),
                    ("flaky_threshold", c.flaky_threshold.is_some()),
                    ("skip_flaky", c.skip_flaky.is_some()),
                ] {
                    if set {
                        return Err(err(field, "does not apply to kind repeated_failure"));
                    }
                }
            } else if c.threshold.is_some() {
                return Err(err(
                    "threshold",
                    "does not apply to kind all_completed_with_failure",
                ));
            }
            let name = match &c.name {
                Some(n) if n.trim().is_empty() => return Err(err("name", "must not be empty")),
                Some(n) => n.clone(),
                None => {
                    let before = configs[..i].iter().filter(|o| o.kind == c.kind).count();
                    if before == 0 {
                        c.kind.as_str().to_string()
                    } else {
                        format!("{}#{}", c.kind.as_str(), before + 1)
                    }
                }
            };
            if let Some(first) = names.insert(name.clone(), i) {
                return Err(err(
                    "name",
                    &format!(
                        "rule name {name:?} is already the name of rules[{first}]; two rules \
                         with one name would share their state and trigger ids"
                    ),
                ));
            }
            let failure_conclusions: HashSet<Conclusion> = match &c.failure_conclusions {
                Some(v) if v.is_empty() => {
                    return Err(err(
                        "failure_conclusions",
                        "must list at least one conclusion",
                    ));
                }
                Some(v) => v.iter().copied().collect(),
                None => DEFAULT_FAILURE_CONCLUSIONS.into_iter().collect(),
            };
            if let Some(passing) = PASSING_CONCLUSIONS
                .iter()
                .find(|p| failure_conclusions.contains(p))
            {
                return Err(err(
                    "failure_conclusions",
                    &format!(
                        "{:?} is a passing conclusion (success, neutral and skipped never count \
                         as a failure)",
                        passing.as_str()
                    ),
                ));
            }
            let meaning = Meaning::of(c, &failure_conclusions);
            let threshold = c.threshold.unwrap_or(3);
            if threshold == 0 {
                return Err(err("threshold", "must be at least 1"));
            }
            let cap = |field: &str, v: Option<i64>| -> Result<Option<u32>, RulesError> {
                match v {
                    None => Ok(None),
                    Some(n) if n < 1 => Err(err(
                        field,
                        &format!(
                            "{n} is not a budget: it must be at least 1 (leave the key out for no cap)"
                        ),
                    )),
                    // Above u32: refused by the range check (`config::RULE_RANGES`), which
                    // sees the saturated value.
                    Some(n) => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
                }
            };
            let max_triggers_per_pull_request = cap(
                "max_triggers_per_pull_request",
                c.max_triggers_per_pull_request,
            )?;
            let max_triggers_per_repository =
                cap("max_triggers_per_repository", c.max_triggers_per_repository)?;
            if c.budget_window.is_some()
                && max_triggers_per_pull_request.is_none()
                && max_triggers_per_repository.is_none()
            {
                return Err(err(
                    "budget_window",
                    "has no effect without max_triggers_per_pull_request or max_triggers_per_repository",
                ));
            }
            if c.budget_window.is_some_and(|w| w.is_zero()) {
                return Err(err("budget_window", "must be longer than 0s"));
            }
            let flaky_window = c.flaky_window.unwrap_or(DEFAULT_FLAKY_WINDOW);
            if flaky_window.is_zero() {
                return Err(err("flaky_window", "must be longer than 0s"));
            }
            let flaky_threshold = c.flaky_threshold.unwrap_or(DEFAULT_FLAKY_THRESHOLD);
            if flaky_threshold == 0 || flaky_threshold > MAX_FLIPS_COUNTED {
                return Err(err(
                    "flaky_threshold",
                    &format!(
                        "must be between 1 and {} (flips are counted up to that)",
                        MAX_FLIPS_COUNTED
                    ),
                ));
            }
            let filter = |field: &str, p: &Option<Vec<String>>, ci: bool| match p {
                Some(p) => Filter::compile(&key(field), p, ci),
                None => Ok(Filter::any()),
            };
            let repositories = filter("repositories", &c.repositories, true)?;
            let branches = filter("branches", &c.branches, false)?;
            let workflows = filter("workflows", &c.workflows, false)?;
            // Logins are case-insensitive on GitHub (and GitLab): so are these globs.
            let authors = c
                .authors
                .as_ref()
                .map(|p| Filter::compile(&key("authors"), p, true))
                .transpose()?;
            let exclude_authors = c
                .exclude_authors
                .as_ref()
                .map(|p| Filter::compile(&key("exclude_authors"), p, true))
                .transpose()?;
            if let Some(j) = meanings.iter().position(|m| *m == meaning) {
                return Err(RulesError {
                    key: format!("rules[{i}]"),
                    message: format!(
                        "rule {name:?} is the same rule as rules[{j}] ({:?}) under another \
                         name: each of its triggers would fire twice",
                        rules.get(j).map_or("", |r: &Rule| r.name.as_str())
                    ),
                });
            }
            meanings.push(meaning);
            rules.push(Rule {
                name,
                kind: c.kind,
                failure_conclusions,
                require_pr: c.require_pr.unwrap_or(true),
                settle: c.settle.unwrap_or_default(),
                refire_on_rerun: c.refire_on_rerun.unwrap_or(false),
                only_head_commit: c.only_head_commit.unwrap_or(false),
                only_open: c.only_open.unwrap_or(true),
                skip_draft: c.skip_draft.unwrap_or(false),
                authors,
                exclude_authors,
                skip_bots: c.skip_bots.unwrap_or(false),
                threshold,
                repositories,
                branches,
                workflows,
                cooldown: c.cooldown.unwrap_or_default(),
                max_triggers_per_pull_request,
                max_triggers_per_repository,
                budget_window: c.budget_window.unwrap_or(DEFAULT_BUDGET_WINDOW),
                flaky_window,
                flaky_threshold,
                skip_flaky: c.skip_flaky.unwrap_or(false),
            });
        }
        Ok(RuleSet { rules })
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

/// What a rule does, whatever its name: its kind and every setting with the defaults
/// applied, the conclusions sorted and each filter's patterns sorted (repositories in lower
/// case, a list with `*` as `*` alone). Two rules with the same meaning fire the same
/// triggers under two names.
#[derive(Debug, PartialEq, Eq)]
struct Meaning {
    kind: RuleKind,
    failure_conclusions: Vec<&'static str>,
    require_pr: bool,
    settle: Duration,
    refire_on_rerun: bool,
    only_head_commit: bool,
    authors: Option<Vec<String>>,
    exclude_authors: Option<Vec<String>>,
    skip_bots: bool,
    threshold: u32,
    repositories: Vec<String>,
    branches: Vec<String>,
    workflows: Vec<String>,
    cooldown: Duration,
    budgets: (Option<i64>, Option<i64>, Duration),
    /// `skip_flaky`, with its window and threshold when it is on (otherwise they only
    /// change what a trigger says, not whether it fires).
    skip_flaky: Option<(Duration, u32)>,
}

impl Meaning {
    fn of(c: &RuleConfig, failure_conclusions: &HashSet<Conclusion>) -> Meaning {
        let patterns = |p: &Option<Vec<String>>, lower: bool| -> Vec<String> {
            let p = p.as_deref().unwrap_or_default();
            if p.is_empty() || p.iter().any(|p| p == "*") {
                return vec!["*".to_string()];
            }
            let mut v: Vec<String> = p
                .iter()
                .map(|p| if lower { p.to_lowercase() } else { p.clone() })
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let mut conclusions: Vec<&'static str> =
            failure_conclusions.iter().map(|c| c.as_str()).collect();
        conclusions.sort_unstable();
        Meaning {
            kind: c.kind,
            failure_conclusions: conclusions,
            require_pr: c.require_pr.unwrap_or(true),
            settle: c.settle.unwrap_or_default(),
            refire_on_rerun: c.refire_on_rerun.unwrap_or(false),
            only_head_commit: c.only_head_commit.unwrap_or(false),
            authors: c.authors.as_ref().map(|_| patterns(&c.authors, true)),
            exclude_authors: c
                .exclude_authors
                .as_ref()
                .map(|_| patterns(&c.exclude_authors, true)),
            skip_bots: c.skip_bots.unwrap_or(false),
            threshold: c.threshold.unwrap_or(3),
            repositories: patterns(&c.repositories, true),
            branches: patterns(&c.branches, false),
            workflows: patterns(&c.workflows, false),
            cooldown: c.cooldown.unwrap_or_default(),
            budgets: (
                c.max_triggers_per_pull_request,
                c.max_triggers_per_repository,
                c.budget_window.unwrap_or(DEFAULT_BUDGET_WINDOW),
            ),
            skip_flaky: c.skip_flaky.unwrap_or(false).then(|| {
                (
                    c.flaky_window.unwrap_or(DEFAULT_FLAKY_WINDOW),
                    c.flaky_threshold.unwrap_or(DEFAULT_FLAKY_THRESHOLD),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_design_example() {
        let set = RuleSet::from_toml(
            r#"
[[rules]]
kind = "all_completed_with_failure"
failure_conclusions = ["failure", "timed_out", "startup_failure"]
require_pr = true
settle = "0s"
refire_on_rerun = false
repositories = ["*"]
branches = ["*"]
workflows = ["*"]
cooldown = "0s"

[[rules]]
kind = "repeated_failure"
threshold = 3
branches = ["main"]
"#,
        )
        .unwrap();
        assert_eq!(set.rules().len(), 2);
        assert_eq!(set.rules()[1].name, "repeated_failure");
        assert!(set.rules()[1].branches.matches("main"));
        assert!(!set.rules()[1].branches.matches("dev"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = RuleSet::from_toml("[[rules]]\nkind = \"repeated_failure\"\nsettle = \"5s\"\n")
            .unwrap_err();
        assert_eq!(e.key, "rules[0].settle");
        let e = RuleSet::from_toml("[[rules]]\nkind = \"nope\"\n").unwrap_err();
        assert!(e.message.contains("nope"), "{e}");
        let e = RuleSet::from_toml("[[rules]]\nkind = \"repeated_failure\"\nworkflows = [\"[\"]\n")
            .unwrap_err();
        assert_eq!(e.key, "rules[0].workflows");
    }

    #[test]
    fn pull_request_state_options() {
        let set = RuleSet::default_rules();
        assert!(set.rules()[0].only_open && !set.rules()[0].skip_draft);
        let set = RuleSet::from_toml(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nonly_open = false\nskip_draft = true\n",
        )
        .unwrap();
        assert!(!set.rules()[0].only_open && set.rules()[0].skip_draft);
        for key in ["only_open", "skip_draft"] {
            let e = RuleSet::from_toml(&format!(
                "[[rules]]\nkind = \"repeated_failure\"\n{key} = true\n"
            ))
            .unwrap_err();
            assert_eq!(e.key, format!("rules[0].{key}"));
            let e = RuleSet::from_toml(&format!(
                "[[rules]]\nkind = \"all_completed_with_failure\"\n{key} = \"yes\"\n"
            ))
            .unwrap_err();
            assert!(e.message.contains(key), "{e}");
        }
    }

    #[test]
    fn author_options() {
        let set = RuleSet::from_toml(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nauthors = [\"dependabot*\"]\n\
             exclude_authors = [\"Mallory\"]\nskip_bots = true\n",
        )
        .unwrap();
        let r = &set.rules()[0];
        assert!(r.authors.as_ref().unwrap().matches("Dependabot[bot]"));
        assert!(r.exclude_authors.as_ref().unwrap().matches("mallory"));
        assert!(r.skip_bots);
        let d = RuleSet::default_rules();
        assert!(d.rules()[0].authors.is_none() && !d.rules()[0].skip_bots);
        for (line, key) in [
            ("authors = [\"a\"]", "authors"),
            ("exclude_authors = [\"a\"]", "exclude_authors"),
            ("skip_bots = true", "skip_bots"),
        ] {
            let e =
                RuleSet::from_toml(&format!("[[rules]]\nkind = \"repeated_failure\"\n{line}\n"))
                    .unwrap_err();
            assert_eq!(e.key, format!("rules[0].{key}"));
        }
        for (line, key) in [
            ("authors = []", "authors"),
            ("exclude_authors = []", "exclude_authors"),
            ("authors = [\"[\"]", "authors"),
            ("exclude_authors = [\"{a\"]", "exclude_authors"),
        ] {
            let e = RuleSet::from_toml(&format!(
                "[[rules]]\nkind = \"all_completed_with_failure\"\n{line}\n"
            ))
            .unwrap_err();
            assert_eq!(e.key, format!("rules[0].{key}"), "{line}");
        }
        for (line, key) in [
            ("authors = \"alice\"", "authors"),
            ("skip_bots = \"yes\"", "skip_bots"),
            ("exclude_authors = [1]", "exclude_authors"),
        ] {
            let e = RuleSet::from_toml(&format!(
                "[[rules]]\nkind = \"all_completed_with_failure\"\n{line}\n"
            ))
            .unwrap_err();
            assert!(e.message.contains(key), "{line}: {e}");
        }
        // Two rules that differ only in their authors are two rules.
        RuleSet::from_toml(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nauthors = [\"a\"]\n\
             [[rules]]\nkind = \"all_completed_with_failure\"\nauthors = [\"b\"]\n",
        )
        .unwrap();
    }

    #[test]
    fn flaky_options_default_and_apply_to_group_rules_only() {
        let default = RuleSet::default_rules();
        let r = &default.rules()[0];
        assert_eq!(
            (r.flaky_window, r.flaky_threshold, r.skip_flaky),
            (DEFAULT_FLAKY_WINDOW, 2, false)
        );
        for (key, value, words) in [
            ("flaky_window", "\"0s\"", "longer than 0s"),
            ("flaky_threshold", "0", "between 1 and 1000"),
            ("flaky_threshold", "1001", "between 1 and 1000"),
        ] {
            let e = RuleSet::from_toml(&format!(
                "[[rules]]\nkind = \"all_completed_with_failure\"\n{key} = {value}\n"
            ))
            .unwrap_err();
            assert_eq!(e.key, format!("rules[0].{key}"));
            assert!(e.message.contains(words), "{e}");
            let e = RuleSet::from_toml(&format!(
                "[[rules]]\nkind = \"repeated_failure\"\n{key} = {value}\n"
            ))
            .unwrap_err();
            assert_eq!(e.key, format!("rules[0].{key}"));
        }
        // With skip_flaky, the window and threshold change what fires: two such rules are
        // two rules; without it they only change what a trigger marks.
        let acwf = "[[rules]]\nkind = \"all_completed_with_failure\"";
        RuleSet::from_toml(&format!(
            "{acwf}\nskip_flaky = true\n{acwf}\nskip_flaky = true\nflaky_window = \"1d\"\n"
        ))
        .unwrap();
        let e =
            RuleSet::from_toml(&format!("{acwf}\n{acwf}\nflaky_window = \"1d\"\n")).unwrap_err();
        assert_eq!(e.key, "rules[1]");
        let set = RuleSet::from_toml(&format!(
            "{acwf}\nflaky_window = \"3d\"\n{acwf}\nskip_flaky = true\nflaky_window = \"9d\"\n\
             [[rules]]\nkind = \"repeated_failure\"\n"
        ))
        .unwrap();
        assert_eq!(set.longest_flaky_window(), Duration::from_secs(9 * 86_400));
        assert!(set.counts_flips());
        let streaks_only = RuleSet::from_toml("[[rules]]\nkind = \"repeated_failure\"\n").unwrap();
        assert!(!streaks_only.counts_flips());
        assert_eq!(streaks_only.longest_flaky_window(), Duration::ZERO);
    }

    #[test]
    fn repository_filter_ignores_case_and_globs_cross_slashes() {
        let set = RuleSet::from_toml(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nrepositories = [\"acme/*\"]\nbranches = [\"release/*\"]\n",
        )
        .unwrap();
        let r = &set.rules()[0];
        assert!(r.matches_repository("ACME", "Widgets"));
        assert!(!r.matches_repository("other", "widgets"));
        assert!(r.matches_run("x", Some("release/1.0")));
        assert!(!r.matches_run("x", None));
    }

    #[test]
    fn a_name_used_twice_names_both_rules() {
        let e = RuleSet::from_toml(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nname = \"a\"\n\
             [[rules]]\nkind = \"repeated_failure\"\nname = \"a\"\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "rules[1].name");
        assert!(e.message.contains("rules[0]"), "{e}");
    }

    #[test]
    fn the_same_rule_under_two_names_is_refused() {
        let acwf = "kind = \"all_completed_with_failure\"";
        for (first, second) in [
            // Identical, names defaulted (`all_completed_with_failure` and `#2`).
            (acwf.to_string(), acwf.to_string()),
            // Identical but for the name, with defaults written out or not, patterns in
            // another order or case.
            (
                format!("{acwf}\nname = \"x\"\nrepositories = [\"acme/*\", \"b/c\"]"),
                format!(
                    "{acwf}\nname = \"y\"\nrequire_pr = true\nrepositories = [\"B/C\", \"acme/*\"]\n\
                     failure_conclusions = [\"startup_failure\", \"failure\", \"timed_out\"]"
                ),
            ),
            (
                "kind = \"repeated_failure\"\nbranches = [\"main\", \"*\"]".to_string(),
                "kind = \"repeated_failure\"\nthreshold = 3".to_string(),
            ),
        ] {
            let e = RuleSet::from_toml(&format!("[[rules]]\n{first}\n[[rules]]\n{second}\n"))
                .unwrap_err();
            assert_eq!(e.key, "rules[1]", "{first} / {second}");
            assert!(e.message.contains("the same rule as rules[0]"), "{e}");
        }
        // Rules that differ in anything that matters stay.
        for (first, second) in [
            (acwf.to_string(), format!("{acwf}\nsettle = \"1s\"")),
            (acwf.to_string(), format!("{acwf}\nbranches = [\"main\"]")),
            (
                acwf.to_string(),
                format!("{acwf}\nfailure_conclusions = [\"failure\"]"),
            ),
            (acwf.to_string(), "kind = \"repeated_failure\"".to_string()),
        ] {
            RuleSet::from_toml(&format!("[[rules]]\n{first}\n[[rules]]\n{second}\n")).unwrap();
        }
    }

    #[test]
    fn budgets_are_positive_and_apply_to_group_rules_only() {
        let acwf = "[[rules]]\nkind = \"all_completed_with_failure\"\n";
        let set = RuleSet::from_toml(&format!(
            "{acwf}max_triggers_per_pull_request = 3\nmax_triggers_per_repository = 20\n"
        ))
        .unwrap();
        let r = &set.rules()[0];
        assert_eq!(r.max_triggers_per_pull_request, Some(3));
        assert_eq!(r.max_triggers_per_repository, Some(20));
        assert_eq!(r.budget_window, DEFAULT_BUDGET_WINDOW);
        assert!(set.uses_budgets());
        assert!(!RuleSet::default_rules().uses_budgets());
        for key in [
            "max_triggers_per_pull_request",
            "max_triggers_per_repository",
        ] {
            for bad in ["0", "-1", "-9223372036854775808"] {
                let e = RuleSet::from_toml(&format!("{acwf}{key} = {bad}\n")).unwrap_err();
                assert_eq!(e.key, format!("rules[0].{key}"), "{bad}");
                assert!(e.message.contains("at least 1"), "{e}");
            }
            let e = RuleSet::from_toml(&format!("{acwf}{key} = \"3\"\n")).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
            let e = RuleSet::from_toml(&format!(
                "[[rules]]\nkind = \"repeated_failure\"\n{key} = 3\n"
            ))
            .unwrap_err();
            assert_eq!(e.key, format!("rules[0].{key}"));
        }
        // Beyond u32: saturated, for the range check to refuse (config::RULE_RANGES).
        let set = RuleSet::from_toml(&format!(
            "{acwf}max_triggers_per_repository = 99999999999\n"
        ))
        .unwrap();
        assert_eq!(set.rules()[0].max_triggers_per_repository, Some(u32::MAX));
        // A window without a budget, or of no length, is refused.
        let e = RuleSet::from_toml(&format!("{acwf}budget_window = \"1h\"\n")).unwrap_err();
        assert_eq!(e.key, "rules[0].budget_window");
        assert!(e.message.contains("no effect"), "{e}");
        let e = RuleSet::from_toml(&format!(
            "{acwf}max_triggers_per_pull_request = 1\nbudget_window = \"0s\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "rules[0].budget_window");
    }

    #[test]
    fn passing_conclusions_are_not_failures() {
        for c in ["success", "neutral", "skipped"] {
            let e = RuleSet::from_toml(&format!(
                "[[rules]]\nkind = \"repeated_failure\"\nfailure_conclusions = [\"failure\", \"{c}\"]\n"
            ))
            .unwrap_err();
            assert_eq!(e.key, "rules[0].failure_conclusions");
            assert!(
                e.message
                    .contains(&format!("\"{c}\" is a passing conclusion")),
                "{e}"
            );
        }
        for c in ["cancelled", "action_required", "stale"] {
            RuleSet::from_toml(&format!(
                "[[rules]]\nkind = \"repeated_failure\"\nfailure_conclusions = [\"{c}\"]\n"
            ))
            .unwrap();
        }
    }
}
