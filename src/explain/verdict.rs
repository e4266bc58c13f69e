//! The verdict of every rule on one group, from stored state only (pure, no I/O).
//!
//! `all_completed_with_failure` is judged as the engine judges it (`engine::Engine`), in
//! this order: decided over a trigger budget in the current episode (as the engine recorded
//! it: which budget, used of limit, window); fired in the current episode; repository filtered out; a timer pending
//! (settle, or a cooldown's end); no run left by the filters; no pull request while the
//! rule requires one; the pull request moved past the commit (`only_head_commit`); the pull
//! request is closed or merged (`only_open`) or a draft (`skip_draft`), as the engine's
//! `Rule::pull_block` says; a group without a pull request whose commit belongs to one;
//! runs not completed; no failing run; every failed workflow known flaky (`skip_flaky`, as
//! the engine's `Rule::flaky_skip` says, counting flips up to the group's newest run's
//! `updated_at`, the event clock of its last decision at the earliest). What is left (the
//! condition holds, nothing fired, no timer) is a state the rule has not judged yet, e.g. a
//! rule added since the group's last event.
//!
//! `repeated_failure` fires from the group whose event completes a streak; its verdict is
//! fired (a trigger of this group), filtered out, waiting (none of the group's runs has
//! completed), or the state of the streaks the group's completed runs belong to.
//!
//! A pending timer does not say whether `settle` or a cooldown set it: with only one of the
//! two configured it is that one; with both, it is the cooldown when the timer is due
//! exactly when the repository's cooldown ends (within a millisecond), else settle.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::engine::{
    AuthorBlock, BudgetScope, Due, Flips, GroupState, PullBlock, RepoRef, Rule, RuleKind, RuleSet,
    RunState, StreakKey, StreakState,
};
use crate::event::{Conclusion, Provider, Status};
use crate::trigger::{KnownFlaky, Trigger, trigger_id};

/// One group as stored.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub id: i64,
    pub repo: RepoRef,
    pub pr_number: Option<u64>,
    pub commit_sha: String,
    pub branch: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub state: GroupState,
}

/// One outbox row; `trigger` is `None` when the payload does not decode as a trigger.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub trigger_id: Uuid,
    pub group_id: Option<i64>,
    pub trigger: Option<Trigger>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub set_aside_at: Option<DateTime<Utc>>,
    pub set_aside_reason: Option<String>,
}

/// The state shared by groups that the verdicts read: the streaks of the group's runs and
/// when each rule last fired for the group's repository (cooldowns), by rule name; the
/// flips of the group's workflows in its repository, by workflow.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    pub streaks: BTreeMap<StreakKey, StreakState>,
    pub cooldowns: BTreeMap<String, DateTime<Utc>>,
    pub flips: BTreeMap<String, Flips>,
}

/// Everything `explain` says about one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The database's clock when the explanation was read.
    pub explained_at: DateTime<Utc>,
    pub group: GroupInfo,
    /// The merged runs, by run id.
    pub runs: Vec<RunInfo>,
    /// One verdict per configured rule, in configuration order.
    pub rules: Vec<RuleExplanation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    pub id: i64,
    pub provider: Provider,
    /// `owner/name`, the latest spelling seen.
    pub repository: String,
    pub repository_id: i64,
    pub pr_number: Option<u64>,
    pub commit_sha: String,
    pub branch: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// The earliest pending timer, if any.
    pub next_due: Option<Due>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub workflow: String,
    pub attempt: u32,
    pub status: Status,
    pub conclusion: Option<Conclusion>,
    pub updated_at: DateTime<Utc>,
    pub url: Option<String>,
    /// The run's known jobs of its attempt (docs/design.md "Jobs and steps"), by id; filled
    /// by the query, not judged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobInfo>,
}

/// A known job of a run, as `explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobInfo {
    pub job_id: String,
    pub name: String,
    pub status: Status,
    pub conclusion: Option<Conclusion>,
    /// The failed steps' names.
    pub failed_steps: Vec<String>,
}

