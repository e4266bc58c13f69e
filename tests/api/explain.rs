//! `runwatch explain` and `runwatch groups list` against the real binary, on states the
//! live pipeline produced: the real worker (`runwatch run`, then a second `runwatch run`
//! that exits right after its deciding commit) applies published events, so that there is
//! one group per verdict kind. Each explanation is compared word for word in the text form
//! and field by field in JSON; times the pipeline chose (fired_at, sent_at, the wall-clock
//! due times) are read from the trigger stream and the database.
//!
//! How each state was produced:
//! - fired and published: the worker fired and its publish (or the relay) marked it sent;
//! - fired and unsent: published after the worker stopped, then applied by a worker started
//!   with `RUNWATCH_CRASH_AFTER_COMMIT=1`, which exits right after the deciding commit;
//! - waiting, settle due, deferred by cooldown, no pull request, no failure, filtered out
//!   (repositories, workflows, branches), a streak below its threshold, a streak that fired
//!   (from its group and as seen from another group): events applied by the worker.
//!
//! Also: the worker role of `deploy/postgres/roles.sql` prints the same; a row locked by
//! another transaction does not hold `explain` up; unknown groups exit with status 1.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helpers::app::{TestApp, eventually};
use crate::helpers::env::{TestEnv, unique};
use crate::helpers::live::{all_triggers, publish_in_order};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::{Connection, Row};

const RULES: &str = r#"
[[rules]]
kind = "all_completed_with_failure"
name = "pr-failed"
repositories = ["acme/app"]
workflows = ["build", "lint"]

[[rules]]
kind = "all_completed_with_failure"
name = "slow"
repositories = ["acme/slow"]
settle = "1h"

[[rules]]
kind = "all_completed_with_failure"
name = "calm"
repositories = ["acme/calm"]
cooldown = "1h"

[[rules]]
kind = "repeated_failure"
name = "nightly"
repositories = ["acme/app"]
branches = ["main"]
threshold = 2
"#;

const T: &str = "2026-11-29T10:00:00Z";

#[allow(clippy::too_many_arguments)]
fn ev(
    id: &str,
    repo: &str,
    pr: Option<u64>,
    sha: &str,
    branch: &str,
    run: &str,
    workflow: &str,
    status: &str,
    conclusion: Option<&str>,
) -> String {
    let (owner, name) = repo.split_once('/').unwrap();
    let mut run_obj = serde_json::json!({"id": run, "attempt": 1, "workflow": workflow, "status": status, "updated_at": T});
    if let Some(c) = conclusion {
        run_obj["conclusion"] = c.into();
    }
    serde_json::json!({
        "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
        "repository": {"owner": owner, "name": name, "id": format!("id-{name}")},
        "commit_sha": sha, "branch": branch, "pr_number": pr, "run": run_obj
    })
    .to_string()
}

fn first_session() -> String {
    let f = Some("failure");
    let s = Some("success");
    [
        // A: fires when build fails (lint already succeeded).
        ev(
            "a2",
            "acme/app",
            Some(1),
            "aaaa1",
            "feat",
            "12",
            "lint",
            "completed",
            s,
        ),
        ev(
            "a1",
            "acme/app",
            Some(1),
            "aaaa1",
            "feat",
            "11",
            "build",
            "completed",
            f,
        ),
        // C: lint still running.
        ev(
            "c2",
            "acme/app",
            Some(3),
            "cccc3",
            "feat",
            "32",
            "lint",
            "in_progress",
            None,
        ),
        ev(
            "c1",
            "acme/app",
            Some(3),
            "cccc3",
            "feat",
            "31",
            "build",
            "completed",
            f,
        ),
        // D: settle 1h.
        ev(
            "d1",
            "acme/slow",
            Some(4),
            "dddd4",
            "feat",
            "41",
            "build",
            "completed",
            f,
        ),
        // E1 fires, E2 is deferred by the cooldown E1 started.
        ev(
            "e1",
            "acme/calm",
            Some(5),
            "eeee5",
            "feat",
            "51",
            "build",
            "completed",
            f,
        ),
        ev(
            "e2",
            "acme/calm",
            Some(6),
            "ffff6",
            "feat",
            "61",
            "build",
            "completed",
            f,
        ),
        // F: a push build on main; its build streak has 1 failure of 2.
        ev(
            "f1",
            "acme/app",
            None,
            "99990",
            "main",
            "91",
            "build",
            "completed",
            f,
        ),
        // F2, F3: push builds on main; the test streak fires from F3.
        ev(
            "f2",
            "acme/app",
            None,
            "99992",
            "main",
            "93",
            "test",
            "completed",
            f,
        ),
        ev(
            "f3",
            "acme/app",
            None,
            "99993",
            "main",
            "94",
            "test",
            "completed",
            f,
        ),
        // G: nothing failed.
        ev(
            "g1",
            "acme/app",
            Some(7),
            "77770",
            "feat",
            "71",
            "build",
            "completed",
            s,
        ),
        ev(
            "g2",
            "acme/app",
            Some(7),
            "77770",
            "feat",
            "72",
            "lint",
            "completed",
            s,
        ),
        // H: only a workflow the rule filters out.
        ev(
            "h1",
            "acme/app",
            Some(8),
            "88880",
            "feat",
            "81",
            "docs",
            "completed",
            f,
        ),
    ]
    .join("\n")
}

