-- Purge, groups: up to $2 groups not updated for $1 seconds, never one whose timer is
-- pending or whose trigger is unsent. `touched_on` (indexed, the UTC day of the last write)
-- is a range condition on its index, read in index order (`NULLS FIRST`, the index's own),
-- so the scan stops after $2 rows whatever the old days hold; `updated_at` (exact,
-- unindexed so that updates stay HOT) decides. (With `touched_on IS NULL OR …` in one
-- condition the planner read every old row through a bitmap and sorted them, once per
-- batch: rows without a day are purge_groups_unstamped.sql.)
DELETE FROM groups WHERE id IN (
    SELECT g.id FROM groups g
    WHERE g.touched_on <= ((now() - make_interval(secs => $1)) AT TIME ZONE 'UTC')::date
      AND g.updated_at < now() - make_interval(secs => $1)
      AND g.due_wall_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.group_id = g.id AND o.sent_at IS NULL)
    ORDER BY g.touched_on NULLS FIRST LIMIT $2 FOR UPDATE SKIP LOCKED)
