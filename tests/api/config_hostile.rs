//! Hostile configuration against the real binary: every secret key loads as a string from
//! the environment and from a file whatever it looks like (`123456`, `true`, `[1]`, `1e3`,
//! an unquoted TOML number or boolean), is used as such (a nats-server, the webhook server
//! and Postgres check it), and never appears on stdout or stderr, in an error or in a log
//! line; and out-of-range values are exit status 2 naming the key, before anything
//! connects.

use crate::helpers::nats as nats_common;

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nats_common::{free_port, nats_server_bin, unique_suffix};

const BIN: &str = env!("CARGO_BIN_EXE_runwatch");

/// Secrets that a TOML-ish parser would take for a number, a boolean, a list, a float.
const HOSTILE: [&str; 4] = ["918273645", "true", "[1]", "1e3"];

/// The log level to run with for `secret`: everything (debug) when the value is distinctive
/// enough that finding it in the output means it leaked; the default level otherwise
/// (debug logs say `true` for other reasons).
fn log_level(secret: &str) -> &'static str {
    if secret.len() >= 6 { "debug" } else { "info" }
}

/// A nats-server with JetStream and the given authorization block, killed on drop.
struct Server {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(authorization: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("server.conf");
        let store = dir.path().join("js");
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {store:?} }}\n{authorization}\n"
            ),
        )
        .expect("write conf");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        Server {
            port,
            child,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TOML basic string holding `s`.
fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// `runwatch ARGS` with unique stream names, empty stdin and `env`.
fn runwatch(args: &[&str], env: &[(&str, &str)]) -> Output {
    let suffix = unique_suffix();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .env(
            "RUNWATCH_STREAMS__EVENTS",
            format!("RWH_{}_EV", suffix.to_uppercase()),
        )
        .env(
            "RUNWATCH_STREAMS__TRIGGERS",
            format!("RWH_{}_TR", suffix.to_uppercase()),
        )
        .env(
            "RUNWATCH_STREAMS__DEAD",
            format!("RWH_{}_DL", suffix.to_uppercase()),
        )
        .env(
            "RUNWATCH_STREAMS__EVENTS_SUBJECT_PREFIX",
            format!("rwh.{suffix}.ev"),
        )
        .env(
            "RUNWATCH_STREAMS__TRIGGERS_SUBJECT_PREFIX",
            format!("rwh.{suffix}.tr"),
        )
        .env(
            "RUNWATCH_STREAMS__DEAD_SUBJECT_PREFIX",
            format!("rwh.{suffix}.dl"),
        )
        .env("RUNWATCH_NATS__CONNECT_TIMEOUT", "2s")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run runwatch")
}

/// Asserts `secret` is in neither stream of `out`, and returns both for messages.
fn never_shown(out: &Output, secret: &str) -> String {
    let all = format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = all.replace(&format!("status {:?}", out.status.code()), "");
    assert!(!shown.contains(secret), "secret {secret:?} shown:\n{all}");
    all
}

/// `nats.password`: from `RUNWATCH_NATS__PASSWORD` and unquoted in a `--config` file.
#[test]
fn nats_password_of_any_shape_authenticates_and_is_never_shown() {
    let users: Vec<String> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{{ user: \"u{i}\", password: {} }}", quoted(p)))
        .collect();
    let server = Server::start(&format!(
        "authorization {{ users: [ {} ] }}",
        users.join(", ")
    ));
    for (i, password) in HOSTILE.iter().enumerate() {
        let user = format!("u{i}");
        let out = runwatch(
            &["publish", "-"],
            &[
                ("NATS_URL", &server.url()),
                ("RUNWATCH_NATS__USER", &user),
                ("RUNWATCH_NATS__PASSWORD", password),
                ("RUST_LOG", log_level(password)),
            ],
        );
        let all = never_shown(&out, password);
        assert_eq!(
            out.status.code(),
            Some(0),
            "password {password:?} from the environment:\n{all}"
        );
    }
    // A TOML file with an unquoted number and boolean: their text is the password.
    let dir = tempfile::tempdir().unwrap();
    for (i, literal) in [(0, "918273645"), (1, "true")] {
        let file = dir.path().join(format!("c{i}.toml"));
        std::fs::write(
            &file,
            format!("[nats]\nuser = \"u{i}\"\npassword = {literal}\n"),
        )
        .unwrap();
        let out = runwatch(
            &["--config", file.to_str().unwrap(), "publish", "-"],
            &[
                ("NATS_URL", &server.url()),
                ("RUST_LOG", log_level(literal)),
            ],
        );
        let all = never_shown(&out, literal);
        assert_eq!(
            out.status.code(),
            Some(0),
            "password = {literal} in a file:\n{all}"
        );
    }
    // In the URL (percent-encoded where needed): handed to the client as options, so
    // its debug log of the server URL cannot show it.
    for (i, password) in HOSTILE.iter().enumerate() {
        let encoded = password.replace('[', "%5B").replace(']', "%5D");
        let url = format!("nats://u{i}:{encoded}@127.0.0.1:{}", server.port);
        let out = runwatch(
            &["publish", "-"],
            &[("NATS_URL", &url), ("RUST_LOG", log_level(password))],
        );
        let all = never_shown(&out, password);
        assert_eq!(
            out.status.code(),
            Some(0),
            "password {password:?} in NATS_URL:\n{all}"
        );
    }
    // A wrong one: refused, exit 2, still not shown.
    let out = runwatch(
        &["publish", "-"],
        &[
            ("NATS_URL", &server.url()),
            ("RUNWATCH_NATS__USER", "u0"),
            ("RUNWATCH_NATS__PASSWORD", "5550123"),
            ("RUST_LOG", "debug"),
        ],
    );
    let all = never_shown(&out, "5550123");
    assert_eq!(out.status.code(), Some(2), "{all}");
}

/// A syntax error in a `--config` file is reported by line and column, without the line
/// (which may hold a secret).
#[test]
fn a_broken_config_file_does_not_quote_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "[nats]\nuser = \"u\"\npassword = \"pw-Broken-77\n").unwrap();
    let out = runwatch(
        &["--config", file.to_str().unwrap(), "simulate", "/dev/null"],
        &[],
    );
    let all = never_shown(&out, "pw-Broken-77");
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("line 3"), "{all}");
}

