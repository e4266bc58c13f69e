//! runwatch's span as it is exported: its kind, attributes and times.

use std::borrow::Cow;
use std::time::SystemTime;

use crate::trace_context::TraceContext;

/// A span's kind (`opentelemetry.proto.trace.v1.Span.SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Consumer = 5,
}

/// An attribute value (a string may be borrowed from the work the span describes).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Strs(Vec<String>),
    Ints(Vec<i64>),
}

/// A span attribute: a fixed key and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr<'a> {
    pub key: &'static str,
    pub value: Value<'a>,
}

impl<'a> Attr<'a> {
    /// A string attribute (a borrowed string is not copied).
    pub fn str(key: &'static str, v: impl Into<Cow<'a, str>>) -> Attr<'a> {
        Attr {
            key,
            value: Value::Str(v.into()),
        }
    }

    /// An integer attribute.
    pub fn int(key: &'static str, v: i64) -> Attr<'a> {
        Attr {
            key,
            value: Value::Int(v),
        }
    }

    /// An integer attribute from an unsigned value (saturated: sequences never reach 2^63).
    pub fn uint(key: &'static str, v: u64) -> Attr<'a> {
        Attr::int(key, i64::try_from(v).unwrap_or(i64::MAX))
    }

    /// An array of strings.
    pub fn strs(key: &'static str, v: Vec<String>) -> Attr<'a> {
        Attr {
            key,
            value: Value::Strs(v),
        }
    }

    /// An array of integers from unsigned values (saturated).
    pub fn uints(key: &'static str, v: impl IntoIterator<Item = u64>) -> Attr<'a> {
        Attr {
            key,
            value: Value::Ints(
                v.into_iter()
                    .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
                    .collect(),
            ),
        }
    }
}

/// A finished span, as runwatch records it.
pub struct Span<'a> {
    pub name: &'static str,
    pub kind: Kind,
    /// The span's own context (its span id is the one propagated to its children).
    pub context: &'a TraceContext,
    /// The parent's span id, `None` for the root of a trace.
    pub parent: Option<u64>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<Attr<'a>>,
    /// Set when the work failed: the span's status is Error with this description.
    pub error: Option<String>,
}
