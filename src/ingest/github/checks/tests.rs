use super::*;

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/github/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn events(n: Result<Normalized, NormalizeError>) -> Vec<Event> {
    match n.unwrap() {
        Normalized::Events(e) => e,
        other => panic!("not events: {other:?}"),
    }
}

#[test]
fn a_completed_suite_is_one_run_of_its_app() {
    let opts = GithubOptions::default();
    let e = events(check_suite(
        "d",
        &fixture("check_suite/completed.payload.json"),
        &opts,
    ));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].run.id, "118578147");
    assert_eq!(e[0].pr_number, Some(2));
    assert_eq!(e[0].run.status, Status::Completed);
    assert_eq!(e[0].run.conclusion, Some(Conclusion::Success));
    assert_eq!(e[0].run.workflow, "octocoders-linter");
    // The Actions app's suites are ignored by default, counted when configured.
    let actions = fixture("check_suite/completed.1.payload.json");
    assert!(matches!(
        check_suite("d", &actions, &opts),
        Ok(Normalized::Ignored { .. })
    ));
    let all = GithubOptions {
        ignore_check_apps: vec![],
        ..opts.clone()
    };
    assert_eq!(events(check_suite("d", &actions, &all)).len(), 1);
}

#[test]
fn a_rerequested_suite_is_queued_and_newer() {
    let opts = GithubOptions::default();
    let done = events(check_suite(
        "d1",
        &fixture("check_suite/completed.payload.json"),
        &opts,
    ));
    // The real pair: the re-request carries the completed suite's `updated_at`.
    let again = events(check_suite(
        "d2",
        &fixture("check_suite/rerequested.payload.json"),
        &opts,
    ));
    assert_eq!(again[0].run.updated_at, done[0].run.updated_at);
    assert_eq!(again[0].run.id, done[0].run.id);
    assert_eq!(again[0].run.status, Status::Queued);
    assert!(again[0].run.attempt > done[0].run.attempt);
    // The re-run's completion a second later supersedes the re-request.
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("check_suite/completed.payload.json")).unwrap();
    v["check_suite"]["updated_at"] = "2019-05-15T15:21:15Z".into();
    let rerun = events(check_suite("d3", &serde_json::to_vec(&v).unwrap(), &opts));
    assert!(rerun[0].run.attempt >= again[0].run.attempt);
    assert_eq!(rerun[0].run.status, Status::Completed);
    // A re-requested check run is queued at one attempt more than the run it re-requests.
    let run_mode = GithubOptions {
        checks: CheckGranularity::Run,
        ..GithubOptions::default()
    };
    let done = events(check_run(
        "r1",
        &fixture("check_run/completed.payload.json"),
        &run_mode,
    ));
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("check_run/completed.payload.json")).unwrap();
    v["action"] = "rerequested".into();
    let again = events(check_run("r2", &serde_json::to_vec(&v).unwrap(), &run_mode));
    assert_eq!(
        (again[0].run.status, again[0].run.conclusion),
        (Status::Queued, None)
    );
    assert_eq!(again[0].run.attempt, done[0].run.attempt + 1);
}

#[test]
fn check_runs_only_when_asked_and_never_both() {
    let suite_mode = GithubOptions::default();
    let run_mode = GithubOptions {
        checks: CheckGranularity::Run,
        ..GithubOptions::default()
    };
    let body = fixture("check_run/completed.payload.json");
    assert!(matches!(
        check_run("d", &body, &suite_mode),
        Ok(Normalized::Ignored { .. })
    ));
    let e = events(check_run("d", &body, &run_mode));
    assert_eq!(e[0].run.id, "118578147/Octocoders-linter");
    assert_eq!(e[0].run.workflow, "octocoders-linter / Octocoders-linter");
    assert_eq!(e[0].pr_number, Some(2));
    let suite = fixture("check_suite/completed.payload.json");
    assert!(matches!(
        check_suite("d", &suite, &run_mode),
        Ok(Normalized::Ignored { .. })
    ));
    let actions = fixture("check_run/completed.1.payload.json");
    assert!(matches!(
        check_run("d", &actions, &run_mode),
        Ok(Normalized::Ignored { .. })
    ));
}

#[test]
fn statuses_are_one_run_per_context() {
    let opts = GithubOptions::default();
    let e = events(status("d", &fixture("status/payload.json"), &opts));
    assert_eq!(e[0].run.id, "status:default");
    assert_eq!(e[0].run.workflow, "default");
    assert_eq!(e[0].pr_number, None);
    assert_eq!(e[0].run.conclusion, Some(Conclusion::Success));
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("status/payload.json")).unwrap();
    v["state"] = "error".into();
    let body = serde_json::to_vec(&v).unwrap();
    assert_eq!(
        events(status("d", &body, &opts))[0].run.conclusion,
        Some(Conclusion::Failure)
    );
    let neutral = GithubOptions {
        status_error: Conclusion::Neutral,
        ..GithubOptions::default()
    };
    assert_eq!(
        events(status("d", &body, &neutral))[0].run.conclusion,
        Some(Conclusion::Neutral)
    );
    v["state"] = "pending".into();
    let e = events(status("d", &serde_json::to_vec(&v).unwrap(), &opts));
    assert_eq!(
        (e[0].run.status, e[0].run.conclusion),
        (Status::Queued, None)
    );
    v["state"] = "weird".into();
    assert!(status("d", &serde_json::to_vec(&v).unwrap(), &opts).is_err());
}

#[test]
fn a_failed_check_runs_output_is_the_job_of_its_run() {
    let run_mode = GithubOptions {
        checks: CheckGranularity::Run,
        ..GithubOptions::default()
    };
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("check_run/completed.payload.json")).unwrap();
    v["check_run"]["conclusion"] = "failure".into();
    v["check_run"]["output"]["title"] = "3 failures".into();
    v["check_run"]["output"]["summary"] = "é".repeat(1500).into();
    let body = serde_json::to_vec(&v).unwrap();
    let Normalized::RunsAndJobs { events, mut jobs } = check_run("o1", &body, &run_mode).unwrap()
    else {
        panic!("no job")
    };
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(
        (j.run.id.as_str(), j.run.attempt),
        (events[0].run.id.as_str(), events[0].run.attempt)
    );
    assert_eq!(
        (j.job.id.as_str(), j.job.name.as_str()),
        ("128620228", "Octocoders-linter")
    );
    assert_eq!(j.job.title.as_deref(), Some("3 failures"));
    assert_eq!(j.job.conclusion, Some(Conclusion::Failure));
    // Ingest cuts the summary to 1 KiB on a character boundary.
    jobs[0].fit(&crate::event::Limits::default());
    assert_eq!(jobs[0].job.summary.as_ref().map(String::len), Some(1024));
    // Without an output, or in suite mode, no job.
    v["check_run"]["output"]["title"] = serde_json::Value::Null;
    v["check_run"]["output"]["summary"] = serde_json::Value::Null;
    let body = serde_json::to_vec(&v).unwrap();
    assert_eq!(events_of(check_run("o2", &body, &run_mode)), 1);
    assert!(matches!(
        check_run("o3", &body, &GithubOptions::default()),
        Ok(Normalized::Ignored { .. })
    ));
}

fn events_of(n: Result<Normalized, NormalizeError>) -> usize {
    events(n).len()
}
