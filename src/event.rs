//! The normalized event, schema `runwatch.workflow_run.v1`: decoding, validation and limits.
//!
//! Unknown fields are ignored; wrong types, missing required fields and anything over the
//! size limits are rejected with a [`Rejection`] that says why.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "runwatch.workflow_run.v1";

/// Size limits on one event (DESIGN.md "Limits"); configurable under `[limits]`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_metadata_bytes: usize,
    pub max_string_bytes: usize,
    pub max_runs_per_group: usize,
    /// How far an event's `run.updated_at` may run ahead of the worker's wall clock and
    /// still move the worker's event clock (DESIGN.md "Order"): a mis-dated event still
    /// merges, but it cannot make every other group's timers due.
    #[serde(with = "humantime_serde", default = "default_max_clock_skew")]
    pub max_clock_skew: std::time::Duration,
}

fn default_max_clock_skew() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_metadata_bytes: 16 * 1024,
            max_string_bytes: 1024,
            max_runs_per_group: 500,
            max_clock_skew: default_max_clock_skew(),
        }
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Provider {
    Github,
    Gitlab,
    Bitbucket,
    AzureDevops,
    Generic,
    Buildkite,
    Circleci,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Bitbucket => "bitbucket",
            Provider::AzureDevops => "azure_devops",
            Provider::Generic => "generic",
            Provider::Buildkite => "buildkite",
            Provider::Circleci => "circleci",
        }
    }

    /// Every provider's name, comma-separated, in declaration order (for messages).
    pub fn names() -> String {
        <Provider as clap::ValueEnum>::value_variants()
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn parse(s: &str) -> Option<Provider> {
        Some(match s {
            "github" => Provider::Github,
            "gitlab" => Provider::Gitlab,
            "bitbucket" => Provider::Bitbucket,
            "azure_devops" => Provider::AzureDevops,
            "generic" => Provider::Generic,
            "buildkite" => Provider::Buildkite,
            "circleci" => Provider::Circleci,
            _ => return None,
        })
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run's status; its order is the merge's phase order: queued < in_progress < completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[serde(alias = "requested", alias = "waiting", alias = "pending")]
    Queued,
    InProgress,
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    Success,
    Failure,
    Cancelled,
    TimedOut,
    Skipped,
    Neutral,
    ActionRequired,
    StartupFailure,
    Stale,
}

impl Conclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Cancelled => "cancelled",
            Conclusion::TimedOut => "timed_out",
            Conclusion::Skipped => "skipped",
            Conclusion::Neutral => "neutral",
            Conclusion::ActionRequired => "action_required",
            Conclusion::StartupFailure => "startup_failure",
            Conclusion::Stale => "stale",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub owner: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The provider hosting the repository when it is not the event's provider (a
    /// Buildkite or CircleCI build of a GitHub or GitLab repository): the repository is then
    /// that provider's `owner/name` (`id`, the CI's own, is not used), so the build joins the
    /// groups of the host's events of the same commit (`crate::repository::RepoClaim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Provider>,
}

fn default_attempt() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    #[serde(default = "default_attempt")]
    pub attempt: u32,
    pub workflow: String,
    pub status: Status,
    #[serde(default)]
    pub conclusion: Option<Conclusion>,
    #[serde(default)]
    pub url: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// One normalized workflow-run event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema: String,
    pub event_id: String,
    pub provider: Provider,
    pub repository: Repository,
    pub commit_sha: String,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub pr_number: Option<u64>,
    pub run: Run,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
}

/// The largest `pr_number` accepted: it is stored as a signed 64-bit integer.
pub const MAX_PR_NUMBER: u64 = i64::MAX as u64;

