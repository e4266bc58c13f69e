-- Flaky workflows (docs/design.md "Flaky workflows"): one row per flip, a run whose failed
-- attempt was followed by a passing attempt of the same run. Keyed by (repository, workflow,
-- job, run); `job` is '' for a flip of the whole run. `attempt` and `flipped_at` are the
-- passing attempt and its time (event time, never later than the event clock of the
-- decision that found it); a run flips once, at its greatest (attempt, flipped_at) reported.
CREATE TABLE flips (
    repository_id BIGINT NOT NULL REFERENCES repositories (id),
    workflow      TEXT NOT NULL,
    job           TEXT NOT NULL DEFAULT '',
    run_id        TEXT NOT NULL,
    attempt       BIGINT NOT NULL,
    flipped_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repository_id, workflow, job, run_id)
);
-- A decision reads the newest flips of each (repository, workflow) within its window.
CREATE INDEX flips_window ON flips (repository_id, workflow, job, flipped_at);
-- Purge: the oldest first.
CREATE INDEX flips_flipped_at ON flips (flipped_at);
