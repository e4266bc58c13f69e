//! A decision over a trigger budget through the real binary (`runwatch run`, then
//! `runwatch explain` and `runwatch groups list`): not published, logged once however many
//! events reach its group afterwards, explained from the recorded decision, listed as
//! `over-budget`. And budget keys with hostile values refused by every command that reads
//! rules, naming the key.

use std::process::{Command, Output};
use std::time::Duration;

use crate::helpers::env::TestEnv;
use crate::helpers::live::{all_triggers, publish_in_order, wait_quiet};
use crate::helpers::procs::WorkerProc;

const BIN: &str = env!("CARGO_BIN_EXE_runwatch");

const RULES: &str = "[[rules]]\nkind = \"all_completed_with_failure\"\nname = \"agent-loop\"\n\
                     max_triggers_per_pull_request = 1\n";

fn ev(id: &str, sha: &str, run: &str, workflow: &str, completed: bool) -> String {
    let mut r = serde_json::json!({
        "id": run, "attempt": 1, "workflow": workflow,
        "status": if completed { "completed" } else { "queued" },
        "updated_at": "2026-12-04T10:00:00Z",
    });
    if completed {
        r["conclusion"] = "failure".into();
    }
    serde_json::json!({
        "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
        "repository": {"owner": "acme", "name": "app"},
        "commit_sha": sha, "branch": "agent/fix", "pr_number": 5, "run": r,
    })
    .to_string()
}

