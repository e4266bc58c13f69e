-- Purge, trigger budgets: up to $2 rows whose triggers all left their window more than $1
-- seconds ago (or empty rows created as long ago), oldest first (index
-- `trigger_budgets_expires_at`). Such a row counts nothing: deleting it changes no decision.
DELETE FROM trigger_budgets WHERE (repository_id, rule, pr_number) IN (
    SELECT repository_id, rule, pr_number FROM trigger_budgets
    WHERE expires_at < now() - make_interval(secs => $1)
    ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
