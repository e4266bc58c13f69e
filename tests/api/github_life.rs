//! GitHub as people set it up, and the pull request's whole life, through the real ingest
//! HTTP server, JetStream, a worker and Postgres: deliveries built from the octokit fixtures
//! in tests/fixtures/github, signed as GitHub signs them (`X-Hub-Signature-256` over the raw
//! body), posted one after the other; the triggers published are compared as a set of
//! (pull request, commit).
//!
//! - form-encoded deliveries (GitHub's default content type for webhooks created through
//!   the API) are accepted on the same route;
//! - closed, merged and draft pull requests, and every action's head commit;
//! - a re-requested check suite supersedes its completed report (GitHub's real pair, same
//!   `updated_at`);
//! - `require_pr = false` announces a run once;
//! - a Buildkite build of a GitHub repository joins the group of the GitHub runs of its
//!   pull request and commit.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::helpers::live::{SECRET, post};
use runwatch::ingest::{Secret, github};
use serde_json::Value;

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";
/// The repository and pull request of the octokit fixtures.
const HEAD: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

fn fixture(path: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github")
        .join(path);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// A `pull_request` delivery: the `opened` fixture with this action, number, head commit,
/// time and state.
fn pull(
    action: &str,
    number: u64,
    sha: &str,
    at: &str,
    state: &str,
    draft: bool,
    merged: bool,
) -> Value {
    let mut v = fixture("pull_request/opened.payload.json");
    v["action"] = action.into();
    v["number"] = number.into();
    let pr = &mut v["pull_request"];
    pr["number"] = number.into();
    pr["head"]["sha"] = sha.into();
    pr["updated_at"] = at.into();
    pr["state"] = state.into();
    pr["draft"] = draft.into();
    pr["merged"] = merged.into();
    v
}

/// A `workflow_run` delivery on the fixtures' repository: run `id` of workflow `name` for
/// `sha`, listing pull request `pr` (none: a fork's run, whose head repository differs).
fn workflow_run(
    id: u64,
    name: &str,
    pr: Option<u64>,
    sha: &str,
    status: &str,
    conclusion: Option<&str>,
    at: &str,
) -> Value {
    let mut v = fixture("workflow_run/completed.with-pull-requests.payload.json");
    v["repository"] = fixture("pull_request/opened.payload.json")["repository"].clone();
    v["action"] = if status == "completed" {
        "completed"
    } else {
        "requested"
    }
    .into();
    let wr = &mut v["workflow_run"];
    wr["id"] = id.into();
    wr["name"] = name.into();
    wr["head_sha"] = sha.into();
    wr["head_branch"] = "changes".into();
    wr["status"] = status.into();
    wr["conclusion"] = conclusion.map_or(Value::Null, Value::from);
    wr["updated_at"] = at.into();
    match pr {
        Some(n) => {
            let mut p = wr["pull_requests"][0].clone();
            p["number"] = n.into();
            wr["pull_requests"] = Value::Array(vec![p]);
            wr["head_repository"]["id"] = 186853002.into();
        }
        None => {
            wr["pull_requests"] = Value::Array(vec![]);
            wr["head_repository"]["id"] = 99.into();
            wr["head_repository"]["owner"]["login"] = "forker".into();
        }
    }
    v
}

/// A `status` delivery (a commit status: no pull request) on the fixtures' repository.
fn status(sha: &str, context: &str, state: &str, at: &str) -> Value {
    let mut v = fixture("status/payload.json");
    v["sha"] = sha.into();
    v["context"] = context.into();
    v["state"] = state.into();
    v["updated_at"] = at.into();
    v["branches"] = Value::Array(vec![]);
    v
}

/// The body GitHub sends for `json` with content type `content_type`.
fn body(content_type: &str, json: &Value) -> Vec<u8> {
    let text = serde_json::to_string(json).unwrap();
    if content_type == FORM {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &text)
            .finish()
            .into_bytes()
    } else {
        text.into_bytes()
    }
}

/// Ingest, a worker and their streams and database, with `rules` in force.
struct Pipeline {
    live: crate::helpers::live::Pipeline,
    n: u32,
}

impl Pipeline {
    async fn start(rules: &str) -> Pipeline {
        let live = crate::helpers::live::Pipeline::start(Some(rules), |c| {
            c.ingest.buildkite_tokens = vec![Secret::new(SECRET)];
        })
        .await;
        Pipeline { live, n: 0 }
    }

