-- Group updates become HOT (heap-only tuples: the new row version goes on the same page
-- and no index is written). An UPDATE can be HOT only when no indexed column changes and
-- the page has room; `updated_at` changes on every write, and it was indexed (for purge),
-- so every update of a group wrote all of its indexes.
--
-- Purge now finds old groups through `touched_on`, the UTC day of the last write, which
-- changes at most once a day per group; `updated_at` stays, exact but unindexed, and purge
-- still compares it. Rows written before this migration have `touched_on` NULL until their
-- next write; purge treats NULL as "old enough to look at", so no backfill (a rewrite of
-- the whole table) is needed.
ALTER TABLE groups ADD COLUMN touched_on DATE;
ALTER TABLE groups ALTER COLUMN touched_on SET DEFAULT ((now() AT TIME ZONE 'UTC')::date);
CREATE INDEX groups_touched_on ON groups (touched_on NULLS FIRST);
DROP INDEX groups_updated_at;

CREATE OR REPLACE FUNCTION runwatch_touch_group() RETURNS trigger AS $$
BEGIN
    NEW.updated_at := now();
    NEW.touched_on := (now() AT TIME ZONE 'UTC')::date;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER groups_updated_at ON groups;
CREATE TRIGGER groups_updated_at BEFORE UPDATE ON groups
    FOR EACH ROW EXECUTE FUNCTION runwatch_touch_group();

-- Room on each page for the next versions of its rows (new pages only; existing pages
-- get it as VACUUM frees them).
ALTER TABLE groups SET (fillfactor = 70);
