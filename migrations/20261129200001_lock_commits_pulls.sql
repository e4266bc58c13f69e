-- The commit locks and the commits' known pull requests in one round trip. Two statements
-- still (in PL/pgSQL each takes its own snapshot, so the read after the locks sees what a
-- transaction that held one of them committed), but one call.
CREATE FUNCTION runwatch_lock_commits_pulls(keys INT[], _r BIGINT[], _s TEXT[])
RETURNS TABLE (repository_id BIGINT, commit_sha TEXT, pr_number BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE k INT;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        PERFORM pg_advisory_xact_lock(1920426497, k);
    END LOOP;
    RETURN QUERY
    SELECT c.repository_id, c.commit_sha, c.pr_number FROM commit_pulls c
    JOIN UNNEST(_r, _s) AS u(r, s) ON c.repository_id = u.r AND c.commit_sha = u.s;
END
$$;
