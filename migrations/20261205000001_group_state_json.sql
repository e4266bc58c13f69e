-- A group's state is stored as `json` (its text, as the worker wrote it), not `jsonb`.
-- Nothing in the database reads inside it on the worker's path: the worker reads it whole
-- and writes it whole. As jsonb each write was parsed into jsonb's binary form and each read
-- turned back into text, and the binary form is a third larger than the text (a group with
-- five completed runs: 669 bytes of jsonb, 504 of json; docs/performance.md "Storage per
-- group"), so a page held 8 rows where it now holds 10. `explain --list` and ad-hoc queries
-- cast it (`state::jsonb`) to use jsonb's operators.
--
-- This rewrites the table and its indexes under an exclusive lock: 1.6 s for 200,000 groups
-- on the machine of docs/performance.md, so a minute or two for ten million, while workers
-- wait (docs/deploy.md "Migrations, and upgrades"). The previous release keeps working on
-- the new column (its jsonb values are assigned to json by Postgres' assignment cast).
-- Existing states keep jsonb's text form (a space after each ':' and ','); the worker
-- writes them compact the next time it updates the group.
ALTER TABLE groups ALTER COLUMN state TYPE json USING state::json,
                   ALTER COLUMN state SET DEFAULT '{}';

-- The lock call returns the state with its new type: its return type changes, so it is
-- dropped and created again, as it was (migrations/20261204010002).
DROP FUNCTION runwatch_lock_groups_pulls(BIGINT[], BIGINT[], TEXT[]);

CREATE FUNCTION runwatch_lock_groups_pulls(_r BIGINT[], _p BIGINT[], _s TEXT[])
RETURNS TABLE (id BIGINT, repository_id BIGINT, pr_number BIGINT, commit_sha TEXT,
               branch TEXT, state JSON, head_sha TEXT, head_at TIMESTAMPTZ,
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

-- runwatch_lock_groups (migrations/20261126000002) has had no caller since
-- runwatch_lock_groups_pulls replaced it, and would now fail on the state's type.
DROP FUNCTION IF EXISTS runwatch_lock_groups(BIGINT[], BIGINT[], TEXT[]);
