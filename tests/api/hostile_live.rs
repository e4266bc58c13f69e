//! Hostile traffic against the real `runwatch run` binary: a mis-dated event must not move
//! other groups' timers, and a group row whose state cannot be decoded is set aside while
//! everything else carries on (docs/design.md "Skewed clocks" and "Corrupt rows").

use std::time::{Duration, Instant};

use crate::helpers::app::{TestApp, eventually};
use crate::helpers::live::{all_triggers, publish_lines};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

fn event(
    id: &str,
    sha: &str,
    pr: u64,
    run: &str,
    status: &str,
    conclusion: Option<&str>,
    at: DateTime<Utc>,
) -> String {
    let mut run = json!({
        "id": run, "attempt": 1, "workflow": format!("wf-{run}"), "status": status,
        "updated_at": at.to_rfc3339_opts(SecondsFormat::Secs, true),
    });
    if let Some(c) = conclusion {
        run["conclusion"] = json!(c);
    }
    json!({
        "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
        "repository": {"owner": "acme", "name": "hostile", "id": "77"},
        "commit_sha": sha, "branch": "feature", "pr_number": pr, "run": run,
    })
    .to_string()
}

async fn pending_timers(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM groups WHERE due_wall_at IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_the_future_does_not_make_other_groups_timers_due() {
    let w = TestApp::new().await;
    let (bus, pool) = (&w.bus, &w.pool);
    // settle 8s; the event clock may lead the wall clock by at most 1s.
    let mut app = w.spawn_worker(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nsettle = \"8s\"\n",
        &[("RUNWATCH_LIMITS__MAX_CLOCK_SKEW", "1s")],
    );

    // Group B fails now: its settle timer starts.
    let now = Utc::now();
    publish_lines(
        bus,
        &[event(
            "b1",
            &"b".repeat(40),
            2,
            "20",
            "completed",
            Some("failure"),
            now,
        )],
    )
    .await;
    eventually(Duration::from_secs(20), "B's timer", || async {
        (pending_timers(pool).await == 1).then_some(())
    })
    .await;
    let b_applied = Instant::now();

    // Group A: dated in the year 2999 (a producer bug). Group C: dated 1970.
    let future: DateTime<Utc> = "2999-01-01T00:00:00Z".parse().unwrap();
    let past: DateTime<Utc> = "1970-01-02T00:00:00Z".parse().unwrap();
    publish_lines(
        bus,
        &[
            event(
                "a1",
                &"a".repeat(40),
                1,
                "10",
                "completed",
                Some("failure"),
                future,
            ),
            event(
                "c1",
                &"c".repeat(40),
                3,
                "30",
                "completed",
                Some("failure"),
                past,
            ),
        ],
    )
    .await;
    eventually(Duration::from_secs(20), "A's and C's timers", || async {
        (pending_timers(pool).await == 3).then_some(())
    })
    .await;

    // Nothing may fire before B's settle is (nearly) over: 8s minus the 1s lead.
    while b_applied.elapsed() < Duration::from_secs(6) {
        let fired = all_triggers(bus).await;
        assert!(
            fired.is_empty(),
            "fired early, {:?} after B: {fired:?}",
            b_applied.elapsed()
        );
    }
    // Then each group fires once, the mis-dated ones included (their own state merged).
    let fired = eventually(Duration::from_secs(30), "three triggers", || async {
        let t = all_triggers(bus).await;
        (t.len() >= 3).then_some(t)
    })
    .await;
    let mut prs: Vec<u64> = fired
        .iter()
        .map(|t| t["pr_number"].as_u64().unwrap())
        .collect();
    prs.sort();
    assert_eq!(prs, vec![1, 2, 3], "{fired:?}");
    let a = fired.iter().find(|t| t["pr_number"] == 1).unwrap();
    assert_eq!(a["runs"]["10"]["updated_at"], "2999-01-01T00:00:00Z");

    let m = app.metrics().await;
    assert!(m.contains("runwatch_clock_skew_events_total 1"), "{m}");
    let text = app.log_text();
    assert!(
        text.contains("event dated ahead of the wall clock"),
        "{text}"
    );
    app.stop();
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_group_row_is_set_aside_and_everything_else_carries_on() {
    let w = TestApp::new().await;
    let (bus, pool) = (&w.bus, &w.pool);
    let mut app = w.spawn_worker(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nsettle = \"1s\"\n",
        &[("RUNWATCH_CONSUMER__MAX_DELIVER", "3")],
    );
    let now = Utc::now();
    let x = "e".repeat(40);
    publish_lines(bus, &[event("x1", &x, 1, "1", "queued", None, now)]).await;
    eventually(Duration::from_secs(20), "group X", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM groups WHERE commit_sha = $1 AND state::jsonb->'runs' ? '1'",
        )
        .bind(&x)
        .fetch_one(pool)
        .await
        .unwrap();
        (n == 1).then_some(())
    })
    .await;

    // Corrupt X under the running worker, with a timer that is due: the sweep meets it
    // first (the lowest id) on every pass.
    sqlx::query("UPDATE groups SET state = '{\"runs\": 5}'::json, due_wall_at = now(), due_event_at = now() WHERE commit_sha = $1")
        .bind(&x)
        .execute(pool)
        .await
        .unwrap();

    // One batch: X's next event and two innocent groups.
    let later = now + chrono::Duration::seconds(5);
    publish_lines(
        bus,
        &[
            event("x2", &x, 1, "1", "completed", Some("failure"), later),
            event(
                "y1",
                &"f".repeat(40),
                2,
                "2",
                "completed",
                Some("failure"),
                later,
            ),
            event(
                "z1",
                &"0".repeat(40),
                3,
                "3",
                "completed",
                Some("failure"),
                later,
            ),
        ],
    )
    .await;

    // The innocent groups fire through their settle timers.
    let fired = eventually(Duration::from_secs(30), "Y and Z fire", || async {
        let t = all_triggers(bus).await;
        (t.len() >= 2).then_some(t)
    })
    .await;
    let mut prs: Vec<u64> = fired
        .iter()
        .map(|t| t["pr_number"].as_u64().unwrap())
        .collect();
    prs.sort();
    assert_eq!(prs, vec![2, 3], "{fired:?}");

    // X's event is dead-lettered as corrupt_state, at once (not after max_deliver).
    let dead = eventually(Duration::from_secs(20), "X's dead letter", || async {
        let d = bus.read_all_dead().await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, "corrupt_state");
    assert_eq!(dead[0].deliveries, Some(1));
    assert!(
        dead[0].detail.contains("cannot be decoded"),
        "{}",
        dead[0].detail
    );
    assert!(
        dead[0].detail.contains(&x),
        "the detail names the group: {}",
        dead[0].detail
    );

    // X's timer was dropped, the row itself left for an operator; the worker is healthy.
    eventually(Duration::from_secs(10), "X's timer dropped", || async {
        (pending_timers(pool).await == 0).then_some(())
    })
    .await;
    let state: serde_json::Value =
        sqlx::query_scalar("SELECT state FROM groups WHERE commit_sha = $1")
            .bind(&x)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(state, json!({"runs": 5}));
    let m = app.metrics().await;
    assert!(
        m.contains("runwatch_corrupt_rows_total{op=\"record\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("runwatch_corrupt_rows_total{op=\"timers\"}"),
        "{m}"
    );
    assert!(
        m.contains("runwatch_dead_letters_total{reason=\"corrupt_state\"} 1"),
        "{m}"
    );
    let text = app.log_text();
    assert!(text.contains("stored state cannot be decoded"), "{text}");
    assert!(app.proc.exited().is_none(), "the worker is still running");

    // A repaired row takes its redriven event.
    sqlx::query("UPDATE groups SET state = '{}'::json WHERE commit_sha = $1")
        .bind(&x)
        .execute(pool)
        .await
        .unwrap();
    let r = runwatch::dead_letters::redrive(bus, runwatch::dead_letters::RedriveSelection::All)
        .await
        .unwrap();
    assert_eq!(r.redriven.len(), 1);
    let fired = eventually(Duration::from_secs(30), "X fires after repair", || async {
        let t = all_triggers(bus).await;
        (t.len() >= 3).then_some(t)
    })
    .await;
    assert!(fired.iter().any(|t| t["pr_number"] == 1), "{fired:?}");

    app.stop();
    w.cleanup().await;
}
