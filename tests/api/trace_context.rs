//! One trace from the GitHub webhook to the endpoint (issue 21), through the real binaries:
//! `runwatch ingest`, `runwatch run` and `runwatch deliver` against NATS, Postgres and a
//! Python process (`tests/protocols/otlp_receiver.py`) that is both the delivery endpoint
//! and an OTLP/HTTP trace receiver decoding the protobuf with the official
//! `opentelemetry-proto` package (installed by `scripts/python-protocol-deps.sh`).
//!
//! - with an OTLP endpoint configured (the worker and ingest by `telemetry.otlp_endpoint`,
//!   deliver by `OTEL_EXPORTER_OTLP_ENDPOINT`, its collector headers by
//!   `OTEL_EXPORTER_OTLP_HEADERS`), a webhook sent with a `traceparent` is one
//!   trace: the ingest span is the caller's child, the decision span the ingest span's, the
//!   deliver span the decision's, and the endpoint receives a `traceparent` naming the
//!   deliver span, with the caller's `tracestate`; the spans carry the stream sequence, the
//!   group and the trigger id, and the log lines the trace id;
//! - a malformed `traceparent` is ignored: a new trace, exported and propagated all the same;
//! - a trigger fired by a settle timer starts a trace of its own, rooted at its
//!   `runwatch.timer` span, not the input's;
//! - with no endpoint (or `otlp_endpoint = ""` over `OTEL_EXPORTER_OTLP_ENDPOINT`) nothing
//!   is exported and the headers still propagate;
//! - a collector that answers 503 before it answers 200 gets every span once (the batch is
//!   retried, not duplicated), and a worker whose collector is down decides and delivers
//!   as ever, its lost spans counted on `/metrics` and logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use runwatch::ingest::github;
use serde_json::Value;

use crate::helpers::app::{App, TestApp, eventually};
use crate::helpers::procs::WorkerProc;
use crate::helpers::receiver::{Receiver, SECRET};
use crate::helpers::services::protocol_pythonpath;

const RULES: &str = "[[rules]]\nkind = \"all_completed_with_failure\"\n";
/// The caller's trace (a W3C example id).
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The OTLP receiver and webhook endpoint, killed when dropped.
struct Otlp {
    child: Child,
    port: u16,
    spans: PathBuf,
    requests: PathBuf,
}

impl Otlp {
    fn start(dir: &Path) -> Otlp {
        Otlp::start_failing(dir, 0)
    }