/// `nats.token`: from `RUNWATCH_NATS__TOKEN`, one server per token.
#[test]
fn nats_token_of_any_shape_authenticates_and_is_never_shown() {
    for token in HOSTILE {
        let server = Server::start(&format!("authorization {{ token: {} }}", quoted(token)));
        let out = runwatch(
            &["publish", "-"],
            &[
                ("NATS_URL", &server.url()),
                ("RUNWATCH_NATS__TOKEN", token),
                ("RUST_LOG", log_level(token)),
            ],
        );
        let all = never_shown(&out, token);
        assert_eq!(out.status.code(), Some(0), "token {token:?}:\n{all}");
    }
}

/// `nats.nkey_seed`: a value of any shape loads as a string; one that is not a seed is
/// refused naming the key, before anything connects, without being shown.
#[test]
fn nats_nkey_seed_of_any_shape_is_checked_and_never_shown() {
    for seed in HOSTILE {
        let out = runwatch(
            &["publish", "-"],
            &[
                ("NATS_URL", "nats://127.0.0.1:1"),
                ("RUNWATCH_NATS__NKEY_SEED", seed),
                ("RUST_LOG", log_level(seed)),
            ],
        );
        let all = never_shown(&out, seed);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(
            all.contains("`nats.nkey_seed`: is not a user nkey seed"),
            "{all}"
        );
    }
}

