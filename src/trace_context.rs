//! W3C trace context (<https://www.w3.org/TR/trace-context/>): the `traceparent` and
//! `tracestate` headers that follow one webhook from `runwatch ingest` through the events
//! message, the worker's decision and the trigger message to the endpoint `runwatch
//! deliver` calls (docs/design.md "Trace context"). Parsing and propagation only; the
//! spans are exported by [`crate::trace_export`] when an OTLP endpoint is configured.
//!
//! A context names a span: `trace_id` is the trace, `span_id` the span a receiver of the
//! context takes as its parent. Whoever continues a trace makes a [`TraceContext::child`]
//! (same trace, new span id) and passes that on.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::{SmallRng, SysRng};
use rand::{RngExt, SeedableRng};

/// The W3C header names (lowercase, as written on NATS and HTTP).
pub const TRACEPARENT: &str = "traceparent";
/// See [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// The longest `tracestate` kept (W3C: at most 32 list members; 512 characters is the
/// length every vendor must propagate). A longer or non-printable one is dropped, the
/// `traceparent` kept.
pub const MAX_TRACESTATE: usize = 512;

/// The `sampled` bit of `trace-flags`.
const SAMPLED: u8 = 0x01;

/// A new trace is sampled when the low 64 bits of its (random) trace id are at most this;
/// `u64::MAX`: every trace (a sample ratio of 1, the default). Set once at start-up by
/// [`set_sample_ratio`].
static SAMPLE_THRESHOLD: AtomicU64 = AtomicU64::new(u64::MAX);

/// The share of new traces runwatch samples (`telemetry.trace_sample_ratio`, in [0, 1]):
/// the trace-id ratio sampler of OpenTelemetry, applied where runwatch starts a trace. A
/// context that came in keeps its `sampled` flag (parent-based), so one trace is recorded
/// by every hop or by none.
pub fn set_sample_ratio(ratio: f64) {
    SAMPLE_THRESHOLD.store(threshold(ratio), Ordering::Relaxed);
}

/// The sampling threshold of a ratio: 0 samples nothing, `u64::MAX` everything.
fn threshold(ratio: f64) -> u64 {
    if ratio.is_nan() || ratio <= 0.0 {
        0
    } else if ratio >= 1.0 {
        u64::MAX
    } else {
        // In (0, 2^64): the float-to-int cast saturates, so this cannot overflow.
        (ratio * 18_446_744_073_709_551_616.0) as u64
    }
}

/// Whether a new trace with this id is sampled under `threshold`: by the low 64 bits of
/// the (random, so uniform) id, as OpenTelemetry's trace-id ratio sampler does.
fn sampled_under(threshold: u64, trace_id: u128) -> bool {
    threshold == u64::MAX || (threshold > 0 && (trace_id as u64) < threshold)
}

/// Whether a new trace with this id is sampled (see [`set_sample_ratio`]).
fn sample(trace_id: u128) -> bool {
    sampled_under(SAMPLE_THRESHOLD.load(Ordering::Relaxed), trace_id)
}

/// One span's W3C trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, never zero.
    pub trace_id: u128,
    /// 8 bytes, never zero: the span a receiver takes as its parent.
    pub span_id: u64,
    /// `trace-flags` (bit 0: sampled).
    pub flags: u8,
    /// `tracestate`, carried as it came (vendors' entries; runwatch adds none).
    pub state: Option<String>,
}

impl TraceContext {
    /// Parses a `traceparent` (and its `tracestate`). `None` for anything that is not a
    /// valid version-00 value (or a later version's first four fields, as the W3C
    /// specification asks): wrong length, uppercase or non-hex digits, an all-zero trace or
    /// parent id, version `ff`. A caller then starts a new trace: a malformed header from
    /// outside is ignored, never an error.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let b = traceparent.as_bytes();
        if b.len() < 55 {
            return None;
        }
        let version = hex_field(&b[0..2])?;
        if version == 0xff
            || (version == 0 && b.len() != 55)
            || (version > 0 && b.len() > 55 && b[55] != b'-')
        {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let trace_id = hex_field(&b[3..35])?;
        let span_id = u64::try_from(hex_field(&b[36..52])?).ok()?;
        let flags = u8::try_from(hex_field(&b[53..55])?).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        let state = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE)
            .filter(|s| s.bytes().all(|c| (0x20..0x7f).contains(&c)))
            .map(str::to_string);
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
            state,
        })
    }

    /// A new trace (random ids; sampled by the configured ratio, see
    /// [`set_sample_ratio`]): where no valid context came in.
    pub fn root() -> TraceContext {
        let trace_id = new_trace_id();
        TraceContext {
            trace_id,
            span_id: new_span_id(),
            flags: if sample(trace_id) { SAMPLED } else { 0 },
            state: None,
        }
    }

    /// A span of the same trace whose parent is `self`: a new span id, the same flags and
    /// `tracestate`.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: new_span_id(),
            flags: self.flags,
            state: self.state.clone(),
        }
    }

    /// `child()` of `parent`, or a new trace when there is none.
    pub fn child_of(parent: Option<&TraceContext>) -> TraceContext {
        parent.map_or_else(TraceContext::root, TraceContext::child)
    }

    /// The `traceparent` header value: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// The trace id as 32 lowercase hex digits (the `trace_id` field of log lines).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The trace id for a log field: formatted only when the line is written.
    pub fn trace_id_field(&self) -> TraceIdHex {
        TraceIdHex(self.trace_id)
    }

    /// Whether the trace is sampled (only sampled spans are exported).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The context of an HTTP request's headers, if it carries a valid one.
    pub fn from_http(headers: &axum::http::HeaderMap) -> Option<TraceContext> {
        let parent = headers.get(TRACEPARENT)?.to_str().ok()?;
        let state = headers.get(TRACESTATE).and_then(|v| v.to_str().ok());
        TraceContext::parse(parent, state)
    }

    /// The context of a NATS message's headers, if it carries a valid one.
    pub fn from_nats(headers: Option<&async_nats::HeaderMap>) -> Option<TraceContext> {
        let headers = headers?;
        let parent = headers.get(TRACEPARENT)?.as_str();
        let state = headers.get(TRACESTATE).map(|v| v.as_str());
        TraceContext::parse(parent, state)
    }

    /// The header pairs to write (`tracestate` only when there is one).
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        std::iter::once((TRACEPARENT, self.traceparent()))
            .chain(self.state.iter().map(|s| (TRACESTATE, s.clone())))
    }
}

