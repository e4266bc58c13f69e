-- Purge, outbox: up to $2 triggers sent more than $1 seconds ago. In `sent_at` order, so
-- the partial index `outbox_sent_at` is read from its old end and the scan stops after $2
-- rows (without the ORDER BY a LIMIT made a sequential scan look cheapest).
DELETE FROM outbox WHERE trigger_id IN (
    SELECT trigger_id FROM outbox WHERE sent_at < now() - make_interval(secs => $1)
    ORDER BY sent_at LIMIT $2 FOR UPDATE SKIP LOCKED)