/// `database.url`: a password in the user-info part or in `?password=` never appears, in
/// an error or in a log line (debug level), and is used (Postgres here trusts anyone, so
/// the command succeeds).
#[test]
fn database_url_passwords_are_never_shown() {
    let db = format!("rwh_{}", unique_suffix().replace('x', "_"));
    for (i, url) in [
        format!("postgres://postgres:918273645@127.0.0.1:5432/{db}?password=918273645"),
        format!("postgres://postgres@127.0.0.1:5432/{db}_q?sslmode=disable&password=918273645"),
    ]
    .iter()
    .enumerate()
    {
        // Migrate creates the database (logging its URL at info) and applies migrations.
        let out = runwatch(
            &["migrate"],
            &[("DATABASE_URL", url), ("RUST_LOG", "debug")],
        );
        let all = never_shown(&out, "918273645");
        assert_eq!(out.status.code(), Some(0), "{i}: {all}");
        assert!(
            all.contains("password=***"),
            "the redacted URL is logged: {all}"
        );
        // The same URL through RUNWATCH_DATABASE__URL, to a server that is not there.
        let down = url.replace("5432", "1");
        let out = runwatch(
            &["migrate"],
            &[("RUNWATCH_DATABASE__URL", &down), ("RUST_LOG", "debug")],
        );
        let all = never_shown(&out, "918273645");
        assert_eq!(out.status.code(), Some(2), "{i}: {all}");
    }
    // Drop the databases made above.
    for name in [db.clone(), format!("{db}_q")] {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .output();
    }
}

/// A running `runwatch ingest` on a free port, killed on drop.
struct Ingest {
    child: Child,
    addr: String,
    stderr: std::path::PathBuf,
    suffix: String,
    _dir: tempfile::TempDir,
}

impl Ingest {
    fn start(env: &[(&str, &str)]) -> Ingest {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let suffix = unique_suffix();
        let mut cmd = Command::new(BIN);
        cmd.arg("ingest")
            .env_remove("DATABASE_URL")
            .env("NATS_URL", nats_common::nats_url())
            .env("RUNWATCH_INGEST__LISTEN", &addr)
            .env("RUNWATCH_HTTP__LISTEN", "127.0.0.1:0")
            .env(
                "RUNWATCH_STREAMS__EVENTS",
                format!("RWH_{}_EV", suffix.to_uppercase()),
            )
            .env(
                "RUNWATCH_STREAMS__TRIGGERS",
                format!("RWH_{}_TR", suffix.to_uppercase()),
            )
            .env(
                "RUNWATCH_STREAMS__DEAD",
                format!("RWH_{}_DL", suffix.to_uppercase()),
            )
            .env(
                "RUNWATCH_STREAMS__EVENTS_SUBJECT_PREFIX",
                format!("rwh.{suffix}.ev"),
            )
            .env(
                "RUNWATCH_STREAMS__TRIGGERS_SUBJECT_PREFIX",
                format!("rwh.{suffix}.tr"),
            )
            .env(
                "RUNWATCH_STREAMS__DEAD_SUBJECT_PREFIX",
                format!("rwh.{suffix}.dl"),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start runwatch ingest");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                panic!("runwatch ingest exited with {status}:\n{log}");
            }
            assert!(Instant::now() < deadline, "runwatch ingest did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ingest {
            child,
            addr,
            stderr,
            suffix,
            _dir: dir,
        }
    }

    /// POSTs `body` to `path` and returns the status code.
    fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        raw.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// Stops the server and returns what it wrote on stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        delete_streams(&self.suffix);
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deletes the streams a test made on the shared NATS server.
fn delete_streams(suffix: &str) {
    let up = suffix.to_uppercase();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if let Ok(client) = async_nats::connect(nats_common::nats_url()).await {
            let js = async_nats::jetstream::new(client);
            for kind in ["EV", "TR", "DL"] {
                let _ = js.delete_stream(format!("RWH_{up}_{kind}")).await;
            }
        }
    });
}

