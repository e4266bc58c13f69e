-- Purge, jobs: up to $2 not written for $1 seconds, oldest first (index `jobs_updated_at`).
-- A job is only read when a decision on its run fires; one that old has no decision left.
DELETE FROM jobs WHERE (repository_id, run_id, job_id) IN (
    SELECT repository_id, run_id, job_id FROM jobs
    WHERE updated_at < now() - make_interval(secs => $1)
    ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)
