//! The pull request as the agent needs it, through the real ingest HTTP server, JetStream,
//! a worker and Postgres: GitHub `pull_request` deliveries (the octokit fixture, signed as
//! GitHub signs them) give the trigger the pull request's title, author, branches, page,
//! draft flag and state; the rule options `authors`, `exclude_authors` and `skip_bots`
//! decide on the author; `runwatch explain` names the author as the reason.

use std::process::Command;
use std::time::Duration;

use crate::helpers::app::eventually;
use crate::helpers::live::all_triggers;
use serde_json::Value;

fn fixture(path: &str) -> Value {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github")
        .join(path);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

/// The `opened` fixture for pull request `number` at `sha`, opened by `login` (a bot
/// account when `bot`), with `title`.
fn pull(number: u64, sha: &str, login: &str, bot: bool, title: &str) -> Value {
    let mut v = fixture("pull_request/opened.payload.json");
    v["number"] = number.into();
    let pr = &mut v["pull_request"];
    pr["number"] = number.into();
    pr["head"]["sha"] = sha.into();
    pr["updated_at"] = "2019-05-15T15:21:00Z".into();
    pr["title"] = title.into();
    pr["user"]["login"] = login.into();
    pr["user"]["type"] = if bot { "Bot" } else { "User" }.into();
    v
}

/// A failing `workflow_run` delivery of pull request `pr` at `sha` (the fixture's
/// repository, not a fork).
fn failing_run(id: u64, pr: u64, sha: &str) -> Value {
    let mut v = fixture("workflow_run/completed.with-pull-requests.payload.json");
    v["repository"] = fixture("pull_request/opened.payload.json")["repository"].clone();
    let wr = &mut v["workflow_run"];
    wr["id"] = id.into();
    wr["name"] = "build".into();
    wr["head_sha"] = sha.into();
    wr["head_branch"] = "changes".into();
    wr["status"] = "completed".into();
    wr["conclusion"] = "failure".into();
    wr["updated_at"] = "2019-05-15T15:22:00Z".into();
    let mut p = wr["pull_requests"][0].clone();
    p["number"] = pr.into();
    wr["pull_requests"] = Value::Array(vec![p]);
    wr["head_repository"]["id"] = 186853002.into();
    v
}

/// Ingest, a worker, their streams and database, with `rules` in force.
struct Pipeline {
    live: crate::helpers::live::Pipeline,
    n: u32,
}

impl Pipeline {
    async fn start(rules: &str) -> Pipeline {
        let live = crate::helpers::live::Pipeline::start(Some(rules), |_| {}).await;
        Pipeline { live, n: 0 }
    }

    /// Posts one JSON delivery signed as GitHub signs it; returns (status, answer).
    async fn post(&mut self, event: &str, json: &Value) -> (u16, String) {
        self.n += 1;
        let raw = serde_json::to_vec(json).unwrap();
        let delivery = format!("delivery-{}", self.n);
        self.live
            .github(event, &delivery, "application/json", &raw)
            .await
    }

    async fn send(&mut self, event: &str, json: &Value) {
        let (code, answer) = self.post(event, json).await;
        assert_eq!(code, 200, "{event} #{}: {answer}", self.n);
    }

    /// Waits until `want` triggers are published; returns them.
    async fn triggers(&self, want: usize) -> Vec<Value> {
        let bus = &self.live.bus;
        eventually(Duration::from_secs(60), "the triggers", || async move {
            let t = all_triggers(bus).await;
            (t.len() >= want).then_some(t)
        })
        .await
    }

    /// `runwatch explain github Codertocat/Hello-World PR SHA` (text).
    fn explain(&self, pr: u64, sha: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_runwatch"))
            .args([
                "explain",
                "github",
                "Codertocat/Hello-World",
                &pr.to_string(),
                sha,
            ])
            .envs(self.live.env.env_vars())
            .env(
                "RUNWATCH_RULES_FILE",
                self.live.rules.as_ref().expect("rules file").path(),
            )
            .output()
            .expect("run runwatch explain");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// What `runwatch::simulate` fires for the messages of the events stream, in stream
    /// order, under `rules`: (rule name, pull request, the trigger's `pull_request`).
    async fn simulated(&self, rules: &str) -> Vec<(String, Option<u64>, Value)> {
        let limits = runwatch::event::Limits::default();
        let engine = runwatch::engine::Engine::new(
            runwatch::engine::RuleSet::from_toml(rules).unwrap(),
            limits,
        );
        let mut sim = runwatch::simulate::Simulation::new(engine, limits);
        let mut triggers = Vec::new();
        for payload in self.live.stored_events().await {
            triggers.extend(sim.feed_line(&payload).unwrap());
        }
        triggers.extend(sim.fire_timers_until(None));
        let mut out: Vec<_> = triggers
            .iter()
            .map(|t| {
                (
                    t.rule_name.clone(),
                    t.pr_number,
                    serde_json::to_value(&t.pull_request).unwrap(),
                )
            })
            .collect();
        out.sort_by_key(|(r, pr, _)| (r.clone(), *pr));
        out
    }

    /// Waits until everything is decided; returns every trigger published.
    async fn finish(self) -> Vec<Value> {
        let triggers = self.live.quiet_triggers().await;
        self.live.stop().await;
        triggers
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_carries_the_pull_request() {
    let mut p = Pipeline::start("[[rules]]\nkind = \"all_completed_with_failure\"\n").await;
    let a = sha('a');
    let b = sha('b');
    // Pull request 2 (the fixture's: Codertocat's "Update the README with new
    // information.", changes → master), then its failing run.
    let mut opened = fixture("pull_request/opened.payload.json");
    opened["pull_request"]["head"]["sha"] = a.clone().into();
    p.send("pull_request", &opened).await;
    p.send("workflow_run", &failing_run(21, 2, &a)).await;
    // Pull request 3: its run arrives first.
    p.send("workflow_run", &failing_run(31, 3, &b)).await;
    let first = p.triggers(2).await;
    let three = first
        .iter()
        .find(|t| t["pr_number"] == 3)
        .expect("pr 3 fired");
    // Fired before its pull_request delivery: nothing known of it yet.
    assert!(three.get("pull_request").is_none(), "{three}");
    p.send("pull_request", &pull(3, &b, "octo", false, "Later"))
        .await;
    // A delivery whose title is not a string is refused, as any malformed body.
    let mut bad = pull(4, &b, "x", false, "t");
    bad["pull_request"]["title"] = 5.into();
    assert_eq!(p.post("pull_request", &bad).await.0, 400);
    // A login with a control character, or a base branch over the string limit, is refused
    // like any identifier, naming the field.
    let (code, answer) = p
        .post("pull_request", &pull(4, &b, "a\u{1b}b", false, "t"))
        .await;
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("author.login"), "{answer}");
    let mut long = pull(4, &b, "x", false, "t");
    long["pull_request"]["base"]["ref"] = "b".repeat(2000).into();
    let (code, answer) = p.post("pull_request", &long).await;
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("base_branch"), "{answer}");
    let got = p.finish().await;
    assert_eq!(got.len(), 2, "{got:?}");
    for t in &got {
        crate::helpers::schemas::assert_valid_trigger(t, "a trigger with its pull request");
    }
    let two = got
        .iter()
        .find(|t| t["pr_number"] == 2)
        .expect("pr 2 fired");
    assert_eq!(
        two["pull_request"],
        serde_json::json!({
            "number": 2,
            "title": "Update the README with new information.",
            "author": "Codertocat",
            "author_is_bot": false,
            "head_branch": "changes",
            "base_branch": "master",
            "url": "https://github.com/Codertocat/Hello-World/pull/2",
            "draft": false,
            "state": "open",
        })
    );
    assert_eq!(two["schema"], "runwatch.trigger.v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_title_with_controls_is_cut_and_made_printable() {
    let mut p = Pipeline::start("[[rules]]\nkind = \"all_completed_with_failure\"\n").await;
    let b = sha('b');
    let hostile = format!("Fix\u{1b}[31m\nit {}", "é".repeat(5000));
    p.send(
        "pull_request",
        &pull(3, &b, "renovate[bot]", false, &hostile),
    )
    .await;
    p.send("workflow_run", &failing_run(31, 3, &b)).await;
    let got = p.finish().await;
    assert_eq!(got.len(), 1, "{got:?}");
    crate::helpers::schemas::assert_valid_trigger(&got[0], "a trigger with a cut title");
    let pr = &got[0]["pull_request"];
    let title = pr["title"].as_str().expect("a title");
    assert!(title.len() <= 1024 && title.len() > 1000, "{}", title.len());
    assert!(title.starts_with("Fix [31m it éé"), "{title:.40}");
    assert!(!title.chars().any(char::is_control));
    // A login ending in [bot] is a bot whatever its type says.
    assert_eq!(pr["author"], "renovate[bot]");
    assert_eq!(pr["author_is_bot"], true);
}

const AUTHOR_RULES: &str = r#"
[[rules]]
kind = "all_completed_with_failure"
name = "mine"
authors = ["ALICE"]

[[rules]]
kind = "all_completed_with_failure"
name = "humans"
exclude_authors = ["mallory*"]
skip_bots = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authors_exclude_authors_and_skip_bots() {
    let mut p = Pipeline::start(AUTHOR_RULES).await;
    let (c, d, e) = (sha('c'), sha('d'), sha('e'));
    // A bot's pull request: neither rule fires ("mine" does not list it, "humans" skips bots).
    p.send(
        "pull_request",
        &pull(3, &c, "dependabot[bot]", true, "Bump x"),
    )
    .await;
    p.send("workflow_run", &failing_run(31, 3, &c)).await;
    // An excluded author: "humans" skips it, "mine" does not list it.
    p.send("pull_request", &pull(4, &d, "Mallory-2", false, "Hmm"))
        .await;
    p.send("workflow_run", &failing_run(41, 4, &d)).await;
    // Alice's pull request, its failing run first: "humans" fires at once (an unknown
    // author is neither excluded nor a bot), "mine" waits for the author...
    p.send("workflow_run", &failing_run(51, 5, &e)).await;
    let first = p.triggers(1).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["rule_name"], "humans");
    assert_eq!(first[0]["pr_number"], 5);
    let waiting = p.explain(5, &e);
    assert!(
        waiting.contains("the pull request's author is not known yet"),
        "{waiting}"
    );
    // ...and fires when the pull_request delivery makes it known (logins ignore case).
    p.send(
        "pull_request",
        &pull(5, &e, "alice", false, "Fix the build"),
    )
    .await;
    let both = p.triggers(2).await;
    let mine = both
        .iter()
        .find(|t| t["rule_name"] == "mine")
        .expect("mine fired");
    assert_eq!(mine["pr_number"], 5);
    assert_eq!(mine["pull_request"]["author"], "alice");
    assert_eq!(mine["pull_request"]["title"], "Fix the build");
    let bot = p.explain(3, &c);
    assert!(
        bot.contains("the author dependabot[bot] is a bot (the rule has skip_bots = true)"),
        "{bot}"
    );
    assert!(
        bot.contains("the author dependabot[bot] is not one of the rule's authors"),
        "{bot}"
    );
    let excluded = p.explain(4, &d);
    assert!(
        excluded.contains("the author Mallory-2 is excluded (exclude_authors)"),
        "{excluded}"
    );
    let simulated = p.simulated(AUTHOR_RULES).await;
    let got = p.finish().await;
    // simulate, over the same messages in stream order, fires the same triggers with the
    // same pull request.
    let mut live: Vec<(String, Option<u64>, Value)> = got
        .iter()
        .map(|t| {
            (
                t["rule_name"].as_str().unwrap_or("").to_string(),
                t["pr_number"].as_u64(),
                t.get("pull_request").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    live.sort_by_key(|(r, pr, _)| (r.clone(), *pr));
    assert_eq!(live, simulated);
    let mut fired: Vec<(String, u64)> = got
        .iter()
        .map(|t| {
            (
                t["rule_name"].as_str().unwrap_or("").to_string(),
                t["pr_number"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    fired.sort();
    assert_eq!(
        fired,
        vec![("humans".to_string(), 5), ("mine".to_string(), 5)]
    );
}
