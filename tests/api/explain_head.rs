//! `runwatch explain` names `only_head_commit` as the reason a group does not fire, on the
//! state the live worker produced from conformance scenario 37: pull request 30 moved from
//! commit 666… to 777…; the failure on the old commit does not fire, the one on the head does.

use std::process::Command;
use std::time::Duration;

use crate::helpers::app::{TestApp, eventually};
use crate::helpers::live::{all_triggers, publish_in_order};
use serde_json::Value;

const RULES: &str =
    "[[rules]]\nkind = \"all_completed_with_failure\"\nname = \"head\"\nonly_head_commit = true\n";
const OLD: &str = "6666666666666666666666666666666666666666";
const HEAD: &str = "7777777777777777777777777777777777777777";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_the_pull_request_moved_past_the_commit() {
    let world = TestApp::new().await;
    let mut app = world.spawn_worker(RULES, &[]);
    publish_in_order(
        &world.bus,
        include_str!("../conformance/37-only-head-commit/events.jsonl"),
    )
    .await;
    let bus = &world.bus;
    eventually(
        Duration::from_secs(60),
        "the head's trigger",
        || async move {
            let pending = bus.consumer_pending().await.ok()?;
            let triggers = all_triggers(bus).await;
            (pending == 0 && triggers.len() == 1).then_some(triggers)
        },
    )
    .await;
    app.stop();

    let explain = |sha: &str, json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_runwatch"));
        c.args(["explain", "github", "acme/widgets", "30", sha])
            .envs(world.env.env_vars())
            .env("RUNWATCH_RULES_FILE", world.dir.path().join("rules.toml"));
        if json {
            c.arg("--json");
        }
        let out = c.output().expect("run runwatch explain");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let text = explain(OLD, false);
    let expected = format!(
        "  head (all_completed_with_failure): will not fire: the pull request has moved past this commit (its head is {HEAD}; the rule has only_head_commit = true)\n"
    );
    assert!(text.ends_with(&expected), "{text}");
    let json: Value = serde_json::from_str(&explain(OLD, true)).expect("one JSON object");
    let rule = &json["rules"][0];
    assert_eq!(
        (rule["verdict"].as_str(), rule["cause"].as_str()),
        (Some("will_not_fire"), Some("not_head")),
        "{json}"
    );
    let json: Value = serde_json::from_str(&explain(HEAD, true)).expect("one JSON object");
    assert_eq!(
        json["rules"][0]["verdict"].as_str(),
        Some("fired"),
        "{json}"
    );
    world.cleanup().await;
}
