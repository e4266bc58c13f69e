//! `runwatch explain` names the pull request's state and the commit's pull request as the
//! reasons a group does not fire, on the states the live worker (the real binary) produced
//! from conformance scenarios 38 (pull request 40 merged, 41 closed, 42 open and fired) and
//! 42 (`require_pr = false`: the group without a pull request of a commit that belongs to
//! pull request 50).

use std::process::Command;
use std::time::Duration;

use crate::helpers::app::{TestApp, eventually};
use crate::helpers::live::{all_triggers, publish_in_order};
use serde_json::Value;

/// Runs the scenario's events through `runwatch run` with `rules`; waits for `want`
/// triggers; returns the world for `explain`.
async fn live(rules: &str, events: &str, want: usize) -> TestApp {
    let world = TestApp::new().await;
    let mut app = world.spawn_worker(rules, &[]);
    publish_in_order(&world.bus, events).await;
    let bus = &world.bus;
    eventually(
        Duration::from_secs(60),
        "the scenario's triggers",
        || async move {
            let pending = bus.consumer_pending().await.ok()?;
            let triggers = all_triggers(bus).await;
            (pending == 0 && triggers.len() == want).then_some(triggers)
        },
    )
    .await;
    app.stop();
    world
}

/// `runwatch explain github acme/widgets PR SHA` (`--json`): (text, first rule's JSON).
fn explain(world: &TestApp, pr: &str, sha: &str) -> (String, Value) {
    let run = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_runwatch"));
        c.args(["explain", "github", "acme/widgets", pr, sha])
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
    let json: Value = serde_json::from_str(&run(true)).expect("one JSON object");
    (run(false), json["rules"][0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_the_pull_request_is_merged_or_closed() {
    let world = live(
        "[[rules]]\nkind = \"all_completed_with_failure\"\n",
        include_str!("../conformance/38-closed-or-merged-does-not-fire/events.jsonl"),
        1,
    )
    .await;
    for (pr, sha, cause) in [
        ("40", "3838383838383838383838383838383838383838", "merged"),
        ("41", "3939393939393939393939393939393939393939", "closed"),
    ] {
        let (text, rule) = explain(&world, pr, sha);
        assert!(
            text.contains(&format!(
                "will not fire: the pull request is {cause} (the rule has only_open = true) (reported at 2026-03-04T10:03:00Z)"
            )),
            "{text}"
        );
        assert_eq!(
            (rule["verdict"].as_str(), rule["cause"].as_str()),
            (Some("will_not_fire"), Some(cause)),
            "{rule}"
        );
    }
    let (_, rule) = explain(&world, "42", "4040404040404040404040404040404040404040");
    assert_eq!(rule["verdict"].as_str(), Some("fired"), "{rule}");
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_a_run_without_a_pull_request_is_judged_in_its_pull_request() {
    let world = live(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nrequire_pr = false\n",
        include_str!("../conformance/42-require-pr-false-fires-a-run-once/events.jsonl"),
        2,
    )
    .await;
    let (text, rule) = explain(&world, "-", "5050505050505050505050505050505050505050");
    assert!(
        text.contains("will not fire: the commit belongs to a pull request"),
        "{text}"
    );
    assert_eq!(
        (rule["verdict"].as_str(), rule["cause"].as_str()),
        (Some("will_not_fire"), Some("in_pull_request")),
        "{rule}"
    );
    let (_, rule) = explain(&world, "50", "5050505050505050505050505050505050505050");
    assert_eq!(rule["verdict"].as_str(), Some("fired"), "{rule}");
    // Pull request 51's group took over the firing of the commit's group without one.
    let (text, rule) = explain(&world, "51", "5151515151515151515151515151515151515151");
    assert!(
        text.contains("in the commit's group without a pull request"),
        "{text}"
    );
    assert_eq!(rule["verdict"].as_str(), Some("fired"), "{rule}");
    world.cleanup().await;
}
