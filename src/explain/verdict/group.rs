//! `all_completed_with_failure` on one group: what the engine recorded (over budget,
//! fired, a timer pending) and its [`Check`] of the group, in words.

use super::types::{Cause, GroupView, OutboxRow, Shared, Verdict, show_time};
use super::{delivery, unmet};
use crate::engine::{AuthorBlock, Check, PullBlock, Rule, reasons::Subject};

/// `all_completed_with_failure` on the group.
pub(super) fn judge(
    rule: &Rule,
    g: &GroupView,
    outbox: &[OutboxRow],
    shared: &Shared,
) -> (Verdict, String) {
    let st = g.state.rules.get(&rule.name).cloned().unwrap_or_default();
    if let Some(o) = st.over_budget.as_ref().filter(|_| st.fired) {
        let window = crate::engine::budget::window_words(o.window_seconds);
        let again = if rule.refire_on_rerun {
            "a re-run opens a new episode, judged again"
        } else {
            "not judged again for this commit"
        };
        return (
            Verdict::OverBudget {
                budget: o.scope,
                used: o.used,
                limit: o.limit,
                window_seconds: o.window_seconds,
                at: o.at,
            },
            format!(
                "over budget: {} of {} triggers for {} within {window} (decided at {} in episode {}, not published; {again})",
                o.used,
                o.limit,
                o.scope.words(),
                show_time(o.at),
                st.episode
            ),
        );
    }
    if st.fired && st.inherited {
        return (
            Verdict::Fired {
                triggers: Vec::new(),
            },
            format!(
                "fired in episode {} in the commit's group without a pull request, before the commit was known to belong to this pull request (its trigger is that group's: explain {} {}/{} - {}); not announced again here",
                st.episode, g.repo.provider, g.repo.owner, g.repo.name, g.commit_sha
            ),
        );
    }
    if st.fired {
        let id = rule.group_trigger_id(&g.repo, g.pr_number, &g.commit_sha, st.episode);
        let mut t = delivery::fired_trigger(id, outbox);
        t.episode = Some(st.episode);
        let words = format!(
            "fired in episode {}{}: {}",
            st.episode,
            delivery::at_words(&t),
            delivery::delivery_words(&t)
        );
        return (Verdict::Fired { triggers: vec![t] }, words);
    }
    let runs = rule.relevant_runs(&g.state.runs);
    // The flips as of the group's newest run.
    let at = runs
        .iter()
        .map(|(_, r)| r.updated_at)
        .max()
        .unwrap_or(g.updated_at);
    let subject = Subject {
        repo: &g.repo,
        pr_number: g.pr_number,
        commit_sha: &g.commit_sha,
        state: &g.state,
    };
    let check = rule.check_group(subject, |w| shared.flips.get(w), at);
    if check == Check::Repository {
        return unmet::repository_filtered(g);
    }
    if let Some(due) = st.due {
        return timer(rule, g, shared, due);
    }
    match check {
        Check::Repository => unmet::repository_filtered(g),
        Check::NoRuns => unmet::no_runs(),
        Check::FilteredOut(filters) => unmet::filtered(filters),
        Check::NoPullRequest => unmet::will_not_fire(
            Cause::NoPullRequest,
            Vec::new(),
            Vec::new(),
            "no pull request (a push build; the rule has require_pr = true)".into(),
        ),
        Check::NotHead(head) => unmet::will_not_fire(
            Cause::NotHead,
            Vec::new(),
            Vec::new(),
            format!(
                "the pull request has moved past this commit (its head is {head}; the rule has only_head_commit = true)"
            ),
        ),
        Check::InPullRequest => unmet::will_not_fire(
            Cause::InPullRequest,
            Vec::new(),
            Vec::new(),
            "the commit belongs to a pull request: its runs are judged in the pull request's group"
                .into(),
        ),
        Check::Pull(block) => {
            let cause = match block {
                PullBlock::Closed => Cause::Closed,
                PullBlock::Merged => Cause::Merged,
                PullBlock::Draft => Cause::Draft,
            };
            let at = g
                .state
                .pr_status
                .map(|s| format!(" (reported at {})", show_time(s.at)))
                .unwrap_or_default();
            unmet::will_not_fire(
                cause,
                Vec::new(),
                Vec::new(),
                format!("{}{at}", block.words()),
            )
        }
        Check::Author(block) => {
            let cause = match block {
                AuthorBlock::Unknown => Cause::AuthorUnknown,
                AuthorBlock::NotListed(_) | AuthorBlock::Excluded(_) => Cause::Author,
                AuthorBlock::Bot(_) => Cause::Bot,
            };
            unmet::will_not_fire(cause, Vec::new(), Vec::new(), block.words())
        }
        Check::Pending => unmet::waiting(&runs),
        Check::NoFailure => {
            let mut conclusions: Vec<&str> = rule
                .failure_conclusions
                .iter()
                .map(|c| c.as_str())
                .collect();
            conclusions.sort_unstable();
            unmet::will_not_fire(
                Cause::NoFailure,
                Vec::new(),
                Vec::new(),
                format!(
                    "every run completed and none failed (failure conclusions: {})",
                    conclusions.join(", ")
                ),
            )
        }
        Check::KnownFlaky(skip) => (
            Verdict::WillNotFire {
                cause: Cause::KnownFlaky,
                filters: Vec::new(),
                streaks: Vec::new(),
                known_flaky: skip.known.clone(),
            },
            format!("will not fire: {}", skip.words()),
        ),
        Check::Holds { .. } => (
            Verdict::NotJudged,
            "not judged yet: the condition holds, but the rule has not evaluated this state (was the rule added or changed since the group's last event?); the group's next event decides".into(),
        ),
    }
}

/// A pending timer: the cooldown's end when it is due then (or the rule has no settle),
/// else settle.
fn timer(
    rule: &Rule,
    g: &GroupView,
    shared: &Shared,
    due: crate::engine::Due,
) -> (Verdict, String) {
    let cooldown_end = shared
        .cooldowns
        .get(&rule.name)
        .and_then(|last| rule.cooldown_end(*last));
    let is_cooldown = !rule.cooldown.is_zero()
        && (rule.settle.is_zero()
            || cooldown_end.is_some_and(|end| {
                (end - due.wall)
                    .num_microseconds()
                    .is_some_and(|us| us.abs() < 1000)
            }));
    if is_cooldown {
        (
            Verdict::Cooldown {
                until: due.wall,
                due,
            },
            format!(
                "deferred by cooldown until {}: the rule fired for {}/{} less than {} before; judged again then",
                show_time(due.wall),
                g.repo.owner,
                g.repo.name,
                humantime::format_duration(rule.cooldown)
            ),
        )
    } else {
        (
            Verdict::SettleDue { due },
            format!(
                "settle due at {} (or when event time reaches {}); fires then if the condition still holds",
                show_time(due.wall),
                show_time(due.event)
            ),
        )
    }
}
