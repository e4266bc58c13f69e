-- Purge, groups written before `touched_on` existed (NULL until their next write): up to
-- $2 not updated for $1 seconds, with the same exceptions as purge_groups.sql; found by
-- `touched_on IS NULL` on its index.
DELETE FROM groups WHERE id IN (
    SELECT g.id FROM groups g
    WHERE g.touched_on IS NULL
      AND g.updated_at < now() - make_interval(secs => $1)
      AND g.due_wall_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.group_id = g.id AND o.sent_at IS NULL)
    LIMIT $2 FOR UPDATE SKIP LOCKED)
