//! Per-repository cooldowns: a rule that fired for a repository waits `cooldown` (wall
//! clock) before it fires there again; a group that would fire sooner gets a timer.

use serde::{Deserialize, Serialize};

use super::group::Due;
use super::repo::RepoRef;
use super::rules::Rule;
use super::time::{plus, to_chrono};
use super::{Clock, Ledger};

/// Per-repository cooldown bookkeeping: when a rule last fired for a repository (wall clock).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CooldownKey {
    pub repository_id: i64,
    pub rule: String,
}

/// If the rule's per-repository cooldown is running, the due time at which it ends (reads
/// only; [`cooldown_deferral`] also records a firing).
pub(super) fn cooldown_pending(
    rule: &Rule,
    repo: &RepoRef,
    ledger: &Ledger,
    clock: Clock,
) -> Option<Due> {
    if rule.cooldown.is_zero() {
        return None;
    }
    let key = CooldownKey {
        repository_id: repo.internal_id,
        rule: rule.name.clone(),
    };
    let ends = plus(*ledger.cooldowns.get(&key)?, to_chrono(rule.cooldown));
    (ends > clock.wall).then(|| Due {
        event: plus(clock.event, ends - clock.wall),
        wall: ends,
    })
}

/// If the rule's per-repository cooldown is running, the due time at which it ends.
/// Otherwise records that the rule fires now and returns `None`. Cooldowns are measured on
/// the wall clock (event time in `simulate`, where the two are the same).
pub(super) fn cooldown_deferral(
    rule: &Rule,
    repo: &RepoRef,
    ledger: &mut Ledger,
    clock: Clock,
) -> Option<Due> {
    if rule.cooldown.is_zero() {
        return None;
    }
    if let Some(due) = cooldown_pending(rule, repo, ledger, clock) {
        return Some(due);
    }
    let key = CooldownKey {
        repository_id: repo.internal_id,
        rule: rule.name.clone(),
    };
    ledger.cooldowns.insert(key, clock.wall);
    None
}
