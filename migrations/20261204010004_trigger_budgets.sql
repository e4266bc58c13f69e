-- Trigger budgets (docs/design.md "Budgets"): per (repository, rule, pull request), and per
-- (repository, rule) with pr_number = 0, the triggers a rule with `max_triggers_per_*`
-- published within its window: `state` is the engine's BudgetState (at most the limit of
-- entries, each a time and a trigger id). Rows are locked FOR UPDATE after the groups,
-- streaks and cooldowns, in key order, so replicas never publish past a budget.
-- `expires_at`: when nothing in the row counts any more (its newest trigger plus the
-- window; the row's creation while it is empty); the purge deletes rows expired for
-- `purge.older_than`.
CREATE TABLE trigger_budgets (
    repository_id BIGINT NOT NULL REFERENCES repositories (id),
    rule          TEXT NOT NULL,
    pr_number     BIGINT NOT NULL CHECK (pr_number >= 0),
    state         JSONB NOT NULL DEFAULT '{"fired": []}',
    expires_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, rule, pr_number)
);
CREATE INDEX trigger_budgets_expires_at ON trigger_budgets (expires_at);

-- Inserts the absent budget rows, then locks all of them in key order and returns them
-- (one round trip). A row deleted by the purge between the two statements is missing from
-- the result: the caller asks again for it.
CREATE FUNCTION runwatch_lock_budgets(_r BIGINT[], _ru TEXT[], _p BIGINT[])
RETURNS TABLE (repository_id BIGINT, rule TEXT, pr_number BIGINT, state JSONB)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    INSERT INTO trigger_budgets (repository_id, rule, pr_number)
    SELECT k.r, k.ru, k.p FROM UNNEST(_r, _ru, _p) AS k(r, ru, p)
    ON CONFLICT DO NOTHING;
    RETURN QUERY
    SELECT b.repository_id, b.rule, b.pr_number, b.state
    FROM trigger_budgets b
    JOIN UNNEST(_r, _ru, _p) AS k(r, ru, p)
      ON b.repository_id = k.r AND b.rule = k.ru AND b.pr_number = k.p
    ORDER BY b.repository_id, b.rule COLLATE "C", b.pr_number
    FOR UPDATE OF b;
END;
$$;
