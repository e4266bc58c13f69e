-- Purge, commit → pull request associations: up to $2 learnt more than $1 seconds ago,
-- oldest first (index `commit_pulls_created_at`).
DELETE FROM commit_pulls WHERE (repository_id, commit_sha, pr_number) IN (
    SELECT repository_id, commit_sha, pr_number FROM commit_pulls
    WHERE created_at < now() - make_interval(secs => $1)
    ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)
