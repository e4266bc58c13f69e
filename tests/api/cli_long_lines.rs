//! `runwatch simulate` and `runwatch publish` read a line no further than
//! `limits.max_message_bytes` (+1): a longer line stops the command with exit status 2 and
//! an error naming the line and the bound, and an endless one (`/dev/zero`) fails at once
//! under a 2 GB address-space limit (`ulimit -v`), where reading it whole aborts.

use std::time::{Duration, Instant};

use crate::helpers::env::TestEnv;
use runwatch::bus::{Bus, StreamKind};

const BIN: &str = env!("CARGO_BIN_EXE_runwatch");

/// The first two lines of examples/demo.jsonl around a line of 70,000 bytes.
fn with_long_line(dir: &tempfile::TempDir) -> String {
    let demo = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.jsonl"))
        .expect("demo");
    let lines: Vec<&str> = demo.lines().take(2).collect();
    let text = format!("{}\n{}\n{}\n", lines[0], "x".repeat(70_000), lines[1]);
    let path = dir.path().join("long.jsonl");
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// Runs `sh -c 'ulimit -v 2000000; exec runwatch ARGS'` with `env`; (exit code, stdout,
/// stderr, how long it took).
async fn run(args: &str, env: &[(String, String)]) -> (Option<i32>, String, String, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -v 2000000; exec {BIN} {args}"))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_BACKTRACE", "0")
            .output(),
    )
    .await
    .expect("finished within 60 s")
    .expect("run");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr),
        started.elapsed(),
    )
}

#[tokio::test]
async fn simulate_stops_at_a_line_over_max_message_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = with_long_line(&dir);
    let (code, _, err, _) = run(&format!("simulate {file}"), &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("line 2: longer than limits.max_message_bytes (65536 bytes)"),
        "{err}"
    );
    // Under a larger bound the same line is read, and refused as any invalid line (exit 3).
    let roomy = [(
        "RUNWATCH_LIMITS__MAX_MESSAGE_BYTES".to_string(),
        "131072".to_string(),
    )];
    let (code, _, err, _) = run(&format!("simulate {file}"), &roomy).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("line 2:") && !err.contains("longer than"),
        "{err}"
    );
    // An endless line: fails at once, in bounded memory.
    let (code, _, err, took) = run("simulate /dev/zero", &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("line 1: longer than limits.max_message_bytes"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_stops_at_a_line_over_max_message_bytes() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = with_long_line(&dir);
    let (code, out, err, _) = run(&format!("publish {file}"), &env.env_vars()).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("line 2: longer than limits.max_message_bytes (65536 bytes)"),
        "{err}"
    );
    // The line before it was published, the line after it was not read.
    assert!(out.contains("published=1 "), "{out}");
    let bus = Bus::connect(&env.config).await.expect("bus");
    assert_eq!(
        bus.stream_state(StreamKind::Events)
            .await
            .expect("stream")
            .messages,
        1
    );
    let (code, _, err, took) = run("publish /dev/zero", &env.env_vars()).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("line 1: longer than limits.max_message_bytes"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    env.cleanup().await;
}
