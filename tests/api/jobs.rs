//! Failing jobs and steps from the provider to the trigger, through the real ingest HTTP
//! server, JetStream, a worker and Postgres (docs/design.md "Jobs and steps"):
//! - GitHub `workflow_job` deliveries from the octokit fixtures (`queued`, `waiting`,
//!   `in_progress`, `completed` with a failed step), out of order and twice, then the failing
//!   `workflow_run`: the trigger lists the failed job and its failed step, and nothing of
//!   another attempt or a passing job; a job delivered after the trigger is kept, not
//!   announced; hostile deliveries (a name over the limit, too many failed steps) are cut
//!   to the documented bounds, a bad status is refused;
//! - a GitLab pipeline hook with a failed build, a build allowed to fail and a passing one;
//! - a Buildkite `job.finished` of a failed job, then its build's `build.finished`;
//! - job messages of another producer over a bound, or with a bad status or a control
//!   character, are dead-lettered; a job of a run no group knows is kept.
//!
//! Every trigger is validated against `schemas/trigger.v1.json`.

use std::path::PathBuf;

use crate::helpers::live::{SECRET, post};
use crate::helpers::schemas::{assert_valid_trigger, errors, job_schema};
use runwatch::ingest::{Secret, buildkite};
use serde_json::{Value, json};