fn show(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

struct Bin<'a> {
    env: &'a TestEnv,
    rules: &'a Path,
    database_url: Option<String>,
}

impl Bin<'_> {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut c = Command::new(env!("CARGO_BIN_EXE_runwatch"));
        c.args(args)
            .envs(self.env.env_vars())
            .env("RUNWATCH_RULES_FILE", self.rules);
        if let Some(url) = &self.database_url {
            c.env("DATABASE_URL", url)
                .env("RUNWATCH_DATABASE__CREATE_IF_MISSING", "false");
        }
        let out = c.output().expect("run runwatch");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "runwatch {args:?}: {err}");
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("one JSON object")
    }
}

const NOT_REPO: &str = "will not fire: filtered out by `repositories`";

fn filtered_repo(repo: &str) -> String {
    format!("{NOT_REPO}: {repo} does not match")
}

const NOT_FEAT: &str =
    "will not fire: filtered out by `branches`: no run of the group passes the rule's filters";

fn runs_table(rows: &[(&str, &str, &str, &str)]) -> String {
    // (run, workflow, status, conclusion); every run is attempt 1, updated at T.
    let w_run = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(3);
    let w_wf = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(8);
    let w_st = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(6);
    let w_co = rows.iter().map(|r| r.3.len()).max().unwrap_or(0).max(10);
    let mut s = format!(
        "runs:\n  {:w_run$}  {:w_wf$}  ATTEMPT  {:w_st$}  {:w_co$}  UPDATED_AT\n",
        "RUN", "WORKFLOW", "STATUS", "CONCLUSION"
    );
    for (run, wf, st, co) in rows {
        s.push_str(&format!(
            "  {run:w_run$}  {wf:w_wf$}  1        {st:w_st$}  {co:w_co$}  {T}\n"
        ));
    }
    s
}

fn rules_text(lines: [(&str, String); 4]) -> String {
    let mut s = "rules:\n".to_string();
    for (rule, reason) in lines {
        let kind = if rule == "nightly" {
            "repeated_failure"
        } else {
            "all_completed_with_failure"
        };
        s.push_str(&format!("  {rule} ({kind}): {reason}\n"));
    }
    s
}

