//! Webhook ingest through the real HTTP server and the real NATS: the GitHub fixtures signed
//! and mis-signed, ping and the other event types, bad bodies, the body limit, a GitLab
//! pipeline hook, and 503 when JetStream cannot store; check suites, check runs and commit
//! statuses (`other_ci_reports_…`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::helpers::env::TestEnv;
use futures::StreamExt;
use runwatch::bus::{Bus, EventsFrom, StreamKind};
use runwatch::event::{Event, Status};
use runwatch::ingest::{self, Secret, github};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const SECRET_OLD: &str = "old-secret";
const SECRET_NEW: &str = "new-secret";
const GITLAB_TOKEN: &str = "gl-token-123";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github")
}

fn fixture_files(kind: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixtures().join(kind))
        .unwrap_or_else(|e| panic!("fixtures/{kind}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {kind}");
    out
}

struct Reply {
    status: u16,
    body: String,
}

/// A minimal HTTP/1.1 client (one request per connection).
async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    // The server may answer (413) before the whole body is sent and close.
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Reply { status, body }
}

async fn github(addr: SocketAddr, event: &str, delivery: &str, secret: &str, body: &[u8]) -> Reply {
    let sig = github::sign(secret.as_bytes(), body);
    post(
        addr,
        "/webhooks/github",
        &[
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", delivery),
            ("X-Hub-Signature-256", &sig),
        ],
        body,
    )
    .await
}

