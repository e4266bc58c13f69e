//! Hostile input, round two, against the real server and the real binary
//! (docs/security.md "Hostile input"): times outside years 0001..=9999 are refused by
//! ingest (400), `simulate`, `replay` and the worker (dead letter `invalid` at the first
//! delivery);
//! two repositories whose owner and name join alike stay two; control characters are
//! refused in identifiers, and escaped wherever a stored one is printed (text logs,
//! `groups list`, `explain`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::helpers::app::{TestApp, eventually};
use crate::helpers::live::{all_triggers, publish_lines};
use runwatch::bus::{Bus, StreamKind};
use runwatch::event::Provider;
use runwatch::ingest::{self, Secret, github};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_runwatch");
const SECRET: &str = "hostile-secret";

/// One workflow-run event; `repo` is (owner, name, id).
fn run_event(
    id: &str,
    repo: (&str, &str, Option<&str>),
    run: &str,
    status: &str,
    at: &str,
) -> Value {
    let mut run = json!({"id": run, "attempt": 1, "workflow": format!("wf-{run}"), "status": status, "updated_at": at});
    if status == "completed" {
        run["conclusion"] = json!("failure");
    }
    json!({
        "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
        "repository": {"owner": repo.0, "name": repo.1, "id": repo.2},
        "commit_sha": "c".repeat(40), "branch": "feature", "pr_number": 1, "run": run,
    })
}

fn link_event(id: &str, at: &str) -> Value {
    json!({
        "schema": "runwatch.pull_request.v1", "event_id": id, "provider": "github",
        "repository": {"owner": "acme", "name": "times", "id": "8"},
        "commit_sha": "d".repeat(40), "pr_number": 3, "branch": "feature", "updated_at": at,
    })
}

fn fixture(path: &str) -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github")
        .join(path);
    serde_json::from_slice(&std::fs::read(file).expect("fixture")).expect("fixture JSON")
}

/// POSTs a signed GitHub delivery; (status, body).
async fn post_github(addr: SocketAddr, event: &str, delivery: &str, body: &Value) -> (u16, String) {
    let body = serde_json::to_vec(body).expect("body");
    let sig = github::sign(SECRET.as_bytes(), &body);
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-GitHub-Event: {event}\r\nX-GitHub-Delivery: {delivery}\r\nX-Hub-Signature-256: {sig}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(&body).await.expect("write body");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_400_for_times_outside_years_0001_to_9999_and_control_characters() {
    let w = TestApp::new().await;
    let mut config = w.env.config.clone();
    config.ingest.github_secrets = vec![Secret::new(SECRET)];
    config.ingest.listen = "127.0.0.1:0".parse().expect("addr");
    let stop = CancellationToken::new();
    let (addr, server) = ingest::serve(&config, w.bus.clone(), None, stop.clone())
        .await
        .expect("serve");

    let mut pr = fixture("pull_request/opened.payload.json");
    pr["pull_request"]["updated_at"] = json!("-5000-01-01T00:00:00Z");
    let (status, body) = post_github(addr, "pull_request", "t-1", &pr).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("updated_at") && body.contains("outside"),
        "{body}"
    );

    let mut run = fixture("workflow_run/completed.payload.json");
    run["workflow_run"]["updated_at"] = json!("+10000-01-01T00:00:00Z");
    let (status, body) = post_github(addr, "workflow_run", "t-2", &run).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("run.updated_at") && body.contains("outside"),
        "{body}"
    );

    let mut run = fixture("workflow_run/completed.payload.json");
    run["workflow_run"]["head_branch"] = json!("master\u{1b}[2J\r\nforged");
    let (status, body) = post_github(addr, "workflow_run", "t-3", &run).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("branch contains the control character"),
        "{body}"
    );

    // The edges are accepted.
    let mut run = fixture("workflow_run/completed.payload.json");
    run["workflow_run"]["updated_at"] = json!("9999-12-31T23:59:59Z");
    let (status, body) = post_github(addr, "workflow_run", "t-4", &run).await;
    assert_eq!(status, 200, "{body}");
    let mut pr = fixture("pull_request/opened.payload.json");
    pr["pull_request"]["updated_at"] = json!("0001-01-01T00:00:00Z");
    let (status, body) = post_github(addr, "pull_request", "t-5", &pr).await;
    assert_eq!(status, 200, "{body}");
    let state = w.bus.stream_state(StreamKind::Events).await.expect("state");
    assert_eq!(
        state.messages, 2,
        "only the two accepted deliveries were published"
    );

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    w.cleanup().await;
}