    /// A receiver that answers its first `fail_first` trace requests 503.
    fn start_failing(dir: &Path, fail_first: u32) -> Otlp {
        let spans = dir.join("spans.jsonl");
        let requests = dir.join("requests.jsonl");
        let port_file = dir.join("otlp.port");
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/protocols/otlp_receiver.py"))
            .arg(&spans)
            .arg(&requests)
            .arg(&port_file)
            .env("PYTHONPATH", protocol_pythonpath())
            .env("OTLP_FAIL_FIRST", fail_first.to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("start otlp_receiver.py");
        let started = std::time::Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse().expect("port");
            }
            assert!(
                child.try_wait().expect("wait").is_none(),
                "otlp_receiver.py exited"
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "otlp_receiver.py did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Otlp {
            child,
            port,
            spans,
            requests,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    fn spans(&self) -> Vec<Value> {
        Self::lines(&self.spans)
    }

    fn requests(&self) -> Vec<Value> {
        Self::lines(&self.requests)
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A failing `workflow_run` of pull request 2 on commit `sha` (the octokit fixture).
fn failed_run(id: u64, sha: &str) -> Vec<u8> {
    let read = |p: &str| -> Value {
        serde_json::from_slice(
            &std::fs::read(repo_root().join("tests/fixtures/github").join(p)).expect(p),
        )
        .expect(p)
    };
    let mut v = read("workflow_run/completed.with-pull-requests.payload.json");
    v["repository"] = read("pull_request/opened.payload.json")["repository"].clone();
    v["action"] = "completed".into();
    let wr = &mut v["workflow_run"];
    wr["id"] = id.into();
    wr["name"] = "test".into();
    wr["head_sha"] = sha.into();
    wr["head_branch"] = "changes".into();
    wr["status"] = "completed".into();
    wr["conclusion"] = "failure".into();
    wr["updated_at"] = chrono::Utc::now()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        .into();
    let mut p = wr["pull_requests"][0].clone();
    p["number"] = 2.into();
    wr["pull_requests"] = Value::Array(vec![p]);
    wr["head_repository"]["id"] = 186853002.into();
    serde_json::to_vec(&v).expect("json")
}

/// Posts a signed `workflow_run` delivery with `extra` header lines; asserts 200.
async fn post(ingest: &Receiver, delivery: &str, body: &[u8], extra: &str) {
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-GitHub-Event: workflow_run\r\nX-GitHub-Delivery: {delivery}\r\nX-Hub-Signature-256: {}\r\n{extra}\r\n",
        body.len(),
        github::sign(SECRET.as_bytes(), body)
    );
    let (code, answer) = ingest.request(&head, body).await;
    assert_eq!(code, 200, "{answer}");
}

/// `runwatch deliver` to `url`, with `vars`, ready.
async fn start_deliver(app: &TestApp, url: &str, vars: &[(&str, &str)]) -> WorkerProc {
    let config =
        format!("[[deliver.targets]]\nname = \"hook\"\nurl = \"{url}\"\nsecret = \"s3cret\"\n");
    app.spawn_deliver(&config, vars).await
}

/// The three processes, with `vars` for ingest and the worker and `deliver_vars` for
/// deliver.
struct Pipeline {
    ingest: Receiver,
    app: App,
    deliver: WorkerProc,
    deliver_log: std::path::PathBuf,
}

impl Pipeline {
    async fn start(
        test: &TestApp,
        rx: &Otlp,
        rules: &str,
        vars: &[(&str, &str)],
        deliver_vars: &[(&str, &str)],
    ) -> Pipeline {
        let mut ingest_vars = vec![("RUST_LOG", "info")];
        ingest_vars.extend_from_slice(vars);
        let ingest = test.spawn_ingest(&ingest_vars);
        let app = test.spawn_worker(rules, vars);
        let deliver = start_deliver(test, &format!("{}/hook", rx.base()), deliver_vars).await;
        Pipeline {
            ingest,
            app,
            deliver,
            deliver_log: test.dir.path().join("deliver.log"),
        }
    }

    /// Stops every process cleanly (spans still queued are exported on the way out);
    /// returns the worker's and deliver's logs.
    fn stop(mut self) -> (String, String) {
        self.app.stop();
        let worker_log = self.app.log_text();
        assert_eq!(
            self.deliver
                .terminate(Duration::from_secs(20))
                .expect("stop"),
            Some(0)
        );
        let deliver_log = std::fs::read_to_string(&self.deliver_log).unwrap_or_default();
        self.ingest.stop();
        (worker_log, deliver_log)
    }
}

/// The endpoint's request for the trigger of commit `sha`.
fn request_for<'a>(requests: &'a [Value], sha: &str) -> Option<&'a Value> {
    requests.iter().find(|r| r["body"]["commit_sha"] == sha)
}

fn span<'a>(spans: &'a [Value], trace: &str, name: &str) -> Option<&'a Value> {
    spans
        .iter()
        .find(|s| s["trace_id"] == trace && s["name"] == name)
}

/// The endpoint's requests by trigger id.
fn by_trigger(requests: &[Value]) -> HashMap<String, Value> {
    requests
        .iter()
        .filter_map(|r| {
            let id = r["headers"]["runwatch-trigger-id"].as_str()?.to_string();
            Some((id, r.clone()))
        })
        .collect()
}

fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_webhook_is_one_trace_from_ingest_to_the_endpoint() {
    let test = TestApp::new().await;
    let _env = &test.env;
    let tmp = tempfile::tempdir().expect("dir");
    let rx = Otlp::start(tmp.path());
    let endpoint = rx.base();
    let on = [
        ("RUNWATCH_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let deliver_on = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-otlp-key=k1"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let p = Pipeline::start(&test, &rx, RULES, &on, &deliver_on).await;

    // A caller's trace, and a malformed one (uppercase hex; a tracestate over 512 bytes).
    let traced_sha = sha('a');
    post(
        &p.ingest,
        "d-traced",
        &failed_run(9001, &traced_sha),
        &format!("traceparent: 00-{TRACE}-{CALLER_SPAN}-01\r\ntracestate: vendor=abc,other=x\r\n"),
    )
    .await;
    let hostile_sha = sha('b');
    post(
        &p.ingest,
        "d-hostile",
        &failed_run(9002, &hostile_sha),
        &format!(
            "traceparent: 00-{}-{CALLER_SPAN}-01\r\ntracestate: a={}\r\n",
            TRACE.to_uppercase(),
            "x".repeat(600)
        ),
    )
    .await;

    // Both delivered, and every span of both traces exported.
    let (traced, hostile) = eventually(
        Duration::from_secs(90),
        "both triggers delivered",
        || async {
            let requests = rx.requests();
            let t = request_for(&requests, &traced_sha)?.clone();
            let h = request_for(&requests, &hostile_sha)?.clone();
            Some((t, h))
        },
    )
    .await;
    let traceparent = |r: &Value| -> Vec<String> {
        let v = r["headers"]["traceparent"]
            .as_str()
            .unwrap_or_else(|| panic!("no traceparent: {r:#}"));
        v.split('-').map(str::to_string).collect()
    };
    let tp = traceparent(&traced);
    assert_eq!(tp.len(), 4, "{tp:?}");
    assert_eq!(
        (tp[0].as_str(), tp[1].as_str(), tp[3].as_str()),
        ("00", TRACE, "01"),
        "the endpoint is in the caller's trace"
    );
    assert_eq!(
        traced["headers"]["tracestate"], "vendor=abc,other=x",
        "tracestate carried as it came"
    );
    let hp = traceparent(&hostile);
    assert_ne!(hp[1], TRACE, "a malformed traceparent is not continued");
    assert_ne!(hp[1].to_uppercase(), TRACE.to_uppercase());
    assert_eq!(hp[1].len(), 32);
    assert!(
        hostile["headers"].get("tracestate").is_none(),
        "{hostile:#}"
    );

    let names = ["runwatch.ingest", "runwatch.decide", "runwatch.deliver"];
    let spans = eventually(
        Duration::from_secs(60),
        "the spans of both traces exported",
        || async {
            let spans = rx.spans();
            names
                .iter()
                .all(|n| span(&spans, TRACE, n).is_some() && span(&spans, &hp[1], n).is_some())
                .then_some(spans)
        },
    )
    .await;
    let (ingest, decide, deliver) = (
        span(&spans, TRACE, names[0]).expect("ingest"),
        span(&spans, TRACE, names[1]).expect("decide"),
        span(&spans, TRACE, names[2]).expect("deliver"),
    );
    // The chain of parents: caller → ingest → decide → deliver → the endpoint.
    assert_eq!(ingest["parent_span_id"], CALLER_SPAN, "{ingest:#}");
    assert_eq!(decide["parent_span_id"], ingest["span_id"], "{decide:#}");
    assert_eq!(deliver["parent_span_id"], decide["span_id"], "{deliver:#}");
    assert_eq!(
        tp[2],
        deliver["span_id"].as_str().expect("span id"),
        "the endpoint's parent is the deliver span"
    );
    for s in [ingest, decide, deliver] {
        assert_eq!(s["service"], "runwatch", "{s:#}");
        assert!(s["end"].as_u64() >= s["start"].as_u64(), "{s:#}");
    }
    // Kinds (OTLP enum): server 2, client 3, consumer 5.
    assert_eq!(
        (
            ingest["kind"].as_u64(),
            decide["kind"].as_u64(),
            deliver["kind"].as_u64()
        ),
        (Some(2), Some(5), Some(3))
    );
    // Attributes: the events message's stream sequence, the group, the trigger id.
    let trigger_id = traced["headers"]["runwatch-trigger-id"]
        .as_str()
        .expect("trigger id")
        .to_string();
    let a = |s: &Value, k: &str| s["attributes"][k].clone();
    assert_eq!(a(ingest, "runwatch.provider"), "github");
    assert_eq!(a(ingest, "http.response.status_code"), 200);
    let seqs = a(ingest, "runwatch.stream_sequences");
    assert_eq!(seqs.as_array().map(Vec::len), Some(1), "{ingest:#}");
    assert_eq!(a(decide, "runwatch.stream_sequence"), seqs[0], "{decide:#}");
    assert_eq!(a(decide, "runwatch.outcome"), "applied");
    assert!(
        a(decide, "runwatch.group")
            .as_str()
            .unwrap_or_default()
            .ends_with(&format!("#2@{traced_sha}")),
        "{decide:#}"
    );
    assert_eq!(
        a(decide, "runwatch.trigger_ids"),
        serde_json::json!([trigger_id]),
        "{decide:#}"
    );
    assert_eq!(a(deliver, "runwatch.trigger_id"), trigger_id.as_str());
    assert_eq!(a(deliver, "runwatch.target"), "hook");
    assert_eq!(a(deliver, "runwatch.outcome"), "delivered");
    assert_eq!(a(deliver, "http.response.status_code"), 200);
    // OTEL_EXPORTER_OTLP_HEADERS reaches the collector (deliver only has it).
    assert_eq!(deliver["x_otlp_key"], "k1", "{deliver:#}");
    assert_eq!(decide["x_otlp_key"], Value::Null, "{decide:#}");
    // The hostile request's trace starts at ingest.
    let h_ingest = span(&spans, &hp[1], names[0]).expect("hostile ingest");
    assert_eq!(h_ingest["parent_span_id"], "", "{h_ingest:#}");
    assert_eq!(by_trigger(&rx.requests()).len(), 2);

    // Log lines carry the trace id.
    let (worker_log, deliver_log) = p.stop();
    assert!(
        worker_log.contains(TRACE),
        "the worker's log names the trace:\n{worker_log}"
    );
    assert!(
        deliver_log.contains(TRACE),
        "deliver's log names the trace:\n{deliver_log}"
    );
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_headers_still_propagate() {
    let test = TestApp::new().await;
    let _env = &test.env;
    let tmp = tempfile::tempdir().expect("dir");
    let rx = Otlp::start(tmp.path());
    let endpoint = rx.base();
    // Ingest and the worker: the standard variable is set, `otlp_endpoint = ""` wins (off).
    // Deliver: nothing configured at all.
    let off = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("RUNWATCH_TELEMETRY__OTLP_ENDPOINT", ""),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let p = Pipeline::start(&test, &rx, RULES, &off, &[]).await;
    let s = sha('c');
    post(
        &p.ingest,
        "d-untraced",
        &failed_run(9003, &s),
        &format!("traceparent: 00-{TRACE}-{CALLER_SPAN}-01\r\n"),
    )
    .await;
    let delivered = eventually(Duration::from_secs(90), "the trigger delivered", || async {
        request_for(&rx.requests(), &s).cloned()
    })
    .await;
    let tp = delivered["headers"]["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_string();
    assert!(tp.starts_with(&format!("00-{TRACE}-")), "{tp}");
    assert!(
        !tp.contains(CALLER_SPAN),
        "a child span, not the caller's: {tp}"
    );
    // Stopping flushes whatever an exporter would have queued: nothing was.
    let (worker_log, deliver_log) = p.stop();
    assert_eq!(rx.spans(), Vec::<Value>::new(), "nothing exported");
    for log in [&worker_log, &deliver_log] {
        assert!(!log.contains("exporting traces"), "{log}");
    }
    test.cleanup().await;
}

/// `telemetry.trace_sample_ratio = 0`: a webhook that comes without a trace starts an
/// unsampled one (flags `00` on every hop, no span exported anywhere), while one that comes
/// with a sampled `traceparent` keeps it (parent-based): its spans are all exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_ratio_decides_new_traces_and_a_callers_flag_is_kept() {
    let test = TestApp::new().await;
    let _env = &test.env;
    let tmp = tempfile::tempdir().expect("dir");
    let rx = Otlp::start(tmp.path());
    let endpoint = rx.base();
    let on = [
        ("RUNWATCH_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("RUNWATCH_TELEMETRY__TRACE_SAMPLE_RATIO", "0"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let p = Pipeline::start(&test, &rx, RULES, &on, &on).await;
    let (unsampled, sampled) = (sha('d'), sha('e'));
    post(&p.ingest, "d-new-trace", &failed_run(9004, &unsampled), "").await;
    post(
        &p.ingest,
        "d-callers-trace",
        &failed_run(9005, &sampled),
        &format!("traceparent: 00-{TRACE}-{CALLER_SPAN}-01\r\n"),
    )
    .await;
    let (new_tp, callers_tp) = eventually(
        Duration::from_secs(90),
        "both triggers delivered",
        || async {
            let requests = rx.requests();
            let tp = |sha: &str| {
                request_for(&requests, sha)
                    .and_then(|r| r["headers"]["traceparent"].as_str())
                    .map(str::to_string)
            };
            Some((tp(&unsampled)?, tp(&sampled)?))
        },
    )
    .await;
    assert!(
        new_tp.ends_with("-00"),
        "a new trace, not sampled: {new_tp}"
    );
    assert!(
        callers_tp.starts_with(&format!("00-{TRACE}-")) && callers_tp.ends_with("-01"),
        "the caller's sampled trace: {callers_tp}"
    );
    let new_trace = new_tp.split('-').nth(1).expect("trace id").to_string();
    // Stopping flushes what the exporters queued.
    p.stop();
    let spans = rx.spans();
    for name in ["runwatch.ingest", "runwatch.decide", "runwatch.deliver"] {
        assert!(
            span(&spans, TRACE, name).is_some(),
            "{name} of the caller's trace exported: {spans:#?}"
        );
    }
    assert!(
        spans.iter().all(|s| s["trace_id"] != new_trace.as_str()),
        "nothing of the unsampled trace {new_trace}: {spans:#?}"
    );
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_fired_by_a_timer_starts_a_trace_of_its_own() {
    let test = TestApp::new().await;
    let _env = &test.env;
    let tmp = tempfile::tempdir().expect("dir");
    let rx = Otlp::start(tmp.path());
    let endpoint = rx.base();
    let on = [
        ("RUNWATCH_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let settle = "[[rules]]\nkind = \"all_completed_with_failure\"\nsettle = \"1s\"\n";
    let p = Pipeline::start(&test, &rx, settle, &on, &on).await;
    let s = sha('d');
    post(
        &p.ingest,
        "d-settled",
        &failed_run(9004, &s),
        &format!("traceparent: 00-{TRACE}-{CALLER_SPAN}-01\r\n"),
    )
    .await;
    let delivered = eventually(
        Duration::from_secs(90),
        "the settled trigger delivered",
        || async { request_for(&rx.requests(), &s).cloned() },
    )
    .await;
    let tp: Vec<String> = delivered["headers"]["traceparent"]
        .as_str()
        .expect("traceparent")
        .split('-')
        .map(str::to_string)
        .collect();
    let timer_trace = tp[1].clone();
    assert_ne!(timer_trace, TRACE, "not the input's trace");
    let trigger_id = delivered["headers"]["runwatch-trigger-id"]
        .as_str()
        .expect("id")
        .to_string();
    let spans = eventually(
        Duration::from_secs(60),
        "the timer's trace and the input's decision exported",
        || async {
            let spans = rx.spans();
            (span(&spans, &timer_trace, "runwatch.timer").is_some()
                && span(&spans, &timer_trace, "runwatch.deliver").is_some()
                && span(&spans, TRACE, "runwatch.decide").is_some())
            .then_some(spans)
        },
    )
    .await;
    let timer = span(&spans, &timer_trace, "runwatch.timer").expect("timer");
    let deliver = span(&spans, &timer_trace, "runwatch.deliver").expect("deliver");
    assert_eq!(
        timer["parent_span_id"], "",
        "the root of its trace: {timer:#}"
    );
    assert_eq!(
        timer["attributes"]["runwatch.trigger_id"],
        trigger_id.as_str()
    );
    assert_eq!(deliver["parent_span_id"], timer["span_id"], "{deliver:#}");
    assert_eq!(tp[2], deliver["span_id"].as_str().expect("span id"));
    // The input's decision armed the timer and decided no trigger itself.
    let decide = span(&spans, TRACE, "runwatch.decide").expect("decide");
    assert_eq!(
        decide["attributes"]["runwatch.trigger_ids"],
        serde_json::json!([]),
        "{decide:#}"
    );
    p.stop();
    test.cleanup().await;
}

/// A collector that answers 503 (with `Retry-After: 1`) twice, then 200: ingest's and
/// deliver's spans arrive, each once. The worker's collector is down (nothing listens on
/// its port): the trigger is decided and delivered all the same, and the worker counts the
/// spans it could not send (`runwatch_trace_spans_dropped_total{reason="export_failed"}`)
/// and warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_collector_gets_each_span_once_and_a_down_one_costs_only_spans() {
    let test = TestApp::new().await;
    let _env = &test.env;
    let tmp = tempfile::tempdir().expect("dir");
    let rx = Otlp::start_failing(tmp.path(), 2);
    let endpoint = rx.base();
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let up = [
        ("RUNWATCH_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut ingest_vars = vec![("RUST_LOG", "info")];
    ingest_vars.extend_from_slice(&up);
    let ingest = test.spawn_ingest(&ingest_vars);
    let mut app = test.spawn_worker(
        RULES,
        &[
            ("RUNWATCH_TELEMETRY__OTLP_ENDPOINT", down.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let deliver = start_deliver(&test, &format!("{}/hook", rx.base()), &up).await;
    let s = sha('f');
    post(
        &ingest,
        "f-busy-collector",
        &failed_run(9006, &s),
        &format!("traceparent: 00-{TRACE}-{CALLER_SPAN}-01\r\n"),
    )
    .await;
    eventually(
        Duration::from_secs(90),
        "the trigger delivered with the worker's collector down",
        || async { request_for(&rx.requests(), &s).cloned() },
    )
    .await;
    let dropped = eventually(
        Duration::from_secs(60),
        "the worker's lost decision span counted",
        || async {
            let n = crate::helpers::receiver::value(
                &app.metrics().await,
                "runwatch_trace_spans_dropped_total{reason=\"export_failed\"}",
            );
            (n >= 1.0).then_some(n)
        },
    )
    .await;
    assert!(dropped >= 1.0);
    let spans = eventually(
        Duration::from_secs(60),
        "ingest's and deliver's spans exported through the 503s",
        || async {
            let spans = rx.spans();
            (span(&spans, TRACE, "runwatch.ingest").is_some()
                && span(&spans, TRACE, "runwatch.deliver").is_some())
            .then_some(spans)
        },
    )
    .await;
    app.stop();
    let mut deliver = deliver;
    assert_eq!(
        deliver.terminate(Duration::from_secs(20)).expect("stop"),
        Some(0)
    );
    ingest.stop();
    let spans_after = rx.spans();
    assert!(spans_after.len() >= spans.len());
    let mut ids: Vec<&str> = spans_after
        .iter()
        .filter_map(|s| s["span_id"].as_str())
        .collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "every span once: {spans_after:#?}");
    assert!(
        span(&spans_after, TRACE, "runwatch.decide").is_none(),
        "the worker's collector was down: {spans_after:#?}"
    );
    let worker_log = app.log_text();
    assert!(
        worker_log.contains("trace export failed"),
        "the worker warns: {worker_log}"
    );
    test.cleanup().await;
}
