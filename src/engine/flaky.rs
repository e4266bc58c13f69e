//! Flaky workflows (docs/design.md "Flaky workflows").
//!
//! A **flip** is a run whose failed attempt is followed by a passing attempt of the same run
//! (same run id, so the same commit): attempt `f` completed with a failure (`failure`,
//! `timed_out` or `startup_failure`) and an attempt `p > f` completed passing (`success`,
//! `neutral`, `skipped`). A run remembers the lowest attempt that failed and the highest
//! that passed ([`RunState::lowest_failed`], [`RunState::highest_passed`]), merged by min and
//! max whichever attempt's state the merge keeps, so whether a run flipped, and when, is the
//! same in every order of its events.
//!
//! Flips are kept per (repository, workflow) in the [`super::Ledger`] (the caller loads the
//! newest [`MAX_FLIPS_COUNTED`] of each key the batch may judge, and writes what the engine
//! adds). A rule counts the flips of a workflow dated after its decision's event clock minus
//! `flaky_window`; a workflow with at least `flaky_threshold` of them is **known flaky**.
//!
//! [`RunState::lowest_failed`]: super::RunState::lowest_failed
//! [`RunState::highest_passed`]: super::RunState::highest_passed

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use super::rules::MAX_FLIPS_COUNTED;
use super::rules::Rule;
use crate::trigger::KnownFlaky;

/// Whose flips are kept together: a repository's workflow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FlipKey {
    pub repository_id: i64,
    pub workflow: String,
}

/// A passing attempt of a run, and when it completed (its `updated_at`). For a flip: the
/// highest passing attempt of a run that also has a lower failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Flip {
    pub attempt: u32,
    pub at: DateTime<Utc>,
}

/// The flips of one key, by run id.
pub type Flips = BTreeMap<String, Flip>;

/// Records a flip of `run_id` in `flips`: a run flips once; its flip is the greatest
/// (attempt, time) reported, so the same reports in any order end the same. Returns true
/// when `flips` changed.
pub fn record(flips: &mut Flips, run_id: &str, flip: Flip) -> bool {
    match flips.get_mut(run_id) {
        Some(f) if *f >= flip => false,
        Some(f) => {
            *f = flip;
            true
        }
        None => {
            flips.insert(run_id.to_string(), flip);
            true
        }
    }
}

/// Why a rule with `skip_flaky` does not fire: every failed workflow is known flaky.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakySkip {
    pub known: Vec<KnownFlaky>,
}

impl FlakySkip {
    /// The words `explain` prints: "every failure is known flaky: ci (3 flips in 7d)".
    pub fn words(&self) -> String {
        let list: Vec<String> = self
            .known
            .iter()
            .map(|k| {
                format!(
                    "{} ({} flip{} in {})",
                    k.workflow,
                    k.flips,
                    if k.flips == 1 { "" } else { "s" },
                    short_duration(Duration::from_secs(k.window_seconds))
                )
            })
            .collect();
        format!(
            "every failure is known flaky: {} (the rule has skip_flaky = true)",
            list.join(", ")
        )
    }
}

/// `7d`, `12h`, `90m`, `45s`: the largest unit that divides the duration.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s > 0 && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

impl Rule {
    /// How many flips of `flips` the rule counts at event time `now`: those dated after
    /// `now - flaky_window`, at most [`MAX_FLIPS_COUNTED`].
    pub fn flips_within(&self, flips: Option<&Flips>, now: DateTime<Utc>) -> u32 {
        let Some(flips) = flips else { return 0 };
        let from = chrono::Duration::from_std(self.flaky_window)
            .ok()
            .and_then(|w| now.checked_sub_signed(w))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let n = flips.values().filter(|f| f.at > from).count();
        u32::try_from(n).unwrap_or(u32::MAX).min(MAX_FLIPS_COUNTED)
    }

    /// The workflows of `failed` (sorted, each once) that are known flaky at `now`, with
    /// their counts; `flips` gives a workflow's flips in the group's repository.
    pub fn known_flaky<'f>(
        &self,
        failed: &[String],
        flips: impl Fn(&str) -> Option<&'f Flips>,
        now: DateTime<Utc>,
    ) -> Vec<KnownFlaky> {
        failed
            .iter()
            .filter_map(|w| {
                let n = self.flips_within(flips(w), now);
                (n >= self.flaky_threshold).then(|| KnownFlaky {
                    workflow: w.clone(),
                    flips: n,
                    window_seconds: self.flaky_window.as_secs(),
                })
            })
            .collect()
    }

    /// Whether `skip_flaky` keeps the rule from firing: some workflow failed and every
    /// failed workflow is known flaky (`known` as [`Rule::known_flaky`] gives it).
    pub fn flaky_skip(&self, failed: &[String], known: &[KnownFlaky]) -> Option<FlakySkip> {
        (self.skip_flaky && !failed.is_empty() && known.len() == failed.len()).then(|| FlakySkip {
            known: known.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    #[test]
    fn a_run_flips_once_at_its_greatest_report() {
        let mut a = Flips::new();
        let mut b = Flips::new();
        let early = Flip {
            attempt: 2,
            at: at(10),
        };
        let late = Flip {
            attempt: 3,
            at: at(5),
        };
        assert!(record(&mut a, "r", early));
        assert!(record(&mut a, "r", late));
        assert!(!record(&mut a, "r", early));
        assert!(record(&mut b, "r", late));
        assert!(!record(&mut b, "r", early));
        assert_eq!(a, b);
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(short_duration(Duration::from_secs(36 * 3_600)), "36h");
        assert_eq!(short_duration(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(short_duration(Duration::from_secs(61)), "61s");
        assert_eq!(short_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn counts_the_window_and_saturate() {
        let set = super::super::RuleSet::from_toml(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nflaky_window = \"10s\"\nflaky_threshold = 2\nskip_flaky = true\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let rule = &set.rules()[0];
        let mut flips = Flips::new();
        for (i, t) in [5, 11, 15].into_iter().enumerate() {
            record(
                &mut flips,
                &i.to_string(),
                Flip {
                    attempt: 2,
                    at: at(t),
                },
            );
        }
        // (20 - 10, ∞): 11 and 15.
        assert_eq!(rule.flips_within(Some(&flips), at(20)), 2);
        assert_eq!(rule.flips_within(Some(&flips), at(25)), 0);
        assert_eq!(rule.flips_within(None, at(20)), 0);
        let failed = vec!["ci".to_string(), "lint".to_string()];
        let known = rule.known_flaky(&failed, |w| (w == "ci").then_some(&flips), at(20));
        assert_eq!(known.len(), 1);
        assert!(rule.flaky_skip(&failed, &known).is_none());
        let known = rule.known_flaky(&failed, |_| Some(&flips), at(20));
        let skip = rule
            .flaky_skip(&failed, &known)
            .unwrap_or_else(|| panic!("skip"));
        assert_eq!(
            skip.words(),
            "every failure is known flaky: ci (2 flips in 10s), lint (2 flips in 10s) (the rule has skip_flaky = true)"
        );
        let mut many = Flips::new();
        for i in 0..(MAX_FLIPS_COUNTED + 5) {
            record(
                &mut many,
                &i.to_string(),
                Flip {
                    attempt: 2,
                    at: at(19),
                },
            );
        }
        assert_eq!(rule.flips_within(Some(&many), at(20)), MAX_FLIPS_COUNTED);
    }
}
