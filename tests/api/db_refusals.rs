//! A database that refuses the worker (a revoked privilege, a table lock) turns no good
//! event into a dead letter: the real `runwatch run` binary, connected as a role of this
//! test (so `REVOKE` applies to it), holds the batch and retries it without spending its
//! deliveries, `/readyz` answers 503 with the reason while it lasts, a metric counts it,
//! one warning is logged per episode, and once the database takes the transaction again
//! the event fires without a redrive, exactly once. An event that the database refuses
//! for its own values is still dead-lettered, with the SQLSTATE in its detail
//! (docs/reliability.md, "When the database refuses").

use std::path::Path;
use std::time::{Duration, Instant};

use crate::helpers::app::{App, TestApp, eventually};
use crate::helpers::live::{all_triggers, publish_lines};
use crate::helpers::procs::{self, WorkerProc};
use crate::helpers::services::{database_url, unique, with_database};
use sqlx::Connection;

const RULES: &str = "[[rules]]\nkind = \"all_completed_with_failure\"\n";

/// A failing run of its own group (no settle: fires in the record transaction).
fn failing(id: &str, sha: &str, pr: u32, branch: &str) -> String {
    format!(
        r#"{{"schema":"runwatch.workflow_run.v1","event_id":"{id}","provider":"github","repository":{{"owner":"acme","name":"refusals","id":"93"}},"commit_sha":"{sha}","branch":"{branch}","pr_number":{pr},"run":{{"id":"{id}-1","attempt":1,"workflow":"build","status":"completed","conclusion":"failure","updated_at":"2026-03-01T10:00:00Z"}}}}"#
    )
}

/// Replaces the user of a Postgres URL (trust authentication in the test cluster).
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

/// A login role of this test with the worker's rights on the test database; dropped at the
/// end (after the database, which holds its grants), also when the test fails.
struct Role {
    name: String,
    db: String,
}

impl Role {
    async fn create(w: &TestApp) -> Role {
        let db_url = &w.env.config.database.url;
        let name = unique("rwrefuse").to_lowercase();
        let mut admin = sqlx::PgConnection::connect(db_url)
            .await
            .expect("connect as postgres");
        for sql in [
            format!("CREATE ROLE \"{name}\" LOGIN"),
            format!("GRANT USAGE ON SCHEMA public TO \"{name}\""),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{name}\""
            ),
            format!("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO \"{name}\""),
        ] {
            sqlx::query(&sql)
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        admin.close().await.ok();
        Role {
            name,
            db: w.env.db_name.clone(),
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let (name, db) = (self.name.clone(), self.db.clone());
        crate::helpers::services::clean_up_blocking(async move {
            let admin_url = with_database(&database_url(), "postgres");
            if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                // The database holds the role's grants: it goes first (the test's own
                // cleanup has usually dropped it already).
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
                let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{name}\""))
                    .execute(&mut admin)
                    .await;
            }
        });
    }
}

