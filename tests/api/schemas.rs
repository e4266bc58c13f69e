//! `schemas/workflow_run.v1.json` and `schemas/trigger.v1.json` against the code:
//! - every conformance event and the demo's events validate against the event schema (a
//!   `runwatch.pull_request.v1` line against `schemas/pull_request.v1.json`);
//! - every trigger `simulate` prints for the conformance suite validates against the trigger
//!   schema (the live pipeline's triggers are checked in `tests/api/live_scenarios.rs`);
//! - what `runwatch::event::decode` rejects for its shape, the event schema rejects too, and
//!   what it accepts (aliases, nulls, absent optional fields, unknown fields), the schema
//!   accepts too.

use std::path::PathBuf;

use crate::helpers::scenarios::{load_scenarios, scenarios_dir};
use crate::helpers::schemas::{
    assert_valid_trigger, errors, event_schema, job_schema, pull_request_schema,
};
use runwatch::event::{Limits, RejectCode, decode};
use serde_json::{Value, json};

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
}

#[test]
fn every_conformance_and_demo_event_validates() {
    let demo_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/demo.jsonl");
    let demo = std::fs::read_to_string(&demo_path).unwrap();
    let mut files = vec![("examples/demo.jsonl".to_string(), demo)];
    for s in load_scenarios() {
        files.push((
            format!("{}/{}/events.jsonl", scenarios_dir().display(), s.name),
            s.events,
        ));
    }
    let mut checked = 0;
    let mut failures = Vec::new();
    for (file, text) in &files {
        for (n, line) in lines(text) {
            let v: Value = serde_json::from_str(line).unwrap();
            // The suite holds only events runwatch accepts; a scenario about rejected input
            // would say so here.
            let input = runwatch::pull_request::decode_input(line.as_bytes(), &Limits::default())
                .unwrap_or_else(|r| panic!("{file}:{n}: decode rejects it: {r}"));
            let schema = match input {
                runwatch::pull_request::Input::Run(_) => event_schema(),
                runwatch::pull_request::Input::PullRequest(_) => pull_request_schema(),
                runwatch::pull_request::Input::Job(_) => job_schema(),
            };
            let why = errors(schema, &v);
            if !why.is_empty() {
                failures.push(format!("{file}:{n}:\n{why}"));
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} events found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_trigger_simulate_prints_for_the_suite_validates() {
    let mut checked = 0;
    for s in load_scenarios() {
        let (out, _) = s.simulate();
        for (n, line) in lines(&out) {
            let t: Value = serde_json::from_str(line).unwrap();
            let context = format!("{} trigger {n}", s.name);
            assert_valid_trigger(&t, &context);
            // What the schema describes but cannot state: both rules fire on completed runs
            // only, and failed_workflows is sorted.
            for (id, run) in t["runs"].as_object().unwrap() {
                assert_eq!(run["status"], "completed", "{context}: run {id}");
            }
            let failed: Vec<&str> = t["failed_workflows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect();
            assert!(failed.is_sorted(), "{context}: failed_workflows {failed:?}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} triggers printed");
}

/// A trigger with a field of the wrong type or value is refused by the trigger schema (the
/// schema is not vacuous).
#[test]
fn the_trigger_schema_rejects_malformed_triggers() {
    let good = json!({
        "schema": "runwatch.trigger.v1",
        "trigger_id": "0b5e5b0e-1f8c-5a2e-9a43-2d7c1b1f0e11",
        "rule": "all_completed_with_failure",
        "rule_name": "all_completed_with_failure",
        "provider": "github",
        "repository": {"owner": "octo-org", "name": "octo-repo", "id": "300029405", "internal_id": 1},
        "pr_number": 2,
        "commit_sha": "3484a3fb",
        "branch": "feature/x",
        "episode": 0,
        "runs": {"289782451": {"attempt": 1, "workflow": "test", "status": "completed",
                               "conclusion": "failure", "url": null,
                               "updated_at": "2020-10-05T16:33:24Z"}},
        "failed_workflows": ["test"],
        "fired_at": "2020-10-05T16:33:24Z"
    });
    assert_valid_trigger(&good, "the example");
    let mut streak = good.clone();
    streak["rule"] = json!("repeated_failure");
    streak["workflow"] = json!("test");
    assert_valid_trigger(&streak, "a repeated_failure example");
    let budgeted = with(
        &good,
        "/budget",
        json!({"pull_request": {"used": 2, "limit": 3, "window_seconds": 86400},
               "repository": {"used": 7, "limit": 20, "window_seconds": 86400}}),
    );
    assert_valid_trigger(&budgeted, "a trigger with its budgets");

    let bad: Vec<(&str, Value)> = vec![
        (
            "schema",
            with(&good, "/schema", json!("runwatch.trigger.v2")),
        ),
        (
            "trigger_id",
            with(&good, "/trigger_id", json!("not-a-uuid")),
        ),
        ("rule", with(&good, "/rule", json!("sometimes"))),
        ("provider", with(&good, "/provider", json!("sourceforge"))),
        (
            "internal_id",
            with(&good, "/repository/internal_id", json!("1")),
        ),
        ("pr_number", without(&good, "/pr_number")),
        ("episode", with(&good, "/episode", json!(-1))),
        ("runs empty", with(&good, "/runs", json!({}))),
        (
            "run status",
            with(&good, "/runs/289782451/status", json!("done")),
        ),
        (
            "run attempt",
            with(&good, "/runs/289782451/attempt", json!(0)),
        ),
        (
            "failed_workflows empty",
            with(&good, "/failed_workflows", json!([])),
        ),
        (
            "failed_workflows repeated",
            with(&good, "/failed_workflows", json!(["a", "a"])),
        ),
        ("fired_at", with(&good, "/fired_at", json!("yesterday"))),
        (
            "workflow on all_completed_with_failure",
            with(&good, "/workflow", json!("test")),
        ),
        (
            "repeated_failure without workflow",
            without(&streak, "/workflow"),
        ),
        (
            "repeated_failure episode",
            with(&streak, "/episode", json!(1)),
        ),
        ("budget empty", with(&good, "/budget", json!({}))),
        (
            "budget used 0",
            with(&budgeted, "/budget/pull_request/used", json!(0)),
        ),
        (
            "budget without limit",
            without(&budgeted, "/budget/repository/limit"),
        ),
        (
            "budget of another scope",
            with(
                &budgeted,
                "/budget/organization",
                json!({"used": 1, "limit": 1, "window_seconds": 1}),
            ),
        ),
        (
            "budget on repeated_failure",
            with(
                &streak,
                "/budget",
                json!({"repository": {"used": 1, "limit": 1, "window_seconds": 60}}),
            ),
        ),
    ];
    for (what, t) in bad {
        assert!(!trigger_valid(&t), "{what}: the trigger schema accepts {t}");
    }
}

fn trigger_valid(t: &Value) -> bool {
    crate::helpers::schemas::trigger_schema().is_valid(t)
}

/// A copy of `v` with the value at the JSON pointer `at` set (its parent must exist).
fn with(v: &Value, at: &str, value: Value) -> Value {
    let mut v = v.clone();
    let (parent, key) = at.rsplit_once('/').unwrap();
    let p = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).unwrap()
    };
    p.as_object_mut().unwrap().insert(key.to_string(), value);
    v
}

/// A copy of `v` without the member at the JSON pointer `at`.
fn without(v: &Value, at: &str) -> Value {
    let mut v = v.clone();
    let (parent, key) = at.rsplit_once('/').unwrap();
    let p = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).unwrap()
    };
    assert!(
        p.as_object_mut().unwrap().remove(key).is_some(),
        "{at} is not there"
    );
    v
}

fn good_event() -> Value {
    json!({
        "schema": "runwatch.workflow_run.v1",
        "event_id": "e1",
        "provider": "github",
        "repository": {"owner": "octo-org", "name": "octo-repo", "id": "300029405"},
        "commit_sha": "3484a3fb816e0859fd6e1cea078d76385ff50625",
        "branch": "feature/x",
        "pr_number": 2,
        "run": {
            "id": "289782451",
            "attempt": 1,
            "workflow": "test",
            "status": "completed",
            "conclusion": "failure",
            "url": "https://github.com/octo-org/octo-repo/actions/runs/289782451",
            "updated_at": "2020-10-05T16:33:24Z"
        },
        "metadata": {}
    })
}

/// Decodes the bytes of `text`; `Ok` or the rejection code.
fn decoded(text: &str) -> Result<(), RejectCode> {
    decode(text.as_bytes(), &Limits::default())
        .map(|_| ())
        .map_err(|r| r.code)
}

/// Events that are wrong in shape: a required field missing, a wrong type, a value out of
/// its set or range. Each is also given as raw text where JSON values cannot express it.
fn shape_invalid() -> Vec<(String, String)> {
    let g = good_event();
    let queued = with(
        &without(&g, "/run/conclusion"),
        "/run/status",
        json!("queued"),
    );
    let mut cases: Vec<(&str, Value)> = vec![
        ("schema missing", without(&g, "/schema")),
        (
            "schema of another version",
            with(&g, "/schema", json!("runwatch.workflow_run.v2")),
        ),
        ("schema null", with(&g, "/schema", Value::Null)),
        ("event_id missing", without(&g, "/event_id")),
        ("event_id empty", with(&g, "/event_id", json!(""))),
        ("event_id blank", with(&g, "/event_id", json!(" \t "))),
        (
            "event_id with a newline",
            with(&g, "/event_id", json!("a\nb")),
        ),
        (
            "event_id with DEL",
            with(&g, "/event_id", json!("a\u{7f}b")),
        ),
        (
            "event_id with a C1 control",
            with(&g, "/event_id", json!("a\u{85}b")),
        ),
        ("event_id a number", with(&g, "/event_id", json!(7))),
        ("provider missing", without(&g, "/provider")),
        (
            "provider unknown",
            with(&g, "/provider", json!("sourceforge")),
        ),
        (
            "provider in capitals",
            with(&g, "/provider", json!("GitHub")),
        ),
        ("repository missing", without(&g, "/repository")),
        (
            "repository a string",
            with(&g, "/repository", json!("octo-org/octo-repo")),
        ),
        ("repository.owner missing", without(&g, "/repository/owner")),
        (
            "repository.owner blank",
            with(&g, "/repository/owner", json!("  ")),
        ),
        (
            "repository.name null",
            with(&g, "/repository/name", Value::Null),
        ),
        (
            "repository.name with NUL",
            with(&g, "/repository/name", json!("a\u{0}b")),
        ),
        (
            "repository.id a number",
            with(&g, "/repository/id", json!(300029405)),
        ),
        (
            "repository.id with NUL",
            with(&g, "/repository/id", json!("1\u{0}")),
        ),
        ("commit_sha missing", without(&g, "/commit_sha")),
        ("commit_sha empty", with(&g, "/commit_sha", json!(""))),
        (
            "commit_sha with NUL",
            with(&g, "/commit_sha", json!("abc\u{0}")),
        ),
        ("branch a number", with(&g, "/branch", json!(1))),
        ("branch with NUL", with(&g, "/branch", json!("main\u{0}"))),
        ("pr_number a string", with(&g, "/pr_number", json!("2"))),
        ("pr_number 0", with(&g, "/pr_number", json!(0))),
        ("pr_number negative", with(&g, "/pr_number", json!(-1))),
        ("pr_number a fraction", with(&g, "/pr_number", json!(1.5))),
        (
            "pr_number an object",
            with(&g, "/pr_number", json!({"number": 2})),
        ),
        ("run missing", without(&g, "/run")),
        ("run an array", with(&g, "/run", json!([]))),
        ("run.id missing", without(&g, "/run/id")),
        ("run.id a number", with(&g, "/run/id", json!(289782451))),
        ("run.id blank", with(&g, "/run/id", json!(" "))),
        ("run.workflow missing", without(&g, "/run/workflow")),
        ("run.workflow empty", with(&g, "/run/workflow", json!(""))),
        (
            "run.workflow with NUL",
            with(&g, "/run/workflow", json!("t\u{0}")),
        ),
        ("run.status missing", without(&g, "/run/status")),
        ("run.status unknown", with(&g, "/run/status", json!("done"))),
        (
            "run.status in capitals",
            with(&g, "/run/status", json!("COMPLETED")),
        ),
        ("run.status null", with(&g, "/run/status", Value::Null)),
        (
            "conclusion missing when completed",
            without(&g, "/run/conclusion"),
        ),
        (
            "conclusion null when completed",
            with(&g, "/run/conclusion", Value::Null),
        ),
        (
            "conclusion unknown",
            with(&g, "/run/conclusion", json!("failed")),
        ),
        (
            "conclusion unknown on a queued run",
            with(&queued, "/run/conclusion", json!("failed")),
        ),
        ("conclusion a number", with(&g, "/run/conclusion", json!(1))),
        ("run.attempt 0", with(&g, "/run/attempt", json!(0))),
        ("run.attempt negative", with(&g, "/run/attempt", json!(-1))),
        ("run.attempt a string", with(&g, "/run/attempt", json!("1"))),
        ("run.attempt null", with(&g, "/run/attempt", Value::Null)),
        (
            "run.attempt over u32",
            with(&g, "/run/attempt", json!(4_294_967_296u64)),
        ),
        (
            "run.attempt a fraction",
            with(&g, "/run/attempt", json!(1.5)),
        ),
        ("run.url a number", with(&g, "/run/url", json!(1))),
        (
            "run.url with NUL",
            with(&g, "/run/url", json!("https://x/\u{0}")),
        ),
        ("run.updated_at missing", without(&g, "/run/updated_at")),
        (
            "run.updated_at a word",
            with(&g, "/run/updated_at", json!("yesterday")),
        ),
        (
            "run.updated_at a number",
            with(&g, "/run/updated_at", json!(1_601_915_604)),
        ),
        (
            "run.updated_at a date",
            with(&g, "/run/updated_at", json!("2020-10-05")),
        ),
        (
            "run.updated_at without a zone",
            with(&g, "/run/updated_at", json!("2020-10-05T16:33:24")),
        ),
        (
            "run.updated_at month 13",
            with(&g, "/run/updated_at", json!("2020-13-05T16:33:24Z")),
        ),
        (
            "run.updated_at year -5000",
            with(&g, "/run/updated_at", json!("-5000-01-01T00:00:00Z")),
        ),
        (
            "run.updated_at year +10000",
            with(&g, "/run/updated_at", json!("+10000-01-01T00:00:00Z")),
        ),
        (
            "run.updated_at year 0000",
            with(&g, "/run/updated_at", json!("0000-06-01T00:00:00Z")),
        ),
        (
            "repository.owner with ESC",
            with(&g, "/repository/owner", json!("octo\u{1b}[31m")),
        ),
        (
            "repository.name with LF",
            with(&g, "/repository/name", json!("repo\nINFO forged")),
        ),
        (
            "repository.id with CR",
            with(&g, "/repository/id", json!("1\r")),
        ),
        (
            "commit_sha with TAB",
            with(&g, "/commit_sha", json!("abc\tdef")),
        ),
        (
            "branch with C1 (NEL)",
            with(&g, "/branch", json!("main\u{85}")),
        ),
        ("branch with DEL", with(&g, "/branch", json!("main\u{7f}"))),
        ("run.id with LF", with(&g, "/run/id", json!("1\n2"))),
        (
            "run.workflow with ESC",
            with(&g, "/run/workflow", json!("\u{1b}]0;x\u{7}test")),
        ),
        ("metadata an array", with(&g, "/metadata", json!([1]))),
        ("metadata a string", with(&g, "/metadata", json!("{}"))),
        ("metadata a number", with(&g, "/metadata", json!(0))),
        ("an array", json!([g.clone()])),
        ("null", Value::Null),
        ("a string", json!("runwatch.workflow_run.v1")),
    ];
    let mut out: Vec<(String, String)> = cases
        .drain(..)
        .map(|(what, v)| (what.to_string(), v.to_string()))
        .collect();
    // Above i64::MAX: the group key cannot store it faithfully.
    out.push((
        "pr_number i64::MAX + 1".into(),
        with(&g, "/pr_number", json!(i64::MAX as u64 + 1)).to_string(),
    ));
    out.push((
        "pr_number u64::MAX".into(),
        with(&g, "/pr_number", json!(u64::MAX)).to_string(),
    ));
    // Past u64, which serde_json's Value would turn into a float before we could write it.
    let text = g.to_string();
    out.push((
        "pr_number over u64".into(),
        text.replace("\"pr_number\":2", "\"pr_number\":18446744073709551616"),
    ));
    out
}

#[test]
fn what_decode_rejects_for_shape_the_schema_rejects() {
    let mut failures = Vec::new();
    for (what, text) in shape_invalid() {
        match decoded(&text) {
            Ok(()) => failures.push(format!("{what}: decode accepts {text}")),
            Err(RejectCode::Oversize | RejectCode::TooManyRuns) => {
                failures.push(format!("{what}: rejected for size, not shape"))
            }
            Err(_) => {}
        }
        // The instance as any JSON parser sees it.
        let v: Value = serde_json::from_str(&text).unwrap();
        if event_schema().is_valid(&v) {
            failures.push(format!("{what}: the schema accepts {text}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Events in every shape `decode` accepts: the schema must accept them too, or it would
/// refuse what runwatch documents as valid.
#[test]
fn what_decode_accepts_the_schema_accepts() {
    let g = good_event();
    let queued = with(
        &without(&g, "/run/conclusion"),
        "/run/status",
        json!("queued"),
    );
    let mut cases: Vec<(String, Value)> = vec![
        ("the example".into(), g.clone()),
        ("attempt absent".into(), without(&g, "/run/attempt")),
        (
            "attempt u32::MAX".into(),
            with(&g, "/run/attempt", json!(u32::MAX)),
        ),
        ("branch null".into(), with(&g, "/branch", Value::Null)),
        ("branch absent".into(), without(&g, "/branch")),
        ("pr_number null".into(), with(&g, "/pr_number", Value::Null)),
        ("pr_number absent".into(), without(&g, "/pr_number")),
        (
            "pr_number i64::MAX".into(),
            with(&g, "/pr_number", json!(i64::MAX)),
        ),
        (
            "repository.id null".into(),
            with(&g, "/repository/id", Value::Null),
        ),
        ("repository.id absent".into(), without(&g, "/repository/id")),
        ("url null".into(), with(&g, "/run/url", Value::Null)),
        ("url absent".into(), without(&g, "/run/url")),
        ("metadata null".into(), with(&g, "/metadata", Value::Null)),
        ("metadata absent".into(), without(&g, "/metadata")),
        (
            "metadata nested".into(),
            with(&g, "/metadata", json!({"a": {"b": [1, null, "x"]}})),
        ),
        (
            "unknown fields".into(),
            with(
                &with(&with(&g, "/x", json!(1)), "/run/y", json!([])),
                "/repository/z",
                json!({}),
            ),
        ),
        (
            "a conclusion on a queued run".into(),
            with(&queued, "/run/conclusion", json!("success")),
        ),
        (
            "a null conclusion on a queued run".into(),
            with(&queued, "/run/conclusion", Value::Null),
        ),
        (
            "updated_at with an offset".into(),
            with(&g, "/run/updated_at", json!("2020-10-05T18:33:24+02:00")),
        ),
        (
            "updated_at in year 0001".into(),
            with(&g, "/run/updated_at", json!("0001-01-01T00:00:00Z")),
        ),
        (
            "updated_at at the end of year 9999".into(),
            with(
                &g,
                "/run/updated_at",
                json!("9999-12-31T23:59:59.999999999Z"),
            ),
        ),
        (
            "run.url with a tab (free text, not an identifier)".into(),
            with(&g, "/run/url", json!("https://x/\ty")),
        ),
        (
            "updated_at with a fraction".into(),
            with(&g, "/run/updated_at", json!("2020-10-05T16:33:24.123456Z")),
        ),
        (
            "non-ASCII names".into(),
            with(&g, "/repository/owner", json!("Ünïcødé-😀")),
        ),
        (
            "event_id with spaces around".into(),
            with(&g, "/event_id", json!(" e 1 ")),
        ),
    ];
    for status in ["queued", "in_progress", "requested", "waiting", "pending"] {
        cases.push((
            format!("status {status}"),
            with(&queued, "/run/status", json!(status)),
        ));
    }
    for conclusion in [
        "success",
        "failure",
        "cancelled",
        "timed_out",
        "skipped",
        "neutral",
        "action_required",
        "startup_failure",
        "stale",
    ] {
        cases.push((
            format!("conclusion {conclusion}"),
            with(&g, "/run/conclusion", json!(conclusion)),
        ));
    }
    for provider in [
        "github",
        "gitlab",
        "bitbucket",
        "azure_devops",
        "generic",
        "buildkite",
        "circleci",
    ] {
        cases.push((
            format!("provider {provider}"),
            with(&g, "/provider", json!(provider)),
        ));
    }
    let mut failures = Vec::new();
    for (what, v) in cases {
        let text = v.to_string();
        if let Err(code) = decoded(&text) {
            failures.push(format!("{what}: decode rejects it ({code})"));
        }
        let why = errors(event_schema(), &v);
        if !why.is_empty() {
            failures.push(format!("{what}: the schema rejects it:\n{why}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The examples in docs/design.md (its `json` blocks: an event, a job, a trigger, each
/// checked against the schema it names) are valid, so the document cannot drift from the
/// schemas unseen.
#[test]
fn the_examples_in_the_design_document_validate() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/design.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let blocks: Vec<Value> = text
        .split("```json\n")
        .skip(1)
        .map(|b| serde_json::from_str(b.split("```").next().unwrap()).unwrap())
        .collect();
    assert!(
        blocks.len() >= 2,
        "docs/design.md should hold an event and a trigger example"
    );
    let mut triggers = 0;
    for b in &blocks {
        match b["schema"].as_str() {
            Some(runwatch::event::SCHEMA) => {
                decode(b.to_string().as_bytes(), &Limits::default()).unwrap();
                let why = errors(event_schema(), b);
                assert!(why.is_empty(), "the event example:\n{why}");
            }
            Some(runwatch::job::JOB_SCHEMA) => {
                runwatch::pull_request::decode_input(b.to_string().as_bytes(), &Limits::default())
                    .unwrap();
                let why = errors(job_schema(), b);
                assert!(why.is_empty(), "the job example:\n{why}");
            }
            Some(runwatch::trigger::TRIGGER_SCHEMA) => {
                assert_valid_trigger(b, "the trigger example");
                let trigger: runwatch::trigger::Trigger =
                    serde_json::from_value(b.clone()).unwrap();
                assert_eq!(trigger.schema, runwatch::trigger::TRIGGER_SCHEMA);
                triggers += 1;
            }
            other => panic!("a json example in docs/design.md of schema {other:?}"),
        }
    }
    assert!(
        triggers >= 1,
        "docs/design.md should hold a trigger example"
    );
    assert!(
        blocks.iter().any(|b| b["runs"]
            .as_object()
            .is_some_and(|r| r.values().any(|r| r["jobs"].is_array()))),
        "a trigger example should show a failed run's jobs"
    );
}

/// What `decode_input` accepts of a job message the job schema accepts, and what it rejects
/// for its shape or bounds the schema rejects (sizes in bytes the schema cannot count are
/// left out).
#[test]
fn the_job_schema_agrees_with_decode() {
    let good = json!({
        "schema": "runwatch.workflow_job.v1", "event_id": "d-1", "provider": "github",
        "repository": {"owner": "o", "name": "r", "id": "7"}, "commit_sha": "abc",
        "run": {"id": "99", "attempt": 2, "workflow": "ci"},
        "job": {"id": "5", "name": "test", "status": "completed", "conclusion": "failure",
            "url": "https://x/5", "stage": "test", "failure_reason": "script_failure",
            "title": "2 failures", "summary": "line 1\nline 2",
            "failed_steps": [{"number": 3, "name": "Run tests"}, {"name": "no number"}],
            "failed_steps_omitted": 0, "runner_labels": ["ubuntu-latest"],
            "started_at": "2026-01-01T00:00:00Z", "completed_at": "2026-01-01T00:01:00Z",
            "updated_at": "2026-01-01T00:01:00Z"},
        "metadata": {"k": 1}, "unknown": true
    });
    let accepts = |v: &Value| {
        runwatch::pull_request::decode_input(v.to_string().as_bytes(), &Limits::default()).is_ok()
    };
    let valid = |v: &Value| errors(job_schema(), v).is_empty();
    let mut cases = vec![("good".to_string(), good.clone(), true)];
    let mut queued = good.clone();
    queued["job"]["status"] = "waiting".into();
    queued["job"]["conclusion"] = Value::Null;
    cases.push(("waiting, no conclusion".into(), queued, true));
    let mut minimal = good.clone();
    for k in [
        "url",
        "stage",
        "failure_reason",
        "title",
        "summary",
        "failed_steps",
        "failed_steps_omitted",
        "runner_labels",
        "started_at",
        "completed_at",
    ] {
        minimal["job"].as_object_mut().unwrap().remove(k);
    }
    minimal["run"].as_object_mut().unwrap().remove("attempt");
    cases.push(("minimal".into(), minimal, true));
    let bad: Vec<(&str, &str, Value)> = vec![
        ("job", "status", "weird".into()),
        ("job", "conclusion", Value::Null),
        ("job", "conclusion", "wrong".into()),
        ("job", "name", "".into()),
        ("job", "name", "a\u{1b}b".into()),
        ("job", "id", 5.into()),
        ("job", "updated_at", "yesterday".into()),
        ("job", "failed_steps", json!([{"number": -1, "name": "x"}])),
        ("job", "failed_steps", json!([{"name": "x\ny"}])),
        (
            "job",
            "failed_steps",
            Value::Array((0..51).map(|i| json!({"name": format!("s{i}")})).collect()),
        ),
        (
            "job",
            "runner_labels",
            Value::Array((0..21).map(|i| json!(format!("l{i}"))).collect()),
        ),
        ("job", "summary", "s".repeat(1025).into()),
        ("run", "attempt", 0.into()),
        ("run", "id", "".into()),
    ];
    for (obj, key, value) in bad {
        let mut v = good.clone();
        v[obj][key] = value.clone();
        cases.push((format!("{obj}.{key} = {value}"), v, false));
    }
    let mut no_job = good.clone();
    no_job.as_object_mut().unwrap().remove("job");
    cases.push(("no job".into(), no_job, false));
    let mut failures = Vec::new();
    for (what, v, ok) in &cases {
        if accepts(v) != *ok {
            failures.push(format!("{what}: decode_input accepts = {}", !ok));
        }
        if valid(v) != *ok {
            failures.push(format!(
                "{what}: the schema accepts = {}:\n{}",
                !ok,
                errors(job_schema(), v)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
