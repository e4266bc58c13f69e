//! OTLP protobuf, written with `prost::encoding`'s primitives: the field numbers of
//! `opentelemetry/proto/{collector/trace,trace,common,resource}/v1/*.proto`.

use std::time::{SystemTime, UNIX_EPOCH};

use prost::encoding::{WireType, encoded_len_varint, key_len};

use super::span::{Attr, Span, Value};

/// `ExportTraceServiceRequest.resource_spans`.
const REQUEST_RESOURCE_SPANS: u32 = 1;
/// `ResourceSpans.resource`, `ResourceSpans.scope_spans`.
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
/// `Resource.attributes`.
const RESOURCE_ATTRIBUTES: u32 = 1;
/// `ScopeSpans.scope`, `ScopeSpans.spans`.
const SCOPE_SPANS_SCOPE: u32 = 1;
pub(super) const SCOPE_SPANS_SPANS: u32 = 2;
/// `InstrumentationScope.name`, `.version`.
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;
/// `Span`'s fields.
const TRACE_ID: u32 = 1;
const SPAN_ID: u32 = 2;
const TRACE_STATE: u32 = 3;
const PARENT_SPAN_ID: u32 = 4;
const NAME: u32 = 5;
const KIND: u32 = 6;
const START: u32 = 7;
const END: u32 = 8;
const ATTRIBUTES: u32 = 9;
const STATUS: u32 = 15;
const FLAGS: u32 = 16;
/// `Status.message`, `Status.code` (`STATUS_CODE_ERROR` = 2).
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;
const STATUS_CODE_ERROR: u64 = 2;
/// `SpanFlags`: the context's remote-ness is known, and the parent is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;
/// `KeyValue.key`, `.value`.
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;
/// `AnyValue.string_value`, `.int_value`, `.array_value`; `ArrayValue.values`.
const ANY_STRING: u32 = 1;
const ANY_INT: u32 = 3;
const ANY_ARRAY: u32 = 5;
const ARRAY_VALUES: u32 = 1;

/// The length of a length-delimited field whose content is `len` bytes.
pub(super) fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A varint, byte by byte into `buf` (prost's `encode_varint` goes through `BufMut`,
/// a call and a slice copy per byte: ~800 instructions a span more, measured).
#[inline]
fn encode_varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn encode_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    encode_varint(u64::from((tag << 3) | wire_type as u32), buf);
}

/// A length-delimited field's key and length (its content follows).
pub(super) fn put_len(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_len(buf, tag, bytes.len());
    buf.extend_from_slice(bytes);
}

fn put_fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(v, buf);
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn any_str_len(s: &str) -> usize {
    field_len(ANY_STRING, s.len())
}

fn any_int_len(v: i64) -> usize {
    key_len(ANY_INT) + encoded_len_varint(v as u64)
}

/// The content length of an `AnyValue`.
fn value_len(v: &Value<'_>) -> usize {
    match v {
        Value::Str(s) => any_str_len(s),
        Value::Int(i) => any_int_len(*i),
        Value::Strs(v) => field_len(ANY_ARRAY, strs_len(v)),
        Value::Ints(v) => field_len(ANY_ARRAY, ints_len(v)),
    }
}

/// The content length of an `ArrayValue` of strings.
fn strs_len(v: &[String]) -> usize {
    v.iter()
        .map(|s| field_len(ARRAY_VALUES, any_str_len(s)))
        .sum()
}

fn ints_len(v: &[i64]) -> usize {
    v.iter()
        .map(|i| field_len(ARRAY_VALUES, any_int_len(*i)))
        .sum()
}

fn value(buf: &mut Vec<u8>, v: &Value<'_>) {
    match v {
        Value::Str(s) => put_bytes(buf, ANY_STRING, s.as_bytes()),
        Value::Int(i) => put_varint(buf, ANY_INT, *i as u64),
        Value::Strs(v) => {
            put_len(buf, ANY_ARRAY, strs_len(v));
            for s in v {
                put_len(buf, ARRAY_VALUES, any_str_len(s));
                put_bytes(buf, ANY_STRING, s.as_bytes());
            }
        }
        Value::Ints(v) => {
            put_len(buf, ANY_ARRAY, ints_len(v));
            for i in v {
                put_len(buf, ARRAY_VALUES, any_int_len(*i));
                put_varint(buf, ANY_INT, *i as u64);
            }
        }
    }
}

/// The content length of a `KeyValue`.
fn attr_len(a: &Attr<'_>) -> usize {
    field_len(KV_KEY, a.key.len()) + field_len(KV_VALUE, value_len(&a.value))
}