/// A trace id that displays as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy)]
pub struct TraceIdHex(pub u128);

impl std::fmt::Display for TraceIdHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A hex field of the `traceparent`: lowercase digits only (the specification forbids
/// uppercase), at most 32 of them.
fn hex_field(b: &[u8]) -> Option<u128> {
    let mut v: u128 = 0;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = v.checked_mul(16)?.checked_add(u128::from(d))?;
    }
    Some(v)
}

thread_local! {
    /// Each thread's id generator: xoshiro256++ (fast, not cryptographic, as the
    /// OpenTelemetry SDKs' random id generators), seeded from the operating system.
    static IDS: RefCell<SmallRng> = RefCell::new(seeded());
}

/// A generator seeded by the operating system; should that fail, by the clock and a
/// per-process random hash key (ids stay unique in practice, only less unpredictable).
fn seeded() -> SmallRng {
    SmallRng::try_from_rng(&mut SysRng).unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        SmallRng::seed_from_u64(h.finish())
    })
}

fn new_trace_id() -> u128 {
    loop {
        let id = IDS.with(|r| r.borrow_mut().random::<u128>());
        if id != 0 {
            return id;
        }
    }
}

fn new_span_id() -> u64 {
    loop {
        let id = IDS.with(|r| r.borrow_mut().random::<u64>());
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_sample_ratio_samples_that_share_of_new_traces() {
        let ids: Vec<u128> = (0..20_000).map(|_| new_trace_id()).collect();
        let share = |ratio: f64| {
            let t = threshold(ratio);
            ids.iter().filter(|&&id| sampled_under(t, id)).count() as f64 / ids.len() as f64
        };
        assert_eq!(share(1.0), 1.0);
        assert_eq!(share(0.0), 0.0);
        assert_eq!(share(f64::NAN), 0.0);
        for ratio in [0.01, 0.1, 0.5, 0.9] {
            let s = share(ratio);
            assert!((s - ratio).abs() < 0.02, "ratio {ratio}: sampled {s}");
        }
        // Nested: a trace sampled at a lower ratio is sampled at every higher one.
        let (low, high) = (threshold(0.3), threshold(0.6));
        assert!(
            ids.iter()
                .all(|&id| !sampled_under(low, id) || sampled_under(high, id))
        );
    }

    #[test]
    fn a_valid_traceparent_round_trips() {
        let c = TraceContext::parse(VALID, Some("rojo=00f067aa0ba902b7")).unwrap();
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id, 0x00f0_67aa_0ba9_02b7);
        assert!(c.sampled());
        assert_eq!(c.traceparent(), VALID);
        assert_eq!(c.state.as_deref(), Some("rojo=00f067aa0ba902b7"));
        let child = c.child();
        assert_eq!(child.trace_id, c.trace_id);
        assert_ne!(child.span_id, c.span_id);
        assert_eq!(child.state, c.state);
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\u{e9}",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad:?}");
        }
        // A later version: its first four fields, anything after a dash.
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(TraceContext::parse(later, None).is_some());
    }

    #[test]
    fn a_hostile_tracestate_is_dropped_and_the_traceparent_kept() {
        let long = "a=".to_string() + &"b".repeat(MAX_TRACESTATE);
        for bad in [long.as_str(), "a=b\r\nx: y", "a=\u{1b}[31m", "   "] {
            let c = TraceContext::parse(VALID, Some(bad)).unwrap();
            assert_eq!(c.state, None, "{bad:?}");
        }
    }

    #[test]
    fn roots_are_sampled_and_distinct() {
        let (a, b) = (TraceContext::root(), TraceContext::root());
        assert!(a.sampled());
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(TraceContext::parse(&a.traceparent(), None), Some(a));
    }
}
