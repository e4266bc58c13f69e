-- Purge, pull request heads: up to $2 not updated for $1 seconds, oldest first (index
-- `pull_heads_updated_at`).
DELETE FROM pull_heads WHERE (repository_id, pr_number) IN (
    SELECT repository_id, pr_number FROM pull_heads
    WHERE updated_at < now() - make_interval(secs => $1)
    ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)
