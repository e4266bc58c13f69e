//! Decoding and validating one message: size first, then JSON, schema, fields and limits.

use chrono::{DateTime, NaiveDate, Utc};

use super::rejection::{RejectCode, Rejection};
use super::{Event, Limits, MAX_PR_NUMBER, SCHEMA, Status};

/// Decodes and validates one message. The size limit is checked before parsing, so all
/// further work and memory is bounded by `limits.max_message_bytes`; JSON nested deeper
/// than serde_json's recursion limit (128; its `unbounded_depth` feature must stay off) is
/// rejected as `not_json` rather than overflowing the stack; invalid UTF-8 and lone
/// surrogates are `not_json`; numbers out of range are rejected, never wrapped. Never
/// panics (property-tested in `tests/api/decode_fuzz.rs`).
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Event, Rejection> {
    if bytes.len() > limits.max_message_bytes {
        return Err(Rejection::new(
            RejectCode::Oversize,
            format!(
                "message is {} bytes, the limit is {}",
                bytes.len(),
                limits.max_message_bytes
            ),
        ));
    }
    let event: Event = serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Io | Category::Syntax | Category::Eof => {
                Rejection::new(RejectCode::NotJson, format!("not JSON: {e}"))
            }
            Category::Data => {
                // A JSON value that is not an object at all is "not JSON" for our purposes.
                if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                    Rejection::new(RejectCode::NotJson, format!("not a JSON object: {e}"))
                } else if e.to_string().contains("field `schema`") {
                    Rejection::new(RejectCode::Schema, format!("{e}"))
                } else {
                    Rejection::new(RejectCode::Invalid, format!("{e}"))
                }
            }
        }
    })?;
    validate(event, limits)
}

fn validate(mut event: Event, limits: &Limits) -> Result<Event, Rejection> {
    if event.schema != SCHEMA {
        return Err(Rejection::new(
            RejectCode::Schema,
            format!("schema is {:?}, expected {SCHEMA:?}", event.schema),
        ));
    }
    check_required(&[
        ("event_id", &event.event_id),
        ("repository.owner", &event.repository.owner),
        ("repository.name", &event.repository.name),
        ("commit_sha", &event.commit_sha),
        ("run.id", &event.run.id),
        ("run.workflow", &event.run.workflow),
    ])?;
    check_strings(
        &[
            ("event_id", Some(&event.event_id)),
            ("repository.owner", Some(&event.repository.owner)),
            ("repository.name", Some(&event.repository.name)),
            ("repository.id", event.repository.id.as_ref()),
            ("commit_sha", Some(&event.commit_sha)),
            ("branch", event.branch.as_ref()),
            ("run.id", Some(&event.run.id)),
            ("run.workflow", Some(&event.run.workflow)),
            ("run.url", event.run.url.as_ref()),
        ],
        limits,
    )?;
    check_event_id(&event.event_id)?;
    check_no_controls(&[
        ("repository.owner", Some(&event.repository.owner)),
        ("repository.name", Some(&event.repository.name)),
        ("repository.id", event.repository.id.as_ref()),
        ("commit_sha", Some(&event.commit_sha)),
        ("branch", event.branch.as_ref()),
        ("run.id", Some(&event.run.id)),
        ("run.workflow", Some(&event.run.workflow)),
    ])?;
    check_time("run.updated_at", event.run.updated_at)?;
    if event.run.attempt == 0 {
        return Err(Rejection::new(
            RejectCode::Invalid,
            "run.attempt must be at least 1",
        ));
    }
    if let Some(pr) = event.pr_number {
        check_pr_number(pr)?;
    }
    match (event.run.status, event.run.conclusion) {
        (Status::Completed, None) => {
            return Err(Rejection::new(
                RejectCode::Invalid,
                "run.conclusion is required when run.status is completed",
            ));
        }
        // A conclusion on a run that has not completed means nothing; drop it.
        (Status::Queued | Status::InProgress, Some(_)) => event.run.conclusion = None,
        _ => {}
    }
    check_metadata(&event.metadata, limits)?;
    Ok(event)
}

// Field checks shared by the input schemas (workflow runs here, pull request links in
// `pull_request`).

/// Each field must hold more than white space.
pub(crate) fn check_required(fields: &[(&str, &String)]) -> Result<(), Rejection> {
    for (field, value) in fields {
        if value.trim().is_empty() {
            return Err(Rejection::new(
                RejectCode::Invalid,
                format!("{field} must not be empty"),
            ));
        }
    }
    Ok(())
}