/// Publishes raw messages, bypassing every check a producer would meet.
async fn publish_raw(bus: &Bus, messages: &[Value]) {
    for m in messages {
        let id = m["event_id"].as_str().expect("event_id");
        bus.publish_event(Provider::Github, id, bytes::Bytes::from(m.to_string()))
            .await
            .expect("publish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_dead_letters_out_of_range_times_as_invalid_at_the_first_delivery() {
    let w = TestApp::new().await;
    let repo = ("acme", "times", Some("8"));
    let mut bad_branch = run_event("x-3", repo, "3", "queued", "2026-01-01T00:00:00Z");
    bad_branch["branch"] = json!("feature\r\n\u{1b}[31m");
    publish_raw(
        &w.bus,
        &[
            link_event("x-1", "-5000-01-01T00:00:00Z"),
            run_event("x-2", repo, "2", "completed", "+10000-01-01T00:00:00Z"),
            bad_branch,
            run_event("x-4", repo, "4", "queued", "0000-06-01T00:00:00Z"),
            run_event("ok-1", repo, "1", "queued", "2026-01-01T00:00:00Z"),
        ],
    )
    .await;
    // A transaction failure would be retried up to max_deliver; these must not be.
    let mut app = w.spawn_worker(
        "[[rules]]\nkind = \"all_completed_with_failure\"\n",
        &[("RUNWATCH_CONSUMER__MAX_DELIVER", "5")],
    );
    let dead = eventually(Duration::from_secs(30), "four dead letters", || async {
        let d = w.bus.read_all_dead().await.expect("dead letters");
        (d.len() >= 4).then_some(d)
    })
    .await;
    assert_eq!(dead.len(), 4, "{dead:?}");
    for d in &dead {
        assert_eq!(d.reason, "invalid", "{d:?}");
        assert_eq!(
            d.deliveries,
            Some(1),
            "dead-lettered at the first delivery: {d:?}"
        );
        assert!(
            d.detail.contains("updated_at") || d.detail.contains("branch contains"),
            "{d:?}"
        );
        assert!(!d.detail.chars().any(char::is_control), "{d:?}");
    }
    // The good event behind them was applied.
    eventually(
        Duration::from_secs(30),
        "the good event's group",
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM groups WHERE state::jsonb->'runs' ? '1'")
                    .fetch_one(&w.pool)
                    .await
                    .expect("count");
            (n == 1).then_some(())
        },
    )
    .await;
    let groups: i64 = sqlx::query_scalar("SELECT count(*) FROM groups")
        .fetch_one(&w.pool)
        .await
        .expect("count");
    assert_eq!(groups, 1);
    app.stop();
    // A replay over the same messages counts them invalid and carries on.
    let out = std::process::Command::new(BIN)
        .args(["replay", "--from-seq", "1"])
        .envs(w.env.env_vars())
        .output()
        .expect("run replay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("read=5 applied=1 invalid=4"), "{err}");
    w.cleanup().await;
}

#[tokio::test]
async fn simulate_refuses_out_of_range_times_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.jsonl");
    let repo = ("acme", "times", None);
    let lines = [
        run_event("s-1", repo, "1", "completed", "+10000-01-01T00:00:00Z").to_string(),
        link_event("s-2", "-5000-01-01T00:00:00Z").to_string(),
        run_event("s-3", repo, "3", "completed", "2026-01-01T00:00:00Z").to_string(),
    ];
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    let out = std::process::Command::new(BIN)
        .args(["simulate", path.to_str().expect("path")])
        .output()
        .expect("run simulate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("line 1: invalid: run.updated_at +10000-01-01T00:00:00Z is outside"),
        "{err}"
    );
    assert!(
        err.contains("line 2: invalid: updated_at -5000-01-01T00:00:00Z is outside"),
        "{err}"
    );
    assert!(!err.contains("line 3"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_whose_owner_and_name_join_alike_stay_two() {
    let w = TestApp::new().await;
    let mut app = w.spawn_worker(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nsettle = \"1s\"\n",
        &[],
    );
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // No repository id: identified by name. Same pull request number and commit.
    let first = ("a/b", "c", None);
    let second = ("A", "B/C", None);
    publish_lines(
        &w.bus,
        &[
            run_event("j-1", first, "1", "completed", &now).to_string(),
            run_event("j-2", second, "2", "in_progress", &now).to_string(),
        ],
    )
    .await;
    // The second's run in progress does not hold back the first's trigger.
    let fired = eventually(
        Duration::from_secs(30),
        "the first repository's trigger",
        || async {
            let t = all_triggers(&w.bus).await;
            (!t.is_empty()).then_some(t)
        },
    )
    .await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(
        (
            fired[0]["repository"]["owner"].as_str(),
            fired[0]["repository"]["name"].as_str()
        ),
        (Some("a/b"), Some("c"))
    );
    assert_eq!(
        fired[0]["runs"].as_object().map(|r| r.len()),
        Some(1),
        "{fired:?}"
    );
    let keys: Vec<(String, String, String)> =
        sqlx::query_as("SELECT owner, name, stable_key FROM repositories ORDER BY id")
            .fetch_all(&w.pool)
            .await
            .expect("repositories");
    assert_eq!(
        keys,
        vec![
            (
                "a/b".into(),
                "c".into(),
                "github:name-escaped:a%2Fb/c".into()
            ),
            (
                "A".into(),
                "B/C".into(),
                "github:name-escaped:a/b%2Fc".into()
            ),
        ]
    );

    publish_lines(
        &w.bus,
        &[run_event("j-3", second, "2", "completed", &now).to_string()],
    )
    .await;
    let fired = eventually(
        Duration::from_secs(30),
        "the second repository's trigger",
        || async {
            let t = all_triggers(&w.bus).await;
            (t.len() >= 2).then_some(t)
        },
    )
    .await;
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_eq!(fired[1]["repository"]["name"], "B/C", "{fired:?}");
    assert_eq!(
        fired[1]["runs"].as_object().map(|r| r.len()),
        Some(1),
        "{fired:?}"
    );
    assert_ne!(fired[0]["trigger_id"], fired[1]["trigger_id"]);
    let groups: i64 = sqlx::query_scalar("SELECT count(*) FROM groups")
        .fetch_one(&w.pool)
        .await
        .expect("count");
    assert_eq!(groups, 2);
    app.stop();
    w.cleanup().await;
}

/// Runs the binary with the world's configuration; (exit code, stdout).
fn run_bin(w: &TestApp, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .envs(w.env.env_vars())
        .output()
        .expect("run runwatch");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_stored_before_they_were_refused_are_escaped_when_printed() {
    let w = TestApp::new().await;
    let rules = "[[rules]]\nkind = \"all_completed_with_failure\"\nsettle = \"8s\"\n";
    let mut app = w.spawn_worker(rules, &[]);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    publish_lines(
        &w.bus,
        &[run_event("l-1", ("acme", "logs", Some("9")), "1", "completed", &now).to_string()],
    )
    .await;
    eventually(Duration::from_secs(20), "the settle timer", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM groups WHERE due_wall_at IS NOT NULL")
                .fetch_one(&w.pool)
                .await
                .expect("count");
        (n == 1).then_some(())
    })
    .await;
    app.stop();
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&w.pool)
        .await
        .expect("outbox");
    assert_eq!(
        outbox, 0,
        "the worker stopped before the settle timer was due (slow machine?)"
    );

    // What a database written before the decoder refused control characters may hold.
    let name = "logs\r\nFORGED 2026-01-01T00:00:00Z  INFO runwatch: all is well\u{1b}[2J";
    let branch = "feature\u{1b}[31m\ttab";
    sqlx::query("UPDATE repositories SET name = $1")
        .bind(name)
        .execute(&w.pool)
        .await
        .expect("rename");
    sqlx::query("UPDATE groups SET branch = $1")
        .bind(branch)
        .execute(&w.pool)
        .await
        .expect("branch");

    // A fresh worker (no cached spelling) fires the timer: `trigger published` logs the group.
    let mut app = w.spawn_worker(rules, &[("RUST_LOG", "info")]);
    let fired = eventually(Duration::from_secs(30), "the trigger", || async {
        let t = all_triggers(&w.bus).await;
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert_eq!(
        fired[0]["repository"]["name"], name,
        "the trigger carries the stored spelling (JSON-escaped)"
    );
    let log = eventually(
        Duration::from_secs(10),
        "the trigger's log line",
        || async {
            let log = app.log_text();
            log.contains("trigger published").then_some(log)
        },
    )
    .await;
    app.stop();
    assert!(log.contains(r"logs\r\nFORGED 2026"), "{log}");
    assert!(!log.chars().any(|c| c.is_control() && c != '\n'), "{log:?}");
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "{log}");

    let (_, table) = run_bin(&w, &["groups", "list"]);
    assert_eq!(table.lines().count(), 2, "{table:?}");
    assert!(table.contains(r"acme/logs\r\nFORGED"), "{table:?}");
    assert!(table.contains(r"feature\u{1b}[31m\ttab"), "{table:?}");
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "{table:?}"
    );

    let trigger_id = fired[0]["trigger_id"].as_str().expect("trigger id");
    let (_, text) = run_bin(&w, &["explain", "--trigger", trigger_id]);
    assert!(text.contains(r"acme/logs\r\nFORGED"), "{text:?}");
    assert!(text.contains(r"branch feature\u{1b}[31m\ttab"), "{text:?}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
    w.cleanup().await;
}
