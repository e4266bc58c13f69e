//! The trigger message, schema `runwatch.trigger.v1` (the `WorkflowRunGroup`), and its
//! deterministic id.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{Conclusion, Provider, Status};
use crate::trace_context::TraceContext;

pub const TRIGGER_SCHEMA: &str = "runwatch.trigger.v1";

/// The UUIDv5 namespace of trigger ids (fixed forever: ids must stay stable across
/// versions so that a replay publishes nothing new).
pub const TRIGGER_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b4e_9a3d_4c57_8e21_5d0b_7a94_c3e8);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRepository {
    pub owner: String,
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
    pub internal_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRun {
    pub attempt: u32,
    pub workflow: String,
    pub status: Status,
    #[serde(default)]
    pub conclusion: Option<Conclusion>,
    #[serde(default)]
    pub url: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// For a failed run: its failed jobs of this attempt, as known when the trigger was
    /// decided (docs/design.md "Jobs and steps"), at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<TriggerJob>,
    /// Failed jobs of the run left out of `jobs` (over 20 per run, or over the trigger's
    /// 256 KiB of jobs).
    #[serde(default, skip_serializing_if = "crate::job::is_zero")]
    pub jobs_omitted: u32,
}

/// A failed job of a failed run, in a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerJob {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub conclusion: Option<Conclusion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_steps: Vec<crate::job::Step>,
    #[serde(default, skip_serializing_if = "crate::job::is_zero")]
    pub failed_steps_omitted: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runner_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// A failed workflow of the trigger that is known flaky (docs/design.md "Flaky workflows"):
/// it flipped (a failed attempt followed by a passing attempt of the same run) at least the
/// rule's `flaky_threshold` times within `flaky_window`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownFlaky {
    pub workflow: String,
    /// Flips within the window, at most 1000 (`engine::flaky::MAX_FLIPS_COUNTED`).
    pub flips: u32,
    /// The rule's `flaky_window`, in seconds.
    pub window_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub schema: String,
    pub trigger_id: Uuid,
    /// The rule's kind, e.g. `all_completed_with_failure`.
    pub rule: String,
    /// The rule's name in the rule set (the kind unless configured otherwise).
    pub rule_name: String,
    pub provider: Provider,
    pub repository: TriggerRepository,
    pub pr_number: Option<u64>,
    pub commit_sha: String,
    pub branch: Option<String>,
    /// For `repeated_failure`: the workflow whose streak fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The group's episode (re-runs open new ones when `refire_on_rerun` is set).
    pub episode: u32,
    pub runs: BTreeMap<String, TriggerRun>,
    pub failed_workflows: Vec<String>,
    pub fired_at: DateTime<Utc>,
    /// For a rule with `max_triggers_per_pull_request` / `max_triggers_per_repository`:
    /// how much of each budget this trigger used, itself included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<TriggerBudget>,
    /// What runwatch knew of the pull request when the rule fired (docs/design.md "The
    /// pull request in the trigger"); absent without a pull request or before any
    /// `pull_request` delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<TriggerPullRequest>,
    /// `all_completed_with_failure`: the workflows of `failed_workflows` that are known flaky,
    /// sorted by workflow; absent when none is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_flaky: Vec<KnownFlaky>,
    /// The W3C trace context the trigger message carries (`traceparent`/`tracestate`
    /// headers, the outbox's columns), never in the JSON: set by the worker when it decides
    /// (the decision span of the input, a new trace for a timer) and by `runwatch deliver`
    /// from the message's headers.
    #[serde(skip)]
    pub trace: Option<TraceContext>,
}

/// A trigger's place in its rule's budgets (docs/design.md "Budgets"); a budget the rule
/// does not have is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<BudgetUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<BudgetUse>,
}

/// One budget: `used` triggers (this one included) of `limit` within the last
/// `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetUse {
    pub used: u32,
    pub limit: u32,
    pub window_seconds: u64,
}

/// The pull request of a trigger, as the newest `runwatch.pull_request.v1` messages said:
/// each field absent when no message said it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerPullRequest {
    pub number: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The author's login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_is_bot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,
    /// The pull request's page (GitHub `html_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<bool>,
    /// `open`, `closed` or `merged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::engine::PullState>,
}

/// A deterministic id from the parts that identify a decision.
pub fn trigger_id(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&TRIGGER_NAMESPACE, parts.join("\u{1f}").as_bytes())
}

/// The outbound subject of a trigger: `<prefix>.<provider>`.
pub fn subject(prefix: &str, provider: Provider) -> String {
    format!("{prefix}.{}", provider.as_str())
}

/// The CloudEvents `specversion` runwatch speaks.
pub const CLOUDEVENTS_SPECVERSION: &str = "1.0";

