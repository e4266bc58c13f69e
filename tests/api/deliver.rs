//! `runwatch deliver` against a real HTTP receiver (a TCP server in this test that answers
//! per trigger and attempt: 500, 429 with Retry-After, a hang past the timeout, a reset
//! connection, 400, 200), with the real binary SIGKILLed and restarted mid-run; plus
//! hostile configuration against the binary and the shipped templates.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use hmac::{KeyInit, Mac};
use runwatch::event::{Conclusion, Provider, Status};
use runwatch::trigger::{Trigger, TriggerRepository, TriggerRun};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::app::eventually;
use crate::helpers::env::TestEnv;
use crate::helpers::procs::{self, WorkerProc};

const SECRET: &str = "deliver-s3cret-Q9";

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    TooMany(u64),
    /// Holds the request without answering, past the target's timeout.
    Hang,
    /// Reads the request, then resets the connection (SO_LINGER 0).
    Reset,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    at: Instant,
    answered: Act,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map_or("", String::as_str)
    }
    fn attempt(&self) -> u64 {
        self.header("runwatch-delivery-attempt")
            .parse()
            .expect("attempt header")
    }
}

type Script = Arc<dyn Fn(&str, &str, u64) -> Act + Send + Sync>;

/// The receiver: a TCP server speaking just enough HTTP/1.1 (one request per connection).
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Per path: (requests open now, the most ever open at once).
    open: Arc<Mutex<HashMap<String, (usize, usize)>>>,
}

impl Receiver {
    async fn start(script: Script) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(Mutex::new(HashMap::new()));
        let (log, gauge) = (seen.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (script, log, gauge) = (script.clone(), log.clone(), gauge.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, script, log, gauge).await;
                });
            }
        });
        Receiver { port, seen, open }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn most_open(&self, path: &str) -> usize {
        self.open
            .lock()
            .expect("lock")
            .get(path)
            .map_or(0, |(_, most)| *most)
    }
}

async fn serve(
    stream: TcpStream,
    script: Script,
    log: Arc<Mutex<Vec<Seen>>>,
    gauge: Arc<Mutex<HashMap<String, (usize, usize)>>>,
) -> std::io::Result<()> {
    let mut path = None;
    let served = answer(stream, script, log, &gauge, &mut path).await;
    if let Some(path) = path
        && let Some(entry) = gauge.lock().expect("lock").get_mut(&path)
    {
        entry.0 -= 1;
    }
    served
}

async fn answer(
    mut stream: TcpStream,
    script: Script,
    log: Arc<Mutex<Vec<Seen>>>,
    gauge: &Mutex<HashMap<String, (usize, usize)>>,
    open_path: &mut Option<String>,
) -> std::io::Result<()> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while raw.len() < head_end + length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = raw[head_end..].to_vec();
    {
        let mut g = gauge.lock().expect("lock");
        let entry = g.entry(path.clone()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = entry.1.max(entry.0);
        *open_path = Some(path.clone());
    }
    let trigger_id = headers
        .get("runwatch-trigger-id")
        .cloned()
        .unwrap_or_default();
    let attempt = headers
        .get("runwatch-delivery-attempt")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let act = script(&path, &trigger_id, attempt);
    log.lock().expect("lock").push(Seen {
        path,
        headers,
        body,
        at: Instant::now(),
        answered: act,
    });
    let reply = |status: u16, extra: &str, text: &str| {
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{text}",
            text.len()
        )
    };
    match act {
        Act::Status(code) => {
            let text = if code == 400 {
                "bad request body: field x is wrong"
            } else {
                "ok"
            };
            stream.write_all(reply(code, "", text).as_bytes()).await?;
        }
        Act::TooMany(secs) => {
            stream
                .write_all(reply(429, &format!("Retry-After: {secs}\r\n"), "slow down").as_bytes())
                .await?;
        }
        // Until the client gives up (its timeout) and closes the connection.
        Act::Hang => {
            let _ = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await;
            return Ok(());
        }
        Act::Reset => {
            stream.set_zero_linger()?;
            drop(stream);
            return Ok(());
        }
    }
    stream.shutdown().await
}

