-- runwatch schema: repository registry, groups with their run state, failure streaks,
-- per-repository cooldowns and the trigger outbox. `updated_at` is maintained by a trigger
-- on every write.

CREATE OR REPLACE FUNCTION runwatch_set_updated_at() RETURNS trigger AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- The repository registry: identified by (provider, external id) where the producer gives
-- one, else by (provider, lower(owner), lower(name)). `stable_key` never changes; trigger
-- ids derive from it, so a rename keeps them.
CREATE TABLE repositories (
    id          BIGSERIAL PRIMARY KEY,
    provider    TEXT NOT NULL,
    external_id TEXT,
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    stable_key  TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX repositories_external_id ON repositories (provider, external_id)
    WHERE external_id IS NOT NULL;
CREATE INDEX repositories_name ON repositories (provider, lower(owner), lower(name));
CREATE TRIGGER repositories_updated_at BEFORE UPDATE ON repositories
    FOR EACH ROW EXECUTE FUNCTION runwatch_set_updated_at();

-- One row per (repository, pull request, commit). The unique key treats a missing pull
-- request as 0 (pull request numbers start at 1), so it holds for push builds too.
-- `state` is the engine's GroupState (runs merged monotonically, per-rule episodes); the
-- two due columns are the earliest settle / cooldown timer by event time and wall clock.
CREATE TABLE groups (
    id            BIGSERIAL PRIMARY KEY,
    repository_id BIGINT NOT NULL REFERENCES repositories (id),
    pr_number     BIGINT CHECK (pr_number IS NULL OR pr_number > 0),
    commit_sha    TEXT NOT NULL,
    branch        TEXT,
    state         JSONB NOT NULL DEFAULT '{}',
    due_event_at  TIMESTAMPTZ,
    due_wall_at   TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX groups_key ON groups (repository_id, (COALESCE(pr_number, 0)), commit_sha);
CREATE INDEX groups_updated_at ON groups (updated_at);
CREATE INDEX groups_due_wall ON groups (due_wall_at) WHERE due_wall_at IS NOT NULL;
CREATE INDEX groups_due_event ON groups (due_event_at) WHERE due_event_at IS NOT NULL;
CREATE TRIGGER groups_updated_at BEFORE UPDATE ON groups
    FOR EACH ROW EXECUTE FUNCTION runwatch_set_updated_at();

-- repeated_failure: one row per (repository, rule, branch, workflow).
CREATE TABLE streaks (
    repository_id BIGINT NOT NULL REFERENCES repositories (id),
    rule          TEXT NOT NULL,
    branch        TEXT NOT NULL,
    workflow      TEXT NOT NULL,
    state         JSONB NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, rule, branch, workflow)
);
CREATE INDEX streaks_updated_at ON streaks (updated_at);
CREATE TRIGGER streaks_updated_at BEFORE UPDATE ON streaks
    FOR EACH ROW EXECUTE FUNCTION runwatch_set_updated_at();

-- When a rule with a cooldown last fired for a repository.
CREATE TABLE cooldowns (
    repository_id BIGINT NOT NULL REFERENCES repositories (id),
    rule          TEXT NOT NULL,
    last_fired_at TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, rule)
);
CREATE TRIGGER cooldowns_updated_at BEFORE UPDATE ON cooldowns
    FOR EACH ROW EXECUTE FUNCTION runwatch_set_updated_at();

-- The transactional outbox. A row is written in the transaction that decided the trigger,
-- claimed by that worker until `claimed_until`, and marked sent after JetStream's PubAck.
-- Any replica's relay publishes rows whose claim expired. The primary key makes a decision
-- that is taken again (a redelivery, a replay) insert nothing.
CREATE TABLE outbox (
    trigger_id    UUID PRIMARY KEY,
    group_id      BIGINT REFERENCES groups (id) ON DELETE SET NULL,
    subject       TEXT NOT NULL,
    payload       BYTEA NOT NULL,
    claimed_until TIMESTAMPTZ,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    sent_at       TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX outbox_unsent ON outbox (created_at) WHERE sent_at IS NULL;
CREATE INDEX outbox_unsent_group ON outbox (group_id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE TRIGGER outbox_updated_at BEFORE UPDATE ON outbox
    FOR EACH ROW EXECUTE FUNCTION runwatch_set_updated_at();
