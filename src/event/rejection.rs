//! Why an input was refused: a stable code and a bounded, printable detail.

use std::fmt;

/// Why an input was refused. `code` is stable (metrics, dead-letter subjects); `detail` is
/// for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Rejection {
    pub code: RejectCode,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// The bytes are not a JSON object.
    NotJson,
    /// `schema` is not `runwatch.workflow_run.v1`.
    Schema,
    /// A required field is missing, has the wrong type or a value out of its set.
    Invalid,
    /// The message, its metadata or one of its strings is over the limit.
    Oversize,
    /// The event would make its group hold more runs than `limits.max_runs_per_group`.
    TooManyRuns,
    /// The stored state of the event's group (or streak) cannot be decoded: the row is set
    /// aside and its events wait in the dead-letter stream until it is repaired.
    CorruptState,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::NotJson => "not_json",
            RejectCode::Schema => "schema",
            RejectCode::Invalid => "invalid",
            RejectCode::Oversize => "oversize",
            RejectCode::TooManyRuns => "too_many_runs",
            RejectCode::CorruptState => "corrupt_state",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest `detail` kept, in bytes: parser messages quote the offending value, which a
/// hostile producer controls, and the detail goes into logs and a dead-letter header.
pub const MAX_DETAIL_BYTES: usize = 512;

impl Rejection {
    /// A rejection; a detail over [`MAX_DETAIL_BYTES`] is cut (on a character boundary) and
    /// ends with `…`.
    /// Control characters in it (a parser quoting a hostile value) are escaped
    /// ([`crate::printable`]): the detail is printed and logged.
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let mut detail = match crate::printable::escape_controls(&detail) {
            std::borrow::Cow::Borrowed(_) => detail,
            std::borrow::Cow::Owned(escaped) => escaped,
        };
        if detail.len() > MAX_DETAIL_BYTES {
            let mut end = MAX_DETAIL_BYTES - '…'.len_utf8();
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
            detail.push('…');
        }
        Rejection { code, detail }
    }
}
