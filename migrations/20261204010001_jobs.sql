-- Jobs of runs (docs/design.md "Jobs and steps"): one row per (repository, run id, job id),
-- the greatest `runwatch.workflow_job.v1` report seen by the engine's merge order
-- (`order_key`, bytes that compare as `engine::jobs::JobState::order_key` orders). Not
-- part of any group: a job never creates a group and never waits for one. A decision loads
-- the jobs of its failed runs at their attempt (primary key prefix (repository_id,
-- run_id)); the purge takes rows not written for `purge.older_than` (`jobs_updated_at`).
CREATE TABLE jobs (
    repository_id BIGINT NOT NULL REFERENCES repositories (id),
    run_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    order_key BYTEA NOT NULL,
    job JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, run_id, job_id)
);
CREATE INDEX jobs_updated_at ON jobs (updated_at);
