-- The pull request's state as runwatch knows it (docs/design.md "The pull request's
-- state"): open, closed or merged, draft or not, as of the newest `runwatch.pull_request.v1`
-- message that carried one (`state_at`, ties ordered merged > closed > open, then draft).
-- Kept next to the head, one row per pull request; NULL until a message carries a state.
-- Nullable columns without a default: adding them rewrites nothing.
ALTER TABLE pull_heads
    ADD COLUMN pr_state TEXT CHECK (pr_state IN ('open', 'closed', 'merged')),
    ADD COLUMN pr_draft BOOLEAN,
    ADD COLUMN state_at TIMESTAMPTZ;

-- runwatch_lock_groups (migrations/20261126000002) and the pull request of each group in
-- the same call: the groups' rows with their pull request's head and state (a primary-key
-- lookup in pull_heads per group with a pull request), so the decision reads the state
-- without a round trip of its own.
CREATE FUNCTION runwatch_lock_groups_pulls(_r BIGINT[], _p BIGINT[], _s TEXT[])
RETURNS TABLE (id BIGINT, repository_id BIGINT, pr_number BIGINT, commit_sha TEXT,
               branch TEXT, state JSONB, head_sha TEXT, head_at TIMESTAMPTZ,
               pr_state TEXT, pr_draft BOOLEAN, state_at TIMESTAMPTZ)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    INSERT INTO groups (repository_id, pr_number, commit_sha)
    SELECT k.r, NULLIF(k.p, 0), k.s FROM UNNEST(_r, _p, _s) AS k(r, p, s)
    ON CONFLICT DO NOTHING;
    RETURN QUERY
    SELECT g.id, g.repository_id, g.pr_number, g.commit_sha, g.branch, g.state,
           h.head_sha, h.head_at, h.pr_state, h.pr_draft, h.state_at
    FROM groups g
    JOIN UNNEST(_r, _p, _s) AS k(r, p, s)
      ON g.repository_id = k.r AND COALESCE(g.pr_number, 0) = k.p AND g.commit_sha = k.s
    LEFT JOIN pull_heads h ON h.repository_id = g.repository_id AND h.pr_number = g.pr_number
    ORDER BY g.repository_id, COALESCE(g.pr_number, 0), g.commit_sha COLLATE "C"
    FOR UPDATE OF g;
END;
$$;