/// One rule's verdict: `verdict` names the kind, `reason` says it in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleExplanation {
    pub rule: String,
    pub kind: &'static str,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The rule fired for the group (in its current episode, for `all_completed_with_failure`).
    Fired { triggers: Vec<FiredTrigger> },
    /// Runs the rule considers have not completed.
    Waiting { runs: Vec<PendingRun> },
    /// The rule decided to fire in its current episode, but the trigger would have exceeded
    /// a budget (`max_triggers_per_*`): recorded, not published.
    OverBudget {
        budget: BudgetScope,
        used: u32,
        limit: u32,
        window_seconds: u64,
        at: DateTime<Utc>,
    },
    /// The condition held; the settle timer judges it again when due.
    SettleDue { due: Due },
    /// The condition held during the repository's cooldown; judged again when it ends.
    Cooldown { until: DateTime<Utc>, due: Due },
    /// Nothing in the group as it stands makes the rule fire.
    WillNotFire {
        cause: Cause,
        /// For `filtered_out`: the filters that leave nothing.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        filters: Vec<&'static str>,
        /// For `streak`: the streaks the group's completed runs belong to.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        streaks: Vec<StreakInfo>,
        /// For `known_flaky`: the failed workflows and their flips.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        known_flaky: Vec<KnownFlaky>,
    },
    /// The condition holds but the rule has not judged this state.
    NotJudged,
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Fired { .. } => "fired",
            Verdict::OverBudget { .. } => "over_budget",
            Verdict::Waiting { .. } => "waiting",
            Verdict::SettleDue { .. } => "settle_due",
            Verdict::Cooldown { .. } => "cooldown",
            Verdict::WillNotFire { .. } => "will_not_fire",
            Verdict::NotJudged => "not_judged",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    NoPullRequest,
    NoFailure,
    FilteredOut,
    NoRuns,
    /// `only_head_commit`: the pull request has moved past the group's commit.
    NotHead,
    /// `only_open`: the pull request is closed without merging.
    Closed,
    /// `only_open`: the pull request is merged.
    Merged,
    /// `skip_draft`: the pull request is a draft.
    Draft,
    /// `authors`: the pull request's author is not known yet.
    AuthorUnknown,
    /// `authors` / `exclude_authors`: the author is not one the rule fires for.
    Author,
    /// `skip_bots`: the author is a bot.
    Bot,
    /// A group without a pull request whose commit belongs to one: its runs are judged in
    /// the pull request's group (`require_pr = false`).
    InPullRequest,
    Streak,
    /// `skip_flaky`: every failed workflow is known flaky.
    KnownFlaky,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingRun {
    pub run_id: String,
    pub workflow: String,
    pub status: Status,
}

/// Where a trigger is on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Published (its PubAck arrived).
    Sent,
    /// In the outbox, not published yet: the relay publishes it.
    Unsent,
    /// In the outbox, set aside (its payload cannot be published).
    SetAside,
    /// Not in the outbox any more (purged).
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FiredTrigger {
    pub trigger_id: Uuid,
    /// `all_completed_with_failure`: the episode; `repeated_failure`: absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episode: Option<u32>,
    /// `repeated_failure`: the streak's branch and workflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The trigger's `fired_at` (the outbox row's creation when the payload is unreadable;
    /// absent when the row is gone).
    pub fired_at: Option<DateTime<Utc>>,
    pub delivery: Delivery,
    pub sent_at: Option<DateTime<Utc>>,
    /// Relay claims of the row (the deciding worker's own publish is not counted).
    pub attempts: Option<i32>,
    pub last_error: Option<String>,
    pub set_aside_reason: Option<String>,
}

/// A `repeated_failure` streak (repository, rule, branch, workflow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreakInfo {
    pub branch: String,
    pub workflow: String,
    pub threshold: u32,
    /// The newest completed runs that failed, counted back to the first that did not.
    pub failures_in_a_row: u32,
    /// The streak reached the threshold and has fired (or was suppressed by a cooldown).
    pub fired: bool,
    /// For a fired streak: its trigger id, and whether that trigger is in the outbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_in_outbox: Option<bool>,
}

/// A time as the text form shows it (UTC, seconds).
pub fn show_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn status_str(s: Status) -> &'static str {
    match s {
        Status::Queued => "queued",
        Status::InProgress => "in_progress",
        Status::Completed => "completed",
    }
}

fn pr_part(pr: Option<u64>) -> String {
    pr.map_or_else(|| "-".to_string(), |p| p.to_string())
}