/// No NUL character (Postgres text cannot hold it), at most `limits.max_string_bytes`.
pub(crate) fn check_strings(
    fields: &[(&str, Option<&String>)],
    limits: &Limits,
) -> Result<(), Rejection> {
    for (field, value) in fields {
        let Some(v) = value else { continue };
        if v.contains('\0') {
            return Err(Rejection::new(
                RejectCode::Invalid,
                format!("{field} contains a NUL character"),
            ));
        }
        if v.len() > limits.max_string_bytes {
            return Err(Rejection::new(
                RejectCode::Oversize,
                format!(
                    "{field} is {} bytes, the limit is {}",
                    v.len(),
                    limits.max_string_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// `event_id` becomes the Nats-Msg-Id header, where control characters are not allowed.
pub(crate) fn check_event_id(id: &str) -> Result<(), Rejection> {
    if id.chars().any(char::is_control) {
        return Err(Rejection::new(
            RejectCode::Invalid,
            "event_id contains a control character",
        ));
    }
    Ok(())
}

/// Identifiers that are printed (logs, `groups list`, `explain`) and never hold more than
/// one line: a control character (C0, DEL, C1: ESC, CR, LF, TAB, ...) in one is `invalid`,
/// so it can neither forge a log line nor drive a terminal.
pub(crate) fn check_no_controls(fields: &[(&str, Option<&String>)]) -> Result<(), Rejection> {
    for (field, value) in fields {
        let Some(v) = value else { continue };
        if let Some(c) = v.chars().find(|c| c.is_control()) {
            return Err(Rejection::new(
                RejectCode::Invalid,
                format!(
                    "{field} contains the control character U+{:04X}",
                    u32::from(c)
                ),
            ));
        }
    }
    Ok(())
}

/// The earliest time an input may carry: 0001-01-01T00:00:00Z.
pub fn min_time() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::UNIX_EPOCH, |t| t.and_utc())
}

/// The latest time an input may carry: 9999-12-31T23:59:59.999999999Z.
pub fn max_time() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(10000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::UNIX_EPOCH, |t| {
            t.and_utc() - chrono::TimeDelta::nanoseconds(1)
        })
}

/// A time, in UTC, within years 0001 to 9999: what RFC 3339 writes with four digits (and so
/// what the trigger schema's `date-time` and most consumers' date types read), and well
/// inside what Postgres `timestamptz` holds (4713 BC to 294276 AD). A time outside is
/// `invalid`, so the worker dead-letters it at its first delivery instead of failing its
/// transaction until `max_deliver`.
pub(crate) fn check_time(field: &str, t: DateTime<Utc>) -> Result<(), Rejection> {
    if t < min_time() || t > max_time() {
        return Err(Rejection::new(
            RejectCode::Invalid,
            format!(
                "{field} {} is outside 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999999999Z",
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
        ));
    }
    Ok(())
}

/// At least 1, and storable: the group key keeps it as a signed 64-bit integer, so a
/// larger one cannot be kept faithfully, and clamping would put every such pull request
/// into one group.
pub(crate) fn check_pr_number(pr: u64) -> Result<(), Rejection> {
    if pr == 0 {
        return Err(Rejection::new(
            RejectCode::Invalid,
            "pr_number must be at least 1",
        ));
    }
    if pr > MAX_PR_NUMBER {
        return Err(Rejection::new(
            RejectCode::Invalid,
            format!("pr_number {pr} is above {MAX_PR_NUMBER}, the largest that can be stored"),
        ));
    }
    Ok(())
}

/// Absent, or an object of at most `limits.max_metadata_bytes`.
pub(crate) fn check_metadata(
    metadata: &serde_json::Value,
    limits: &Limits,
) -> Result<(), Rejection> {
    if metadata.is_null() {
        return Ok(());
    }
    if !metadata.is_object() {
        return Err(Rejection::new(
            RejectCode::Invalid,
            "metadata must be an object",
        ));
    }
    let size = serde_json::to_vec(metadata).map_or(usize::MAX, |v| v.len());
    if size > limits.max_metadata_bytes {
        return Err(Rejection::new(
            RejectCode::Oversize,
            format!(
                "metadata is {size} bytes, the limit is {}",
                limits.max_metadata_bytes
            ),
        ));
    }
    Ok(())
}
