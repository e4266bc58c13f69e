-- The commits' known pull requests, one index lookup per commit whatever the statistics say.
-- The join it replaces (`commit_pulls JOIN UNNEST(...)`) was planned as a hash join over a
-- sequential scan of commit_pulls whenever the statistics, taken when the table was small,
-- made that look cheaper: a cost that grew with the table on the hot path. A LATERAL
-- subquery with OFFSET 0 cannot be flattened into a join, so it is run per commit through
-- the primary key (repository_id, commit_sha, pr_number).
CREATE OR REPLACE FUNCTION runwatch_lock_commits_pulls(keys INT[], _r BIGINT[], _s TEXT[])
RETURNS TABLE (repository_id BIGINT, commit_sha TEXT, pr_number BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE k INT;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        PERFORM pg_advisory_xact_lock(1920426497, k);
    END LOOP;
    RETURN QUERY
    SELECT c.repository_id, c.commit_sha, c.pr_number
    FROM UNNEST(_r, _s) AS u(r, s)
    CROSS JOIN LATERAL (
        SELECT cp.repository_id, cp.commit_sha, cp.pr_number FROM commit_pulls cp
        WHERE cp.repository_id = u.r AND cp.commit_sha = u.s
        OFFSET 0
    ) c;
END
$$;