fn fixture(path: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// Ingest and a worker, with their streams and database.
struct Pipeline {
    live: crate::helpers::live::Pipeline,
}

impl Pipeline {
    async fn start() -> Pipeline {
        let live = crate::helpers::live::Pipeline::start(None, |c| {
            c.ingest.gitlab_tokens = vec![Secret::new(SECRET)];
            c.ingest.buildkite_tokens = vec![Secret::new(SECRET)];
        })
        .await;
        Pipeline { live }
    }

    /// A GitHub delivery, signed; returns (status, body).
    async fn github(&self, event: &str, delivery: &str, json: &Value) -> (u16, String) {
        let raw = serde_json::to_vec(json).unwrap();
        self.live
            .github(event, delivery, "application/json", &raw)
            .await
    }

    async fn quiet_triggers(&self) -> Vec<Value> {
        let triggers = self.live.quiet_triggers().await;
        for t in &triggers {
            assert_valid_trigger(t, "published trigger");
        }
        triggers
    }

    /// Every job message stored in the events stream.
    async fn job_messages(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for payload in self.live.stored_events().await {
            let v: Value = serde_json::from_slice(&payload).unwrap();
            if v["schema"] == "runwatch.workflow_job.v1" {
                out.push(v);
            }
        }
        out
    }

    async fn stored_jobs(&self) -> i64 {
        let pool = runwatch::store::connect(&self.live.env.config.database)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    }

    async fn stop(self) {
        self.live.stop().await;
    }
}

/// The octokit `workflow_job` fixture `name` with `changes` applied to its `workflow_job`.
fn workflow_job(name: &str, changes: Value) -> Value {
    let mut v = fixture(&format!("github/workflow_job/{name}"));
    for (k, c) in changes.as_object().unwrap() {
        v["workflow_job"][k] = c.clone();
    }
    v
}

/// A completed `workflow_run` of the job fixtures' run (2202229078) and commit, on their
/// repository, for pull request 2.
fn failing_workflow_run() -> Value {
    let job = fixture("github/workflow_job/completed.failure.with-organization.payload.json");
    let mut v = fixture("github/workflow_run/completed.with-pull-requests.payload.json");
    v["repository"] = job["repository"].clone();
    let wr = &mut v["workflow_run"];
    wr["id"] = 2202229078u64.into();
    wr["run_attempt"] = 1.into();
    wr["name"] = "CodeQL".into();
    wr["head_sha"] = job["workflow_job"]["head_sha"].clone();
    wr["status"] = "completed".into();
    wr["conclusion"] = "failure".into();
    wr["updated_at"] = "2021-08-05T10:40:00Z".into();
    wr["pull_requests"][0]["number"] = 2.into();
    wr["head_repository"]["id"] = job["repository"]["id"].clone();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_workflow_jobs_list_the_failed_job_and_step_in_the_trigger() {
    let p = Pipeline::start().await;
    // The run's job, out of order and delivered twice: completed (failed step 8), then
    // in_progress and queued (older phases: they change nothing).
    let failed = "completed.failure.with-organization.payload.json";
    for (delivery, name) in [
        ("j-1", failed),
        ("j-2", "in_progress.payload.json"),
        ("j-3", "queued.payload.json"),
        ("j-1", failed),
        ("j-4", failed),
    ] {
        let (code, body) = p
            .github("workflow_job", delivery, &workflow_job(name, json!({})))
            .await;
        assert_eq!(code, 200, "{name}: {body}");
    }
    // The other fixtures (another repository's jobs, `waiting`, queued steps) are published
    // too, and listed nowhere.
    for (i, name) in [
        "in_progress.with-queued-steps.payload.json",
        "queued.with-deployment.payload.json",
        "waiting.payload.json",
        "completed.success.with-organization.payload.json",
    ]
    .iter()
    .enumerate()
    {
        let changes = if name.starts_with("completed.success") {
            json!({"id": 777})
        } else {
            json!({})
        };
        let (code, body) = p
            .github(
                "workflow_job",
                &format!("o-{i}"),
                &workflow_job(name, changes),
            )
            .await;
        assert_eq!(code, 200, "{name}: {body}");
    }
    // A failed job of the run's second attempt: not this trigger's.
    let (code, body) = p
        .github(
            "workflow_job",
            "j-attempt-2",
            &workflow_job(
                failed,
                json!({"id": 999, "run_attempt": 2, "name": "other attempt"}),
            ),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // Hostile: a name over the string limit and 80 failed steps: cut to the bounds.
    let steps: Vec<Value> = (1..=80)
        .map(|n| json!({"name": format!("step {n}"), "status": "completed", "conclusion": "failure", "number": n}))
        .collect();
    let (code, body) = p
        .github(
            "workflow_job",
            "j-big",
            &workflow_job(
                failed,
                json!({"id": 555, "name": "é".repeat(3000), "steps": steps}),
            ),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // A bad status is refused, with the field named.
    let (code, body) = p
        .github(
            "workflow_job",
            "j-bad",
            &workflow_job(failed, json!({"status": "exploded"})),
        )
        .await;
    assert_eq!(
        (code, body.contains("workflow_job.status")),
        (400, true),
        "{body}"
    );

    // The failing run.
    let (code, body) = p
        .github("workflow_run", "r-1", &failing_workflow_run())
        .await;
    assert_eq!(code, 200, "{body}");
    let triggers = p.quiet_triggers().await;
    assert_eq!(triggers.len(), 1, "{triggers:#?}");
    let run = &triggers[0]["runs"]["2202229078"];
    let jobs = run["jobs"].as_array().expect("the run lists its jobs");
    assert_eq!(jobs.len(), 2, "{run:#}");
    // Sorted by name: "linters" before the long name.
    assert_eq!(
        jobs[0],
        json!({
            "id": "289782451", "name": "linters", "conclusion": "failure",
            "url": "https://github.com/octo-org/octo-repo/runs/1291536064",
            "failed_steps": [{"number": 8, "name": "Run yarn run format-check"}],
            "runner_labels": ["ubuntu-latest"],
            "started_at": "2021-08-05T10:34:58Z", "completed_at": "2021-08-05T10:38:16Z"
        })
    );
    assert_eq!(jobs[1]["id"], "555");
    assert_eq!(jobs[1]["name"].as_str().unwrap().len(), 1024);
    assert_eq!(jobs[1]["failed_steps"].as_array().unwrap().len(), 50);
    assert_eq!(jobs[1]["failed_steps_omitted"], 30);
    assert!(run.get("jobs_omitted").is_none(), "{run:#}");
    // Every job message published validates against the job schema.
    let messages = p.job_messages().await;
    assert_eq!(messages.len(), 10, "{messages:#?}");
    for m in &messages {
        let why = errors(job_schema(), m);
        assert!(why.is_empty(), "{m}:\n{why}");
    }

    // `explain` shows the run's known jobs of its attempt with their failed steps.
    let pool = runwatch::store::connect(&p.live.env.config.database)
        .await
        .unwrap();
    let repo = &triggers[0]["repository"];
    let target = runwatch::explain::Target::parse(
        "github",
        &format!(
            "{}/{}",
            repo["owner"].as_str().unwrap(),
            repo["name"].as_str().unwrap()
        ),
        "2",
        "3484a3fb816e0859fd6e1cea078d76385ff50625",
    )
    .unwrap();
    let explained =
        runwatch::explain::query::explain(&pool, &p.live.env.config.rule_set().unwrap(), &target)
            .await
            .unwrap()
            .unwrap();
    pool.close().await;
    let shown: Vec<(&str, &str)> = explained.runs[0]
        .jobs
        .iter()
        .map(|j| (j.job_id.as_str(), j.name.as_str()))
        .collect();
    assert_eq!(
        shown[..2],
        [("289782451", "linters"), ("777", "linters")],
        "{shown:?}"
    );
    let text = runwatch::explain::text::explanation(&explained);
    assert!(
        text.contains("jobs:") && text.contains("Run yarn run format-check"),
        "{text}"
    );
    assert!(!text.contains("other attempt"), "{text}");

    // A job delivered after the trigger: kept, not announced again.
    let stored = p.stored_jobs().await;
    let (code, body) = p
        .github(
            "workflow_job",
            "j-late",
            &workflow_job(failed, json!({"id": 4242, "name": "late"})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let after = p.quiet_triggers().await;
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(p.stored_jobs().await, stored + 1);
    p.stop().await;
}

/// GitLab's documented "Pipeline Hook" example, failed, with its `builds`: a failed build, a
/// build allowed to fail, and a passing one.
fn gitlab_pipeline() -> Value {
    let runner = json!({"id": 380987, "description": "shared-runners-manager-6.gitlab.com",
        "runner_type": "instance_type", "active": true, "is_shared": true,
        "tags": ["docker", "linux"]});
    let build = |id: u64, stage: &str, name: &str, status: &str, allow: bool, reason: Value| {
        json!({"id": id, "stage": stage, "name": name, "status": status,
            "created_at": "2016-08-12 15:23:28 UTC", "started_at": "2016-08-12 15:26:12 UTC",
            "finished_at": "2016-08-12 15:26:29 UTC", "duration": 17.0, "queued_duration": 196.0,
            "failure_reason": reason, "when": "on_success", "manual": false,
            "allow_failure": allow, "user": {"id": 1, "name": "Administrator", "username": "root"},
            "runner": runner, "artifacts_file": {"filename": null, "size": null},
            "environment": null})
    };
    crate::helpers::receiver::gitlab_pipeline(json!([
        build(380, "deploy", "production", "skipped", false, Value::Null),
        build(377, "test", "test-image", "success", false, Value::Null),
        build(
            378,
            "test",
            "test-build",
            "failed",
            false,
            "script_failure".into()
        ),
        build(
            376,
            "build",
            "build-image",
            "failed",
            true,
            "script_failure".into()
        ),
    ]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_pipeline_lists_its_failed_build_in_the_trigger() {
    let p = Pipeline::start().await;
    let body = serde_json::to_vec(&gitlab_pipeline()).unwrap();
    let (code, answer) = post(
        p.live.addr,
        "/webhooks/gitlab",
        &[
            ("Content-Type", "application/json"),
            ("X-Gitlab-Event", "Pipeline Hook"),
            ("X-Gitlab-Token", SECRET),
            ("X-Gitlab-Event-UUID", "gl-1"),
        ],
        &body,
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("\"published\":2"), "{answer}");
    let triggers = p.quiet_triggers().await;
    assert_eq!(triggers.len(), 1, "{triggers:#?}");
    assert_eq!(triggers[0]["pr_number"], 1);
    assert_eq!(
        triggers[0]["runs"]["31"]["jobs"],
        json!([{
            "id": "378", "name": "test-build", "conclusion": "failure",
            "url": "http://192.168.64.1:3005/gitlab-org/gitlab-test/-/jobs/378",
            "stage": "test", "failure_reason": "script_failure",
            "runner_labels": ["docker", "linux"],
            "started_at": "2016-08-12T15:26:12Z", "completed_at": "2016-08-12T15:26:29Z"
        }])
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buildkite_failed_job_is_listed_in_its_builds_trigger() {
    let p = Pipeline::start().await;
    for (event, file) in [
        ("job.finished", "buildkite/jobs/job.finished.failed.json"),
        ("build.finished", "buildkite/build.finished.failed.json"),
    ] {
        let body = serde_json::to_vec(&fixture(file)).unwrap();
        let now = chrono::Utc::now().timestamp();
        let sig = buildkite::sign(SECRET.as_bytes(), now, &body);
        let (code, answer) = post(
            p.live.addr,
            "/webhooks/buildkite",
            &[
                ("Content-Type", "application/json"),
                ("X-Buildkite-Event", event),
                ("X-Buildkite-Signature", &sig),
            ],
            &body,
        )
        .await;
        assert_eq!(code, 200, "{file}: {answer}");
    }
    let triggers = p.quiet_triggers().await;
    assert_eq!(triggers.len(), 1, "{triggers:#?}");
    let t = &triggers[0];
    assert_eq!(
        (t["provider"].as_str(), t["pr_number"].as_u64()),
        (Some("github"), Some(42))
    );
    assert_eq!(
        t["runs"]["buildkite:my-pipeline"]["jobs"],
        json!([{
            "id": "b63254c0-3271-4a98-8270-7cfbd6c2f14e", "name": ":rspec: Specs",
            "conclusion": "failure",
            "url": "https://buildkite.com/my-great-org/my-pipeline/builds/2#b63254c0-3271-4a98-8270-7cfbd6c2f14e",
            "failure_reason": "exit status 1", "runner_labels": ["queue=default"],
            "started_at": "2015-05-09T21:06:01.143Z", "completed_at": "2015-05-09T21:07:05.422Z"
        }])
    );
    p.stop().await;
}

/// Job messages published by another producer: over a bound or with a bad status they are
/// dead-lettered with their reason; a valid job of a run no group knows is applied (kept,
/// never dead-lettered for lacking a group); the worker carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_job_messages_are_dead_lettered_and_a_job_without_a_group_is_kept() {
    let p = Pipeline::start().await;
    let job = |id: &str, changes: Value| {
        let mut v = json!({
            "schema": "runwatch.workflow_job.v1", "event_id": id, "provider": "github",
            "repository": {"owner": "acme", "name": "hostile", "id": "91"},
            "commit_sha": "abc", "run": {"id": "1", "attempt": 1},
            "job": {"id": id, "name": "test", "status": "completed", "conclusion": "failure",
                    "updated_at": "2026-01-01T00:00:00Z"}
        });
        for (k, c) in changes.as_object().unwrap() {
            v["job"][k] = c.clone();
        }
        v
    };
    let steps: Vec<Value> = (0..51).map(|n| json!({"name": format!("s{n}")})).collect();
    let messages = [
        (
            job(
                "h-long",
                json!({"failed_steps": [{"name": "x".repeat(1025)}]}),
            ),
            Some("oversize"),
        ),
        (
            job("h-steps", json!({"failed_steps": steps})),
            Some("oversize"),
        ),
        (
            job("h-status", json!({"status": "exploded"})),
            Some("invalid"),
        ),
        (
            job("h-control", json!({"name": "a\u{1b}[31mb"})),
            Some("invalid"),
        ),
        (job("h-nogroup", json!({})), None),
    ];
    for (m, _) in &messages {
        p.live
            .bus
            .publish_event(
                runwatch::event::Provider::Github,
                m["event_id"].as_str().unwrap(),
                bytes::Bytes::from(serde_json::to_vec(m).unwrap()),
            )
            .await
            .unwrap();
    }
    let triggers = p.quiet_triggers().await;
    assert!(triggers.is_empty(), "{triggers:#?}");
    let mut dead: Vec<String> = p
        .live
        .bus
        .read_all_dead()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    dead.sort();
    let mut want: Vec<String> = messages
        .iter()
        .filter_map(|(_, r)| r.map(str::to_string))
        .collect();
    want.sort();
    assert_eq!(dead, want);
    assert_eq!(p.stored_jobs().await, 1, "the job without a group is kept");
    p.stop().await;
}