/// A repeated `KeyValue` field entry.
fn attr(buf: &mut Vec<u8>, tag: u32, a: &Attr<'_>) {
    put_len(buf, tag, attr_len(a));
    put_bytes(buf, KV_KEY, a.key.as_bytes());
    put_len(buf, KV_VALUE, value_len(&a.value));
    value(buf, &a.value);
}

fn status_len(message: &str) -> usize {
    field_len(STATUS_MESSAGE, message.len())
        + key_len(STATUS_CODE)
        + encoded_len_varint(STATUS_CODE_ERROR)
}

fn state<'a>(s: &Span<'a>) -> &'a str {
    s.context.state.as_deref().unwrap_or_default()
}

/// The content length of a `Span` message.
pub(super) fn span_len(s: &Span<'_>) -> usize {
    let mut n = field_len(TRACE_ID, 16) + field_len(SPAN_ID, 8);
    let state = state(s);
    if !state.is_empty() {
        n += field_len(TRACE_STATE, state.len());
    }
    if s.parent.is_some() {
        n += field_len(PARENT_SPAN_ID, 8);
    }
    n += field_len(NAME, s.name.len());
    n += key_len(KIND) + 1;
    n += 2 * (key_len(START) + 8);
    n += s
        .attributes
        .iter()
        .map(|a| field_len(ATTRIBUTES, attr_len(a)))
        .sum::<usize>();
    if let Some(e) = &s.error {
        n += field_len(STATUS, status_len(e));
    }
    n + key_len(FLAGS) + 4
}

/// A `Span` message's content (its key and length are the caller's).
pub(super) fn span(s: &Span<'_>, buf: &mut Vec<u8>) {
    put_bytes(buf, TRACE_ID, &s.context.trace_id.to_be_bytes());
    put_bytes(buf, SPAN_ID, &s.context.span_id.to_be_bytes());
    let state = state(s);
    if !state.is_empty() {
        put_bytes(buf, TRACE_STATE, state.as_bytes());
    }
    if let Some(p) = s.parent {
        put_bytes(buf, PARENT_SPAN_ID, &p.to_be_bytes());
    }
    put_bytes(buf, NAME, s.name.as_bytes());
    put_varint(buf, KIND, s.kind as u64);
    put_fixed64(buf, START, nanos(s.start));
    put_fixed64(buf, END, nanos(s.end));
    for a in &s.attributes {
        attr(buf, ATTRIBUTES, a);
    }
    if let Some(e) = &s.error {
        put_len(buf, STATUS, status_len(e));
        put_bytes(buf, STATUS_MESSAGE, e.as_bytes());
        put_varint(buf, STATUS_CODE, STATUS_CODE_ERROR);
    }
    let mut flags = u32::from(s.context.flags) | HAS_IS_REMOTE;
    if s.parent.is_some() {
        flags |= IS_REMOTE;
    }
    encode_key(FLAGS, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&flags.to_le_bytes());
}

/// The fixed part of every request: the `Resource` field and the `InstrumentationScope`
/// field, encoded once.
pub(super) struct Envelope {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl Envelope {
    pub(super) fn new(service: &str, version: &'static str) -> Envelope {
        let attrs = [
            Attr::str("service.name", service.to_string()),
            Attr::str("service.version", version),
        ];
        let mut content = Vec::new();
        for a in &attrs {
            attr(&mut content, RESOURCE_ATTRIBUTES, a);
        }
        let mut resource = Vec::new();
        put_bytes(&mut resource, RESOURCE_SPANS_RESOURCE, &content);
        let mut content = Vec::new();
        put_bytes(&mut content, SCOPE_NAME, b"runwatch");
        put_bytes(&mut content, SCOPE_VERSION, version.as_bytes());
        let mut scope = Vec::new();
        put_bytes(&mut scope, SCOPE_SPANS_SCOPE, &content);
        Envelope { resource, scope }
    }

    /// An `ExportTraceServiceRequest` of `spans` (`ScopeSpans.spans` entries).
    pub(super) fn wrap(&self, spans: &[u8]) -> Vec<u8> {
        let scope_spans = self.scope.len() + spans.len();
        let resource_spans =
            self.resource.len() + field_len(RESOURCE_SPANS_SCOPE_SPANS, scope_spans);
        let mut out = Vec::with_capacity(field_len(REQUEST_RESOURCE_SPANS, resource_spans));
        put_len(&mut out, REQUEST_RESOURCE_SPANS, resource_spans);
        out.extend_from_slice(&self.resource);
        put_len(&mut out, RESOURCE_SPANS_SCOPE_SPANS, scope_spans);
        out.extend_from_slice(&self.scope);
        out.extend_from_slice(spans);
        out
    }
}