/// The trigger id `all_completed_with_failure` gives the group in `episode` (as the engine).
pub fn group_trigger_id(rule: &Rule, g: &GroupView, episode: u32) -> Uuid {
    trigger_id(&[
        rule.kind.as_str(),
        &rule.name,
        &g.repo.stable_key,
        &pr_part(g.pr_number),
        &g.commit_sha,
        &episode.to_string(),
    ])
}

/// The trigger id of a `repeated_failure` streak in `state` (as the engine).
pub fn streak_trigger_id(
    rule: &Rule,
    repo: &RepoRef,
    key: &StreakKey,
    state: &StreakState,
) -> Uuid {
    trigger_id(&[
        rule.kind.as_str(),
        &rule.name,
        &repo.stable_key,
        &key.branch,
        &key.workflow,
        &state.streak_id(),
    ])
}

fn relevant<'a>(rule: &Rule, g: &'a GroupView) -> Vec<(&'a String, &'a RunState)> {
    g.state
        .runs
        .iter()
        .filter(|(_, r)| rule.matches_run(&r.workflow, r.branch.as_deref()))
        .collect()
}

/// The streaks of the group's completed runs that `repeated_failure` rules count.
pub fn streak_keys(g: &GroupView, rules: &RuleSet) -> Vec<StreakKey> {
    rules
        .rules()
        .iter()
        .flat_map(|r| rule_streak_keys(r, g))
        .collect()
}

/// The streaks of the group's completed runs that `rule` counts (none for another kind).
fn rule_streak_keys(rule: &Rule, g: &GroupView) -> Vec<StreakKey> {
    if rule.kind != RuleKind::RepeatedFailure
        || !rule.matches_repository(&g.repo.owner, &g.repo.name)
    {
        return Vec::new();
    }
    let keys: BTreeSet<StreakKey> = relevant(rule, g)
        .into_iter()
        .filter(|(_, r)| r.status == Status::Completed)
        .map(|(_, r)| StreakKey {
            repository_id: g.repo.internal_id,
            rule: rule.name.clone(),
            branch: r.branch.clone().unwrap_or_default(),
            workflow: r.workflow.clone(),
        })
        .collect();
    keys.into_iter().collect()
}

/// The trigger ids whose outbox rows the verdicts look up besides the group's own rows:
/// the current episode of every rule that fired, and every fired streak.
pub fn trigger_ids_to_load(g: &GroupView, rules: &RuleSet, shared: &Shared) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for rule in rules.rules() {
        match rule.kind {
            RuleKind::AllCompletedWithFailure => {
                if let Some(st) = g
                    .state
                    .rules
                    .get(&rule.name)
                    .filter(|s| s.fired && s.over_budget.is_none())
                {
                    ids.push(group_trigger_id(rule, g, st.episode));
                }
            }
            RuleKind::RepeatedFailure => {
                for key in &rule_streak_keys(rule, g) {
                    if let Some(s) = shared
                        .streaks
                        .get(key)
                        .filter(|s| streak_fired(s, rule.threshold))
                    {
                        ids.push(streak_trigger_id(rule, &g.repo, key, s));
                    }
                }
            }
        }
    }
    ids
}

/// Whether the streak's window is a full run of failures that has already fired.
fn streak_fired(s: &StreakState, threshold: u32) -> bool {
    let t = threshold as usize;
    s.window.len() >= t && s.window.iter().all(|r| r.failed) && !s.should_fire(t)
}

/// Explains every rule on the group. `outbox` holds the group's rows and those named by
/// [`trigger_ids_to_load`]; `now` is the database's clock.
pub fn explain(
    g: &GroupView,
    rules: &RuleSet,
    outbox: &[OutboxRow],
    shared: &Shared,
    now: DateTime<Utc>,
) -> Explanation {
    let runs = g
        .state
        .runs
        .iter()
        .map(|(id, r)| RunInfo {
            run_id: id.clone(),
            workflow: r.workflow.clone(),
            attempt: r.attempt,
            status: r.status,
            conclusion: r.conclusion,
            updated_at: r.updated_at,
            url: r.url.clone(),
            jobs: Vec::new(),
        })
        .collect();
    let rules = rules
        .rules()
        .iter()
        .map(|rule| {
            let (verdict, reason) = match rule.kind {
                RuleKind::AllCompletedWithFailure => {
                    let (verdict, mut reason) = judge_group(rule, g, outbox, shared);
                    if let Some(st) = g
                        .state
                        .rules
                        .get(&rule.name)
                        .filter(|s| !s.fired && s.episode > 0)
                    {
                        reason.push_str(&format!(
                            " (episode {}: a re-run after the trigger of episode {} opened it)",
                            st.episode,
                            st.episode.saturating_sub(1)
                        ));
                    }
                    (verdict, reason)
                }
                RuleKind::RepeatedFailure => judge_streaks(rule, g, outbox, shared),
            };
            RuleExplanation {
                rule: rule.name.clone(),
                kind: rule.kind.as_str(),
                verdict,
                reason,
            }
        })
        .collect();
    Explanation {
        explained_at: now,
        group: GroupInfo {
            id: g.id,
            provider: g.repo.provider,
            repository: format!("{}/{}", g.repo.owner, g.repo.name),
            repository_id: g.repo.internal_id,
            pr_number: g.pr_number,
            commit_sha: g.commit_sha.clone(),
            branch: g.branch.clone(),
            updated_at: g.updated_at,
            next_due: g.state.next_due(),
        },
        runs,
        rules,
    }
}

