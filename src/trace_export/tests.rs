use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use std::time::UNIX_EPOCH;

fn decode(spans: &[Span<'_>]) -> ExportTraceServiceRequest {
    let mut buf = Vec::new();
    for s in spans {
        let len = encode::span_len(s);
        let before = buf.len();
        encode::put_len(&mut buf, encode::SCOPE_SPANS_SPANS, len);
        encode::span(s, &mut buf);
        assert_eq!(
            buf.len() - before,
            encode::field_len(encode::SCOPE_SPANS_SPANS, len)
        );
    }
    let body = encode::Envelope::new("runwatch", "1.2.3").wrap(&buf);
    ExportTraceServiceRequest::decode(body.as_slice()).expect("decodes")
}

#[test]
fn spans_decode_with_the_official_types() {
    let ctx = TraceContext {
        trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
        span_id: 0x00f0_67aa_0ba9_02b7,
        flags: 1,
        state: Some("congo=t61rcWkgMzE".into()),
    };
    let root = TraceContext {
        state: None,
        ..ctx.clone()
    };
    let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
    let long = "x".repeat(300);
    let spans = [
        Span {
            name: "runwatch.decide",
            kind: Kind::Consumer,
            context: &ctx,
            parent: Some(7),
            start,
            end: start + Duration::from_millis(3),
            attributes: vec![
                Attr::uint("runwatch.stream_sequence", 42),
                Attr::str("runwatch.event_id", long.clone()),
                Attr::str("runwatch.outcome", "applied"),
                Attr::strs("runwatch.trigger_ids", vec!["a".into(), long.clone()]),
                Attr::strs("runwatch.empty", Vec::new()),
                Attr::uints("runwatch.stream_sequences", [1, u64::MAX]),
                Attr::int("negative", -5),
            ],
            error: Some("rejected: bad".into()),
        },
        Span {
            name: "runwatch.timer",
            kind: Kind::Internal,
            context: &root,
            parent: None,
            start,
            end: start,
            attributes: Vec::new(),
            error: None,
        },
    ];
    let request = decode(&spans);
    assert_eq!(request.resource_spans.len(), 1);
    let rs = &request.resource_spans[0];
    let resource = rs.resource.as_ref().expect("resource");
    let kv = |k: &str| {
        resource
            .attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(
        kv("service.name"),
        Some(any_value::Value::StringValue("runwatch".into()))
    );
    assert_eq!(
        kv("service.version"),
        Some(any_value::Value::StringValue("1.2.3".into()))
    );
    assert_eq!(rs.scope_spans.len(), 1);
    let ss = &rs.scope_spans[0];
    let scope = ss.scope.as_ref().expect("scope");
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("runwatch", "1.2.3")
    );
    assert_eq!(ss.spans.len(), 2);
    let s = &ss.spans[0];
    assert_eq!(s.trace_id, ctx.trace_id.to_be_bytes());
    assert_eq!(s.span_id, ctx.span_id.to_be_bytes());
    assert_eq!(s.parent_span_id, 7u64.to_be_bytes());
    assert_eq!(s.trace_state, "congo=t61rcWkgMzE");
    assert_eq!(s.name, "runwatch.decide");
    assert_eq!(s.kind, 5);
    assert_eq!(s.start_time_unix_nano, 1_700_000_000_123_456_789);
    assert_eq!(s.end_time_unix_nano, 1_700_000_000_126_456_789);
    assert_eq!(s.flags, 0x301);
    let status = s.status.as_ref().expect("status");
    assert_eq!((status.code, status.message.as_str()), (2, "rejected: bad"));
    let attrs: Vec<(String, Option<any_value::Value>)> = s
        .attributes
        .iter()
        .map(|a| (a.key.clone(), a.value.clone().and_then(|v| v.value)))
        .collect();
    let strs = |v: &[&str]| {
        any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
            values: v
                .iter()
                .map(|s| opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(any_value::Value::StringValue(s.to_string())),
                })
                .collect(),
        })
    };
    let ints = |v: &[i64]| {
        any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
            values: v
                .iter()
                .map(|i| opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(any_value::Value::IntValue(*i)),
                })
                .collect(),
        })
    };
    assert_eq!(
        attrs,
        vec![
            (
                "runwatch.stream_sequence".into(),
                Some(any_value::Value::IntValue(42))
            ),
            (
                "runwatch.event_id".into(),
                Some(any_value::Value::StringValue(long.clone()))
            ),
            (
                "runwatch.outcome".into(),
                Some(any_value::Value::StringValue("applied".into()))
            ),
            ("runwatch.trigger_ids".into(), Some(strs(&["a", &long]))),
            ("runwatch.empty".into(), Some(strs(&[]))),
            (
                "runwatch.stream_sequences".into(),
                Some(ints(&[1, i64::MAX]))
            ),
            ("negative".into(), Some(any_value::Value::IntValue(-5))),
        ]
    );
    let t = &ss.spans[1];
    assert!(t.parent_span_id.is_empty());
    assert!(t.trace_state.is_empty());
    assert!(t.status.is_none());
    assert_eq!((t.kind, t.flags), (1, 0x101));
}

