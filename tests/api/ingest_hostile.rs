//! Hostile clients against the real `runwatch ingest` binary, none of them holding a secret
//! (docs/security.md "Webhook receiver bounds"): dribbled headers, stalled and dribbled
//! bodies, many large stalled bodies (the process's RSS is read from /proc), more
//! connections and requests than the bounds; and signed deliveries with made-up event names,
//! which must not grow the metric series.

use std::time::{Duration, Instant};

use crate::helpers::app::TestApp;
use crate::helpers::app::eventually;
use crate::helpers::procs;
use crate::helpers::receiver::{SECRET, closed_after, fixture, status, value};
use runwatch::ingest::github;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbled_headers_and_idle_connections_are_closed_after_the_header_timeout() {
    let app = TestApp::new().await;
    let rx = app.spawn_ingest(&[("RUNWATCH_INGEST__HEADER_READ_TIMEOUT", "1s")]);
    // 40 connections dribble a header (a byte every 200 ms, never the blank line), 10 send
    // nothing, 1 is kept alive after a complete request.
    let mut clients = Vec::new();
    for i in 0..50 {
        let (mut r, mut w) = TcpStream::connect(rx.addr)
            .await
            .expect("connect")
            .into_split();
        if i < 40 {
            tokio::spawn(async move {
                if w.write_all(b"POST /webhooks/github HTTP/1.1\r\nX-Pad: ")
                    .await
                    .is_err()
                {
                    return;
                }
                while w.write_all(b"a").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        } else {
            std::mem::forget(w); // keep the write side open, sending nothing
        }
        clients.push(tokio::spawn(async move {
            closed_after(&mut r, Duration::from_secs(8)).await
        }));
    }
    let (mut r, mut w) = TcpStream::connect(rx.addr)
        .await
        .expect("connect")
        .into_split();
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut head = [0u8; 12];
    r.read_exact(&mut head).await.expect("an answer");
    assert_eq!(&head, b"HTTP/1.1 200");
    let idle = closed_after(&mut r, Duration::from_secs(8)).await;
    assert!(
        idle.is_some(),
        "a kept-alive idle connection stays open past the header timeout"
    );
    for (i, c) in clients.into_iter().enumerate() {
        let after = c.await.expect("client task");
        let after = after
            .unwrap_or_else(|| panic!("connection {i} still open 8 s after a 1 s header timeout"));
        assert!(
            after >= Duration::from_millis(900),
            "connection {i} closed early: {after:?}"
        );
    }
    // Headers over 32 KiB: 431.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let (code, text) = rx.request(&big, b"").await;
    assert_eq!(code, 431, "{text}");
    let m = rx.metrics().await;
    let cut = value(
        &m,
        "runwatch_ingest_refused_total{reason=\"header_timeout\"}",
    );
    assert!(cut >= 50.0, "header timeouts counted: {cut}\n{m}");
    rx.stop();
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_dribbled_bodies_are_answered_408_after_the_body_timeout() {
    let app = TestApp::new().await;
    let rx = app.spawn_ingest(&[("RUNWATCH_INGEST__BODY_READ_TIMEOUT", "1s")]);
    let head = "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nX-GitHub-Event: workflow_run\r\n\r\n";
    for dribble in [false, true] {
        let started = Instant::now();
        let (mut r, mut w) = TcpStream::connect(rx.addr)
            .await
            .expect("connect")
            .into_split();
        w.write_all(head.as_bytes()).await.expect("write");
        w.write_all(b"{\"a\":").await.expect("write");
        // A byte every 100 ms: every read brings data, so only a bound on the whole body
        // (not one between reads) cuts it.
        let writer = tokio::spawn(async move {
            while dribble && w.write_all(b" ").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            w
        });
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(8), r.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw);
        assert!(
            read.is_ok(),
            "dribble={dribble}: still open after 8 s: {text}"
        );
        assert_eq!(status(&text), 408, "dribble={dribble}: {text}");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        writer.abort();
    }
    let m = rx.metrics().await;
    assert_eq!(
        value(&m, "runwatch_ingest_refused_total{reason=\"body_timeout\"}"),
        2.0,
        "{m}"
    );
    rx.stop();
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_stalled_large_bodies_keep_memory_bounded_and_a_signed_delivery_still_succeeds() {
    let app = TestApp::new().await;
    let rx = app.spawn_ingest(&[
        ("RUNWATCH_INGEST__MAX_BUFFERED_BYTES", "4194304"),
        ("RUNWATCH_INGEST__BODY_READ_TIMEOUT", "3s"),
        ("RUNWATCH_INGEST__MAX_CONNECTIONS", "1000"),
        ("RUNWATCH_INGEST__MAX_REQUESTS_IN_FLIGHT", "1000"),
    ]);
    let (code, text) = rx.signed("workflow_run", "warm-up", &fixture()).await;
    assert_eq!(code, 200, "{text}");
    let before = rx.rss_kib();
    // 150 clients each declare 1,000,000 bytes, send 999,000 and stop (issue 17's probe).
    let head = "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nX-GitHub-Event: workflow_run\r\nX-Hub-Signature-256: sha256=00\r\n\r\n";
    let pad: &'static [u8] = Box::leak(vec![b' '; 999_000].into_boxed_slice());
    let mut attackers = Vec::new();
    for _ in 0..150 {
        let (mut r, mut w) = TcpStream::connect(rx.addr)
            .await
            .expect("connect")
            .into_split();
        attackers.push(tokio::spawn(async move {
            let writer = tokio::spawn(async move {
                if w.write_all(head.as_bytes()).await.is_ok() {
                    let _ = w.write_all(pad).await;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(w);
            });
            let mut raw = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut raw)).await;
            writer.abort();
            status(&String::from_utf8_lossy(&raw))
        }));
    }
    let mut peak = before;
    while attackers.iter().any(|a| !a.is_finished()) {
        peak = peak.max(rx.rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut codes = std::collections::BTreeMap::new();
    for a in attackers {
        *codes.entry(a.await.expect("attacker")).or_insert(0u32) += 1;
    }
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!("RSS before {before} KiB, peak {peak} KiB (+{growth_mib} MiB); answers {codes:?}");
    // 4 MiB of bodies at most, plus hyper's buffers; 150 whole bodies would be ~143 MiB.
    assert!(
        growth_mib < 40,
        "RSS grew by {growth_mib} MiB under 150 stalled bodies; answers {codes:?}"
    );
    // At most 4 bodies fit the budget (408 after the body timeout); the rest were refused
    // before their body was read (503, or a reset while still sending).
    assert!(codes.get(&408).copied().unwrap_or(0) <= 4, "{codes:?}");
    let m = rx.metrics().await;
    let shed = value(
        &m,
        "runwatch_ingest_refused_total{reason=\"buffered_bytes\"}",
    );
    assert!(
        shed >= 140.0,
        "refused for the byte budget: {shed}; answers {codes:?}\n{m}"
    );
    // The attackers gone, a signed delivery goes through.
    let (code, text) = rx
        .signed("workflow_run", "after-the-attack", &fixture())
        .await;
    assert_eq!(code, 200, "{text}");
    rx.stop();
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_requests_past_their_bounds_are_answered_503() {
    let app = TestApp::new().await;
    let rx = app.spawn_ingest(&[
        ("RUNWATCH_INGEST__MAX_CONNECTIONS", "4"),
        ("RUNWATCH_INGEST__MAX_REQUESTS_IN_FLIGHT", "2"),
        ("RUNWATCH_INGEST__HEADER_READ_TIMEOUT", "60s"),
        ("RUNWATCH_INGEST__BODY_READ_TIMEOUT", "60s"),
    ]);
    let unsigned = "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\nX-GitHub-Event: ping\r\n\r\n";
    // Two requests whose bodies stall hold both places. One may reach the server while an
    // unsigned probe holds a place and be shed itself: it is then replaced.
    let mut stalled: Vec<TcpStream> = Vec::new();
    let started = Instant::now();
    let (code, text) = loop {
        stalled.retain(|s| matches!(s.try_read(&mut [0u8; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
        while stalled.len() < 2 {
            let mut s = TcpStream::connect(rx.addr).await.expect("connect");
            s.write_all(
                b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
            )
            .await
            .expect("write");
            stalled.push(s);
        }
        let (code, text) = rx.request(unsigned, b"{}").await;
        if code == 503 {
            break (code, text);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no 503 within 30 s; last {code}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.contains("max_requests_in_flight"), "{code}: {text}");
    // The probes are outside the bound.
    let (code, _) = rx
        .request(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"",
        )
        .await;
    assert_eq!(code, 200);
    // Two more idle connections fill max_connections = 4: the fifth is answered 503 and closed.
    // A stalled request the server timed out meanwhile frees its place: it is replaced.
    let mut idle = Vec::new();
    let started = Instant::now();
    let text = loop {
        let open = |s: &TcpStream| matches!(s.try_read(&mut [0u8; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        stalled.retain(open);
        idle.retain(open);
        while stalled.len() < 2 {
            let mut s = TcpStream::connect(rx.addr).await.expect("connect");
            s.write_all(
                b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
            )
            .await
            .expect("write");
            stalled.push(s);
        }
        while idle.len() < 2 {
            idle.push(TcpStream::connect(rx.addr).await.expect("connect"));
        }
        let (code, text) = rx
            .request(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                b"",
            )
            .await;
        if code == 503 {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no 503 past max_connections within 30 s; last {code}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.contains("too many connections"), "{text}");
    // Once the clients go, everything is served again.
    drop(idle);
    drop(stalled);
    eventually(
        Duration::from_secs(30),
        "unsigned requests answered 401 again",
        || async { (rx.request(unsigned, b"{}").await.0 == 401).then_some(()) },
    )
    .await;
    let m = rx.metrics().await;
    assert!(
        value(&m, "runwatch_ingest_refused_total{reason=\"in_flight\"}") >= 1.0,
        "{m}"
    );
    assert!(
        value(&m, "runwatch_ingest_refused_total{reason=\"connections\"}") >= 1.0,
        "{m}"
    );
    rx.stop();
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_made_up_event_names_share_one_metric_series() {
    let app = TestApp::new().await;
    let rx = app.spawn_ingest(&[]);
    let series = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("runwatch_webhooks_total{"))
            .count()
    };
    let (code, text) = rx.signed("push", "known", b"{}").await;
    assert_eq!(code, 202, "{text}");
    let before = series(&rx.metrics().await);
    for i in 0..200 {
        let (code, text) = rx
            .signed(&format!("made_up_{i}"), &format!("d-{i}"), b"{}")
            .await;
        assert_eq!(code, 202, "{text}");
    }
    let m = rx.metrics().await;
    assert!(
        series(&m) <= before + 1,
        "{before} series before, {} after:\n{m}",
        series(&m)
    );
    assert_eq!(
        value(
            &m,
            "runwatch_webhooks_total{provider=\"github\",event=\"other\",outcome=\"ignored\"}"
        ),
        200.0,
        "{m}"
    );
    rx.stop();
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_in_flight_finish_and_stops_accepting() {
    let app = TestApp::new().await;
    let mut rx = app.spawn_ingest(&[]);
    let body = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\nX-GitHub-Event: ping\r\nX-GitHub-Delivery: p-1\r\nX-Hub-Signature-256: {}\r\n\r\n",
        body.len(),
        github::sign(SECRET.as_bytes(), body)
    );
    let mut s = TcpStream::connect(rx.addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(&body[..10]).await.expect("write");
    procs::signal(rx.proc.pid().expect("running"), "TERM").expect("SIGTERM");
    let addr = rx.addr;
    eventually(
        Duration::from_secs(10),
        "the listener closed",
        || async move { TcpStream::connect(addr).await.is_err().then_some(()) },
    )
    .await;
    // The request begun before the signal is still served.
    s.write_all(&body[10..]).await.expect("write the rest");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("answered")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(status(&text), 200, "{text}");
    let code = rx.proc.terminate(Duration::from_secs(10)).expect("exit");
    assert_eq!(code, Some(0));
    app.cleanup().await;
}