/// The largest `run.attempt` accepted: a 32-bit unsigned integer; a larger one is refused
/// by the decoder as `invalid`, never wrapped.
pub const MAX_ATTEMPT: u32 = u32::MAX;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_has_one_name_on_the_command_line_and_in_json() {
        use clap::ValueEnum;
        for p in Provider::value_variants() {
            let name = p.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(name.as_deref(), Some(p.as_str()));
            assert_eq!(Provider::parse(p.as_str()), Some(*p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert_eq!(Provider::value_variants().len(), 7);
    }

    const GOOD: &str = r#"{"schema":"runwatch.workflow_run.v1","event_id":"e1","provider":"github",
      "repository":{"owner":"octo-org","name":"octo-repo","id":"300029405"},
      "commit_sha":"3484a3fb","branch":"feature/x","pr_number":2,
      "run":{"id":"289782451","attempt":1,"workflow":"test","status":"completed","conclusion":"failure",
      "url":"https://x","updated_at":"2020-10-05T16:33:24Z"},"metadata":{},"extra":1}"#;

    fn code(s: &str) -> RejectCode {
        decode(s.as_bytes(), &Limits::default()).unwrap_err().code
    }

    #[test]
    fn decodes_the_design_example() {
        let e = decode(GOOD.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(e.run.conclusion, Some(Conclusion::Failure));
        assert_eq!(e.pr_number, Some(2));
        assert_eq!(e.provider, Provider::Github);
    }

    #[test]
    fn rejections_have_reasons() {
        assert_eq!(code("not json"), RejectCode::NotJson);
        assert_eq!(code("[1,2]"), RejectCode::NotJson);
        assert_eq!(
            code(&GOOD.replace("workflow_run.v1", "v0")),
            RejectCode::Schema
        );
        assert_eq!(
            code(&GOOD.replace("\"pr_number\":2", "\"pr_number\":\"2\"")),
            RejectCode::Invalid
        );
        assert_eq!(
            code(&GOOD.replace("\"conclusion\":\"failure\",", "")),
            RejectCode::Invalid
        );
        assert_eq!(
            code(&GOOD.replace("github", "sourceforge")),
            RejectCode::Invalid
        );
        assert_eq!(
            code(&GOOD.replace("\"event_id\":\"e1\",", "")),
            RejectCode::Invalid
        );
        let long = "x".repeat(2000);
        assert_eq!(
            code(&GOOD.replace("feature/x", &long)),
            RejectCode::Oversize
        );
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000));
        assert_eq!(code(&big), RejectCode::Oversize);
    }

    #[test]
    fn times_outside_years_0001_to_9999_are_invalid() {
        let at = |t: &str| GOOD.replace("2020-10-05T16:33:24Z", t);
        for bad in [
            "-5000-01-01T00:00:00Z",
            "+10000-01-01T00:00:00Z",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:30:00-01:00",
        ] {
            let r = decode(at(bad).as_bytes(), &Limits::default()).unwrap_err();
            assert_eq!(r.code, RejectCode::Invalid, "{bad}: {r}");
            assert!(r.detail.contains("run.updated_at"), "{bad}: {r}");
        }
        for good in [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "1970-01-01T00:00:00Z",
        ] {
            let e = decode(at(good).as_bytes(), &Limits::default()).unwrap();
            let text = serde_json::to_string(&e.run.updated_at).unwrap();
            assert_eq!(
                &text[1..5],
                &good[..4],
                "four-digit year when written: {text}"
            );
        }
    }

    #[test]
    fn control_characters_in_identifiers_are_invalid_and_details_are_escaped() {
        for (field, from) in [
            ("repository.owner", "octo-org"),
            ("repository.name", "octo-repo"),
            ("repository.id", "300029405"),
            ("commit_sha", "3484a3fb"),
            ("branch", "feature/x"),
            ("run.id", "289782451"),
            ("run.workflow", "\"test\""),
        ] {
            for c in ["\\u001b[31m", "\\r", "\\n", "\\t", "\\u007f", "\\u0085"] {
                let to = if from.starts_with('"') {
                    format!("\"te{c}st\"")
                } else {
                    format!("{from}{c}x")
                };
                let r =
                    decode(GOOD.replacen(from, &to, 1).as_bytes(), &Limits::default()).unwrap_err();
                assert_eq!(r.code, RejectCode::Invalid, "{field} {c}: {r}");
                assert!(r.detail.starts_with(field), "{field} {c}: {r}");
            }
        }
        // A parser message quoting the hostile value is escaped.
        let r = decode(
            GOOD.replace("\"github\"", "\"git\\r\\nhub\\u001b\"")
                .as_bytes(),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(!r.detail.chars().any(char::is_control), "{r:?}");
        assert!(r.detail.contains("git\\r\\nhub"), "{r:?}");
        // Free text keeps them: a URL is carried, never printed as a column.
        assert!(
            decode(
                GOOD.replace("https://x", "https://x\\ty").as_bytes(),
                &Limits::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn github_statuses_map_to_queued_and_conclusion_is_dropped_before_completion() {
        let s = GOOD.replace("\"status\":\"completed\"", "\"status\":\"requested\"");
        let e = decode(s.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(e.run.status, Status::Queued);
        assert_eq!(e.run.conclusion, None);
    }
}
