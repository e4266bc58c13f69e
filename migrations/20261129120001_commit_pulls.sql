-- The pull requests of a commit (docs/design.md "Pull requests of a commit"): a run that
-- arrives without a pull request (a commit status, a fork's workflow run, a push build)
-- also counts in the group of every pull request its commit is known to belong to. Learnt
-- from any event that carries a pull request and from `runwatch.pull_request.v1` messages.
CREATE TABLE commit_pulls (
    repository_id BIGINT NOT NULL REFERENCES repositories (id),
    commit_sha    TEXT NOT NULL,
    pr_number     BIGINT NOT NULL CHECK (pr_number > 0),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, commit_sha, pr_number)
);
CREATE INDEX commit_pulls_created_at ON commit_pulls (created_at);

-- Each pull request's head commit, the latest by (updated_at, commit) reported by a
-- `runwatch.pull_request.v1` message: `only_head_commit` rules do not fire for a commit the
-- pull request has moved past.
CREATE TABLE pull_heads (
    repository_id BIGINT NOT NULL REFERENCES repositories (id),
    pr_number     BIGINT NOT NULL CHECK (pr_number > 0),
    head_sha      TEXT NOT NULL,
    head_at       TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, pr_number)
);
CREATE INDEX pull_heads_updated_at ON pull_heads (updated_at);

-- Serializes the transactions that touch one (repository, commit): a transaction-scoped
-- advisory lock per commit, taken in the order given (the caller sorts the keys), before
-- any group row. Learning an association and fanning a run out to the known pull requests
-- then never miss each other.
CREATE FUNCTION runwatch_lock_commits(keys INT[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE k INT;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        PERFORM pg_advisory_xact_lock(1920426497, k);
    END LOOP;
END
$$;