fn fired_trigger(id: Uuid, outbox: &[OutboxRow]) -> FiredTrigger {
    let row = outbox.iter().find(|r| r.trigger_id == id);
    let trigger = row.and_then(|r| r.trigger.as_ref());
    FiredTrigger {
        trigger_id: id,
        episode: None,
        branch: None,
        workflow: None,
        fired_at: row.map(|r| trigger.map_or(r.created_at, |t| t.fired_at)),
        delivery: match row {
            None => Delivery::Missing,
            Some(r) if r.sent_at.is_some() => Delivery::Sent,
            Some(r) if r.set_aside_at.is_some() => Delivery::SetAside,
            Some(_) => Delivery::Unsent,
        },
        sent_at: row.and_then(|r| r.sent_at),
        attempts: row.map(|r| r.attempts),
        last_error: row.and_then(|r| r.last_error.clone()),
        set_aside_reason: row.and_then(|r| r.set_aside_reason.clone()),
    }
}

/// "trigger ID, published at T" and the other delivery states, in words.
fn delivery_words(t: &FiredTrigger) -> String {
    let id = t.trigger_id;
    match t.delivery {
        Delivery::Sent => match t.sent_at {
            Some(at) => format!("trigger {id}, published at {}", show_time(at)),
            None => format!("trigger {id}, published"),
        },
        Delivery::Unsent => {
            let mut s = format!(
                "trigger {id}, still in the outbox, not published yet (relay attempts: {})",
                t.attempts.unwrap_or(0)
            );
            if let Some(e) = &t.last_error {
                s.push_str(&format!("; last error: {e}"));
            }
            s
        }
        Delivery::SetAside => format!(
            "trigger {id}, set aside in the outbox and not published: {}",
            t.set_aside_reason
                .as_deref()
                .unwrap_or("no reason recorded")
        ),
        Delivery::Missing => format!("trigger {id}, no longer in the outbox (purged)"),
    }
}

fn at_words(t: &FiredTrigger) -> String {
    t.fired_at
        .map_or_else(String::new, |at| format!(" at {}", show_time(at)))
}

