-- Purging a group sets the group_id of its outbox rows to NULL (ON DELETE SET NULL), and
-- that action finds them by group_id. The only index on outbox (group_id) was partial
-- (unsent rows), which the action cannot use: every purged group scanned the whole outbox,
-- and purging a day of groups from a table of ten million, beside an outbox of half a
-- million triggers, ran into statement_timeout. The partial index stays: the purge's "no
-- unsent trigger" check probes it (without it the planner hashed the whole outbox for
-- each batch).
CREATE INDEX outbox_group ON outbox (group_id);