async fn stored_events(bus: &Bus) -> Vec<(String, Event)> {
    let state = bus.stream_state(StreamKind::Events).await.unwrap();
    if state.messages == 0 {
        return Vec::new();
    }
    let (_, mut messages) = bus
        .event_messages_from(EventsFrom::Sequence(1))
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
        let m = m.unwrap();
        out.push((
            m.subject.clone(),
            serde_json::from_slice(&m.payload).unwrap(),
        ));
        if m.sequence >= state.last_sequence {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_verified_normalized_and_published_after_the_puback() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.ingest.github_secrets = vec![Secret::new(SECRET_OLD), Secret::new(SECRET_NEW)];
    config.ingest.gitlab_tokens = vec![Secret::new(GITLAB_TOKEN)];
    config.ingest.listen = "127.0.0.1:0".parse().unwrap();
    let bus = crate::helpers::app::bus(&config).await;
    let stop = CancellationToken::new();
    let (addr, server) = ingest::serve(&config, bus.clone(), None, stop.clone())
        .await
        .unwrap();

    // /healthz answers.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");

    // Every workflow_run fixture, signed (alternating the two secrets: rotation).
    let runs = fixture_files("workflow_run");
    for (i, (name, body)) in runs.iter().enumerate() {
        let secret = if i % 2 == 0 { SECRET_OLD } else { SECRET_NEW };
        let r = github(addr, "workflow_run", &format!("d-{name}"), secret, body).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert!(r.body.contains("\"published\":1"), "{name}: {}", r.body);
    }
    // A redelivery is acknowledged and deduplicated.
    let (name, body) = &runs[0];
    let r = github(addr, "workflow_run", &format!("d-{name}"), SECRET_NEW, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"duplicates\":1"), "{}", r.body);

    // Mis-signed: wrong secret, tampered body, no signature, malformed signature.
    let before = bus.stream_state(StreamKind::Events).await.unwrap().messages;
    let r = github(addr, "workflow_run", "bad-1", "wrong-secret", body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let sig = github::sign(SECRET_NEW.as_bytes(), body);
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let r = post(
        addr,
        "/webhooks/github",
        &[
            ("X-GitHub-Event", "workflow_run"),
            ("X-GitHub-Delivery", "bad-2"),
            ("X-Hub-Signature-256", &sig),
        ],
        &tampered,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = post(
        addr,
        "/webhooks/github",
        &[
            ("X-GitHub-Event", "workflow_run"),
            ("X-GitHub-Delivery", "bad-3"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = post(
        addr,
        "/webhooks/github",
        &[
            ("X-GitHub-Event", "workflow_run"),
            ("X-GitHub-Delivery", "bad-4"),
            ("X-Hub-Signature-256", "sha256=nothex"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(!r.body.contains(SECRET_NEW) && !r.body.contains(SECRET_OLD));

    // ping: 200; the other event types: 202; nothing published for any of them.
    for (name, body) in fixture_files("ping") {
        let r = github(addr, "ping", &format!("p-{name}"), SECRET_OLD, &body).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
    // (`workflow_job` deliveries are published as jobs: tests/api/jobs.rs.)
    for kind in ["check_run"] {
        for (name, body) in fixture_files(kind) {
            let r = github(addr, kind, &format!("o-{name}"), SECRET_NEW, &body).await;
            assert_eq!(r.status, 202, "{kind}/{name}: {}", r.body);
        }
    }
    // Bad bodies: 400 with a reason.
    let r = github(
        addr,
        "workflow_run",
        "bad-5",
        SECRET_OLD,
        b"{\"action\":\"completed\"}",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("missing field"), "{}", r.body);
    let r = github(addr, "workflow_run", "bad-6", SECRET_OLD, b"not json").await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = github(addr, "workflow_run", "", SECRET_OLD, &runs[0].1).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("X-GitHub-Delivery"), "{}", r.body);
    // Over the body limit (1 MiB by default): 413.
    let big = vec![b' '; config.ingest.max_body_bytes + 1];
    let r = github(addr, "workflow_run", "big", SECRET_OLD, &big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(
        bus.stream_state(StreamKind::Events).await.unwrap().messages,
        before,
        "nothing more was published"
    );

    // Several pull requests: one event each, ids <delivery>:<number>.
    let with_prs = runs
        .iter()
        .find(|(n, _)| n.contains("with-pull-requests"))
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&with_prs.1).unwrap();
    let mut second = v["workflow_run"]["pull_requests"][0].clone();
    second["number"] = 5.into();
    v["workflow_run"]["pull_requests"]
        .as_array_mut()
        .unwrap()
        .push(second);
    let body = serde_json::to_vec(&v).unwrap();
    let r = github(addr, "workflow_run", "multi", SECRET_NEW, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"published\":2"), "{}", r.body);

    // GitLab: the token, then the pipeline hook.
    let gl = serde_json::to_vec(&crate::helpers::receiver::gitlab_pipeline(
        serde_json::json!([]),
    ))
    .unwrap();
    let gl = gl.as_slice();
    let r = post(
        addr,
        "/webhooks/gitlab",
        &[
            ("X-Gitlab-Event", "Pipeline Hook"),
            ("X-Gitlab-Token", "nope"),
        ],
        gl,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = post(
        addr,
        "/webhooks/gitlab",
        &[
            ("X-Gitlab-Event", "Pipeline Hook"),
            ("X-Gitlab-Token", GITLAB_TOKEN),
            ("X-Gitlab-Event-UUID", "gl-uuid-1"),
        ],
        gl,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        addr,
        "/webhooks/gitlab",
        &[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", GITLAB_TOKEN),
        ],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);

    // What landed in the stream: exactly the normalized events, on the provider subjects.
    let stored = stored_events(&bus).await;
    let prefix = &config.streams.events_subject_prefix;
    let mut want = Vec::new();
    for (name, body) in &runs {
        let ingest::Normalized::Events(e) = github::normalize(
            "workflow_run",
            &format!("d-{name}"),
            body,
            &config.ingest.github,
        )
        .unwrap() else {
            panic!("{name} is not a run")
        };
        want.extend(e);
    }
    let got_ids: Vec<&str> = stored.iter().map(|(_, e)| e.event_id.as_str()).collect();
    let mut want_ids: Vec<String> = want.iter().map(|e| e.event_id.clone()).collect();
    want_ids.extend([
        "multi:2".to_string(),
        "multi:5".to_string(),
        "gl-uuid-1".to_string(),
    ]);
    assert_eq!(got_ids, want_ids);
    for (w, (subject, got)) in want.iter().zip(&stored) {
        assert_eq!(subject, &format!("{prefix}.github"));
        assert_eq!(w, got);
    }
    let with_pr = stored
        .iter()
        .find(|(_, e)| e.event_id.contains("with-pull-requests"))
        .unwrap();
    assert_eq!(with_pr.1.pr_number, Some(2));
    assert_eq!(with_pr.1.repository.id.as_deref(), Some("300029405"));
    assert_eq!(
        with_pr.1.run.workflow, "test",
        "the empty run name falls back to the workflow's"
    );
    let requested = stored
        .iter()
        .find(|(_, e)| e.event_id == "d-requested.payload.json")
        .unwrap();
    assert_eq!(requested.1.run.status, Status::Queued);
    let multi: Vec<_> = stored
        .iter()
        .filter(|(_, e)| e.event_id.starts_with("multi:"))
        .map(|(_, e)| e.pr_number)
        .collect();
    assert_eq!(multi, vec![Some(2), Some(5)]);
    let (subject, gl_event) = stored.last().unwrap();
    assert_eq!(subject, &format!("{prefix}.gitlab"));
    assert_eq!(gl_event.run.id, "31");
    assert_eq!(gl_event.pr_number, Some(1));
    assert_eq!(
        gl_event.commit_sha,
        "bcbb5ec396a2c0f828686f14fac9b80b780504f2"
    );
    assert_eq!(
        (
            gl_event.repository.owner.as_str(),
            gl_event.repository.name.as_str()
        ),
        ("gitlab-org", "gitlab-test")
    );
    assert_eq!(gl_event.run.status, Status::Completed);
    assert_eq!(gl_event.run.conclusion.map(|c| c.as_str()), Some("failure"));

    // JetStream cannot store (the stream is gone): 503, so the sender redelivers.
    bus.jetstream()
        .delete_stream(&config.streams.events)
        .await
        .unwrap();
    let r = github(addr, "workflow_run", "after-loss", SECRET_OLD, &runs[0].1).await;
    assert_eq!(r.status, 503, "{}", r.body);

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    env.cleanup().await;
}

/// Posts every fixture of `kind`, signed; returns (name, status, body) per fixture.
async fn post_all(addr: SocketAddr, kind: &str, secret: &str) -> Vec<(String, Reply)> {
    let mut out = Vec::new();
    for (name, body) in fixture_files(kind) {
        let r = github(addr, kind, &format!("{kind}-{name}"), secret, &body).await;
        out.push((name, r));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_ci_reports_are_verified_normalized_and_published() {
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.ingest.github_secrets = vec![Secret::new(SECRET_NEW)];
    config.ingest.listen = "127.0.0.1:0".parse().unwrap();
    let bus = crate::helpers::app::bus(&config).await;
    let stop = CancellationToken::new();
    let (addr, server) = ingest::serve(&config, bus.clone(), None, stop.clone())
        .await
        .unwrap();

    // Bad signatures first: nothing is published for any new kind.
    for kind in ["check_suite", "check_run", "status"] {
        let (name, body) = &fixture_files(kind)[0];
        let r = github(addr, kind, &format!("bad-{name}"), "wrong-secret", body).await;
        assert_eq!(r.status, 401, "{kind}/{name}: {}", r.body);
        let r = post(
            addr,
            "/webhooks/github",
            &[
                ("X-GitHub-Event", kind),
                ("X-GitHub-Delivery", "bad-unsigned"),
            ],
            body,
        )
        .await;
        assert_eq!(r.status, 401, "{kind}/{name}: {}", r.body);
    }
    assert_eq!(
        bus.stream_state(StreamKind::Events).await.unwrap().messages,
        0
    );

    // Default options: a run per check suite (the Actions app's suite ignored), check runs
    // ignored (folded into their suite), a run per commit status.
    for (name, r) in post_all(addr, "check_suite", SECRET_NEW).await {
        let want = if name == "completed.1.payload.json" {
            202
        } else {
            200
        };
        assert_eq!(r.status, want, "check_suite/{name}: {}", r.body);
    }
    for (name, r) in post_all(addr, "check_run", SECRET_NEW).await {
        assert_eq!(r.status, 202, "check_run/{name}: {}", r.body);
    }
    for (name, r) in post_all(addr, "status", SECRET_NEW).await {
        assert_eq!(r.status, 200, "status/{name}: {}", r.body);
    }
    let stored = stored_events(&bus).await;
    let prefix = &config.streams.events_subject_prefix;
    let mut want = Vec::new();
    for kind in ["check_suite", "status"] {
        for (name, body) in fixture_files(kind) {
            if let ingest::Normalized::Events(e) = github::normalize(
                kind,
                &format!("{kind}-{name}"),
                &body,
                &config.ingest.github,
            )
            .unwrap()
            {
                want.extend(e);
            }
        }
    }
    assert_eq!(stored.len(), 9, "7 suites and 2 statuses");
    assert_eq!(
        stored.iter().map(|(_, e)| e).collect::<Vec<_>>(),
        want.iter().collect::<Vec<_>>()
    );
    assert!(stored.iter().all(|(s, _)| s == &format!("{prefix}.github")));
    let done = &stored
        .iter()
        .find(|(_, e)| e.event_id == "check_suite-completed.payload.json")
        .unwrap()
        .1;
    assert_eq!(done.run.id, "118578147");
    assert_eq!(done.pr_number, Some(2));
    assert_eq!(done.run.status, Status::Completed);
    assert_eq!(done.run.conclusion.map(|c| c.as_str()), Some("success"));
    assert_eq!(done.run.workflow, "octocoders-linter");
    let st = &stored
        .iter()
        .find(|(_, e)| e.event_id == "status-payload.json")
        .unwrap()
        .1;
    assert_eq!(
        (st.run.id.as_str(), st.run.workflow.as_str(), st.pr_number),
        ("status:default", "default", None)
    );
    // A status in an unknown state is a 400 with the reason.
    let mut v: serde_json::Value = serde_json::from_slice(&fixture_files("status")[0].1).unwrap();
    v["state"] = "sideways".into();
    let r = github(
        addr,
        "status",
        "bad-state",
        SECRET_NEW,
        &serde_json::to_vec(&v).unwrap(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("sideways"), "{}", r.body);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;

    // checks = "run": a run per check run (not the Actions app's), suites ignored.
    let mut run_mode = config.clone();
    run_mode.ingest.github.checks = ingest::CheckGranularity::Run;
    let stop = CancellationToken::new();
    let (addr, server) = ingest::serve(&run_mode, bus.clone(), None, stop.clone())
        .await
        .unwrap();
    let before = stored.len();
    for (name, r) in post_all(addr, "check_suite", SECRET_NEW).await {
        assert_eq!(r.status, 202, "check_suite/{name}: {}", r.body);
    }
    for (name, r) in post_all(addr, "check_run", SECRET_NEW).await {
        let want = if name == "completed.1.payload.json" {
            202
        } else {
            200
        };
        assert_eq!(r.status, want, "check_run/{name}: {}", r.body);
    }
    let stored = stored_events(&bus).await;
    assert_eq!(stored.len() - before, 7);
    let run = &stored
        .iter()
        .find(|(_, e)| e.event_id == "check_run-completed.payload.json")
        .unwrap()
        .1;
    assert_eq!(run.run.id, "118578147/Octocoders-linter");
    assert_eq!(run.pr_number, Some(2));
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    env.cleanup().await;
}

fn provider_fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {dir}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkite_and_circleci_are_verified_normalized_and_published() {
    use runwatch::ingest::{buildkite, circleci};
    const BK_TOKEN: &str = "bk-token-1";
    const CC_SECRET: &str = "cc-secret-1";
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.ingest.buildkite_tokens = vec![Secret::new(BK_TOKEN)];
    config.ingest.circleci_secrets = vec![Secret::new(CC_SECRET)];
    config.ingest.listen = "127.0.0.1:0".parse().unwrap();
    let bus = crate::helpers::app::bus(&config).await;
    let stop = CancellationToken::new();
    let (addr, server) = ingest::serve(&config, bus.clone(), None, stop.clone())
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp();

    // Buildkite: bad token, bad signature, stale signature, no credentials at all: 401.
    let bk = provider_fixtures("buildkite");
    let (_, body) = &bk[0];
    for headers in [
        vec![
            ("X-Buildkite-Event", "build.finished".to_string()),
            ("X-Buildkite-Token", "nope".to_string()),
        ],
        vec![
            ("X-Buildkite-Event", "build.finished".to_string()),
            ("X-Buildkite-Signature", buildkite::sign(b"nope", now, body)),
        ],
        vec![
            ("X-Buildkite-Event", "build.finished".to_string()),
            (
                "X-Buildkite-Signature",
                buildkite::sign(BK_TOKEN.as_bytes(), now - 3600, body),
            ),
        ],
        vec![("X-Buildkite-Event", "build.finished".to_string())],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = post(addr, "/webhooks/buildkite", &h, body).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
    }
    // CircleCI: wrong secret, tampered body, none: 401.
    let cc = provider_fixtures("circleci");
    let (_, cbody) = &cc[0];
    let mut tampered = cbody.clone();
    tampered[20] ^= 1;
    for (sig, b) in [
        (Some(circleci::sign(b"nope", cbody)), cbody),
        (Some(circleci::sign(CC_SECRET.as_bytes(), cbody)), &tampered),
        (None, cbody),
    ] {
        let mut h = vec![("circleci-event-type", "workflow-completed")];
        if let Some(s) = &sig {
            h.push(("circleci-signature", s.as_str()));
        }
        let r = post(addr, "/webhooks/circleci", &h, b).await;
        assert_eq!(r.status, 401, "{sig:?}: {}", r.body);
    }
    assert_eq!(
        bus.stream_state(StreamKind::Events).await.unwrap().messages,
        0
    );

    // Good deliveries: Buildkite alternately by token and by signature.
    let mut want = Vec::new();
    for (i, (name, body)) in bk.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        let event = v["event"].as_str().unwrap().to_string();
        let auth = if i % 2 == 0 {
            ("X-Buildkite-Token", BK_TOKEN.to_string())
        } else {
            (
                "X-Buildkite-Signature",
                buildkite::sign(BK_TOKEN.as_bytes(), now, body),
            )
        };
        let r = post(
            addr,
            "/webhooks/buildkite",
            &[("X-Buildkite-Event", &event), (auth.0, &auth.1)],
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let ingest::Normalized::Events(e) = buildkite::normalize(&event, body).unwrap() else {
            panic!("{name}")
        };
        want.extend(e);
    }
    for (name, body) in &cc {
        let sig = circleci::sign(CC_SECRET.as_bytes(), body);
        let r = post(
            addr,
            "/webhooks/circleci",
            &[
                ("circleci-event-type", "workflow-completed"),
                ("circleci-signature", &sig),
            ],
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let ingest::Normalized::Events(e) =
            circleci::normalize("workflow-completed", body).unwrap()
        else {
            panic!("{name}")
        };
        want.extend(e);
    }
    // The event name from the body when the header is absent; other kinds: 202; ping: 200.
    let r = post(
        addr,
        "/webhooks/buildkite",
        &[("X-Buildkite-Token", BK_TOKEN)],
        &bk[0].1,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("\"duplicates\":1"),
        "a redelivery deduplicates: {}",
        r.body
    );
    let r = post(
        addr,
        "/webhooks/buildkite",
        &[
            ("X-Buildkite-Event", "job.started"),
            ("X-Buildkite-Token", BK_TOKEN),
        ],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    // `job.finished` is normalized (tests/api/jobs.rs): a body without its build is refused.
    let r = post(
        addr,
        "/webhooks/buildkite",
        &[
            ("X-Buildkite-Event", "job.finished"),
            ("X-Buildkite-Token", BK_TOKEN),
        ],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(
        addr,
        "/webhooks/buildkite",
        &[
            ("X-Buildkite-Event", "ping"),
            ("X-Buildkite-Token", BK_TOKEN),
        ],
        b"{\"event\":\"ping\"}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let job = b"{\"type\":\"job-completed\"}";
    let sig = circleci::sign(CC_SECRET.as_bytes(), job);
    let r = post(
        addr,
        "/webhooks/circleci",
        &[
            ("circleci-event-type", "job-completed"),
            ("circleci-signature", &sig),
        ],
        job,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    // A bad state is a 400 with the reason.
    let mut v: serde_json::Value = serde_json::from_slice(&bk[0].1).unwrap();
    v["build"]["state"] = "sideways".into();
    let bad = serde_json::to_vec(&v).unwrap();
    let r = post(
        addr,
        "/webhooks/buildkite",
        &[
            ("X-Buildkite-Event", "build.finished"),
            ("X-Buildkite-Token", BK_TOKEN),
        ],
        &bad,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("sideways"), "{}", r.body);

    let stored = stored_events(&bus).await;
    let prefix = &config.streams.events_subject_prefix;
    assert_eq!(
        stored.iter().map(|(_, e)| e).collect::<Vec<_>>(),
        want.iter().collect::<Vec<_>>()
    );
    for (subject, e) in &stored {
        assert_eq!(subject, &format!("{prefix}.{}", e.provider));
    }
    let failed = &stored
        .iter()
        .find(|(_, e)| e.provider.as_str() == "buildkite" && e.run.conclusion.is_some())
        .unwrap()
        .1;
    assert_eq!(
        (failed.run.id.as_str(), failed.pr_number, failed.run.attempt),
        ("buildkite:my-pipeline", Some(42), 2)
    );
    assert_eq!(
        (
            failed.repository.owner.as_str(),
            failed.repository.name.as_str()
        ),
        ("acme-inc", "my-pipeline")
    );
    // A build of a GitHub repository names it: it joins the GitHub events' groups.
    assert_eq!(failed.repository.host.map(|h| h.as_str()), Some("github"));
    let cc_failed = &stored
        .iter()
        .find(|(_, e)| e.event_id == "3888f21b-eaa7-38e3-8f3d-75a63bba8895")
        .unwrap()
        .1;
    assert_eq!(
        (cc_failed.run.id.as_str(), cc_failed.pr_number),
        ("circleci:build-test-deploy", Some(77))
    );
    assert_eq!(
        cc_failed.run.conclusion.map(|c| c.as_str()),
        Some("failure")
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_deliveries_publish_the_head_commit() {
    use runwatch::pull_request::{Input, decode_input};
    let env = TestEnv::new().await;
    let mut config = env.config.clone();
    config.ingest.github_secrets = vec![Secret::new(SECRET_NEW)];
    config.ingest.listen = "127.0.0.1:0".parse().unwrap();
    let bus = crate::helpers::app::bus(&config).await;
    let stop = CancellationToken::new();
    let (addr, server) = ingest::serve(&config, bus.clone(), None, stop.clone())
        .await
        .unwrap();

    let (name, body) = &fixture_files("pull_request")[0];
    let r = github(addr, "pull_request", "bad", "wrong-secret", body).await;
    assert_eq!(r.status, 401, "{name}: {}", r.body);
    // Every action is published (each carries the head and the state).
    for (name, r) in post_all(addr, "pull_request", SECRET_NEW).await {
        assert_eq!(r.status, 200, "pull_request/{name}: {}", r.body);
    }
    // The stream holds runwatch.pull_request.v1 messages the worker decodes.
    let state = bus.stream_state(StreamKind::Events).await.unwrap();
    assert_eq!(state.messages, 4, "closed, opened, reopened, synchronize");
    let (_, mut messages) = bus
        .event_messages_from(EventsFrom::Sequence(1))
        .await
        .unwrap();
    let prefix = &config.streams.events_subject_prefix;
    let mut states = Vec::new();
    for _ in 0..4 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(m.subject.as_str(), format!("{prefix}.github"));
        let Input::PullRequest(link) = decode_input(&m.payload, &config.limits).unwrap() else {
            panic!(
                "not a pull request head: {:?}",
                String::from_utf8_lossy(&m.payload)
            )
        };
        assert_eq!(
            (link.pr_number, link.commit_sha.as_str()),
            (2, "ec26c3e57ca3a959ca5aad62de7213c562f8c821")
        );
        assert_eq!(link.branch.as_deref(), Some("changes"));
        states.push(link.status().map(|s| s.state.as_str()));
    }
    // closed.payload.json is a pull request closed without merging.
    assert_eq!(
        states,
        [Some("closed"), Some("open"), Some("open"), Some("open")]
    );
    // A fork's head branch is qualified by the fork's owner.
    let opened = &fixture_files("pull_request")
        .into_iter()
        .find(|(n, _)| n.starts_with("opened"))
        .unwrap()
        .1;
    let mut v: serde_json::Value = serde_json::from_slice(opened).unwrap();
    v["pull_request"]["head"]["repo"]["id"] = 99.into();
    v["pull_request"]["head"]["repo"]["owner"]["login"] = "forker".into();
    let r = github(
        addr,
        "pull_request",
        "fork-1",
        SECRET_NEW,
        &serde_json::to_vec(&v).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Input::PullRequest(link) = decode_input(&m.payload, &config.limits).unwrap() else {
        panic!()
    };
    assert_eq!(link.branch.as_deref(), Some("forker:changes"));
    assert_eq!(link.metadata["fork"], true);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    env.cleanup().await;
}