/// `ingest.github_secrets`: a secret of any shape from `RUNWATCH_INGEST__GITHUB_SECRETS`
/// verifies a signed `ping` (200) and a wrong signature is 401; the log never shows it.
#[test]
fn ingest_github_secret_of_any_shape_verifies_and_is_never_shown() {
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    for secret in HOSTILE {
        let ingest = Ingest::start(&[
            ("RUNWATCH_INGEST__GITHUB_SECRETS", secret),
            ("RUST_LOG", log_level(secret)),
        ]);
        let sig = runwatch::ingest::github::sign(secret.as_bytes(), body);
        let ok = ingest.post(
            "/webhooks/github",
            &[
                ("X-GitHub-Event", "ping"),
                ("X-GitHub-Delivery", "d1"),
                ("X-Hub-Signature-256", &sig),
            ],
            body,
        );
        let bad_sig = runwatch::ingest::github::sign(b"someone else", body);
        let bad = ingest.post(
            "/webhooks/github",
            &[
                ("X-GitHub-Event", "ping"),
                ("X-GitHub-Delivery", "d2"),
                ("X-Hub-Signature-256", &bad_sig),
            ],
            body,
        );
        let log = ingest.stop();
        assert_eq!((ok, bad), (200, 401), "secret {secret:?}:\n{log}");
        assert!(
            !log.contains(secret),
            "secret {secret:?} in the log:\n{log}"
        );
    }
}

/// `ingest.gitlab_tokens`: the same for `RUNWATCH_INGEST__GITLAB_TOKENS` and
/// `X-Gitlab-Token` (an ignored event type answers 202 once the token is accepted).
#[test]
fn ingest_gitlab_token_of_any_shape_verifies_and_is_never_shown() {
    for token in HOSTILE {
        let ingest = Ingest::start(&[
            ("RUNWATCH_INGEST__GITLAB_TOKENS", token),
            ("RUST_LOG", log_level(token)),
        ]);
        let ok = ingest.post(
            "/webhooks/gitlab",
            &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", token)],
            b"{}",
        );
        let bad = ingest.post(
            "/webhooks/gitlab",
            &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "nope")],
            b"{}",
        );
        let log = ingest.stop();
        assert_eq!((ok, bad), (202, 401), "token {token:?}:\n{log}");
        assert!(!log.contains(token), "token {token:?} in the log:\n{log}");
    }
    // A list from the environment: both tokens verify.
    let ingest = Ingest::start(&[
        (
            "RUNWATCH_INGEST__GITLAB_TOKENS",
            r#"["tok-a-1", "tok-b-2"]"#,
        ),
        ("RUST_LOG", "debug"),
    ]);
    for t in ["tok-a-1", "tok-b-2"] {
        assert_eq!(
            ingest.post(
                "/webhooks/gitlab",
                &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", t)],
                b"{}"
            ),
            202
        );
    }
    let log = ingest.stop();
    assert!(
        !log.contains("tok-a-1") && !log.contains("tok-b-2"),
        "{log}"
    );
}

