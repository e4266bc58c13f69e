-- Purge, flips: up to $2 dated more than $1 seconds ago, oldest first (index
-- `flips_flipped_at`). $1 is the longer of `purge.older_than` and the longest
-- `flaky_window`, so no flip a rule still counts is purged.
DELETE FROM flips WHERE (repository_id, workflow, job, run_id) IN (
    SELECT repository_id, workflow, job, run_id FROM flips
    WHERE flipped_at < now() - make_interval(secs => $1)
    ORDER BY flipped_at LIMIT $2 FOR UPDATE SKIP LOCKED)
