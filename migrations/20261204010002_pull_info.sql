-- What a pull request is, as runwatch knows it (docs/design.md "The pull request in the
-- trigger"): title, author (login, bot or not), head and base branches, page, as of the
-- newest `runwatch.pull_request.v1` message that carried any of them (`info_at`, ties
-- ordered by the fields as bytes, an absent one as ''). Kept next to the head and the state,
-- one row per pull request; NULL until a message carries them. The decoder bounds every
-- value (the string limit). Nullable columns without a default: adding them rewrites
-- nothing.
ALTER TABLE pull_heads
    ADD COLUMN pr_title TEXT,
    ADD COLUMN pr_author TEXT,
    ADD COLUMN pr_author_bot BOOLEAN,
    ADD COLUMN pr_head_branch TEXT,
    ADD COLUMN pr_base_branch TEXT,
    ADD COLUMN pr_url TEXT,
    ADD COLUMN info_at TIMESTAMPTZ;

-- runwatch_lock_groups_pulls (migrations/20261203230001) returning the pull request's info
-- too: still one call for the groups' rows and their pull requests. Its return type
-- changes, so it is dropped and created again.
DROP FUNCTION runwatch_lock_groups_pulls(BIGINT[], BIGINT[], TEXT[]);

CREATE FUNCTION runwatch_lock_groups_pulls(_r BIGINT[], _p BIGINT[], _s TEXT[])
RETURNS TABLE (id BIGINT, repository_id BIGINT, pr_number BIGINT, commit_sha TEXT,
               branch TEXT, state JSONB, head_sha TEXT, head_at TIMESTAMPTZ,
               pr_state TEXT, pr_draft BOOLEAN, state_at TIMESTAMPTZ,
               pr_title TEXT, pr_author TEXT, pr_author_bot BOOLEAN, pr_head_branch TEXT,
               pr_base_branch TEXT, pr_url TEXT, info_at TIMESTAMPTZ)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    INSERT INTO groups (repository_id, pr_number, commit_sha)
    SELECT k.r, NULLIF(k.p, 0), k.s FROM UNNEST(_r, _p, _s) AS k(r, p, s)
    ON CONFLICT DO NOTHING;
    RETURN QUERY
    SELECT g.id, g.repository_id, g.pr_number, g.commit_sha, g.branch, g.state,
           h.head_sha, h.head_at, h.pr_state, h.pr_draft, h.state_at,
           h.pr_title, h.pr_author, h.pr_author_bot, h.pr_head_branch, h.pr_base_branch,
           h.pr_url, h.info_at
    FROM groups g
    JOIN UNNEST(_r, _p, _s) AS k(r, p, s)
      ON g.repository_id = k.r AND COALESCE(g.pr_number, 0) = k.p AND g.commit_sha = k.s
    LEFT JOIN pull_heads h ON h.repository_id = g.repository_id AND h.pr_number = g.pr_number
    ORDER BY g.repository_id, COALESCE(g.pr_number, 0), g.commit_sha COLLATE "C"
    FOR UPDATE OF g;
END;
$$;