/// The CloudEvents context attributes of a trigger (spec 1.0), the same on NATS and in
/// `runwatch deliver`: `id` = the trigger id, `type` = [`TRIGGER_SCHEMA`], `source` =
/// `runwatch/<provider>`, `subject` = `owner/name#<pr>@<sha>` (`owner/name@<sha>` without a
/// pull request), `time` = `fired_at` in RFC 3339 (UTC, `Z`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEventAttributes {
    pub id: String,
    pub type_: &'static str,
    pub source: String,
    pub subject: String,
    pub time: String,
}

impl CloudEventAttributes {
    /// The attributes of `t`.
    pub fn of(t: &Trigger) -> CloudEventAttributes {
        let repo = format!("{}/{}", t.repository.owner, t.repository.name);
        let subject = match t.pr_number {
            Some(pr) => format!("{repo}#{pr}@{}", t.commit_sha),
            None => format!("{repo}@{}", t.commit_sha),
        };
        CloudEventAttributes {
            id: t.trigger_id.to_string(),
            type_: TRIGGER_SCHEMA,
            source: format!("runwatch/{}", t.provider.as_str()),
            subject,
            time: t
                .fired_at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        }
    }

    /// The binary-mode headers (`ce-<attribute>`, lowercase), `specversion` first, each
    /// value percent-encoded as the CloudEvents HTTP binding says (space, `"`, `%`, controls
    /// and every non-ASCII byte of its UTF-8), so every value is printable ASCII (NATS and
    /// HTTP headers). `content-type` is the caller's.
    pub fn headers(&self) -> [(&'static str, String); 6] {
        [
            ("ce-specversion", CLOUDEVENTS_SPECVERSION.to_string()),
            ("ce-id", header_value(&self.id)),
            ("ce-type", header_value(self.type_)),
            ("ce-source", header_value(&self.source)),
            ("ce-subject", header_value(&self.subject)),
            ("ce-time", header_value(&self.time)),
        ]
    }

    /// The structured-mode envelope (`application/cloudevents+json`) around `data`, which
    /// must be one JSON value (its bytes are kept as they are).
    pub fn structured(&self, data: &[u8]) -> Vec<u8> {
        let attributes = serde_json::json!({
            "specversion": CLOUDEVENTS_SPECVERSION,
            "id": self.id,
            "type": self.type_,
            "source": self.source,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": "application/json",
        })
        .to_string();
        // `{...attributes,"data":<data>}`: the attributes object without its closing brace.
        let mut out = Vec::with_capacity(attributes.len() + data.len() + 9);
        out.extend_from_slice(
            attributes
                .strip_suffix('}')
                .unwrap_or(&attributes)
                .as_bytes(),
        );
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data);
        out.push(b'}');
        out
    }
}

/// The bytes a CloudEvents header value percent-encodes (HTTP binding, 3.1.3.2): controls,
/// space, `"` and `%`; `percent_encoding` encodes every non-ASCII byte as well.
const CE_HEADER_ENCODE: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'%');

fn header_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, CE_HEADER_ENCODE).to_string()
}

/// Gives the triggers decided from each input of a batch that input's decision context:
/// the record transaction calls [`Stamper::input`] as it starts on input `n` (the triggers
/// added since the previous call are the previous input's) and [`Stamper::finish`] after
/// the last. A trigger with no context (a timer's, an input without one) gets a new trace
/// when it is written to the outbox.
pub struct Stamper<'a> {
    traces: &'a [Option<TraceContext>],
    current: Option<usize>,
    from: usize,
}

impl<'a> Stamper<'a> {
    pub fn new(traces: &'a [Option<TraceContext>]) -> Stamper<'a> {
        Stamper {
            traces,
            current: None,
            from: 0,
        }
    }

    /// Input `n` is next: stamps what the previous one decided.
    pub fn input<G>(&mut self, n: usize, decided: &mut [(G, Trigger)]) {
        self.finish(decided);
        self.current = Some(n);
    }

    /// Stamps what the current input decided.
    pub fn finish<G>(&mut self, decided: &mut [(G, Trigger)]) {
        let trace = self
            .current
            .and_then(|n| self.traces.get(n))
            .and_then(Option::as_ref);
        if let Some(trace) = trace {
            for (_, t) in decided.iter_mut().skip(self.from) {
                t.trace = Some(trace.clone());
            }
        }
        self.from = decided.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(trigger_id(&["a", "b"]), trigger_id(&["a", "b"]));
        assert_ne!(trigger_id(&["a", "b"]), trigger_id(&["ab", ""]));
        assert_eq!(trigger_id(&["a"]).get_version_num(), 5);
    }

    #[test]
    fn cloudevent_headers_are_printable_ascii() {
        assert_eq!(header_value("acme/app#7@abc"), "acme/app#7@abc");
        assert_eq!(header_value("a b\"%\u{e9}\n"), "a%20b%22%25%C3%A9%0A");
        let out = CloudEventAttributes {
            id: "i".into(),
            type_: TRIGGER_SCHEMA,
            source: "runwatch/github".into(),
            subject: "s".into(),
            time: "t".into(),
        }
        .structured(br#"{"x":1}"#);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["data"]["x"], 1);
        assert_eq!(v["specversion"], "1.0");
    }
}
