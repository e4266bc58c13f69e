//! The verdicts that say the rule does not fire: runs still pending, the repository or
//! the run filters leaving nothing, and the other reasons in words.

use super::types::{Cause, GroupView, PendingRun, StreakInfo, Verdict, status_str};
use crate::engine::RunState;
use crate::event::Status;

pub(super) fn waiting(runs: &[(&String, &RunState)]) -> (Verdict, String) {
    let pending: Vec<PendingRun> = runs
        .iter()
        .filter(|(_, r)| r.status != Status::Completed)
        .map(|(id, r)| PendingRun {
            run_id: (*id).clone(),
            workflow: r.workflow.clone(),
            status: r.status,
        })
        .collect();
    let list: Vec<String> = pending
        .iter()
        .map(|p| {
            format!(
                "{} (run {}) is {}",
                p.workflow,
                p.run_id,
                status_str(p.status)
            )
        })
        .collect();
    (
        Verdict::Waiting { runs: pending },
        format!("waiting for runs to complete: {}", list.join(", ")),
    )
}

pub(super) fn will_not_fire(
    cause: Cause,
    filters: Vec<&'static str>,
    streaks: Vec<StreakInfo>,
    words: String,
) -> (Verdict, String) {
    (
        Verdict::WillNotFire {
            cause,
            filters,
            streaks,
            known_flaky: Vec::new(),
        },
        format!("will not fire: {words}"),
    )
}

/// `repositories` leaves the group's repository out.
pub(super) fn repository_filtered(g: &GroupView) -> (Verdict, String) {
    will_not_fire(
        Cause::FilteredOut,
        vec!["repositories"],
        Vec::new(),
        format!(
            "filtered out by `repositories`: {}/{} does not match",
            g.repo.owner, g.repo.name
        ),
    )
}

pub(super) fn no_runs() -> (Verdict, String) {
    will_not_fire(
        Cause::NoRuns,
        Vec::new(),
        Vec::new(),
        "the group holds no run".into(),
    )
}

/// No run passes the rule's filters; `filters` drop them.
pub(super) fn filtered(filters: Vec<&'static str>) -> (Verdict, String) {
    let names: Vec<String> = filters.iter().map(|f| format!("`{f}`")).collect();
    let words = format!(
        "filtered out by {}: no run of the group passes the rule's filters",
        names.join(" and ")
    );
    will_not_fire(Cause::FilteredOut, filters, Vec::new(), words)
}
