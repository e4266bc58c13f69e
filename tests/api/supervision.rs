//! The supervised worker, against the real binary: a task that dies turns readiness off
//! and ends the process non-zero; a failed publish of one trigger does not hold back the
//! inputs that decided it; an outbox row that is not a trigger is set aside; a dry-run
//! replay never touches the database, so it cannot block a live worker; `run --no-migrate`
//! refuses a schema that is behind.

use std::time::{Duration, Instant};

use crate::helpers::app::{TestApp, eventually};
use crate::helpers::live::{all_triggers, publish_lines};
use chrono::{SecondsFormat, Utc};
use runwatch::event::Provider;
use serde_json::json;

const DEFAULT_RULES: &str = "[[rules]]\nkind = \"all_completed_with_failure\"\n";

fn failing(id: &str, provider: &str, pr: u64, sha: &str) -> String {
    json!({
        "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": provider,
        "repository": {"owner": "acme", "name": "sup", "id": "5"},
        "commit_sha": sha, "branch": "f", "pr_number": pr,
        "run": {"id": format!("r-{id}"), "attempt": 1, "workflow": "test", "status": "completed",
                "conclusion": "failure", "updated_at": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)},
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test enables it)"
)]
async fn a_dead_consume_task_turns_readiness_off_and_ends_the_process_non_zero() {
    let w = TestApp::new().await;
    let bus = &w.bus;
    let mut app = w.spawn_worker(DEFAULT_RULES, &[("RUNWATCH_FAULT", "consume_panic")]);
    eventually(Duration::from_secs(30), "ready", || async {
        matches!(app.get("/readyz").await, Ok((200, _))).then_some(())
    })
    .await;

    publish_lines(bus, &[failing("k1", "github", 1, &"a".repeat(40))]).await;
    // From the panic on: /readyz answers 503 until the process is gone.
    let started = Instant::now();
    let mut saw_503 = false;
    let code = loop {
        if let Ok((503, _)) = app.get("/readyz").await {
            saw_503 = true;
        }
        if let Some(code) = app.proc.exited() {
            break code;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the process did not exit"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert_ne!(code, Some(0), "exit status");
    // TestEnv's shutdown.timeout is 10s; the event took a moment to arrive.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "exited after {:?}",
        started.elapsed()
    );
    let log = app.log_text();
    assert!(log.contains("a task ended unexpectedly"), "{log}");
    // The process's last words name the task and why.
    assert!(
        log.contains("task `consume` ended unexpectedly: panicked: fault injection"),
        "{log}"
    );
    assert!(
        saw_503,
        "/readyz never answered 503 before the exit; log:\n{log}"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_trigger_publish_acks_the_batch_and_the_relay_delivers_it_later() {
    let w = TestApp::new().await;
    let (bus, env) = (&w.bus, &w.env);
    let mut app = w.spawn_worker(DEFAULT_RULES, &[("RUNWATCH_CONSUMER__BATCH_SIZE", "16")]);
    eventually(Duration::from_secs(30), "ready", || async {
        matches!(app.get("/readyz").await, Ok((200, _))).then_some(())
    })
    .await;

    // The triggers stream stops taking GitLab triggers: their publish has no responder.
    let js = bus.jetstream();
    let mut stream = js.get_stream(&env.config.streams.triggers).await.unwrap();
    let mut cfg = stream.info().await.unwrap().config.clone();
    let all_subjects = cfg.subjects.clone();
    let prefix = &env.config.streams.triggers_subject_prefix;
    cfg.subjects = vec![format!("{prefix}.github")];
    js.update_stream(&cfg).await.unwrap();

    // One batch: a GitHub group and a GitLab group fire.
    publish_lines(
        bus,
        &[
            failing("p1", "github", 1, &"b".repeat(40)),
            failing("p2", "gitlab", 2, &"c".repeat(40)),
        ],
    )
    .await;
    let pool = &w.pool;
    eventually(Duration::from_secs(30), "both decided", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(pool)
            .await
            .unwrap();
        (n == 2).then_some(())
    })
    .await;
    // Both inputs are acked (nothing pending or waiting for redelivery), none dead-lettered.
    eventually(Duration::from_secs(20), "inputs acked", || async {
        let info = js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                &env.config.consumer.durable,
                &env.config.streams.events,
            )
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        (info.num_pending == 0 && info.num_ack_pending == 0 && info.delivered.stream_sequence == 2)
            .then_some(())
    })
    .await;
    assert!(
        bus.read_all_dead().await.unwrap().is_empty(),
        "nothing dead-lettered"
    );
    // The published trigger is marked sent by the next transaction or, with none, within
    // the worker's marking delay: wait for that rather than racing it.
    let unsent_now = || async {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT subject, last_error FROM outbox WHERE sent_at IS NULL",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    };
    eventually(
        Duration::from_secs(10),
        "only the refused trigger unsent",
        || async { (unsent_now().await.len() == 1).then_some(()) },
    )
    .await;
    let unsent = unsent_now().await;
    assert_eq!(unsent.len(), 1, "{unsent:?}");
    assert_eq!(unsent[0].0, format!("{prefix}.gitlab"));
    assert!(unsent[0].1.is_some(), "the publish error is recorded");
    assert_eq!(
        all_triggers(bus).await.len(),
        1,
        "the GitHub trigger went out"
    );

    // NATS takes GitLab triggers again: the relay delivers the one left behind.
    cfg.subjects = all_subjects;
    js.update_stream(&cfg).await.unwrap();
    let fired = eventually(Duration::from_secs(30), "the relay delivers", || async {
        let t = all_triggers(bus).await;
        (t.len() == 2).then_some(t)
    })
    .await;
    assert!(fired.iter().any(|t| t["provider"] == "gitlab"), "{fired:?}");
    app.stop();
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_row_that_is_not_a_trigger_is_set_aside_and_the_relay_goes_on() {
    let w = TestApp::new().await;
    let (bus, pool) = (&w.bus, &w.pool);
    let subject = format!("{}.github", w.env.config.streams.triggers_subject_prefix);
    sqlx::query(
        "INSERT INTO outbox (trigger_id, subject, payload) VALUES (gen_random_uuid(), $1, '\\xdeadbeef'::bytea)",
    )
    .bind(&subject)
    .execute(pool)
    .await
    .unwrap();
    let mut app = w.spawn_worker(DEFAULT_RULES, &[]);
    let reason: String = eventually(Duration::from_secs(30), "set aside", || async {
        sqlx::query_scalar::<_, Option<String>>("SELECT set_aside_reason FROM outbox")
            .fetch_one(pool)
            .await
            .unwrap()
    })
    .await;
    assert!(reason.contains("not a runwatch.trigger.v1"), "{reason}");
    // The relay goes on: a real trigger is published (and the junk row is not claimed again).
    publish_lines(bus, &[failing("o1", "github", 1, &"d".repeat(40))]).await;
    eventually(Duration::from_secs(30), "a trigger", || async {
        (all_triggers(bus).await.len() == 1).then_some(())
    })
    .await;
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM outbox WHERE set_aside_at IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap();
    // The row's lease runs out (by the database's clock) and the relay goes on claiming
    // after that: a second trigger is published. Only then is "never claimed again" shown.
    eventually(Duration::from_secs(30), "the set-aside row's lease ran out", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT coalesce(claimed_until < now(), true) FROM outbox WHERE set_aside_at IS NOT NULL",
        )
        .fetch_one(pool)
        .await
        .ok()
        .filter(|expired| *expired)
    })
    .await;
    publish_lines(bus, &[failing("o2", "github", 2, &"e".repeat(40))]).await;
    eventually(Duration::from_secs(30), "a second trigger", || async {
        (all_triggers(bus).await.len() == 2).then_some(())
    })
    .await;
    let again: i32 =
        sqlx::query_scalar("SELECT attempts FROM outbox WHERE set_aside_at IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(attempts, again, "a row set aside is never claimed again");
    let m = app.metrics().await;
    assert!(m.contains("runwatch_outbox_set_aside_total 1"), "{m}");
    assert!(m.contains("runwatch_outbox_backlog 0"), "{m}");
    app.stop();
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_replay_never_touches_the_database_nor_blocks_a_live_worker() {
    let w = TestApp::new().await;
    let (bus, env) = (&w.bus, &w.env);
    // History: 200 groups, each with a failing run.
    let history: Vec<String> = (0..200)
        .map(|i| failing(&format!("h{i}"), "github", i + 1, &format!("{i:040x}")))
        .collect();
    publish_lines(bus, &history).await;
    let mut app = w.spawn_worker(DEFAULT_RULES, &[]);
    eventually(Duration::from_secs(60), "history decided", || async {
        (all_triggers(bus).await.len() == 200).then_some(())
    })
    .await;

    // A dry run with other rules, while the live worker decides new events of the same
    // groups. Its database URL leads nowhere: it must not need one.
    let rules = w.dir.path().join("what-if.toml");
    std::fs::write(
        &rules,
        "[[rules]]\nkind = \"repeated_failure\"\nthreshold = 2\nbranches = [\"*\"]\n",
    )
    .unwrap();
    let mut vars = env.env_vars();
    vars.push((
        "DATABASE_URL".into(),
        "postgres://nobody@127.0.0.1:1/nothing".into(),
    ));
    let dry = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwatch"))
        .args(["replay", "--from-seq", "1", "--dry-run", "--rules"])
        .arg(&rules)
        .envs(vars)
        .output();
    let live = async {
        // Re-runs of the same groups, one at a time: each must be decided promptly.
        let mut worst = Duration::ZERO;
        for i in 0..20u64 {
            let sha = format!("{i:040x}");
            let line = json!({
                "schema": "runwatch.workflow_run.v1", "event_id": format!("live{i}"), "provider": "github",
                "repository": {"owner": "acme", "name": "sup", "id": "5"},
                "commit_sha": sha, "branch": "f", "pr_number": i + 1,
                "run": {"id": format!("new-{i}"), "attempt": 1, "workflow": "lint", "status": "queued",
                        "updated_at": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)},
            })
            .to_string();
            let started = Instant::now();
            publish_lines(bus, &[line]).await;
            eventually(Duration::from_secs(10), "a live decision", || async {
                let pending = bus.consumer_pending().await.unwrap_or(1);
                (pending == 0).then_some(())
            })
            .await;
            worst = worst.max(started.elapsed());
        }
        worst
    };
    let (dry, worst) = tokio::join!(dry, live);
    let dry = dry.unwrap();
    let stderr = String::from_utf8_lossy(&dry.stderr);
    assert!(dry.status.success(), "{stderr}");
    // 200 groups, all on branch f, workflow test: a streak of 2 fires once (the first two).
    let printed: Vec<serde_json::Value> = String::from_utf8_lossy(&dry.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(printed[0]["rule"], "repeated_failure");
    assert!(stderr.contains("would_fire=1"), "{stderr}");
    assert!(
        worst < Duration::from_secs(5),
        "a live decision took {worst:?}"
    );
    eprintln!("worst live decision during the dry run: {worst:?}");
    app.stop();
    let _ = Provider::Github;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_no_migrate_refuses_a_schema_that_is_behind() {
    let w = TestApp::new().await;
    let (env, pool) = (&w.env, &w.pool);
    let (version, description): (i64, String) = sqlx::query_as(
        "SELECT version, description FROM _sqlx_migrations ORDER BY version DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(version)
        .execute(pool)
        .await
        .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwatch"))
        .args(["run", "--no-migrate"])
        .envs(env.env_vars())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("schema is behind"), "{stderr}");
    assert!(
        stderr.contains(&format!("{version} ({description})")),
        "{stderr}"
    );
    w.cleanup().await;
}
