//! The ecosystem's protocols, each checked by the ecosystem's own library, never by
//! runwatch's code (issue 21):
//!
//! - Standard Webhooks: `runwatch deliver` posts to a Python receiver
//!   (`tests/protocols/receiver.py`) that verifies each request with the reference library
//!   `standardwebhooks`: under each of two rotated secrets, the same `webhook-id` on a
//!   retry, refused under another secret, with a tampered body, and when replayed with the
//!   library's clock moved past its 5-minute tolerance;
//! - CloudEvents: every trigger on NATS is read back by nats-py and parsed by the Python
//!   CloudEvents SDK in binary mode (`tests/protocols/nats_cloudevents.py`), and deliveries
//!   in binary and structured mode are parsed by the SDK's `from_http_event`.
//!
//! The libraries (pinned in `tests/protocols/requirements.txt`) are installed into
//! `.local/pip-protocols` by `scripts/python-protocol-deps.sh`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use chrono::{SubsecRound, Utc};
use runwatch::event::{Conclusion, Provider, Status};
use runwatch::trigger::{Trigger, TriggerRepository, TriggerRun};
use serde_json::Value;

use crate::helpers::app::{TestApp, eventually};
use crate::helpers::procs::WorkerProc;
use crate::helpers::services::protocol_pythonpath;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `whsec_` secret with a random 32-byte key.
fn whsec() -> String {
    let key: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The Python receiver, killed when dropped.
struct PyReceiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl PyReceiver {
    fn start(dir: &Path, config: &Value) -> PyReceiver {
        let conf = dir.join("receiver.json");
        std::fs::write(&conf, config.to_string()).expect("receiver config");
        let out = dir.join("received.jsonl");
        let port_file = dir.join("receiver.port");
        let child = Command::new("python3")
            .arg(repo_root().join("tests/protocols/receiver.py"))
            .arg(&conf)
            .arg(&out)
            .arg(&port_file)
            .env("PYTHONPATH", protocol_pythonpath())
            .stdin(Stdio::null())
            .spawn()
            .expect("start receiver.py");
        let mut rx = PyReceiver {
            child,
            port: 0,
            out,
        };
        let started = std::time::Instant::now();
        rx.port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse().expect("port");
            }
            assert!(
                rx.child.try_wait().expect("wait").is_none(),
                "receiver.py exited"
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "receiver.py did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        rx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request received so far.
    fn seen(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("receiver line"))
            .collect()
    }

    fn on(&self, path: &str) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect()
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn trigger(i: u32, owner: &str, pr: Option<u64>) -> Trigger {
    // CloudEvents times carry microseconds at most through the SDK's parser.
    let now = Utc::now().trunc_subsecs(6);
    let mut runs = BTreeMap::new();
    runs.insert(
        format!("{}", 1000 + i),
        TriggerRun {
            attempt: 1,
            workflow: "test".into(),
            status: Status::Completed,
            conclusion: Some(Conclusion::Failure),
            url: None,
            updated_at: now,
            jobs: Vec::new(),
            jobs_omitted: 0,
        },
    );
    Trigger {
        schema: runwatch::trigger::TRIGGER_SCHEMA.into(),
        trigger_id: runwatch::trigger::trigger_id(&[
            "protocols-test",
            &i.to_string(),
            &crate::helpers::services::unique("p"),
        ]),
        rule: "all_completed_with_failure".into(),
        rule_name: "all_completed_with_failure".into(),
        provider: Provider::Github,
        repository: TriggerRepository {
            owner: owner.into(),
            name: "app".into(),
            id: Some(i.to_string()),
            internal_id: 1,
        },
        pr_number: pr,
        commit_sha: format!("{i:040x}"),
        branch: Some("feature".into()),
        workflow: None,
        episode: 0,
        runs,
        failed_workflows: vec!["test".into()],
        fired_at: now,
        budget: None,
        pull_request: None,
        known_flaky: Vec::new(),
        trace: None,
    }
}

/// `runwatch deliver` with `config`, ready; SIGTERMed by the caller.
async fn start_deliver(app: &TestApp, config: &str) -> WorkerProc {
    app.spawn_deliver(config, &[("RUST_LOG", "runwatch=debug,info")])
        .await
}

const DELAYS: &str =
    "[deliver]\nmin_delay = \"100ms\"\nmax_delay = \"300ms\"\nretry_after_max = \"1s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_deliveries_verify_with_the_reference_library() {
    let app = TestApp::new().await;
    let (bus, dir) = (&app.bus, &app.dir);
    let (old, new) = (whsec(), whsec());
    let legacy = "plain-s3cret-not-whsec";
    let rx = PyReceiver::start(
        dir.path(),
        &serde_json::json!({
            "/sw": {"secrets": [old, new], "fail_first": true},
            "/legacy": {"secrets": [format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(legacy))]},
        }),
    );
    // A rotation: both secrets in the file, one per line; no `signature` key (the whsec_
    // form selects Standard Webhooks).
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{old}\n{new}\n")).expect("secret");
    let mut proc = start_deliver(
        &app,
        &format!(
            "{DELAYS}\n[[deliver.targets]]\nname = \"sw\"\nurl = \"{}\"\nsecret_file = \"{}\"\n\n\
             [[deliver.targets]]\nname = \"legacy\"\nurl = \"{}\"\nsecret = \"{legacy}\"\n",
            rx.url("/sw"),
            secret_file.display(),
            rx.url("/legacy"),
        ),
    )
    .await;
    let triggers: Vec<Trigger> = (0..3).map(|i| trigger(i, "acme", Some(7))).collect();
    for r in bus.publish_triggers(&triggers).await {
        r.expect("publish");
    }
    eventually(
        Duration::from_secs(60),
        "every trigger delivered",
        || async {
            let ok = |path| rx.on(path).iter().filter(|r| r["status"] == 200).count();
            (ok("/sw") == 3 && ok("/legacy") == 3).then_some(())
        },
    )
    .await;
    assert_eq!(
        proc.terminate(Duration::from_secs(20)).expect("stop"),
        Some(0)
    );

    let sw = rx.on("/sw");
    // One refused first attempt and one retry per trigger.
    assert_eq!(sw.len(), 6, "{sw:#?}");
    let mut by_id: HashMap<String, Vec<&Value>> = HashMap::new();
    for r in &sw {
        let h = &r["headers"];
        assert_eq!(
            r["verified"],
            serde_json::json!(["ok", "ok"]),
            "each rotated secret verifies: {r:#}"
        );
        for (check, why) in [
            ("unrelated", "an unrelated secret"),
            ("tampered", "a tampered body"),
            (
                "after_6m",
                "a replay 6 minutes later (outside the 5-minute tolerance)",
            ),
        ] {
            let verdict = r[check].as_str().unwrap_or("");
            assert!(
                verdict.starts_with("refused: WebhookVerificationError"),
                "{why} must be refused, got {verdict:?}"
            );
        }
        assert!(
            r["after_6m"]
                .as_str()
                .unwrap_or("")
                .contains("timestamp too old"),
            "{r:#}"
        );
        assert_eq!(
            r["after_4m"], "ok",
            "4 minutes later is inside the tolerance: {r:#}"
        );
        let sigs = h["webhook-signature"].as_str().expect("webhook-signature");
        assert_eq!(
            sigs.split(' ').count(),
            2,
            "one signature per secret: {sigs}"
        );
        assert!(h.get("runwatch-signature-256").is_none(), "{h:#}");
        assert_eq!(h["webhook-id"], h["runwatch-trigger-id"]);
        by_id
            .entry(h["webhook-id"].as_str().expect("id").to_string())
            .or_default()
            .push(r);
    }
    let ids: Vec<String> = triggers.iter().map(|t| t.trigger_id.to_string()).collect();
    let mut seen_ids: Vec<&String> = by_id.keys().collect();
    seen_ids.sort();
    let mut want: Vec<&String> = ids.iter().collect();
    want.sort();
    assert_eq!(seen_ids, want, "webhook-id is the trigger id");
    for (id, reqs) in &by_id {
        let statuses: Vec<&Value> = reqs.iter().map(|r| &r["status"]).collect();
        assert_eq!(statuses, [500, 200], "{id}: the retry keeps the webhook-id");
        let attempts: Vec<&Value> = reqs
            .iter()
            .map(|r| &r["headers"]["runwatch-delivery-attempt"])
            .collect();
        assert_eq!(attempts, ["1", "2"], "{id}");
    }

    // A plain secret keeps today's scheme: receivers of `Runwatch-Signature-256` still
    // work, and the Standard Webhooks library finds no headers to verify.
    for r in rx.on("/legacy") {
        let h = &r["headers"];
        assert!(
            h["runwatch-signature-256"]
                .as_str()
                .is_some_and(|s| s.starts_with("sha256=")),
            "{h:#}"
        );
        assert!(h.get("webhook-signature").is_none(), "{h:#}");
        assert!(
            r["verified"][0]
                .as_str()
                .unwrap_or("")
                .contains("Missing required headers"),
            "{r:#}"
        );
    }
    app.cleanup().await;
}