/// Out-of-range values: exit status 2 naming the key, before anything connects (the
/// services given are unreachable, and the command returns at once). These used to spin
/// (`batch = 0`) or panic on a chrono overflow (`settle = "500000y"`).
#[test]
fn out_of_range_values_exit_2_naming_the_key_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let down = [
        ("NATS_URL", "nats://127.0.0.1:1"),
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x"),
    ];
    let cases: &[(&str, &str, &str)] = &[
        ("RUNWATCH_PURGE__BATCH", "0", "purge.batch"),
        ("RUNWATCH_PURGE__PAUSE", "2m", "purge.pause"),
        ("RUNWATCH_TIMERS__BATCH", "0", "timers.batch"),
        ("RUNWATCH_OUTBOX__RELAY_BATCH", "0", "outbox.relay_batch"),
        ("RUNWATCH_CONSUMER__BATCH_SIZE", "0", "consumer.batch_size"),
        (
            "RUNWATCH_CONSUMER__BATCH_SIZE",
            "100000",
            "consumer.batch_size",
        ),
        (
            "RUNWATCH_LIMITS__MAX_CLOCK_SKEW",
            "500000y",
            "limits.max_clock_skew",
        ),
        ("RUNWATCH_PURGE__OLDER_THAN", "500000y", "purge.older_than"),
        (
            "RUNWATCH_STREAMS__EVENTS_MAX_AGE",
            "1s",
            "streams.events_max_age",
        ),
        ("RUNWATCH_RETRY__FACTOR", "1000", "retry.factor"),
    ];
    for (var, value, key) in cases {
        let mut env = down.to_vec();
        env.push((var, value));
        let started = Instant::now();
        let out = runwatch(&["run", "--no-migrate"], &env);
        let all = never_shown(&out, "no secret here");
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {all}");
        assert!(
            all.contains(&format!("`{key}`")) && all.contains("out of range"),
            "{var}={value}: {all}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{var}={value} took {:?}",
            started.elapsed()
        );
    }
    // Rules: a settle or cooldown that overflows chrono, in [[rules]] and in a rules file.
    for (body, key) in [
        ("settle = \"500000y\"", "rules[0].settle"),
        ("cooldown = \"100000000y\"", "rules[0].cooldown"),
    ] {
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            &rules,
            format!("[[rules]]\nkind = \"all_completed_with_failure\"\n{body}\n"),
        )
        .unwrap();
        let demo = format!("{}/examples/demo.jsonl", env!("CARGO_MANIFEST_DIR"));
        let out = runwatch(
            &["simulate", "--rules", rules.to_str().unwrap(), &demo],
            &[],
        );
        let all = never_shown(&out, "no secret here");
        assert_eq!(out.status.code(), Some(2), "{body}: {all}");
        assert!(all.contains(&format!("`{key}`")), "{body}: {all}");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!("[[rules]]\nkind = \"all_completed_with_failure\"\n{body}\n"),
        )
        .unwrap();
        let out = runwatch(
            &["--config", config.to_str().unwrap(), "simulate", &demo],
            &[],
        );
        let all = never_shown(&out, "no secret here");
        assert_eq!(out.status.code(), Some(2), "{body}: {all}");
        assert!(all.contains(&format!("`{key}`")), "{body}: {all}");
    }
    // The purge command's --older-than has the same range as purge.older_than.
    let mut env = down.to_vec();
    env.push(("RUNWATCH_LOG__LEVEL", "info"));
    let out = runwatch(&["purge", "--older-than", "500000y"], &env);
    let all = never_shown(&out, "no secret here");
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("--older-than"), "{all}");
}

