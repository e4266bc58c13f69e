-- Purge, failure streaks: up to $2 not updated for $1 seconds, oldest first (index
-- `streaks_updated_at`).
DELETE FROM streaks WHERE (repository_id, rule, branch, workflow) IN (
    SELECT repository_id, rule, branch, workflow FROM streaks
    WHERE updated_at < now() - make_interval(secs => $1)
    ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)
