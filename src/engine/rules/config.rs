//! A rules file as written (`[[rules]]` entries) and its compilation into a [`RuleSet`]:
//! each key checked against its kind, defaults applied, names and meanings unique.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::{
    DEFAULT_BUDGET_WINDOW, DEFAULT_FAILURE_CONCLUSIONS, DEFAULT_FLAKY_THRESHOLD,
    DEFAULT_FLAKY_WINDOW, Filter, MAX_FLIPS_COUNTED, PASSING_CONCLUSIONS, Rule, RuleKind, RuleSet,
    RulesError,
};
use crate::event::Conclusion;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<RuleConfig>,
}

impl RuleSet {
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
