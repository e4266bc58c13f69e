//! Trigger budget rows (`trigger_budgets`, docs/design.md "Budgets"): loaded and locked
//! after the groups, streaks and cooldowns of a decision, in key order, written back when
//! the engine changed them. Only rules with `max_triggers_per_*` name any row.

use std::collections::BTreeSet;

use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use tracing::{error, warn};

use super::lenient::Lenient;
use super::{Store, StoreError};
use crate::engine::{BudgetKey, BudgetState, Engine, Ledger, OverBudget};

impl Store {
    /// Registers `runwatch_triggers_over_budget_total` at zero for every rule with a
    /// budget, so a dashboard sees 0 rather than no series. A no-op without a recorder.
    pub fn register_budget_metrics(&self) {
        for rule in self
            .engine
            .rules()
            .rules()
            .iter()
            .filter(|r| r.has_budget())
        {
            metrics::counter!("runwatch_triggers_over_budget_total", "rule" => rule.name.clone())
                .increment(0);
        }
    }
}

/// Attempts at locking a budget row that the purge deletes meanwhile (it only deletes rows
/// that count nothing, so the row inserted again is the same).
const LOCK_ATTEMPTS: usize = 3;

/// Inserts the absent rows of `keys`, locks them all in key order and puts their states in
/// `ledger` (one round trip, unless the purge raced it).
pub(super) async fn lock_budgets(
    tx: &mut Transaction<'static, Postgres>,
    keys: &BTreeSet<BudgetKey>,
    ledger: &mut Ledger,
) -> Result<(), StoreError> {
    let mut missing: BTreeSet<BudgetKey> = keys.clone();
    for _ in 0..LOCK_ATTEMPTS {
        if missing.is_empty() {
            return Ok(());
        }
        let (mut r, mut ru, mut p) = (Vec::new(), Vec::new(), Vec::new());
        for k in &missing {
            r.push(k.repository_id);
            ru.push(k.rule.clone());
            p.push(i64::try_from(k.pr_number).unwrap_or(i64::MAX));
        }
        // A function's result columns carry no NOT NULL: "!" says what the code always
        // assumed (a NULL key is an error, a NULL state a row that does not decode).
        let rows = sqlx::query!(
            r#"SELECT repository_id AS "repository_id!", rule AS "rule!", pr_number AS "pr_number!",
                      state AS "state!: Lenient<BudgetState>"
               FROM runwatch_lock_budgets($1, $2, $3)"#,
            &r,
            &ru,
            &p
        )
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let key = BudgetKey {
                repository_id: row.repository_id,
                rule: row.rule,
                pr_number: u64::try_from(row.pr_number).unwrap_or(0),
            };
            let state = match row.state.0 {
                Ok(s) => s,
                Err(source) => {
                    // A budget row is a bounded record of recent triggers: one that cannot
                    // be read counts nothing and is overwritten by the next trigger.
                    metrics::counter!("runwatch_corrupt_rows_total", "op" => "record").increment(1);
                    error!(repository = key.repository_id, rule = %key.rule, pr = key.pr_number,
                        detail = %source, "trigger budget row cannot be decoded: counted as empty");
                    BudgetState::default()
                }
            };
            missing.remove(&key);
            ledger.budgets.insert(key, state);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Db(sqlx::Error::RowNotFound))
    }
}

/// Writes the budget rows the engine changed, with their expiry.
pub(super) async fn write_budgets(
    tx: &mut Transaction<'static, Postgres>,
    engine: &Engine,
    before: &Ledger,
    after: &Ledger,
) -> Result<(), StoreError> {
    let (mut r, mut ru, mut p, mut st, mut exp) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, s) in &after.budgets {
        if before.budgets.get(k) == Some(s) {
            continue;
        }
        let window = engine
            .rules()
            .rules()
            .iter()
            .find(|rule| rule.name == k.rule)
            .map(|rule| rule.budget_window)
            .unwrap_or_default();
        r.push(k.repository_id);
        ru.push(k.rule.clone());
        p.push(i64::try_from(k.pr_number).unwrap_or(i64::MAX));
        st.push(Json(s));
        exp.push(s.expires_at(window));
    }
    if r.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE trigger_budgets b SET state = u.st, expires_at = COALESCE(u.e, now())
         FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::jsonb[], $5::timestamptz[])
              AS u(r, ru, p, st, e)
         WHERE b.repository_id = u.r AND b.rule = u.ru AND b.pr_number = u.p",
        &r,
        &ru,
        &p,
        &st as _,
        &exp as _
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A decision over budget taken by a committed transaction.
#[derive(Debug, Clone)]
pub(super) struct OverBudgetNote {
    pub rule: String,
    pub group_id: i64,
    pub repository: String,
    pub pr_number: Option<u64>,
    pub commit_sha: String,
    pub over: OverBudget,
}

/// Counts and logs the decisions over budget, once each (after the commit, so a retried
/// transaction does not count twice).
pub(super) fn report_over_budget(notes: &[OverBudgetNote]) {
    for n in notes {
        metrics::counter!("runwatch_triggers_over_budget_total", "rule" => n.rule.clone())
            .increment(1);
        warn!(
            rule = %n.rule,
            group = n.group_id,
            repository = %n.repository,
            pr = n.pr_number.map_or_else(|| "-".to_string(), |p| p.to_string()),
            commit = %n.commit_sha,
            budget = n.over.scope.as_str(),
            used = n.over.used,
            limit = n.over.limit,
            window = %crate::engine::budget::window_words(n.over.window_seconds),
            "over budget: trigger decided and not published"
        );
    }
}

/// The decisions over budget a transaction took: rules whose `over_budget` is set now and
/// was not before.
pub(super) fn new_over_budget(
    group_id: i64,
    repo: &crate::engine::RepoRef,
    pr_number: Option<u64>,
    commit_sha: &str,
    before: &crate::engine::GroupState,
    after: &crate::engine::GroupState,
) -> Vec<OverBudgetNote> {
    after
        .rules
        .iter()
        .filter_map(|(rule, st)| {
            let over = st.over_budget.as_ref()?;
            let was = before.rules.get(rule).and_then(|b| b.over_budget.as_ref());
            (was != Some(over)).then(|| OverBudgetNote {
                rule: rule.clone(),
                group_id,
                repository: format!("{}/{}", repo.owner, repo.name),
                pr_number,
                commit_sha: commit_sha.to_string(),
                over: over.clone(),
            })
        })
        .collect()
}