/// What the CloudEvents SDK must read for `t`.
fn expected_event(t: &Trigger) -> (String, String, String) {
    let repo = format!("{}/{}", t.repository.owner, t.repository.name);
    let subject = match t.pr_number {
        Some(pr) => format!("{repo}#{pr}@{}", t.commit_sha),
        None => format!("{repo}@{}", t.commit_sha),
    };
    (t.trigger_id.to_string(), subject, "runwatch/github".into())
}

fn check_event(event: &Value, t: &Trigger, what: &str) {
    let (id, subject, source) = expected_event(t);
    assert_eq!(event["specversion"], "1.0", "{what}: {event:#}");
    assert_eq!(event["id"], id.as_str(), "{what}");
    assert_eq!(event["type"], "runwatch.trigger.v1", "{what}");
    assert_eq!(event["source"], source.as_str(), "{what}");
    assert_eq!(event["subject"], subject.as_str(), "{what}");
    assert_eq!(event["datacontenttype"], "application/json", "{what}");
    assert_eq!(event["data_trigger_id"], id.as_str(), "{what}");
    let time = chrono::DateTime::parse_from_rfc3339(event["time"].as_str().expect("time"))
        .expect("the SDK's time is RFC 3339");
    assert_eq!(time, t.fired_at, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_on_nats_and_in_deliveries_parse_with_the_sdk() {
    let app = TestApp::new().await;
    let (bus, dir) = (&app.bus, &app.dir);
    let secret = whsec();
    let rx = PyReceiver::start(
        dir.path(),
        &serde_json::json!({
            "/binary": {"secrets": [secret]},
            "/structured": {"secrets": [secret]},
            "/plain": {},
        }),
    );
    let mut proc = start_deliver(
        &app,
        &format!(
            "{DELAYS}\n[[deliver.targets]]\nname = \"binary\"\nurl = \"{}\"\nsecret = \"{secret}\"\ncloudevents = \"binary\"\n\n\
             [[deliver.targets]]\nname = \"structured\"\nurl = \"{}\"\nsecret = \"{secret}\"\nsignature = \"standard-webhooks\"\ncloudevents = \"structured\"\n\n\
             [[deliver.targets]]\nname = \"plain\"\nurl = \"{}\"\n",
            rx.url("/binary"),
            rx.url("/structured"),
            rx.url("/plain"),
        ),
    )
    .await;
    // A pull request, a push (no PR), and an owner that is not ASCII and holds a space and
    // a '%' (percent-encoded in the headers, decoded by the SDK).
    let triggers = vec![
        trigger(0, "acme", Some(42)),
        trigger(1, "acme", None),
        trigger(2, "Ünï cødé \"100%\"", Some(1)),
    ];
    for r in bus.publish_triggers(&triggers).await {
        r.expect("publish");
    }

    // NATS: nats-py reads each message, the SDK parses its headers and payload.
    let out = Command::new("python3")
        .arg(repo_root().join("tests/protocols/nats_cloudevents.py"))
        .arg(&app.env.config.nats.url)
        .arg(&app.env.config.streams.triggers)
        .arg(triggers.len().to_string())
        .env("PYTHONPATH", protocol_pythonpath())
        .output()
        .expect("run nats_cloudevents.py");
    assert!(
        out.status.success(),
        "nats_cloudevents.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(events.len(), triggers.len());
    for (event, t) in events.iter().zip(&triggers) {
        check_event(event, t, "NATS");
        assert_eq!(event["nats_msg_id"], t.trigger_id.to_string().as_str());
    }

    eventually(
        Duration::from_secs(60),
        "every trigger delivered",
        || async {
            let ok = |path| rx.on(path).iter().filter(|r| r["status"] == 200).count();
            (ok("/binary") == 3 && ok("/structured") == 3 && ok("/plain") == 3).then_some(())
        },
    )
    .await;
    assert_eq!(
        proc.terminate(Duration::from_secs(20)).expect("stop"),
        Some(0)
    );
    let by_id: HashMap<String, &Trigger> = triggers
        .iter()
        .map(|t| (t.trigger_id.to_string(), t))
        .collect();
    for (path, content_type) in [
        ("/binary", "application/json"),
        ("/structured", "application/cloudevents+json"),
    ] {
        for r in rx.on(path) {
            let h = &r["headers"];
            assert_eq!(h["content-type"], content_type, "{path}");
            let t = by_id[h["runwatch-trigger-id"].as_str().expect("id")];
            check_event(&r["cloudevent"], t, path);
            // The signature covers the bytes sent (the envelope, in structured mode).
            assert_eq!(r["verified"], serde_json::json!(["ok"]), "{path}: {r:#}");
            assert_eq!(
                h.get("ce-id").is_some(),
                path == "/binary",
                "{path}: ce-* headers in binary mode only: {h:#}"
            );
        }
    }
    for r in rx.on("/plain") {
        assert!(r.get("cloudevent").is_none(), "{r:#}");
        assert_eq!(r["headers"]["content-type"], "application/json");
        let body: Trigger =
            serde_json::from_str(r["body"].as_str().expect("body")).expect("trigger");
        assert!(by_id.contains_key(&body.trigger_id.to_string()));
    }
    app.cleanup().await;
}