fn waiting(runs: &[(&String, &RunState)]) -> (Verdict, String) {
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

fn will_not_fire(
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

/// Why no run is left: the filters that drop the group's runs (workflow first).
fn dropping_filters(rule: &Rule, g: &GroupView) -> Vec<&'static str> {
    let mut out = BTreeSet::new();
    for r in g.state.runs.values() {
        if !rule.workflows.matches(&r.workflow) {
            out.insert("workflows");
        } else if !rule.branches.matches(r.branch.as_deref().unwrap_or("")) {
            out.insert("branches");
        }
    }
    let mut v: Vec<&'static str> = out.into_iter().collect();
    v.sort_by_key(|f| if *f == "workflows" { 0 } else { 1 });
    v
}

fn filtered_out(rule: &Rule, g: &GroupView) -> Option<(Verdict, String)> {
    if !rule.matches_repository(&g.repo.owner, &g.repo.name) {
        return Some(will_not_fire(
            Cause::FilteredOut,
            vec!["repositories"],
            Vec::new(),
            format!(
                "filtered out by `repositories`: {}/{} does not match",
                g.repo.owner, g.repo.name
            ),
        ));
    }
    None
}

fn no_run_left(rule: &Rule, g: &GroupView) -> (Verdict, String) {
    if g.state.runs.is_empty() {
        return will_not_fire(
            Cause::NoRuns,
            Vec::new(),
            Vec::new(),
            "the group holds no run".into(),
        );
    }
    let filters = dropping_filters(rule, g);
    let names: Vec<String> = filters.iter().map(|f| format!("`{f}`")).collect();
    let words = format!(
        "filtered out by {}: no run of the group passes the rule's filters",
        names.join(" and ")
    );
    will_not_fire(Cause::FilteredOut, filters, Vec::new(), words)
}

fn judge_group(
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
        let mut t = fired_trigger(group_trigger_id(rule, g, st.episode), outbox);
        t.episode = Some(st.episode);
        let words = format!(
            "fired in episode {}{}: {}",
            st.episode,
            at_words(&t),
            delivery_words(&t)
        );
        return (Verdict::Fired { triggers: vec![t] }, words);
    }
    if let Some(v) = filtered_out(rule, g) {
        return v;
    }
    if let Some(due) = st.due {
        let cooldown_end = shared.cooldowns.get(&rule.name).and_then(|last| {
            chrono::Duration::from_std(rule.cooldown)
                .ok()
                .and_then(|c| last.checked_add_signed(c))
        });
        let is_cooldown = !rule.cooldown.is_zero()
            && (rule.settle.is_zero()
                || cooldown_end.is_some_and(|end| {
                    (end - due.wall)
                        .num_microseconds()
                        .is_some_and(|us| us.abs() < 1000)
                }));
        return if is_cooldown {
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
        };
    }
    let runs = relevant(rule, g);
    if runs.is_empty() {
        return no_run_left(rule, g);
    }
    if rule.require_pr && g.pr_number.is_none() {
        return will_not_fire(
            Cause::NoPullRequest,
            Vec::new(),
            Vec::new(),
            "no pull request (a push build; the rule has require_pr = true)".into(),
        );
    }
    if let Some(head) = g.state.pr_head.as_deref()
        && rule.only_head_commit
        && head != g.commit_sha
    {
        return will_not_fire(
            Cause::NotHead,
            Vec::new(),
            Vec::new(),
            format!(
                "the pull request has moved past this commit (its head is {head}; the rule has only_head_commit = true)"
            ),
        );
    }
    if g.pr_number.is_none() && g.state.commit_in_pull {
        return will_not_fire(
            Cause::InPullRequest,
            Vec::new(),
            Vec::new(),
            "the commit belongs to a pull request: its runs are judged in the pull request's group"
                .into(),
        );
    }
    if g.pr_number.is_some()
        && let Some(block) = rule.pull_block(g.state.pr_status.as_ref())
    {
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
        return will_not_fire(
            cause,
            Vec::new(),
            Vec::new(),
            format!("{}{at}", block.words()),
        );
    }
    if let Some(block) = rule.author_block(g.state.pr_info.as_ref()) {
        let cause = match block {
            AuthorBlock::Unknown => Cause::AuthorUnknown,
            AuthorBlock::NotListed(_) | AuthorBlock::Excluded(_) => Cause::Author,
            AuthorBlock::Bot(_) => Cause::Bot,
        };
        return will_not_fire(cause, Vec::new(), Vec::new(), block.words());
    }
    if runs.iter().any(|(_, r)| r.status != Status::Completed) {
        return waiting(&runs);
    }
    if !runs.iter().any(|(_, r)| rule.is_failure(r.conclusion)) {
        let mut conclusions: Vec<&str> = rule
            .failure_conclusions
            .iter()
            .map(|c| c.as_str())
            .collect();
        conclusions.sort_unstable();
        return will_not_fire(
            Cause::NoFailure,
            Vec::new(),
            Vec::new(),
            format!(
                "every run completed and none failed (failure conclusions: {})",
                conclusions.join(", ")
            ),
        );
    }
    let mut failed: Vec<String> = runs
        .iter()
        .filter(|(_, r)| rule.is_failure(r.conclusion))
        .map(|(_, r)| r.workflow.clone())
        .collect();
    failed.sort();
    failed.dedup();
    let at = runs
        .iter()
        .map(|(_, r)| r.updated_at)
        .max()
        .unwrap_or(g.updated_at);
    let known = rule.known_flaky(&failed, |w| shared.flips.get(w), at);
    if let Some(skip) = rule.flaky_skip(&failed, &known) {
        return (
            Verdict::WillNotFire {
                cause: Cause::KnownFlaky,
                filters: Vec::new(),
                streaks: Vec::new(),
                known_flaky: skip.known.clone(),
            },
            format!("will not fire: {}", skip.words()),
        );
    }
    (
        Verdict::NotJudged,
        "not judged yet: the condition holds, but the rule has not evaluated this state (was the rule added or changed since the group's last event?); the group's next event decides".into(),
    )
}