#[test]
fn otlp_headers_are_parsed_and_percent_decoded() {
    let map = headers(
        OTEL_EXPORTER_OTLP_HEADERS,
        "x-otlp-key=k1, authorization=Basic%20YWJj ,bad header=v,,x",
    );
    assert_eq!(
        map.get("x-otlp-key").and_then(|v| v.to_str().ok()),
        Some("k1")
    );
    assert_eq!(
        map.get("authorization").and_then(|v| v.to_str().ok()),
        Some("Basic YWJj")
    );
    assert_eq!(map.len(), 2);
    assert!(headers(OTEL_EXPORTER_OTLP_TRACES_HEADERS, "").is_empty());
}

/// A full queue drops the span and counts it; the spans queued before are kept, and a
/// span fits again once the queue is taken.
#[test]
fn a_full_queue_drops_the_span_and_counts_it() {
    let e = Exporter::new(2, 512, EXPORT_TIMEOUT);
    let ctx = TraceContext {
        trace_id: 1,
        span_id: 2,
        flags: 1,
        state: None,
    };
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let span = Span {
        name: "runwatch.decide",
        kind: Kind::Consumer,
        context: &ctx,
        parent: None,
        start,
        end: start,
        attributes: vec![Attr::uint("runwatch.stream_sequence", 1)],
        error: None,
    };
    assert!(e.push(&span));
    assert!(e.push(&span));
    assert!(!e.push(&span));
    assert_eq!(e.dropped_full.load(Ordering::Relaxed), 1);
    let queued = {
        let mut q = e.queue.lock().unwrap();
        q.spans = 0;
        std::mem::take(&mut q.bytes)
    };
    let request = ExportTraceServiceRequest::decode(
        encode::Envelope::new("runwatch", "1")
            .wrap(&queued)
            .as_slice(),
    )
    .expect("decodes");
    assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 2);
    assert!(e.push(&span));
}

/// `Retry-After` replaces the backoff's wait, at most `MAX_RETRY_AFTER`; with no attempt
/// left there is no wait whatever the answer says.
#[test]
fn retry_after_sets_the_wait_within_its_bound() {
    let busy = |secs: Option<u64>| send::SendError::Status {
        status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
        retry_after: secs.map(Duration::from_secs),
    };
    let planned = Some(Duration::from_millis(200));
    assert_eq!(busy(Some(3)).wait(planned), Some(Duration::from_secs(3)));
    assert_eq!(busy(Some(3_600)).wait(planned), Some(send::MAX_RETRY_AFTER));
    assert_eq!(busy(None).wait(planned), planned);
    assert_eq!(busy(Some(3)).wait(None), None);
}

/// The flush task ending on its own (here: a panic, with the task's drop guard) is an error
/// for the supervisor; ending because shutdown asked, or `stop`, is not.
#[tokio::test]
async fn a_flush_task_that_ends_unasked_is_reported() {
    let stop = tokio_util::sync::CancellationToken::new();
    let e: &'static Exporter = Box::leak(Box::new(Exporter::new(8, 8, EXPORT_TIMEOUT)));
    let guard = e.ended.clone();
    let task = tokio::spawn(async move {
        let _ended = guard.drop_guard();
        panic!("the flush task fails");
    });
    assert!(task.await.is_err(), "the task panicked");
    let reason = e.watch(&stop).await.expect_err("reported");
    assert!(reason.contains("flush task ended"), "{reason}");

    let e: &'static Exporter = Box::leak(Box::new(Exporter::new(8, 8, EXPORT_TIMEOUT)));
    e.stopping.store(true, Ordering::Release);
    e.ended.cancel();
    assert_eq!(e.watch(&stop).await, Ok(()), "ended at shutdown");

    let e: &'static Exporter = Box::leak(Box::new(Exporter::new(8, 8, EXPORT_TIMEOUT)));
    stop.cancel();
    assert_eq!(e.watch(&stop).await, Ok(()), "stopped");
}
