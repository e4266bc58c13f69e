-- Purging a group sets the group_id of its outbox rows to NULL (ON DELETE SET NULL), and
-- that action finds them by group_id. The only index on outbox (group_id) was partial
-- (unsent rows), which the action cannot use: every purged group scanned the whole outbox,
-- and purging a day of groups from a table of ten million, beside an outbox of half a
-- million triggers, ran into statement_timeout. A full index serves the action, and the
-- purge's "no unsent trigger" check as well as the partial one did.
CREATE INDEX outbox_group ON outbox (group_id);
DROP INDEX outbox_unsent_group;
