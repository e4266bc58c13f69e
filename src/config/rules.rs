//! The ranges of a rule's numeric keys, and the rules file.

use std::path::Path;

use super::bounds::{Bounds, DAY, MINUTE, Number, dur, int, n, out_of_range, secs};
use super::error::ConfigError;
use crate::engine::rules::{Rule, RuleSet};

/// The numeric keys of a rule (`[[rules]]` or a rules file), checked per rule as
/// `rules[N].<key>`.
pub const RULE_RANGES: &[(&str, Bounds)] = &[
    ("settle", dur(secs(0), secs(365 * DAY))),
    ("cooldown", dur(secs(0), secs(365 * DAY))),
    ("threshold", int(1, 1000)),
    ("max_triggers_per_pull_request", int(1, 1000)),
    ("max_triggers_per_repository", int(1, 1000)),
    ("budget_window", dur(secs(1), secs(365 * DAY))),
    ("flaky_window", dur(secs(MINUTE), secs(365 * DAY))),
    ("flaky_threshold", int(1, 1000)),
];

/// The value of a rule's numeric key (see [`RULE_RANGES`]); `None` for a budget the rule
/// does not set.
fn rule_number(rule: &Rule, key: &str) -> Option<Number> {
    Some(match key {
        "settle" => Number::Duration(rule.settle),
        "cooldown" => Number::Duration(rule.cooldown),
        "max_triggers_per_pull_request" => n(rule.max_triggers_per_pull_request?),
        "max_triggers_per_repository" => n(rule.max_triggers_per_repository?),
        "budget_window" => Number::Duration(rule.budget_window),
        "flaky_window" => Number::Duration(rule.flaky_window),
        "flaky_threshold" => n(rule.flaky_threshold),
        _ => n(rule.threshold),
    })
}

/// Checks every rule of `set` against [`RULE_RANGES`].
pub fn check_rule_ranges(set: &RuleSet) -> Result<(), ConfigError> {
    for (i, rule) in set.rules().iter().enumerate() {
        for (key, bounds) in RULE_RANGES {
            let Some(v) = rule_number(rule, key) else {
                continue;
            };
            if !bounds.contains(v) {
                return Err(out_of_range(&format!("rules[{i}].{key}"), bounds, v));
            }
        }
    }
    Ok(())
}

/// Reads a rules file: a TOML document with a `[[rules]]` array. It replaces the default set.
pub fn load_rules_file(path: &Path) -> Result<RuleSet, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::RulesFile {
        path: path.to_path_buf(),
        source,
    })?;
    let set = RuleSet::from_toml(&text)?;
    check_rule_ranges(&set)?;
    Ok(set)
}