async fn scalar_time(pool: &sqlx::PgPool, sql: &str, bind: &str) -> DateTime<Utc> {
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature (make test enables it)"
)]
async fn explain_and_groups_list_on_live_states() {
    let world = TestApp::new().await;
    let (env, bus, pool) = (&world.env, &world.bus, world.pool.clone());

    // Session 1: the real worker applies every event but B's.
    let mut app = world.spawn_worker(RULES, &[]);
    let rules_file = world.dir.path().join("rules.toml");
    publish_in_order(bus, &first_session()).await;
    eventually(Duration::from_secs(60), "the worker applied everything", || {
        let (pool, bus) = (pool.clone(), bus);
        async move {
            let pending = bus.consumer_pending().await.ok()?;
            let row = sqlx::query(
                "SELECT (SELECT count(*) FROM groups) AS g, (SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL) AS sent,
                        (SELECT count(*) FROM outbox) AS all_rows",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            let (g, sent, all): (i64, i64, i64) = (row.get("g"), row.get("sent"), row.get("all_rows"));
            (pending == 0 && g == 10 && sent == 3 && all == 3).then_some(())
        }
    })
    .await;
    app.stop();

    // Session 2: B is decided by a worker that exits right after its commit: unsent.
    publish_in_order(
        bus,
        &ev(
            "b1",
            "acme/app",
            Some(2),
            "bbbb2",
            "feat",
            "21",
            "build",
            "completed",
            Some("failure"),
        ),
    )
    .await;
    let out = Command::new(env!("CARGO_BIN_EXE_runwatch"))
        .arg("run")
        .envs(env.env_vars())
        .env("RUNWATCH_RULES_FILE", &rules_file)
        .env("RUNWATCH_CRASH_AFTER_COMMIT", "1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(86),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What the pipeline chose, read from the trigger stream and the database.
    let triggers = all_triggers(bus).await;
    assert_eq!(triggers.len(), 3, "{triggers:?}");
    let by_sha = |sha: &str| {
        triggers
            .iter()
            .find(|t| t["commit_sha"] == sha)
            .unwrap_or_else(|| panic!("trigger of {sha}"))
            .clone()
    };
    let (ta, te1, tf3) = (by_sha("aaaa1"), by_sha("eeee5"), by_sha("99993"));
    let fired = |t: &Value| {
        show(
            t["fired_at"]
                .as_str()
                .unwrap()
                .parse::<DateTime<Utc>>()
                .unwrap(),
        )
    };
    let sent = |id: String| {
        let pool = pool.clone();
        async move {
            show(
                scalar_time(
                    &pool,
                    "SELECT sent_at FROM outbox WHERE trigger_id = $1::uuid",
                    &id,
                )
                .await,
            )
        }
    };
    let id_of = |t: &Value| t["trigger_id"].as_str().unwrap().to_string();
    let b_row = sqlx::query(
        "SELECT trigger_id, payload, attempts, sent_at FROM outbox WHERE sent_at IS NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(b_row.len(), 1, "exactly one unsent trigger");
    let b_id: uuid::Uuid = b_row[0].get("trigger_id");
    let b_payload: Value = serde_json::from_slice(&b_row[0].get::<Vec<u8>, _>("payload")).unwrap();
    assert_eq!(b_payload["commit_sha"], "bbbb2");
    assert_eq!(b_row[0].get::<i32, _>("attempts"), 0);
    let group_id = |sha: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT id FROM groups WHERE commit_sha = $1")
                .bind(sha)
                .fetch_one(&pool)
                .await
                .unwrap()
                .get::<i64, _>(0)
        }
    };
    let due_wall = |sha: &'static str| {
        let pool = pool.clone();
        async move {
            show(
                scalar_time(
                    &pool,
                    "SELECT due_wall_at FROM groups WHERE commit_sha = $1",
                    sha,
                )
                .await,
            )
        }
    };

    let bin = Bin {
        env,
        rules: &rules_file,
        database_url: None,
    };
    let explain = |args: &[&str]| {
        let mut a = vec!["explain"];
        a.extend_from_slice(args);
        (bin.ok(&a), bin.json(&a))
    };
    let header = |id: i64, repo: &str, pr: &str, sha: &str, branch: &str| {
        format!("group {id}: github {repo}, {pr}, commit {sha}, branch {branch}\n")
    };

    // A: fired and published.
    let (text, json) = explain(&["github", "acme/app", "1", "aaaa1"]);
    let a_id = group_id("aaaa1").await;
    let a_reason = format!(
        "fired in episode 0 at {}: trigger {}, published at {}",
        fired(&ta),
        id_of(&ta),
        sent(id_of(&ta)).await
    );
    let expected_a = header(a_id, "acme/app", "pull request 1", "aaaa1", "feat")
        + &runs_table(&[
            ("11", "build", "completed", "failure"),
            ("12", "lint", "completed", "success"),
        ])
        + &rules_text([
            ("pr-failed", a_reason.clone()),
            ("slow", filtered_repo("acme/app")),
            ("calm", filtered_repo("acme/app")),
            ("nightly", NOT_FEAT.into()),
        ]);
    assert_eq!(text, expected_a);
    assert_eq!(json["group"]["id"], a_id);
    assert_eq!(json["group"]["provider"], "github");
    assert_eq!(json["group"]["repository"], "acme/app");
    assert_eq!(json["group"]["pr_number"], 1);
    assert_eq!(json["group"]["commit_sha"], "aaaa1");
    assert_eq!(json["group"]["branch"], "feat");
    assert_eq!(json["group"]["next_due"], Value::Null);
    assert_eq!(json["runs"].as_array().unwrap().len(), 2);
    let run0 = &json["runs"][0];
    assert_eq!(
        (
            run0["run_id"].as_str(),
            run0["workflow"].as_str(),
            run0["attempt"].as_u64()
        ),
        (Some("11"), Some("build"), Some(1))
    );
    assert_eq!(
        (
            run0["status"].as_str(),
            run0["conclusion"].as_str(),
            run0["updated_at"].as_str()
        ),
        (Some("completed"), Some("failure"), Some(T))
    );
    let r = &json["rules"][0];
    assert_eq!(
        (
            r["rule"].as_str(),
            r["kind"].as_str(),
            r["verdict"].as_str()
        ),
        (
            Some("pr-failed"),
            Some("all_completed_with_failure"),
            Some("fired")
        )
    );
    assert_eq!(r["reason"], a_reason.as_str());
    let t = &r["triggers"][0];
    assert_eq!(t["trigger_id"], ta["trigger_id"]);
    assert_eq!(t["episode"], 0);
    assert_eq!(t["delivery"], "sent");
    assert_eq!(
        t["fired_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        ta["fired_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap()
    );
    assert!(t["sent_at"].is_string());
    for (i, rule) in [(1, "slow"), (2, "calm")] {
        let r = &json["rules"][i];
        assert_eq!(
            (
                r["rule"].as_str(),
                r["verdict"].as_str(),
                r["cause"].as_str()
            ),
            (Some(rule), Some("will_not_fire"), Some("filtered_out"))
        );
        assert_eq!(r["filters"], serde_json::json!(["repositories"]));
    }
    let r = &json["rules"][3];
    assert_eq!(
        (
            r["kind"].as_str(),
            r["verdict"].as_str(),
            r["cause"].as_str()
        ),
        (
            Some("repeated_failure"),
            Some("will_not_fire"),
            Some("filtered_out")
        )
    );
    assert_eq!(r["filters"], serde_json::json!(["branches"]));

    // --trigger ID names the same group.
    assert_eq!(bin.ok(&["explain", "--trigger", &id_of(&ta)]), expected_a);

    // B: fired, still in the outbox.
    let (text, json) = explain(&["github", "acme/app", "2", "bbbb2"]);
    let b_reason = format!(
        "fired in episode 0 at {}: trigger {b_id}, still in the outbox, not published yet (relay attempts: 0)",
        fired(&b_payload)
    );
    assert_eq!(
        text,
        header(
            group_id("bbbb2").await,
            "acme/app",
            "pull request 2",
            "bbbb2",
            "feat"
        ) + &runs_table(&[("21", "build", "completed", "failure")])
            + &rules_text([
                ("pr-failed", b_reason.clone()),
                ("slow", filtered_repo("acme/app")),
                ("calm", filtered_repo("acme/app")),
                ("nightly", NOT_FEAT.into())
            ])
    );
    let t = &json["rules"][0]["triggers"][0];
    assert_eq!(
        (json["rules"][0]["verdict"].as_str(), t["delivery"].as_str()),
        (Some("fired"), Some("unsent"))
    );
    assert_eq!(t["trigger_id"], b_id.to_string());
    assert_eq!(
        (t["sent_at"].clone(), t["attempts"].clone()),
        (Value::Null, serde_json::json!(0))
    );

    // C: waiting for lint.
    let (text, json) = explain(&["github", "acme/app", "3", "cccc3"]);
    assert_eq!(
        text,
        header(
            group_id("cccc3").await,
            "acme/app",
            "pull request 3",
            "cccc3",
            "feat"
        ) + &runs_table(&[
            ("31", "build", "completed", "failure"),
            ("32", "lint", "in_progress", "-")
        ]) + &rules_text([
            (
                "pr-failed",
                "waiting for runs to complete: lint (run 32) is in_progress".into()
            ),
            ("slow", filtered_repo("acme/app")),
            ("calm", filtered_repo("acme/app")),
            ("nightly", NOT_FEAT.into()),
        ])
    );
    assert_eq!(json["rules"][0]["verdict"], "waiting");
    assert_eq!(
        json["rules"][0]["runs"],
        serde_json::json!([{"run_id": "32", "workflow": "lint", "status": "in_progress"}])
    );
    assert_eq!(json["runs"][1]["conclusion"], Value::Null);

    // D: settle due.
    let (text, json) = explain(&["github", "acme/slow", "4", "dddd4"]);
    let d_wall = due_wall("dddd4").await;
    let d_reason = format!(
        "settle due at {d_wall} (or when event time reaches 2026-11-29T11:00:00Z); fires then if the condition still holds"
    );
    assert_eq!(
        text,
        header(
            group_id("dddd4").await,
            "acme/slow",
            "pull request 4",
            "dddd4",
            "feat"
        ) + &runs_table(&[("41", "build", "completed", "failure")])
            + &rules_text([
                ("pr-failed", filtered_repo("acme/slow")),
                ("slow", d_reason),
                ("calm", filtered_repo("acme/slow")),
                ("nightly", filtered_repo("acme/slow"))
            ])
    );
    let r = &json["rules"][1];
    assert_eq!(r["verdict"], "settle_due");
    assert_eq!(
        r["due"]["event"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        "2026-11-29T11:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    assert_eq!(
        show(r["due"]["wall"].as_str().unwrap().parse().unwrap()),
        d_wall
    );
    assert_eq!(json["group"]["next_due"], r["due"]);

    // E1 fired (cooldown rule); E2 deferred by the cooldown it started.
    let (text, _) = explain(&["github", "acme/calm", "5", "eeee5"]);
    let e1_reason = format!(
        "fired in episode 0 at {}: trigger {}, published at {}",
        fired(&te1),
        id_of(&te1),
        sent(id_of(&te1)).await
    );
    assert_eq!(
        text,
        header(
            group_id("eeee5").await,
            "acme/calm",
            "pull request 5",
            "eeee5",
            "feat"
        ) + &runs_table(&[("51", "build", "completed", "failure")])
            + &rules_text([
                ("pr-failed", filtered_repo("acme/calm")),
                ("slow", filtered_repo("acme/calm")),
                ("calm", e1_reason),
                ("nightly", filtered_repo("acme/calm"))
            ])
    );
    let (text, json) = explain(&["github", "acme/calm", "6", "ffff6"]);
    let cooldown_end = show(
        scalar_time(
            &pool,
            "SELECT last_fired_at + interval '1 hour' FROM cooldowns WHERE rule = $1",
            "calm",
        )
        .await,
    );
    assert_eq!(due_wall("ffff6").await, cooldown_end);
    let e2_reason = format!(
        "deferred by cooldown until {cooldown_end}: the rule fired for acme/calm less than 1h before; judged again then"
    );
    assert_eq!(
        text,
        header(
            group_id("ffff6").await,
            "acme/calm",
            "pull request 6",
            "ffff6",
            "feat"
        ) + &runs_table(&[("61", "build", "completed", "failure")])
            + &rules_text([
                ("pr-failed", filtered_repo("acme/calm")),
                ("slow", filtered_repo("acme/calm")),
                ("calm", e2_reason),
                ("nightly", filtered_repo("acme/calm"))
            ])
    );
    let r = &json["rules"][2];
    assert_eq!(r["verdict"], "cooldown");
    assert_eq!(
        show(r["until"].as_str().unwrap().parse().unwrap()),
        cooldown_end
    );
    assert_eq!(r["until"], r["due"]["wall"]);

    // F: a push build (PR `-`): no pull request; its build streak below the threshold.
    let (text, json) = explain(&["github", "acme/app", "-", "99990"]);
    let push = |id: i64, sha: &str| {
        format!(
            "group {id}: github acme/app, no pull request (push build), commit {sha}, branch main\n"
        )
    };
    assert_eq!(
        text,
        push(group_id("99990").await, "99990")
            + &runs_table(&[("91", "build", "completed", "failure")])
            + &rules_text([
                ("pr-failed", "will not fire: no pull request (a push build; the rule has require_pr = true)".into()),
                ("slow", filtered_repo("acme/app")),
                ("calm", filtered_repo("acme/app")),
                ("nightly", "will not fire: the streak of `build` on `main` has 1 failure in a row, 2 needed".into()),
            ])
    );
    assert_eq!(json["group"]["pr_number"], Value::Null);
    assert_eq!(
        (
            json["rules"][0]["verdict"].as_str(),
            json["rules"][0]["cause"].as_str()
        ),
        (Some("will_not_fire"), Some("no_pull_request"))
    );
    let r = &json["rules"][3];
    assert_eq!(
        (r["verdict"].as_str(), r["cause"].as_str()),
        (Some("will_not_fire"), Some("streak"))
    );
    assert_eq!(
        r["streaks"],
        serde_json::json!([{"branch": "main", "workflow": "build", "threshold": 2, "failures_in_a_row": 1, "fired": false}])
    );

    // F3 fired the test streak; F2 sees it fired from another group.
    let (text, json) = explain(&["github", "acme/app", "-", "99993"]);
    let f3_reason = format!(
        "fired at {} for the streak of `test` on `main`: trigger {}, published at {}",
        fired(&tf3),
        id_of(&tf3),
        sent(id_of(&tf3)).await
    );
    let not_build =
        "will not fire: filtered out by `workflows`: no run of the group passes the rule's filters"
            .to_string();
    assert_eq!(
        text,
        push(group_id("99993").await, "99993")
            + &runs_table(&[("94", "test", "completed", "failure")])
            + &rules_text([
                ("pr-failed", not_build.clone()),
                ("slow", filtered_repo("acme/app")),
                ("calm", filtered_repo("acme/app")),
                ("nightly", f3_reason)
            ])
    );
    let t = &json["rules"][3]["triggers"][0];
    assert_eq!(
        (
            t["trigger_id"].clone(),
            t["workflow"].as_str(),
            t["branch"].as_str(),
            t["delivery"].as_str()
        ),
        (
            tf3["trigger_id"].clone(),
            Some("test"),
            Some("main"),
            Some("sent")
        )
    );
    assert_eq!(
        json["rules"][0]["filters"],
        serde_json::json!(["workflows"])
    );
    let (text, json) = explain(&["github", "acme/app", "-", "99992"]);
    assert_eq!(
        text,
        push(group_id("99992").await, "99992")
            + &runs_table(&[("93", "test", "completed", "failure")])
            + &rules_text([
                ("pr-failed", not_build.clone()),
                ("slow", filtered_repo("acme/app")),
                ("calm", filtered_repo("acme/app")),
                (
                    "nightly",
                    format!(
                        "will not fire: the streak of `test` on `main` already fired (trigger {}, from another group)",
                        id_of(&tf3)
                    )
                ),
            ])
    );
    assert_eq!(
        json["rules"][3]["streaks"],
        serde_json::json!([{"branch": "main", "workflow": "test", "threshold": 2, "failures_in_a_row": 2, "fired": true,
                            "trigger_id": tf3["trigger_id"], "trigger_in_outbox": true}])
    );

    // G: nothing failed. H: the only run is filtered out by `workflows`.
    let (text, json) = explain(&["github", "acme/app", "7", "77770"]);
    assert_eq!(
        text,
        header(group_id("77770").await, "acme/app", "pull request 7", "77770", "feat")
            + &runs_table(&[("71", "build", "completed", "success"), ("72", "lint", "completed", "success")])
            + &rules_text([
                ("pr-failed", "will not fire: every run completed and none failed (failure conclusions: failure, startup_failure, timed_out)".into()),
                ("slow", filtered_repo("acme/app")),
                ("calm", filtered_repo("acme/app")),
                ("nightly", NOT_FEAT.into()),
            ])
    );
    assert_eq!(json["rules"][0]["cause"], "no_failure");
    let (text, json) = explain(&["github", "acme/app", "8", "8888"]); // a unique prefix
    assert_eq!(
        text,
        header(
            group_id("88880").await,
            "acme/app",
            "pull request 8",
            "88880",
            "feat"
        ) + &runs_table(&[("81", "docs", "completed", "failure")])
            + &rules_text([
                ("pr-failed", not_build),
                ("slow", filtered_repo("acme/app")),
                ("calm", filtered_repo("acme/app")),
                ("nightly", NOT_FEAT.into())
            ])
    );
    assert_eq!(
        (
            json["rules"][0]["cause"].as_str(),
            json["rules"][0]["filters"].clone()
        ),
        (Some("filtered_out"), serde_json::json!(["workflows"]))
    );

    // Unknown groups and triggers: exit status 1 with a message.
    let (code, out, err) = bin.run(&["explain", "github", "acme/app", "1", "nope"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err.trim(),
        "runwatch: no group for github acme/app, pull request 1, commit nope"
    );
    let (code, _, err) = bin.run(&[
        "explain",
        "--trigger",
        "00000000-0000-0000-0000-000000000001",
    ]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = bin.run(&["explain", "github", "acme/app", "x", "aaaa1"]);
    assert_eq!(code, 2, "{err}");

    // groups list: the table, newest first, and the filters.
    let rows = sqlx::query(
        "SELECT g.id, g.commit_sha, g.pr_number, g.branch, g.updated_at, g.due_wall_at FROM groups g
         JOIN repositories r ON r.id = g.repository_id WHERE r.name = 'calm' ORDER BY g.updated_at DESC, g.id DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut expected = "ID  PROVIDER  REPOSITORY  PR  COMMIT  BRANCH  RUNS  STATE          UPDATED_AT            NEXT_DUE\n".to_string();
    let pad_id = rows
        .iter()
        .map(|r| r.get::<i64, _>("id").to_string().len())
        .max()
        .unwrap()
        .max(2);
    expected = expected.replacen("ID  ", &format!("{:pad_id$}  ", "ID"), 1);
    for r in &rows {
        let sha: String = r.get("commit_sha");
        let state = if sha == "ffff6" {
            "pending-timer"
        } else {
            "fired"
        };
        let due: Option<DateTime<Utc>> = r.get("due_wall_at");
        let line = format!(
            "{:<pad_id$}  github    acme/calm   {}   {sha}   feat    1     {state:13}  {}  {}",
            r.get::<i64, _>("id"),
            r.get::<i64, _>("pr_number"),
            show(r.get("updated_at")),
            due.map_or("-".to_string(), show)
        );
        expected.push_str(line.trim_end());
        expected.push('\n');
    }
    assert_eq!(bin.ok(&["groups", "list", "--repo", "ACME/calm"]), expected);

    let list = |args: &[&str]| -> Vec<Value> {
        let mut a = vec!["groups", "list", "--json"];
        a.extend_from_slice(args);
        bin.ok(&a)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
            .collect()
    };
    let shas = |rows: &[Value]| {
        let mut v: Vec<String> = rows
            .iter()
            .map(|r| r["commit_sha"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let all = list(&[]);
    assert_eq!(all.len(), 11);
    assert_eq!(
        shas(&list(&["--state", "pending-timer"])),
        ["dddd4", "ffff6"]
    );
    assert_eq!(
        shas(&list(&["--state", "fired"])),
        ["99993", "aaaa1", "bbbb2", "eeee5"]
    );
    assert_eq!(shas(&list(&["--state", "waiting"])), ["cccc3"]);
    assert_eq!(
        shas(&list(&["--state", "idle"])),
        ["77770", "88880", "99990", "99992"]
    );
    assert_eq!(list(&["--limit", "2"]).len(), 2);
    assert_eq!(list(&["--since", "1h"]).len(), 11);
    let d = list(&["--repo", "acme/slow"]);
    assert_eq!(d.len(), 1);
    let d = &d[0];
    assert_eq!(
        (
            d["id"].as_i64(),
            d["provider"].as_str(),
            d["repository"].as_str(),
            d["pr_number"].as_u64()
        ),
        (
            Some(group_id("dddd4").await),
            Some("github"),
            Some("acme/slow"),
            Some(4)
        )
    );
    assert_eq!(
        (
            d["commit_sha"].as_str(),
            d["branch"].as_str(),
            d["runs"].as_i64(),
            d["state"].as_str()
        ),
        (Some("dddd4"), Some("feat"), Some(1), Some("pending-timer"))
    );
    assert_eq!(
        show(d["next_due"].as_str().unwrap().parse().unwrap()),
        d_wall
    );
    // Nothing is written any more: within a few seconds `--since 1s` lists nothing.
    eventually(
        Duration::from_secs(10),
        "--since 1s lists nothing",
        || async { list(&["--since", "1s"]).is_empty().then_some(()) },
    )
    .await;

    // A row locked by another transaction (as the worker locks it) does not hold explain up.
    let mut locker = sqlx::PgConnection::connect(&env.config.database.url)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("SELECT * FROM groups WHERE id = $1 FOR UPDATE")
        .bind(a_id)
        .execute(&mut locker)
        .await
        .unwrap();
    sqlx::query("SELECT * FROM outbox FOR UPDATE")
        .execute(&mut locker)
        .await
        .unwrap();
    let explained = tokio::task::spawn_blocking({
        let env_vars = env.env_vars();
        let rules_file = rules_file.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_runwatch"))
                .args(["explain", "github", "acme/app", "1", "aaaa1"])
                .envs(env_vars)
                .env("RUNWATCH_RULES_FILE", rules_file)
                // Should explain ever wait for a lock, it fails after 5 s instead of hanging.
                .env("PGOPTIONS", "-c lock_timeout=5s")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        explained.status.success(),
        "{}",
        String::from_utf8_lossy(&explained.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&explained.stdout), expected_a);
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    locker.close().await.ok();

    // The worker role of deploy/postgres/roles.sql prints the same.
    let tag = unique("rwexpl").to_lowercase();
    let (owner, worker) = (format!("{tag}_owner"), format!("{tag}_worker"));
    let psql = Command::new("psql")
        .args([
            "-X",
            "-w",
            "-q",
            "-d",
            &env.config.database.url,
            "-v",
            &format!("owner={owner}"),
            "-v",
            &format!("worker={worker}"),
        ])
        .arg("-f")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/postgres/roles.sql"
        ))
        .output()
        .expect("psql");
    assert!(
        psql.status.success(),
        "roles.sql: {}",
        String::from_utf8_lossy(&psql.stderr)
    );
    let worker_url = {
        let url = &env.config.database.url;
        let (scheme, rest) = url.split_once("://").unwrap();
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{worker}@{host}")
    };
    let as_worker = Bin {
        env,
        rules: &rules_file,
        database_url: Some(worker_url),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_eq!(
            as_worker.ok(&["explain", "github", "acme/app", "1", "aaaa1"]),
            expected_a
        );
        assert_eq!(
            as_worker.ok(&["explain", "--trigger", &b_id.to_string()]),
            bin.ok(&["explain", "github", "acme/app", "2", "bbbb2"])
        );
        assert_eq!(
            as_worker.ok(&["groups", "list"]),
            bin.ok(&["groups", "list"])
        );
        // A group with a pending timer, as the worker role.
        let (code, _, _) = as_worker.run(&["explain", "github", "acme/calm", "6", "ffff6"]);
        assert_eq!(code, 0);
    }));

    drop(app);
    world.cleanup().await;
    if let Ok(mut admin) = sqlx::PgConnection::connect(&crate::helpers::env::with_database(
        &crate::helpers::env::database_url(),
        "postgres",
    ))
    .await
    {
        for role in [&worker, &owner] {
            let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{role}\""))
                .execute(&mut admin)
                .await;
        }
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