/// `telemetry.otlp_endpoint` and `OTEL_EXPORTER_OTLP_ENDPOINT`: a value that is not an
/// http(s) URL with a host, or that carries credentials, a query or a fragment, or is over
/// 2048 bytes, is exit status 2 naming the key (or the variable) before anything connects,
/// and a password in it is never shown; an unknown key of `[telemetry]` is refused too.
#[test]
fn bad_otlp_endpoints_exit_2_naming_the_key_before_connecting() {
    let down = [
        ("NATS_URL", "nats://127.0.0.1:1"),
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x"),
    ];
    let long = format!("http://collector:4318/{}", "a".repeat(2048));
    let cases: &[(&str, &str, &str)] = &[
        ("not a url", "not a URL", "telemetry.otlp_endpoint"),
        (
            "collector:4318",
            "scheme `collector` is not http or https",
            "telemetry.otlp_endpoint",
        ),
        (
            "ftp://collector:4318",
            "is not http or https",
            "telemetry.otlp_endpoint",
        ),
        (
            "http://otel:pw-s3cret-otlp@collector:4318",
            "credentials",
            "telemetry.otlp_endpoint",
        ),
        (
            "http://collector:4318/?token=pw-s3cret-otlp",
            "query",
            "telemetry.otlp_endpoint",
        ),
        (
            "http://collector:4318/#frag",
            "fragment",
            "telemetry.otlp_endpoint",
        ),
        (
            "unix:/var/run/otel.sock",
            "is not http or https",
            "telemetry.otlp_endpoint",
        ),
        (&long, "longer than 2048 bytes", "telemetry.otlp_endpoint"),
    ];
    for command in [
        &["run", "--no-migrate"][..],
        &["ingest"],
        &["deliver", "--url", "http://127.0.0.1:1/"],
    ] {
        for (value, reason, key) in cases {
            let mut env = down.to_vec();
            env.push(("RUNWATCH_TELEMETRY__OTLP_ENDPOINT", value));
            let started = Instant::now();
            let out = runwatch(command, &env);
            let all = never_shown(&out, "pw-s3cret-otlp");
            assert_eq!(out.status.code(), Some(2), "{command:?} {value}: {all}");
            assert!(
                all.contains(&format!("`{key}`")) && all.contains(reason),
                "{command:?} {value}: {all}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{value} took {:?}",
                started.elapsed()
            );
        }
    }
    // The standard variable, when the key is not set: named in the error.
    let mut env = down.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://collector:4317"));
    let out = runwatch(&["run", "--no-migrate"], &env);
    let all = never_shown(&out, "pw-s3cret-otlp");
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("`OTEL_EXPORTER_OTLP_ENDPOINT`"), "{all}");
    // An empty key turns export off whatever the variable says: that bad value is not read.
    env.push(("RUNWATCH_TELEMETRY__OTLP_ENDPOINT", ""));
    env.push(("RUNWATCH_LOG__LEVEL", "info"));
    let out = runwatch(&["simulate", "/dev/null"], &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        never_shown(&out, "pw-s3cret-otlp")
    );
    // An unknown key, a wrong type.
    let dir = tempfile::tempdir().unwrap();
    for (body, says) in [
        (
            "[telemetry]\notlp_endpont = \"http://c:4318\"\n",
            "otlp_endpont",
        ),
        ("[telemetry]\notlp_endpoint = 4318\n", "otlp_endpoint"),
    ] {
        let file = dir.path().join("c.toml");
        std::fs::write(&file, body).unwrap();
        let out = runwatch(
            &["--config", file.to_str().unwrap(), "simulate", "/dev/null"],
            &[],
        );
        let all = never_shown(&out, "pw-s3cret-otlp");
        assert_eq!(out.status.code(), Some(2), "{body}: {all}");
        assert!(all.contains(says), "{body}: {all}");
    }
}