/// `runwatch run --no-migrate` as `role` (like `crate::helpers::app::spawn_app`): max_deliver 3,
/// backoff 50..300 ms, ack_wait 3 s, and `extra`.
fn spawn_as(w: &TestApp, role: &Role, extra: &[(&str, &str)]) -> App {
    let dir = w.dir.path();
    let rules_file = dir.join("rules.toml");
    std::fs::write(&rules_file, RULES).expect("write rules");
    let port = procs::free_port().expect("free port");
    let mut vars = w.env.env_vars();
    for (k, v) in [
        (
            "DATABASE_URL",
            with_user(&w.env.config.database.url, &role.name),
        ),
        ("RUNWATCH_DATABASE__CREATE_IF_MISSING", "false".into()),
        ("RUNWATCH_HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ("RUNWATCH_RULES_FILE", rules_file.display().to_string()),
        ("RUNWATCH_TIMERS__INTERVAL", "100ms".into()),
        ("RUNWATCH_CONSUMER__MAX_DELIVER", "3".into()),
        ("RUNWATCH_CONSUMER__ACK_WAIT", "3s".into()),
        ("RUNWATCH_CONSUMER__HEARTBEAT", "1s".into()),
        ("RUNWATCH_RETRY__MIN_DELAY", "50ms".into()),
        ("RUNWATCH_RETRY__MAX_DELAY", "300ms".into()),
    ] {
        vars.push((k.into(), v));
    }
    for (k, v) in extra {
        vars.push(((*k).into(), (*v).into()));
    }
    let mut seen = std::collections::HashSet::new();
    vars.reverse();
    vars.retain(|(k, _)| seen.insert(k.clone()));
    let log = dir.join("worker.log");
    let bin = Path::new(env!("CARGO_BIN_EXE_runwatch"));
    let proc = WorkerProc::start_command(bin, &["run", "--no-migrate"], vars, &log)
        .expect("start runwatch run");
    procs::wait_listening(port, Duration::from_secs(60)).expect("runwatch listens");
    App { proc, port, log }
}

/// The value of one series on `/metrics` (0 when absent).
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn readyz(app: &App) -> (u16, String) {
    app.get("/readyz").await.expect("GET /readyz")
}

/// Holds the fault until the worker has failed at least `attempts` times on `kind` and
/// `at_least` has passed, checking all along that readiness is off and that nothing was
/// dead-lettered or fired.
async fn while_refused(
    w: &TestApp,
    app: &App,
    kind: &str,
    attempts: f64,
    at_least: Duration,
    readiness: &[&str],
) -> f64 {
    let since = Instant::now();
    let series = format!("runwatch_database_errors_total{{op=\"record\",kind=\"{kind}\"}}");
    eventually(
        Duration::from_secs(60),
        &format!("{attempts} failed attempts ({kind})"),
        || async {
            let (status, body) = readyz(app).await;
            assert_eq!(status, 503, "/readyz while the database refuses: {body}");
            for word in readiness {
                assert!(body.contains(word), "/readyz names {word}: {body}");
            }
            assert!(
                w.bus.read_all_dead().await.unwrap().is_empty(),
                "nothing dead-lettered"
            );
            assert!(all_triggers(&w.bus).await.is_empty(), "nothing fired yet");
            let n = value(&app.metrics().await, &series);
            (n >= attempts && since.elapsed() >= at_least).then_some(n)
        },
    )
    .await
}

/// After the fault: the event fires once without a redrive, readiness is back, nothing was
/// dead-lettered or redelivered.
async fn recovers(w: &TestApp, app: &App) {
    let fired = eventually(Duration::from_secs(30), "the held event fires", || async {
        let t = all_triggers(&w.bus).await;
        (!t.is_empty()).then_some(t)
    })
    .await;
    eventually(Duration::from_secs(10), "/readyz 200 again", || async {
        (readyz(app).await.0 == 200).then_some(())
    })
    .await;
    let m = app.metrics().await;
    assert_eq!(value(&m, "runwatch_database_unavailable"), 0.0, "{m}");
    assert_eq!(
        value(&m, "runwatch_events_total{outcome=\"applied\"}"),
        1.0,
        "{m}"
    );
    // Kept in progress while held: never redelivered (ack_wait is 3 s), so no delivery spent.
    assert_eq!(value(&m, "runwatch_redeliveries_total"), 0.0, "{m}");
    assert_eq!(
        value(&m, "runwatch_events_total{outcome=\"retried\"}"),
        0.0,
        "{m}"
    );
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(all_triggers(&w.bus).await.len(), 1, "decided once");
    assert!(
        w.bus.read_all_dead().await.unwrap().is_empty(),
        "nothing dead-lettered"
    );
    let log = app.log_text();
    assert!(log.contains("database answers the worker again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_privilege_holds_the_event_reports_it_and_it_fires_after_the_grant() {
    let w = TestApp::new().await;
    let role = Role::create(&w).await;
    let mut app = spawn_as(&w, &role, &[]);
    eventually(Duration::from_secs(30), "ready", || async {
        (readyz(&app).await.0 == 200).then_some(())
    })
    .await;

    let mut admin = sqlx::PgConnection::connect(&w.env.config.database.url)
        .await
        .unwrap();
    sqlx::query(&format!(
        "REVOKE INSERT, UPDATE ON groups FROM \"{}\"",
        role.name
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    publish_lines(&w.bus, &[failing("r1", "abc1", 1, "f")]).await;
    let since = Instant::now();
    eventually(Duration::from_secs(20), "/readyz 503", || async {
        (readyz(&app).await.0 == 503).then_some(())
    })
    .await;
    eprintln!("/readyz 503 {:?} after the event", since.elapsed());
    // Many more attempts than max_deliver (3), and longer than ack_wait (3 s) twice.
    let attempts = while_refused(
        &w,
        &app,
        "permission",
        10.0,
        Duration::from_secs(7),
        &["refusing", "42501", "groups"],
    )
    .await;
    eprintln!("{attempts} failed attempts while revoked");
    let m = app.metrics().await;
    assert_eq!(value(&m, "runwatch_database_unavailable"), 1.0, "{m}");
    let log = app.log_text();
    let episodes = log
        .lines()
        .filter(|l| l.contains("database refuses the worker") && l.contains("op=\"record\""))
        .count();
    assert_eq!(
        episodes, 1,
        "one warning for the episode, not one per retry:\n{log}"
    );
    assert!(log.contains("sqlstate=\"42501\""), "{log}");

    sqlx::query(&format!(
        "GRANT INSERT, UPDATE ON groups TO \"{}\"",
        role.name
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    recovers(&w, &app).await;
    admin.close().await.ok();
    app.stop();
    w.cleanup().await;
    drop(role);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_lock_times_out_is_reported_and_the_event_fires_once_it_is_released() {
    let w = TestApp::new().await;
    let role = Role::create(&w).await;
    let mut app = spawn_as(&w, &role, &[("RUNWATCH_DATABASE__LOCK_TIMEOUT", "500ms")]);
    eventually(Duration::from_secs(30), "ready", || async {
        (readyz(&app).await.0 == 200).then_some(())
    })
    .await;

    let mut holder = sqlx::PgConnection::connect(&w.env.config.database.url)
        .await
        .unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("LOCK TABLE groups IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    publish_lines(&w.bus, &[failing("l1", "abc2", 2, "f")]).await;
    eventually(Duration::from_secs(20), "/readyz 503", || async {
        (readyz(&app).await.0 == 503).then_some(())
    })
    .await;
    let attempts = while_refused(
        &w,
        &app,
        "lock_timeout",
        5.0,
        Duration::from_secs(4),
        &["blocked", "lock timeout", "55P03"],
    )
    .await;
    eprintln!("{attempts} lock timeouts while the table was locked");
    let log = app.log_text();
    assert!(
        log.contains("database refuses the worker") && log.contains("sqlstate=\"55P03\""),
        "{log}"
    );
    tx.commit().await.unwrap();

    recovers(&w, &app).await;
    holder.close().await.ok();
    app.stop();
    w.cleanup().await;
    drop(role);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_database_refuses_for_its_own_values_is_dead_lettered_with_the_sqlstate() {
    let w = TestApp::new().await;
    // A constraint on the input's own values (SQLSTATE 23514 for the poisoned branch).
    sqlx::query("ALTER TABLE groups ADD CONSTRAINT test_no_poisoned_branch CHECK (branch IS DISTINCT FROM 'poisoned')")
        .execute(&w.pool)
        .await
        .unwrap();
    publish_lines(
        &w.bus,
        &[
            failing("good", "abc3", 3, "f"),
            failing("bad", "abc4", 4, "poisoned"),
        ],
    )
    .await;
    let mut app = w.spawn_worker(
        RULES,
        &[
            ("RUNWATCH_CONSUMER__MAX_DELIVER", "3"),
            ("RUNWATCH_RETRY__MIN_DELAY", "50ms"),
            ("RUNWATCH_RETRY__MAX_DELAY", "300ms"),
        ],
    );
    let dead = eventually(
        Duration::from_secs(30),
        "the bad event's dead letter",
        || async {
            let d = w.bus.read_all_dead().await.unwrap();
            (!d.is_empty()).then_some(d)
        },
    )
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, "max_deliver");
    assert_eq!(dead[0].deliveries, Some(3), "its own deliveries were spent");
    assert!(dead[0].detail.contains("23514"), "{}", dead[0].detail);
    assert!(
        dead[0].detail.contains("test_no_poisoned_branch"),
        "{}",
        dead[0].detail
    );
    let fired = all_triggers(&w.bus).await;
    assert_eq!(
        fired.len(),
        1,
        "the good event of the same batch fired: {fired:?}"
    );
    assert_eq!(fired[0]["commit_sha"], "abc3");
    // The database answered: readiness stayed on.
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 200, "{body}");
    let m = app.metrics().await;
    assert!(
        value(
            &m,
            "runwatch_database_errors_total{op=\"record\",kind=\"input\"}"
        ) >= 3.0,
        "{m}"
    );
    assert_eq!(value(&m, "runwatch_database_unavailable"), 0.0, "{m}");
    app.stop();
    w.cleanup().await;
}