fn runwatch(env: &TestEnv, rules: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.env_vars())
        .env("RUNWATCH_RULES_FILE", rules)
        .output()
        .expect("run runwatch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_budget_is_logged_once_explained_and_listed() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let log = dir.path().join("worker.log");
    let bus = crate::helpers::app::bus(&env.config).await;

    let (a, b) = ("a".repeat(40), "b".repeat(40));
    let events = [
        ev("e1", &a, "1", "test", false),
        ev("e2", &a, "1", "test", true),
        ev("e3", &b, "2", "test", false),
        ev("e4", &b, "2", "test", true),
        // More events for the group over budget: its decision is not taken again.
        ev("e5", &b, "3", "lint", false),
        ev("e6", &b, "3", "lint", true),
    ]
    .join("\n");
    publish_in_order(&bus, &events).await;
    let mut vars = env.env_vars();
    vars.push(("RUNWATCH_RULES_FILE".into(), rules.display().to_string()));
    vars.push(("RUST_LOG".into(), "warn".into()));
    let mut worker = WorkerProc::start(std::path::Path::new(BIN), vars, &log).unwrap();
    wait_quiet(&env.config, &bus, Duration::from_secs(60)).await;
    worker.terminate(Duration::from_secs(20)).unwrap();
    let triggers = all_triggers(&bus).await;

    // Published: commit a only, as trigger 1 of 1.
    assert_eq!(triggers.len(), 1, "{triggers:?}");
    assert_eq!(triggers[0]["commit_sha"], a.as_str());
    assert_eq!(
        triggers[0]["budget"],
        serde_json::json!({"pull_request": {"used": 1, "limit": 1, "window_seconds": 86400}})
    );
    // Logged once, naming the budget.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("over budget: trigger decided and not published"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    for part in [
        "rule=agent-loop",
        "budget=\"pull_request\"",
        "used=1",
        "limit=1",
        "window=24h",
        &b,
    ] {
        assert!(lines[0].contains(part), "{part} in {}", lines[0]);
    }

    // Explained from the recorded decision.
    let out = runwatch(&env, &rules, &["explain", "github", "acme/app", "5", &b]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("over budget: 1 of 1 triggers for this pull request within 24h (decided at ")
            && said.contains("in episode 0, not published; not judged again for this commit)"),
        "{said}"
    );
    let out = runwatch(
        &env,
        &rules,
        &["explain", "github", "acme/app", "5", &b, "--json"],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rule = &json["rules"][0];
    assert_eq!(rule["verdict"], "over_budget", "{json}");
    assert_eq!(rule["budget"], "pull_request");
    assert_eq!(
        (rule["used"].as_u64(), rule["limit"].as_u64()),
        (Some(1), Some(1))
    );
    let out = runwatch(&env, &rules, &["explain", "github", "acme/app", "5", &a]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("fired in episode 0"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Listed as over-budget (and only that group).
    let out = runwatch(
        &env,
        &rules,
        &["groups", "list", "--state", "over-budget", "--json"],
    );
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["commit_sha"], b.as_str());
    assert_eq!(listed[0]["state"], "over-budget");
    env.cleanup().await;
}

/// Budget keys with hostile values: refused with exit status 2 by `simulate --rules`, by
/// `[[rules]]` in the configuration and by `run`, naming `rules[0].<key>`.
#[test]
fn hostile_budget_values_are_refused_naming_the_key() {
    let acwf = "[[rules]]\nkind = \"all_completed_with_failure\"\n";
    let cases = [
        (
            "max_triggers_per_pull_request = 0",
            "max_triggers_per_pull_request",
            "at least 1",
        ),
        (
            "max_triggers_per_pull_request = -3",
            "max_triggers_per_pull_request",
            "at least 1",
        ),
        (
            "max_triggers_per_repository = 1001",
            "max_triggers_per_repository",
            "out of range",
        ),
        (
            "max_triggers_per_repository = 9223372036854775807",
            "max_triggers_per_repository",
            "out of range",
        ),
        (
            "max_triggers_per_repository = 2\nbudget_window = \"0s\"",
            "budget_window",
            "longer than 0s",
        ),
        (
            "max_triggers_per_repository = 2\nbudget_window = \"366d\"",
            "budget_window",
            "out of range",
        ),
        (
            "budget_window = \"1h\"",
            "budget_window",
            "no effect without",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (body, key, says) in cases {
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, format!("{acwf}{body}\n")).unwrap();
        let rules = rules.to_str().unwrap();
        for args in [
            vec!["simulate", "--rules", rules, "/dev/null"],
            vec!["--config", rules, "simulate", "/dev/null"],
            vec!["--config", rules, "run", "--no-migrate"],
        ] {
            let out = Command::new(BIN)
                .args(&args)
                .env("NATS_URL", "nats://127.0.0.1:1")
                .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x")
                .env_remove("RUNWATCH_CONFIG")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {body}: {err}");
            assert!(
                err.contains(&format!("`rules[0].{key}`")) && err.contains(says),
                "{args:?} {body}: {err}"
            );
        }
    }
    // Not an integer of TOML's range, not an integer, not a duration: refused by the
    // parser, whose message shows the line with the key.
    for (body, key) in [
        (
            "max_triggers_per_pull_request = 100000000000000000000",
            "max_triggers_per_pull_request",
        ),
        (
            "max_triggers_per_repository = 2.5",
            "max_triggers_per_repository",
        ),
        (
            "max_triggers_per_repository = 2\nbudget_window = \"-1h\"",
            "budget_window",
        ),
    ] {
        let rules = dir.path().join("parse.toml");
        std::fs::write(&rules, format!("{acwf}{body}\n")).unwrap();
        let out = Command::new(BIN)
            .args(["simulate", "--rules", rules.to_str().unwrap(), "/dev/null"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {err}");
        assert!(
            err.contains(key) && err.contains("TOML parse error"),
            "{body}: {err}"
        );
    }
    // A repeated_failure rule has no budget.
    let rules = dir.path().join("streak.toml");
    std::fs::write(
        &rules,
        "[[rules]]\nkind = \"repeated_failure\"\nmax_triggers_per_repository = 2\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["simulate", "--rules", rules.to_str().unwrap(), "/dev/null"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`rules[0].max_triggers_per_repository`")
            && err.contains("does not apply to kind repeated_failure"),
        "{err}"
    );
}
