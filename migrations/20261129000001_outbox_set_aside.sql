-- An outbox row the relay cannot publish (its payload does not decode as a trigger: written
-- by hand, by a newer version, by a bug) is set aside with a reason instead of being claimed
-- again every lease, forever. The relay skips such rows; an operator repairs or deletes them.
ALTER TABLE outbox ADD COLUMN set_aside_at TIMESTAMPTZ, ADD COLUMN set_aside_reason TEXT;
DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (created_at) WHERE sent_at IS NULL AND set_aside_at IS NULL;