/// `telemetry.trace_sample_ratio` and the standard `OTEL_TRACES_SAMPLER{,_ARG}`: a ratio
/// outside [0, 1] or not a number, or a sampler runwatch does not have, is exit status 2
/// naming the key or the variable before anything connects; a good one starts.
#[test]
fn bad_trace_sample_ratios_exit_2_naming_the_key() {
    let down = [
        ("NATS_URL", "nats://127.0.0.1:1"),
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x"),
    ];
    // (the variables, the key the error names, the reason it gives)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &[("RUNWATCH_TELEMETRY__TRACE_SAMPLE_RATIO", "1.5")],
            "telemetry.trace_sample_ratio",
            "not in [0, 1]",
        ),
        (
            &[("RUNWATCH_TELEMETRY__TRACE_SAMPLE_RATIO", "-0.1")],
            "telemetry.trace_sample_ratio",
            "not in [0, 1]",
        ),
        (
            &[("RUNWATCH_TELEMETRY__TRACE_SAMPLE_RATIO", "lots")],
            "trace_sample_ratio",
            "",
        ),
        (
            &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "half"),
            ],
            "OTEL_TRACES_SAMPLER_ARG",
            "not a number",
        ),
        (
            &[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ],
            "OTEL_TRACES_SAMPLER_ARG",
            "not in [0, 1]",
        ),
        (
            &[("OTEL_TRACES_SAMPLER", "jaeger_remote")],
            "OTEL_TRACES_SAMPLER",
            "not supported",
        ),
    ];
    for command in [
        &["run", "--no-migrate"][..],
        &["ingest"],
        &["simulate", "/dev/null"],
    ] {
        for (vars, key, reason) in cases {
            let mut env = down.to_vec();
            env.extend_from_slice(vars);
            let started = Instant::now();
            let out = runwatch(command, &env);
            let all = never_shown(&out, "no secret here");
            assert_eq!(out.status.code(), Some(2), "{command:?} {vars:?}: {all}");
            // A value of the wrong type is named as its variable (upper case).
            let lower = all.to_lowercase();
            assert!(
                lower.contains(&key.to_lowercase()) && all.contains(reason),
                "{command:?} {vars:?}: {all}"
            );
            assert!(started.elapsed() < Duration::from_secs(5), "{vars:?}");
        }
    }
    // The key wins over the variables; good values start.
    for vars in [
        &[
            ("RUNWATCH_TELEMETRY__TRACE_SAMPLE_RATIO", "0.25"),
            ("OTEL_TRACES_SAMPLER", "nope"),
        ][..],
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ],
        &[("OTEL_TRACES_SAMPLER", "always_off")],
    ] {
        let out = runwatch(&["simulate", "/dev/null"], vars);
        let all = never_shown(&out, "no secret here");
        assert_eq!(out.status.code(), Some(0), "{vars:?}: {all}");
    }
}

/// `--config` can come from `RUNWATCH_CONFIG`.
#[test]
fn runwatch_config_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[timers]\nbatch = 0\n").unwrap();
    let out = runwatch(
        &["simulate", "/dev/null"],
        &[("RUNWATCH_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`timers.batch`"));
}

/// The streams runwatch creates carry `[streams]`'s `max_age` and `max_bytes`; changing
/// them in the configuration updates an existing stream at the next set-up, and a stream
/// that is already right is left alone.
#[tokio::test]
async fn streams_carry_the_configured_limits() {
    let mut config = nats_common::test_config();
    let _guard = nats_common::StreamsGuard::new(&config);
    let bus = crate::helpers::app::bus(&config).await;
    let info = |name: String| {
        let js = bus.jetstream().clone();
        async move {
            js.get_stream(&name)
                .await
                .expect("stream")
                .info()
                .await
                .expect("info")
                .config
                .clone()
        }
    };
    let day = Duration::from_secs(86_400);
    for (name, age) in [
        (config.streams.events.clone(), 7 * day),
        (config.streams.triggers.clone(), 30 * day),
        (config.streams.dead.clone(), 30 * day),
    ] {
        let c = info(name.clone()).await;
        assert_eq!(
            (c.max_age, c.max_bytes),
            (age, -1),
            "{name}: bounded by age, no size bound"
        );
    }
    config.streams.events_max_age = Duration::from_secs(3600);
    config.streams.events_max_bytes = 8 << 20;
    config.streams.dead_max_bytes = 2 << 20;
    config.validate().expect("valid");
    let bus = runwatch::bus::Bus::connect(&config).await.expect("connect");
    bus.ensure_streams().await.expect("streams updated");
    let c = info(config.streams.events.clone()).await;
    assert_eq!(
        (c.max_age, c.max_bytes),
        (Duration::from_secs(3600), 8 << 20)
    );
    let c = info(config.streams.dead.clone()).await;
    assert_eq!((c.max_age, c.max_bytes), (30 * day, 2 << 20));
    let c = info(config.streams.triggers.clone()).await;
    assert_eq!((c.max_age, c.max_bytes), (30 * day, -1));
    // Back to no size bound (0).
    config.streams.events_max_bytes = 0;
    let bus = runwatch::bus::Bus::connect(&config).await.expect("connect");
    bus.ensure_streams().await.expect("streams updated");
    let c = info(config.streams.events.clone()).await;
    assert_eq!(c.max_bytes, -1);
}