    /// Posts one delivery signed as GitHub signs it (over the raw body); asserts 200.
    async fn send(&mut self, event: &str, content_type: &str, json: &Value) {
        self.n += 1;
        let raw = body(content_type, json);
        let delivery = format!("delivery-{}", self.n);
        let (code, answer) = self.live.github(event, &delivery, content_type, &raw).await;
        assert_eq!(code, 200, "{event} #{} ({content_type}): {answer}", self.n);
    }

    /// Waits until everything is decided; returns the triggers published.
    async fn finish_raw(self) -> Vec<Value> {
        let triggers = self.live.quiet_triggers().await;
        self.live.stop().await;
        triggers
    }

    /// Waits until everything is decided; returns the triggers as (pull request, commit).
    async fn finish(self) -> BTreeSet<(Option<u64>, String)> {
        self.finish_raw()
            .await
            .iter()
            .map(|t| {
                (
                    t["pr_number"].as_u64(),
                    t["commit_sha"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

const DEFAULT_RULE: &str = "[[rules]]\nkind = \"all_completed_with_failure\"\n";

fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_encoded_deliveries_are_accepted_on_the_same_route() {
    let mut p = Pipeline::start(DEFAULT_RULE).await;
    // Signed over the JSON instead of the raw form body: refused, as GitHub would never sign so.
    let json = pull(
        "opened",
        2,
        HEAD,
        "2019-05-15T15:20:33Z",
        "open",
        false,
        false,
    );
    let raw = body(FORM, &json);
    let wrong = github::sign(
        SECRET.as_bytes(),
        serde_json::to_string(&json).unwrap().as_bytes(),
    );
    let headers = |sig: &str| {
        vec![
            ("Content-Type", FORM.to_string()),
            ("X-GitHub-Event", "pull_request".to_string()),
            ("X-GitHub-Delivery", "d-x".to_string()),
            ("X-Hub-Signature-256", sig.to_string()),
        ]
    };
    let h = headers(&wrong);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(post(p.live.addr, "/webhooks/github", &h, &raw).await.0, 401);
    // A form without `payload`: 400, and the reason says which field.
    let other = b"zen=hello".to_vec();
    let sig = github::sign(SECRET.as_bytes(), &other);
    let h = headers(&sig);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, answer) = post(p.live.addr, "/webhooks/github", &h, &other).await;
    assert_eq!((code, answer.contains("payload")), (400, true), "{answer}");
    // GitHub's ping on a form webhook, then a pull request and its failing run, form-encoded.
    p.send("ping", FORM, &fixture("ping/payload.json")).await;
    p.send("pull_request", FORM, &json).await;
    p.send(
        "workflow_run",
        FORM,
        &workflow_run(
            21,
            "build",
            Some(2),
            HEAD,
            "completed",
            Some("failure"),
            "2019-05-15T15:22:00Z",
        ),
    )
    .await;
    // The same route still takes JSON.
    let c = sha('c');
    p.send(
        "workflow_run",
        JSON,
        &workflow_run(
            31,
            "build",
            Some(3),
            &c,
            "completed",
            Some("failure"),
            "2019-05-15T15:22:00Z",
        ),
    )
    .await;
    let got = p.finish().await;
    assert_eq!(
        got,
        BTreeSet::from([(Some(2), HEAD.to_string()), (Some(3), c)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_merged_and_draft_pull_requests_and_every_actions_head() {
    let mut p =
        Pipeline::start("[[rules]]\nkind = \"all_completed_with_failure\"\nskip_draft = true\n")
            .await;
    let t = |m: u32, s: u32| format!("2026-03-01T10:{m:02}:{s:02}Z");
    // 2: merged while `test` still ran; `build` had failed: nothing when `test` completes.
    // 3: closed (not merged) the same way: nothing. 4: open: fires (the control).
    for (n, c, close) in [
        (2u64, 'a', Some(true)),
        (3, 'b', Some(false)),
        (4, 'c', None),
    ] {
        let s = sha(c);
        p.send(
            "pull_request",
            JSON,
            &pull("opened", n, &s, &t(0, 0), "open", false, false),
        )
        .await;
        p.send(
            "workflow_run",
            JSON,
            &workflow_run(n * 10 + 1, "build", Some(n), &s, "queued", None, &t(0, 10)),
        )
        .await;
        p.send(
            "workflow_run",
            JSON,
            &workflow_run(n * 10 + 2, "test", Some(n), &s, "queued", None, &t(0, 10)),
        )
        .await;
        p.send(
            "workflow_run",
            JSON,
            &workflow_run(
                n * 10 + 1,
                "build",
                Some(n),
                &s,
                "completed",
                Some("failure"),
                &t(2, 0),
            ),
        )
        .await;
        if let Some(merged) = close {
            p.send(
                "pull_request",
                JSON,
                &pull("closed", n, &s, &t(3, 0), "closed", false, merged),
            )
            .await;
        }
        p.send(
            "workflow_run",
            JSON,
            &workflow_run(
                n * 10 + 2,
                "test",
                Some(n),
                &s,
                "completed",
                Some("success"),
                &t(4, 0),
            ),
        )
        .await;
    }
    // 5: opened as a draft, fails: nothing (skip_draft); ready_for_review: fires.
    let d = sha('d');
    p.send(
        "pull_request",
        JSON,
        &pull("opened", 5, &d, &t(0, 0), "open", true, false),
    )
    .await;
    p.send(
        "workflow_run",
        JSON,
        &workflow_run(
            51,
            "build",
            Some(5),
            &d,
            "completed",
            Some("failure"),
            &t(2, 0),
        ),
    )
    .await;
    p.send(
        "pull_request",
        JSON,
        &pull("ready_for_review", 5, &d, &t(5, 0), "open", false, false),
    )
    .await;
    // 6: converted to a draft before its run fails: nothing.
    let e = sha('e');
    p.send(
        "pull_request",
        JSON,
        &pull("opened", 6, &e, &t(0, 0), "open", false, false),
    )
    .await;
    p.send(
        "workflow_run",
        JSON,
        &workflow_run(61, "build", Some(6), &e, "queued", None, &t(0, 10)),
    )
    .await;
    p.send(
        "pull_request",
        JSON,
        &pull("converted_to_draft", 6, &e, &t(1, 0), "open", true, false),
    )
    .await;
    p.send(
        "workflow_run",
        JSON,
        &workflow_run(
            61,
            "build",
            Some(6),
            &e,
            "completed",
            Some("failure"),
            &t(2, 0),
        ),
    )
    .await;
    // 7: a fork's run (GitHub lists no pull request) fails; the pull request was opened
    // before the webhook existed, and its next delivery is `labeled`: its head links the
    // commit, the run joins the pull request's group, and it fires.
    let f = sha('f');
    p.send(
        "workflow_run",
        JSON,
        &workflow_run(
            71,
            "build",
            None,
            &f,
            "completed",
            Some("failure"),
            &t(2, 0),
        ),
    )
    .await;
    p.send(
        "pull_request",
        JSON,
        &pull("labeled", 7, &f, &t(6, 0), "open", false, false),
    )
    .await;
    let got = p.finish().await;
    assert_eq!(
        got,
        BTreeSet::from([(Some(4), sha('c')), (Some(5), d), (Some(7), f)]),
        "merged (2), closed (3) and draft (6) pull requests must not fire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerequested_check_suite_supersedes_its_completed_report() {
    let mut p = Pipeline::start(DEFAULT_RULE).await;
    // Another CI on the same pull request and commit, still running.
    p.send(
        "workflow_run",
        JSON,
        &workflow_run(
            30433642,
            "CI",
            Some(2),
            HEAD,
            "queued",
            None,
            "2019-05-15T15:20:40Z",
        ),
    )
    .await;
    // GitHub's real pair: completed (its conclusion made a failure) and rerequested, both
    // dated 2019-05-15T15:21:14Z.
    let mut done = fixture("check_suite/completed.payload.json");
    done["check_suite"]["conclusion"] = "failure".into();
    let again = fixture("check_suite/rerequested.payload.json");
    assert_eq!(
        done["check_suite"]["updated_at"],
        again["check_suite"]["updated_at"]
    );
    p.send("check_suite", JSON, &done).await;
    p.send("check_suite", JSON, &again).await;
    // The other CI passes while the suite is re-run: nothing may fire.
    p.send(
        "workflow_run",
        JSON,
        &workflow_run(
            30433642,
            "CI",
            Some(2),
            HEAD,
            "completed",
            Some("success"),
            "2019-05-15T15:22:00Z",
        ),
    )
    .await;
    // The re-run passes: still nothing.
    let mut rerun = fixture("check_suite/completed.payload.json");
    rerun["check_suite"]["updated_at"] = "2019-05-15T15:25:00Z".into();
    p.send("check_suite", JSON, &rerun).await;
    // Control: on another commit, the same failure without a re-request fires.
    let c = sha('c');
    let mut other = done.clone();
    other["check_suite"]["head_sha"] = c.clone().into();
    other["check_suite"]["id"] = 7.into();
    p.send("check_suite", JSON, &other).await;
    let got = p.finish().await;
    assert_eq!(got, BTreeSet::from([(Some(2), c)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_pr_false_announces_a_run_once() {
    let mut p =
        Pipeline::start("[[rules]]\nkind = \"all_completed_with_failure\"\nrequire_pr = false\n")
            .await;
    // The commit is known to be pull request 2's head before its status fails: only the
    // pull request's group fires.
    let a = sha('a');
    p.send(
        "pull_request",
        JSON,
        &pull(
            "opened",
            2,
            &a,
            "2026-03-01T10:00:00Z",
            "open",
            false,
            false,
        ),
    )
    .await;
    p.send(
        "status",
        JSON,
        &status(&a, "ci/jenkins", "failure", "2026-03-01T10:02:00Z"),
    )
    .await;
    // The status fails (and fires, without a pull request) before the commit is known to be
    // pull request 3's: the pull request's group takes that over and does not fire again.
    let b = sha('b');
    p.send(
        "status",
        JSON,
        &status(&b, "ci/jenkins", "failure", "2026-03-01T10:02:00Z"),
    )
    .await;
    p.send(
        "pull_request",
        JSON,
        &pull(
            "synchronize",
            3,
            &b,
            "2026-03-01T10:03:00Z",
            "open",
            false,
            false,
        ),
    )
    .await;
    let got = p.finish().await;
    assert_eq!(got, BTreeSet::from([(Some(2), a), (None, b)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buildkite_build_joins_the_github_group_of_its_commit() {
    let mut p = Pipeline::start(DEFAULT_RULE).await;
    // Buildkite's fixture: a failed build of git@github.com:acme-inc/my-pipeline.git, pull
    // request 42, commit abcd0b7…; Actions runs the same pull request and commit.
    let bk_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/buildkite/build.finished.failed.json");
    let bk: Value = serde_json::from_slice(&std::fs::read(bk_path).unwrap()).unwrap();
    let sha = bk["build"]["commit"].as_str().unwrap().to_string();
    let on_repo = |mut v: Value| {
        v["repository"]["id"] = 5555.into();
        v["repository"]["name"] = "my-pipeline".into();
        v["repository"]["full_name"] = "acme-inc/my-pipeline".into();
        v["repository"]["owner"]["login"] = "acme-inc".into();
        v["workflow_run"]["head_repository"]["id"] = 5555.into();
        v
    };
    p.send(
        "workflow_run",
        JSON,
        &on_repo(workflow_run(
            901,
            "test",
            Some(42),
            &sha,
            "queued",
            None,
            "2015-05-09T21:05:00Z",
        )),
    )
    .await;
    let raw = serde_json::to_vec(&bk).unwrap();
    let (code, answer) = post(
        p.live.addr,
        "/webhooks/buildkite",
        &[
            ("X-Buildkite-Event", "build.finished"),
            ("X-Buildkite-Token", SECRET),
        ],
        &raw,
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    p.send(
        "workflow_run",
        JSON,
        &on_repo(workflow_run(
            901,
            "test",
            Some(42),
            &sha,
            "completed",
            Some("success"),
            "2015-05-09T21:08:00Z",
        )),
    )
    .await;
    let got = p.finish_raw().await;
    assert_eq!(got.len(), 1, "one group, one trigger: {got:?}");
    let t = &got[0];
    assert_eq!(
        (t["provider"].as_str(), t["pr_number"].as_u64()),
        (Some("github"), Some(42))
    );
    let mut runs: Vec<&str> = t["runs"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    runs.sort_unstable();
    assert_eq!(runs, ["901", "buildkite:my-pipeline"]);
    assert_eq!(t["failed_workflows"], serde_json::json!(["My Pipeline"]));
}