fn branch_words(branch: &str) -> String {
    if branch.is_empty() {
        "with no branch".to_string()
    } else {
        format!("on `{branch}`")
    }
}

fn judge_streaks(
    rule: &Rule,
    g: &GroupView,
    outbox: &[OutboxRow],
    shared: &Shared,
) -> (Verdict, String) {
    let mine: Vec<FiredTrigger> = outbox
        .iter()
        .filter(|r| r.group_id == Some(g.id))
        .filter_map(|r| {
            r.trigger
                .as_ref()
                .filter(|t| t.rule_name == rule.name)
                .map(|t| (r, t))
        })
        .map(|(r, t)| {
            let mut f = fired_trigger(r.trigger_id, outbox);
            f.branch = Some(t.branch.clone().unwrap_or_default());
            f.workflow = t.workflow.clone();
            f
        })
        .collect();
    if !mine.is_empty() {
        let words: Vec<String> = mine
            .iter()
            .map(|t| {
                format!(
                    "fired{} for the streak of `{}` {}: {}",
                    at_words(t),
                    t.workflow.as_deref().unwrap_or(""),
                    branch_words(t.branch.as_deref().unwrap_or("")),
                    delivery_words(t)
                )
            })
            .collect();
        return (Verdict::Fired { triggers: mine }, words.join("; "));
    }
    if let Some(v) = filtered_out(rule, g) {
        return v;
    }
    let runs = relevant(rule, g);
    if runs.is_empty() {
        return no_run_left(rule, g);
    }
    if runs.iter().all(|(_, r)| r.status != Status::Completed) {
        return waiting(&runs);
    }
    let mut infos = Vec::new();
    let mut words = Vec::new();
    for key in rule_streak_keys(rule, g) {
        let state = shared.streaks.get(&key).cloned().unwrap_or_default();
        let in_a_row = state.window.iter().rev().take_while(|r| r.failed).count();
        let fired = streak_fired(&state, rule.threshold);
        let (trigger, in_outbox) = if fired {
            let id = streak_trigger_id(rule, &g.repo, &key, &state);
            (Some(id), Some(outbox.iter().any(|r| r.trigger_id == id)))
        } else {
            (None, None)
        };
        let what = format!(
            "the streak of `{}` {}",
            key.workflow,
            branch_words(&key.branch)
        );
        words.push(match (trigger, in_outbox) {
            (Some(id), Some(true)) => format!("{what} already fired (trigger {id}, from another group)"),
            (Some(id), _) => format!(
                "{what} already fired, but trigger {id} is not in the outbox (the streak ended during a cooldown, or the trigger was purged)"
            ),
            _ => format!(
                "{what} has {in_a_row} failure{} in a row, {} needed",
                if in_a_row == 1 { "" } else { "s" },
                rule.threshold
            ),
        });
        infos.push(StreakInfo {
            branch: key.branch.clone(),
            workflow: key.workflow.clone(),
            threshold: rule.threshold,
            failures_in_a_row: u32::try_from(in_a_row).unwrap_or(u32::MAX),
            fired,
            trigger_id: trigger,
            trigger_in_outbox: in_outbox,
        });
    }
    will_not_fire(Cause::Streak, Vec::new(), infos, words.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EpisodeState, StreakRun};

    const T0: &str = "2026-03-01T10:00:00Z";

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn rules(toml: &str) -> RuleSet {
        RuleSet::from_toml(toml).unwrap()
    }

    fn run(
        workflow: &str,
        status: Status,
        conclusion: Option<Conclusion>,
        branch: &str,
    ) -> RunState {
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
        let id = group_trigger_id(&set.rules()[0], &g, 0);
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
        let set =
            rules("[[rules]]\nkind = \"repeated_failure\"\nthreshold = 2\ncooldown = \"1h\"\n");
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
        let id = streak_trigger_id(&set.rules()[0], &g.repo, &key, &streak);
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
}
