-- W3C trace context of a trigger (docs/design.md "Trace context"): the `traceparent` and
-- `tracestate` the trigger message carries, written with the decision and read back by the
-- outbox relay, so a republished trigger stays in its trace. Nullable: rows written before
-- this migration (and rows whose context was not valid) are published without one.
ALTER TABLE outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text;
