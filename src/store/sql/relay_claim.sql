-- The relay's claim: up to $1 unsent triggers that nobody holds (claim expired or never
-- claimed), for $2 seconds, oldest first from the partial index `outbox_unsent` (only
-- unsent rows). A short transaction with SKIP LOCKED: replicas claim disjoint rows, and no
-- lock is held while publishing.
UPDATE outbox o SET claimed_until = now() + make_interval(secs => $2), attempts = o.attempts + 1
WHERE o.trigger_id IN (
    SELECT trigger_id FROM outbox
    WHERE sent_at IS NULL AND set_aside_at IS NULL
      AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING o.trigger_id, o.subject, o.payload, o.attempts, o.traceparent, o.tracestate
