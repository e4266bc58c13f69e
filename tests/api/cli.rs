//! The binary's commands end to end: config errors name the key before connecting,
//! migrate, publish + triggers tail, repo-id, purge, simulate's exit status, and a SIGTERM
//! shutdown that exits 0 within the bound.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::helpers::env::TestEnv;
use sqlx::Row;
use tokio::io::AsyncBufReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_runwatch");

async fn run(env: &TestEnv, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .envs(env.env_vars())
        .output()
        .await
        .expect("run binary")
}

fn demo() -> String {
    format!("{}/examples/demo.jsonl", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn a_bad_config_names_the_key_before_connecting() {
    let out = tokio::process::Command::new(BIN)
        .args(["run"])
        .env("RUNWATCH_CONSUMER__BATCH_SIZE", "0")
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("DATABASE_URL", "postgres://nobody:hunter2@127.0.0.1:1/x")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("consumer.batch_size"), "{err}");
    assert!(!err.contains("hunter2"), "secret leaked: {err}");

    let out = tokio::process::Command::new(BIN)
        .args(["simulate", "/dev/null"])
        .env("RUNWATCH_CONSUMER__BATCH_SIZE", "lots")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.to_lowercase().contains("batch_size"), "{err}");
}

/// Ages every group by 40 days, bypassing the trigger that keeps `updated_at` and
/// `touched_on` current.
async fn age_groups(pool: &sqlx::PgPool) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE groups SET updated_at = now() - interval '40 days',
                           touched_on = ((now() - interval '40 days') AT TIME ZONE 'UTC')::date",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn simulate_reports_malformed_lines_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let good = std::fs::read_to_string(demo()).unwrap();
    std::fs::write(&path, format!("{good}not json\n")).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["simulate", path.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 8: not_json"), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "the demo trigger still printed"
    );
}

/// Numbers that cannot be stored faithfully are refused by the binary, naming the field,
/// never clamped (two pull requests above i64::MAX would otherwise share one group).
#[tokio::test]
async fn numbers_that_cannot_be_stored_are_refused_by_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let line = |pr: &str, attempt: &str| {
        format!(
            r#"{{"schema":"runwatch.workflow_run.v1","event_id":"n{pr}{attempt}","provider":"github","repository":{{"owner":"a","name":"b"}},"commit_sha":"c","pr_number":{pr},"run":{{"id":"1","attempt":{attempt},"workflow":"w","status":"completed","conclusion":"failure","updated_at":"2026-03-01T10:00:00Z"}}}}"#
        )
    };
    let lines = [
        line("9223372036854775807", "1"),
        line("9223372036854775808", "1"),
        line("18446744073709551616", "1"),
        line("7", "4294967296"),
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["simulate", path.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    for n in 2..=4 {
        assert!(err.contains(&format!("line {n}: invalid")), "{err}");
    }
    assert!(err.contains("pr_number"), "{err}");
    assert!(!err.contains("line 1:"), "i64::MAX itself is fine: {err}");
    let fired: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["pr_number"], 9223372036854775807u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_run_tail_repo_id_purge_and_sigterm() {
    let env = TestEnv::new().await;
    let out = run(&env, &["migrate"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&env, &["publish", &demo()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "published=6 duplicates=1 invalid=0"
    );

    let mut worker = tokio::process::Command::new(BIN)
        .args(["run", "--no-migrate"])
        .envs(env.env_vars())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = run(
        &env,
        &[
            "triggers",
            "tail",
            "--from-start",
            "--count",
            "1",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let t: serde_json::Value = serde_json::from_str(line.trim()).expect("one trigger line");
    assert_eq!(t["pr_number"], 12);
    assert_eq!(t["failed_workflows"], serde_json::json!(["test"]));

    // SIGTERM: exit 0 within the bound.
    let pid = worker.id().unwrap() as i32;
    let started = Instant::now();
    assert_eq!(send_sigterm(pid), 0);
    let status = tokio::time::timeout(Duration::from_secs(15), worker.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(12));

    let out = run(&env, &["repo-id", "github", "OCTO-ORG/octo-repo"]).await;
    assert!(out.status.success());
    let id: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = run(&env, &["repo-id", "github", "nobody/nothing"]).await;
    assert_eq!(out.status.code(), Some(1));

    // Purge: nothing is old yet; then everything is old, but an unsent trigger protects
    // its group.
    let out = run(&env, &["purge", "--older-than", "30d"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    let pool = runwatch::store::connect(&env.config.database)
        .await
        .unwrap();
    age_groups(&pool).await;
    sqlx::query("UPDATE outbox SET sent_at = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let out = run(&env, &["purge", "--older-than", "30d"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "the push build's group only"
    );
    sqlx::query("UPDATE outbox SET sent_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    age_groups(&pool).await;
    let out = run(&env, &["purge", "--older-than", "30d"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let left: i64 = sqlx::query("SELECT count(*) AS n FROM groups")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!(left, 0);
    let repo: i64 = sqlx::query("SELECT id FROM repositories")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("id");
    assert_eq!(repo, id);
    pool.close().await;
    env.cleanup().await;
}

fn send_sigterm(pid: i32) -> i32 {
    // SIGTERM through the kill(1) command: no libc dependency needed.
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|s| if s.success() { 0 } else { 1 })
        .unwrap_or(1)
}

#[tokio::test]
async fn sigterm_while_services_are_unreachable_exits_promptly() {
    // A migrated database (`--no-migrate` checks the schema), NATS unreachable.
    let env = TestEnv::new().await;
    let mut child = tokio::process::Command::new(BIN)
        .args(["run", "--no-migrate"])
        .envs(env.env_vars())
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("RUNWATCH_HTTP__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // SIGTERM once the worker is in its connect-retry loop (it says so on stderr).
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("NATS connect failed; retrying") {
                return;
            }
        }
        panic!("runwatch exited before retrying its NATS connection");
    })
    .await
    .expect("a NATS connect retry within 30 s");
    // Keep reading stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert_eq!(send_sigterm(child.id().unwrap() as i32), 0);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within 5 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    env.cleanup().await;
}