fn trigger(i: usize, owner: &str, name: &str) -> Trigger {
    let now = Utc::now();
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
            "deliver-test",
            &i.to_string(),
            &runwatch_unique(),
        ]),
        rule: "all_completed_with_failure".into(),
        rule_name: "all_completed_with_failure".into(),
        provider: Provider::Github,
        repository: TriggerRepository {
            owner: owner.into(),
            name: name.into(),
            id: Some(i.to_string()),
            internal_id: 1,
        },
        pr_number: Some(i as u64),
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

/// A per-process salt, so trigger ids differ between runs of the test.
fn runwatch_unique() -> String {
    static SALT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SALT.get_or_init(|| crate::helpers::services::unique("d"))
        .clone()
}

fn hmac_hex(body: &[u8]) -> String {
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The environment of `runwatch deliver` for `env`, listening on `port`, with `config`.
fn deliver_env(env: &TestEnv, port: u16, config: &Path) -> Vec<(String, String)> {
    let mut vars = env.env_vars();
    vars.retain(|(k, _)| k != "RUNWATCH_HTTP__LISTEN");
    vars.push(("RUNWATCH_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
    vars.push(("RUNWATCH_CONFIG".into(), config.display().to_string()));
    vars.push(("RUST_LOG".into(), "runwatch=debug,info".into()));
    vars
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

async fn wait_ready(port: u16) {
    eventually(
        Duration::from_secs(60),
        "runwatch deliver ready",
        || async move {
            get(port, "/readyz")
                .await
                .filter(|(s, _)| *s == 200)
                .map(|_| ())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trigger_reaches_every_matching_target_through_failures_and_a_kill() {
    let env = TestEnv::new().await;
    let bus = crate::helpers::app::bus(&env.config).await;
    let dir = tempfile::tempdir().expect("dir");

    // Trigger i of repository acme/app: i % 5 == 0 → 200; 1 → 500 once; 2 → 429 with
    // Retry-After: 2 once; 3 → a hang past the timeout once; 4 → a reset once. Trigger 7
    // is refused (400) while `refuse` is set.
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let index: Arc<Mutex<HashMap<String, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let (idx, refusing) = (index.clone(), refuse.clone());
    let script: Script = Arc::new(move |path: &str, id: &str, attempt: u64| {
        if path == "/slow" {
            return Act::Hang;
        }
        let Some(i) = idx.lock().expect("lock").get(id).copied() else {
            return Act::Status(500);
        };
        if i == 7 && refusing.load(std::sync::atomic::Ordering::SeqCst) {
            return Act::Status(400);
        }
        if attempt > 1 {
            return Act::Status(200);
        }
        match i % 5 {
            1 => Act::Status(500),
            2 => Act::TooMany(2),
            3 => Act::Hang,
            4 => Act::Reset,
            _ => Act::Status(200),
        }
    });
    let rx = Receiver::start(script).await;
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("secret");
    let config = dir.path().join("deliver.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[deliver]
min_delay = "100ms"
max_delay = "500ms"
retry_after_max = "10s"

[[deliver.targets]]
name = "main"
url = "{main}"
secret_file = "{secret}"
timeout = "1s"
max_attempts = 6
concurrency = 4

[[deliver.targets]]
name = "filtered"
url = "{filtered}"
repositories = ["nobody/*"]

[[deliver.targets]]
name = "slow"
url = "{slow}"
timeout = "1s"
max_attempts = 1000
concurrency = 1

[[deliver.targets]]
name = "badtpl"
url = "{badtpl}"
repositories = ["acme/tpl"]
template = "not json {{{{ trigger.trigger_id }}}}"
"#,
            main = rx.url("/main"),
            filtered = rx.url("/filtered"),
            slow = rx.url("/slow"),
            badtpl = rx.url("/badtpl"),
            secret = secret_file.display(),
        ),
    )
    .expect("config");
    let port = procs::free_port().expect("port");
    let log = dir.path().join("deliver.log");
    let bin = Path::new(env!("CARGO_BIN_EXE_runwatch"));
    let mut proc =
        WorkerProc::start_command(bin, &["deliver"], deliver_env(&env, port, &config), &log)
            .expect("start");
    wait_ready(port).await;

    let mut triggers: Vec<Trigger> = (0..20).map(|i| trigger(i, "acme", "app")).collect();
    triggers.push(trigger(100, "acme", "tpl"));
    triggers.push(trigger(101, "acme", "tpl"));
    for (i, t) in triggers.iter().enumerate() {
        let i = if i >= 20 { 100 + i - 20 } else { i };
        index
            .lock()
            .expect("lock")
            .insert(t.trigger_id.to_string(), i);
    }
    let (first, second) = triggers.split_at(10);
    for r in bus.publish_triggers(first).await {
        r.expect("publish");
    }
    // Something on the triggers stream that is not a trigger: a dead letter per target.
    let junk_subject = format!("{}.github", env.config.streams.triggers_subject_prefix);
    bus.jetstream()
        .publish(junk_subject, "{\"not\": \"a trigger\"}".into())
        .await
        .expect("publish junk")
        .await
        .expect("junk stored");
    // Kill mid-run, with requests in flight (hangs, retries pending), then publish the rest.
    let main_count = || rx.seen().iter().filter(|s| s.path == "/main").count();
    eventually(Duration::from_secs(30), "first deliveries", || async {
        (main_count() >= 5).then_some(())
    })
    .await;
    proc.kill();
    for r in bus.publish_triggers(second).await {
        r.expect("publish");
    }
    proc.start_again().expect("restart");
    wait_ready(port).await;

    // Every acme/app trigger but the refused one is answered 200 on /main.
    let app: Vec<&Trigger> = triggers
        .iter()
        .filter(|t| t.repository.name == "app")
        .collect();
    eventually(
        Duration::from_secs(90),
        "every trigger delivered to main",
        || async {
            let seen = rx.seen();
            let done = app.iter().all(|t| {
                let id = t.trigger_id.to_string();
                index.lock().expect("lock")[&id] == 7
                    || seen.iter().any(|s| {
                        s.path == "/main"
                            && s.header("runwatch-trigger-id") == id
                            && s.answered == Act::Status(200)
                    })
            });
            done.then_some(())
        },
    )
    .await;
    // The refused trigger and the two bad-template ones land in the dead-letter stream.
    let dead = eventually(Duration::from_secs(30), "dead letters", || async {
        let dead = bus.read_all_dead().await.ok()?;
        // The hanging target (concurrency 1) may not have reached it yet.
        let invalid: Vec<&str> = dead
            .iter()
            .filter(|d| d.reason == "deliver_invalid")
            .filter_map(|d| d.target.as_deref())
            .collect();
        let all = ["badtpl", "filtered", "main"]
            .iter()
            .all(|t| invalid.contains(t));
        (dead.len() >= 6 && all).then_some(dead)
    })
    .await;
    let seen = rx.seen();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();

    // The tpl triggers also reach main (its filter takes every repository).
    for t in &triggers {
        let id = t.trigger_id.to_string();
        let mine: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.path == "/main" && s.header("runwatch-trigger-id") == id)
            .collect();
        assert!(!mine.is_empty(), "trigger {id} never reached main");
        // Attempts grow from one request to the next.
        for pair in mine.windows(2) {
            assert!(
                pair[1].attempt() > pair[0].attempt(),
                "{id}: attempts {} then {}",
                pair[0].attempt(),
                pair[1].attempt()
            );
        }
    }
    for s in seen.iter().filter(|s| s.path == "/main") {
        // Every signature verifies over the raw body, and the body is the trigger.
        assert_eq!(
            s.header("runwatch-signature-256"),
            hmac_hex(&s.body),
            "signature"
        );
        assert_eq!(s.header("content-type"), "application/json");
        assert!(
            s.header("user-agent").starts_with("runwatch/"),
            "{:?}",
            s.header("user-agent")
        );
        let body: Trigger = serde_json::from_slice(&s.body).expect("the body is the trigger");
        assert_eq!(body.trigger_id.to_string(), s.header("runwatch-trigger-id"));
    }
    // Each kind of failure was met and retried.
    for act in [Act::Status(500), Act::TooMany(2), Act::Hang, Act::Reset] {
        assert!(
            seen.iter().any(|s| s.path == "/main" && s.answered == act),
            "{act:?} never answered"
        );
    }
    // Retry-After: 2 is honoured (loosely: the next attempt no sooner than ~2 s later).
    for t in app.iter().filter(|t| {
        let i = index.lock().expect("lock")[&t.trigger_id.to_string()];
        i % 5 == 2 && i != 7
    }) {
        let id = t.trigger_id.to_string();
        let mine: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.path == "/main" && s.header("runwatch-trigger-id") == id)
            .collect();
        if let [first, second, ..] = mine.as_slice() {
            let gap = second.at.duration_since(first.at);
            assert!(
                gap >= Duration::from_millis(1800),
                "{id}: retried after {gap:?} despite Retry-After: 2"
            );
        }
    }
    // Nothing reaches the target whose filter excludes every trigger, nor the bad template's.
    assert!(
        !seen.iter().any(|s| s.path == "/filtered"),
        "the filtered target got a request"
    );
    assert!(
        !seen.iter().any(|s| s.path == "/badtpl"),
        "a body that is not JSON was sent"
    );
    // Requests to main overlapped (concurrency 4): the hangs did not serialize it.
    assert!(
        rx.most_open("/main") >= 2,
        "main never had two requests in flight"
    );
    // The hanging target held nothing back: main finished while slow delivered nothing.
    assert!(
        !seen
            .iter()
            .any(|s| s.path == "/slow" && s.answered != Act::Hang)
    );

    let refused_id = app
        .iter()
        .find(|t| index.lock().expect("lock")[&t.trigger_id.to_string()] == 7)
        .expect("7")
        .trigger_id
        .to_string();
    let letter = dead
        .iter()
        .find(|d| d.reason == "deliver_refused")
        .unwrap_or_else(|| panic!("no refused letter: {dead:?}"));
    assert_eq!(letter.target.as_deref(), Some("main"));
    assert_eq!(letter.http_status, Some(400));
    assert_eq!(
        letter
            .headers
            .get("Runwatch-Trigger-Id")
            .map(|v| v.as_str().to_string()),
        Some(refused_id.clone())
    );
    assert!(
        letter
            .response
            .as_deref()
            .unwrap_or("")
            .contains("field x is wrong"),
        "{:?}",
        letter.response
    );
    let tpl: Vec<_> = dead
        .iter()
        .filter(|d| d.reason == "deliver_template")
        .collect();
    assert_eq!(tpl.len(), 2, "{dead:?}");
    assert!(
        tpl.iter()
            .all(|d| d.target.as_deref() == Some("badtpl") && d.detail.contains("not JSON"))
    );
    assert!(!log_text.contains(SECRET), "the secret is in the log");
    let invalid = dead.iter().filter(|d| d.reason == "deliver_invalid");
    assert!(
        invalid
            .clone()
            .all(|d| d.http_status.is_none() && d.detail.contains("not a trigger")),
        "{dead:?}"
    );

    // Metrics of the second process: the filter counted, deliveries counted.
    let (_, metrics) = get(port, "/metrics").await.expect("metrics");
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    for (name, kind, _, help) in runwatch::telemetry::METRICS {
        if name.starts_with("runwatch_deliver_") {
            let ty = match kind {
                runwatch::telemetry::MetricKind::Histogram => "histogram",
                _ => "counter",
            };
            assert!(
                metrics.contains(&format!("# TYPE {name} {ty}\n")),
                "{name}: {metrics}"
            );
            assert!(
                metrics.contains(&format!("# HELP {name} {help}\n")),
                "{name}"
            );
        }
    }
    // The restarted process filtered and delivered the second half itself.
    assert!(value("runwatch_deliver_filtered_total{target=\"filtered\"}") >= 10.0);
    assert!(value("runwatch_deliver_delivered_total{target=\"main\"}") >= 10.0);
    assert!(value("runwatch_deliver_attempts_total{target=\"main\"}") >= 10.0);
    assert!(
        metrics.contains("runwatch_deliver_seconds_bucket{target=\"main\""),
        "{metrics}"
    );

    // Redrive of the refused letter: the receiver now accepts it; it goes to main only.
    refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = std::process::Command::new(bin)
        .args(["dead", "redrive", "--seq", &letter.sequence.to_string()])
        .envs(deliver_env(&env, 0, &config))
        .output()
        .expect("redrive");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        Duration::from_secs(30),
        "the redriven trigger delivered",
        || async {
            rx.seen()
                .iter()
                .any(|s| {
                    s.path == "/main"
                        && s.header("runwatch-trigger-id") == refused_id
                        && s.answered == Act::Status(200)
                })
                .then_some(())
        },
    )
    .await;
    assert!(
        bus.read_all_dead()
            .await
            .expect("dead")
            .iter()
            .all(|d| d.sequence != letter.sequence),
        "the redriven letter is still there"
    );
    // The redriven trigger message carries the CloudEvents headers the relay writes.
    let client = async_nats::connect(&env.config.nats.url)
        .await
        .expect("connect");
    let redriven = async_nats::jetstream::new(client)
        .get_stream(&env.config.streams.triggers)
        .await
        .expect("triggers stream")
        .get_last_raw_message_by_subject(&format!(
            "{}.redrive.main",
            env.config.streams.triggers_subject_prefix
        ))
        .await
        .expect("the redriven message");
    let ce_id = redriven
        .headers
        .get("ce-id")
        .map(|v| v.as_str().to_string());
    assert_eq!(
        ce_id.as_deref(),
        Some(refused_id.as_str()),
        "{:?}",
        redriven.headers
    );
    assert_eq!(
        redriven.headers.get("ce-specversion").map(|v| v.as_str()),
        Some("1.0")
    );

    // SIGTERM: a clean exit.
    let code = proc.terminate(Duration::from_secs(20)).expect("terminate");
    assert_eq!(
        code,
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_timeout_updates_the_consumer_and_keeps_its_position() {
    let env = TestEnv::new().await;
    let bus = crate::helpers::app::bus(&env.config).await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("deliver.toml");
    let bin = Path::new(env!("CARGO_BIN_EXE_runwatch"));
    let log = dir.path().join("deliver.log");
    let consumer_info = || async {
        let stream = bus
            .jetstream()
            .get_stream(&env.config.streams.triggers)
            .await
            .expect("stream");
        let mut c = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("runwatch-deliver-one")
            .await
            .expect("consumer");
        c.info().await.expect("info").clone()
    };
    for (timeout, ack_wait) in [("1s", 6), ("3s", 8)] {
        std::fs::write(
            &config,
            format!("[[deliver.targets]]\nname = \"one\"\nurl = \"http://127.0.0.1:9/\"\ntimeout = \"{timeout}\"\n"),
        )
        .expect("config");
        let port = procs::free_port().expect("port");
        let mut proc =
            WorkerProc::start_command(bin, &["deliver"], deliver_env(&env, port, &config), &log)
                .expect("start");
        wait_ready(port).await;
        let info = consumer_info().await;
        assert_eq!(
            info.config.ack_wait,
            Duration::from_secs(ack_wait),
            "timeout {timeout}"
        );
        assert_eq!(
            info.config.deliver_policy,
            async_nats::jetstream::consumer::DeliverPolicy::New
        );
        assert_eq!(
            proc.terminate(Duration::from_secs(20)).expect("stop"),
            Some(0)
        );
    }
    env.cleanup().await;
}
