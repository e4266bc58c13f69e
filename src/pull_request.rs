//! The second input message, schema `runwatch.pull_request.v1`: a pull request's head commit
//! as a provider reported it (GitHub `pull_request` deliveries). It carries no run: it tells
//! the worker that a commit belongs to a pull request, so the runs of that commit that came
//! without one (commit statuses, a fork's workflow runs, push builds) count in the pull
//! request's group, whichever arrives first (docs/design.md "Pull requests of a commit").
//!
//! It also carries what the pull request is (title, author, base branch, url: docs/design.md
//! "The pull request in the trigger").
//!
//! [`decode_input`] reads any of the three schemas of the events stream
//! (`runwatch.workflow_job.v1` is in [`crate::job`]); the size limit, the string
//! limits and the rejection codes are those of [`crate::event::decode`], except that the
//! title, which its author writes freely, is made fit instead of refused ([`fit_title`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::{PullAuthor, PullInfo, PullState, PullStatus};
use crate::event::{self, Event, Limits, Provider, RejectCode, Rejection, Repository};

/// The schema name of a [`PullRequestLink`].
pub const PULL_REQUEST_SCHEMA: &str = "runwatch.pull_request.v1";

/// A pull request's head commit at `updated_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRequestLink {
    pub schema: String,
    pub event_id: String,
    pub provider: Provider,
    pub repository: Repository,
    /// The pull request's head commit.
    pub commit_sha: String,
    pub pr_number: u64,
    /// The pull request's head branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// When the provider recorded this head (orders heads for `only_head_commit`).
    pub updated_at: DateTime<Utc>,
    /// The pull request's state as of `state_at`: `open` or `closed` (GitHub's `state`).
    /// Absent in messages that say nothing about it (older producers): the state stays what
    /// it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<LinkState>,
    /// Whether the pull request is a draft.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<bool>,
    /// Whether the pull request was merged (with `state: closed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<bool>,
    /// When the provider reported this state (default `updated_at`); the newest wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_at: Option<DateTime<Utc>>,
    /// The pull request's title: control characters become spaces, and a title longer
    /// than the string limit is cut on a character boundary ([`fit_title`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Who opened the pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<LinkAuthor>,
    /// The branch the pull request merges into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,
    /// The pull request's page (GitHub `html_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
}

/// `author` of a [`PullRequestLink`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkAuthor {
    pub login: String,
    /// Whether the account is a bot (GitHub: `user.type` is `Bot`, or the login ends in
    /// `[bot]`). Default false.
    #[serde(default)]
    pub bot: bool,
}

/// `title` made fit to keep and print: every control character (C0, DEL, C1) becomes a
/// space, then the text is cut to at most `max_bytes` bytes on a character boundary; an
/// empty title is no title. Idempotent.
pub fn fit_title(title: &str, max_bytes: usize) -> Option<String> {
    let mut out = String::with_capacity(title.len().min(max_bytes));
    for c in title.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len().saturating_add(c.len_utf8()) > max_bytes {
            break;
        }
        out.push(c);
    }
    (!out.is_empty()).then_some(out)
}
/// `state` of a [`PullRequestLink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Open,
    Closed,
}

impl PullRequestLink {
    /// The pull request's state as the engine reads it, if the message carries one: merged
    /// when `merged` is true, else `state`; a draft when `draft` is true; at `state_at`, else
    /// `updated_at`.
    pub fn status(&self) -> Option<PullStatus> {
        let state = match (self.state?, self.merged) {
            (_, Some(true)) => PullState::Merged,
            (LinkState::Closed, _) => PullState::Closed,
            (LinkState::Open, _) => PullState::Open,
        };
        Some(PullStatus {
            state,
            draft: self.draft.unwrap_or(false),
            at: self.state_at.unwrap_or(self.updated_at),
        })
    }

    /// What the message says the pull request is, if it says anything of it (a title, an
    /// author, a base branch or a url), at `state_at`, else `updated_at`. The head branch is
    /// the message's `branch`.
    pub fn info(&self) -> Option<PullInfo> {
        if self.title.is_none()
            && self.author.is_none()
            && self.base_branch.is_none()
            && self.url.is_none()
        {
            return None;
        }
        Some(PullInfo {
            title: self.title.clone(),
            author: self.author.as_ref().map(|a| PullAuthor {
                login: a.login.clone(),
                bot: a.bot,
            }),
            head_branch: self.branch.clone(),
            base_branch: self.base_branch.clone(),
            url: self.url.clone(),
            at: self.state_at.unwrap_or(self.updated_at),
        })
    }
}

/// One message of the events stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `runwatch.workflow_run.v1`.
    Run(Event),
    /// `runwatch.pull_request.v1`.
    PullRequest(PullRequestLink),
    /// `runwatch.workflow_job.v1`.
    Job(crate::job::JobReport),
}

impl Input {
    pub fn event_id(&self) -> &str {
        match self {
            Input::Run(e) => &e.event_id,
            Input::PullRequest(p) => &p.event_id,
            Input::Job(j) => &j.event_id,
        }
    }

    pub fn provider(&self) -> Provider {
        match self {
            Input::Run(e) => e.provider,
            Input::PullRequest(p) => p.provider,
            Input::Job(j) => j.provider,
        }
    }

    pub fn repository(&self) -> &Repository {
        match self {
            Input::Run(e) => &e.repository,
            Input::PullRequest(p) => &p.repository,
            Input::Job(j) => &j.repository,
        }
    }

    pub fn commit_sha(&self) -> &str {
        match self {
            Input::Run(e) => &e.commit_sha,
            Input::PullRequest(p) => &p.commit_sha,
            Input::Job(j) => &j.commit_sha,
        }
    }

    pub fn pr_number(&self) -> Option<u64> {
        match self {
            Input::Run(e) => e.pr_number,
            Input::PullRequest(p) => Some(p.pr_number),
            Input::Job(_) => None,
        }
    }

    /// The repository as the registry resolves it.
    pub fn repo_claim(&self) -> crate::repository::RepoClaim {
        crate::repository::RepoClaim::of(self.provider(), self.repository())
    }

    /// Event time: `run.updated_at`, the head's `updated_at` or `job.updated_at`.
    pub fn updated_at(&self) -> DateTime<Utc> {
        match self {
            Input::Run(e) => e.run.updated_at,
            Input::PullRequest(p) => p.updated_at,
            Input::Job(j) => j.job.updated_at,
        }
    }
}

#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    schema: Option<serde_json::Value>,
}

/// Decodes one message of any of the three schemas. A message whose `schema` is a string
/// naming none of them is a `schema` rejection; any other message is decoded by [`event::decode`] (so
/// the rejections of run events are unchanged). Run events, nearly every message, are read
/// once: the `schema` is looked at on its own only when a message is not a valid run event.
pub fn decode_input(bytes: &[u8], limits: &Limits) -> Result<Input, Rejection> {
    let refused = match event::decode(bytes, limits) {
        Ok(e) => return Ok(Input::Run(e)),
        Err(r) => r,
    };
    if bytes.len() > limits.max_message_bytes {
        return Err(refused);
    }
    let schema = serde_json::from_slice::<Peek>(bytes)
        .ok()
        .and_then(|p| p.schema);
    match schema.as_ref().and_then(|s| s.as_str()) {
        Some(PULL_REQUEST_SCHEMA) => {}
        Some(crate::job::JOB_SCHEMA) => {
            let report: crate::job::JobReport = serde_json::from_slice(bytes)
                .map_err(|e| Rejection::new(RejectCode::Invalid, format!("{e}")))?;
            return crate::job::validate(report, limits).map(Input::Job);
        }
        Some(other) if other != event::SCHEMA => {
            return Err(Rejection::new(
                RejectCode::Schema,
                format!(
                    "schema is {other:?}, expected {:?}, {PULL_REQUEST_SCHEMA:?} or {:?}",
                    event::SCHEMA,
                    crate::job::JOB_SCHEMA
                ),
            ));
        }
        _ => return Err(refused),
    }
    let link: PullRequestLink = serde_json::from_slice(bytes)
        .map_err(|e| Rejection::new(RejectCode::Invalid, format!("{e}")))?;
    validate(link, limits).map(Input::PullRequest)
}

fn validate(mut link: PullRequestLink, limits: &Limits) -> Result<PullRequestLink, Rejection> {
    link.title = link
        .title
        .as_deref()
        .and_then(|t| fit_title(t, limits.max_string_bytes));
    // An empty base branch or url says nothing (the order of reports needs "" and absent
    // to be one).
    link.base_branch = link.base_branch.filter(|b| !b.is_empty());
    link.url = link.url.filter(|u| !u.is_empty());
    if let Some(a) = &link.author {
        event::check_required(&[("author.login", &a.login)])?;
    }
    let login = link.author.as_ref().map(|a| &a.login);
    event::check_required(&[
        ("event_id", &link.event_id),
        ("repository.owner", &link.repository.owner),
        ("repository.name", &link.repository.name),
        ("commit_sha", &link.commit_sha),
    ])?;
    event::check_strings(
        &[
            ("event_id", Some(&link.event_id)),
            ("repository.owner", Some(&link.repository.owner)),
            ("repository.name", Some(&link.repository.name)),
            ("repository.id", link.repository.id.as_ref()),
            ("commit_sha", Some(&link.commit_sha)),
            ("branch", link.branch.as_ref()),
            ("author.login", login),
            ("base_branch", link.base_branch.as_ref()),
            ("url", link.url.as_ref()),
        ],
        limits,
    )?;
    event::check_event_id(&link.event_id)?;
    event::check_no_controls(&[
        ("repository.owner", Some(&link.repository.owner)),
        ("repository.name", Some(&link.repository.name)),
        ("repository.id", link.repository.id.as_ref()),
        ("commit_sha", Some(&link.commit_sha)),
        ("branch", link.branch.as_ref()),
        ("author.login", login),
        ("base_branch", link.base_branch.as_ref()),
        ("url", link.url.as_ref()),
    ])?;
    event::check_time("updated_at", link.updated_at)?;
    event::check_pr_number(link.pr_number)?;
    event::check_metadata(&link.metadata, limits)?;
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_optional_and_merged_wins() {
        let Ok(Input::PullRequest(p)) = decode_input(LINK.as_bytes(), &Limits::default()) else {
            panic!("not a link")
        };
        assert_eq!(p.status(), None);
        let merged = LINK.replace(
            "\"pr_number\":5",
            "\"pr_number\":5,\"state\":\"closed\",\"merged\":true,\"draft\":false,\"state_at\":\"2026-01-02T00:00:00Z\"",
        );
        let Ok(Input::PullRequest(p)) = decode_input(merged.as_bytes(), &Limits::default()) else {
            panic!("not a link")
        };
        let s = p.status().unwrap();
        assert_eq!((s.state, s.draft), (PullState::Merged, false));
        assert_eq!(s.at.to_rfc3339(), "2026-01-02T00:00:00+00:00");
    }

    #[test]
    fn what_the_pull_request_is() {
        let code = |s: &str| {
            decode_input(s.as_bytes(), &Limits::default())
                .unwrap_err()
                .code
        };
        let with =
            |extra: &str| LINK.replace("\"pr_number\":5", &format!("\"pr_number\":5,{extra}"));
        let Ok(Input::PullRequest(p)) = decode_input(LINK.as_bytes(), &Limits::default()) else {
            panic!("not a link")
        };
        assert_eq!(p.info(), None);
        let full = with(
            r#""title":"Fix\u001b[31m it\n","author":{"login":"octo","bot":false},"base_branch":"main","url":"https://x/pull/5""#,
        );
        let Ok(Input::PullRequest(p)) = decode_input(full.as_bytes(), &Limits::default()) else {
            panic!("not a link")
        };
        let info = p.info().unwrap();
        assert_eq!(info.title.as_deref(), Some("Fix [31m it "));
        assert_eq!(info.author.as_ref().map(|a| a.login.as_str()), Some("octo"));
        assert_eq!(info.head_branch.as_deref(), Some("forker:fix"));
        assert_eq!(info.base_branch.as_deref(), Some("main"));
        // A huge title is cut on a character boundary, not refused; re-decoding keeps it.
        let huge = with(&format!("\"title\":\"{}\"", "é".repeat(3000)));
        let Ok(Input::PullRequest(p)) = decode_input(huge.as_bytes(), &Limits::default()) else {
            panic!("not a link")
        };
        let t = p.title.clone().unwrap();
        assert_eq!((t.len(), t.chars().count()), (1024, 512));
        let again = decode_input(&serde_json::to_vec(&p).unwrap(), &Limits::default());
        assert_eq!(again, Ok(Input::PullRequest(p)));
        // Empty strings say nothing.
        let Ok(Input::PullRequest(p)) = decode_input(
            with(r#""title":"","base_branch":"","url":"""#).as_bytes(),
            &Limits::default(),
        ) else {
            panic!("not a link")
        };
        assert_eq!(p.info(), None);
        // Identifiers are refused as the run schema refuses them.
        for bad in [
            r#""author":{"login":""}"#,
            r#""author":{"login":"a\nb"}"#,
            r#""author":"octo""#,
            r#""author":{"login":"a","bot":"yes"}"#,
            r#""author":{"login":"a","admin":true}"#,
            r#""title":5"#,
            r#""base_branch":"m\u001bain""#,
            r#""url":["u"]"#,
        ] {
            assert_eq!(code(&with(bad)), RejectCode::Invalid, "{bad}");
        }
        assert_eq!(
            code(&with(&format!("\"base_branch\":\"{}\"", "b".repeat(2000)))),
            RejectCode::Oversize
        );
        assert_eq!(
            code(&with(&format!("\"url\":\"{}\"", "u".repeat(2000)))),
            RejectCode::Oversize
        );
        assert_eq!(fit_title("\u{0}", 10).as_deref(), Some(" "));
        assert_eq!(fit_title("ab", 0), None);
        assert_eq!(fit_title("aé", 2).as_deref(), Some("a"));
    }

    const LINK: &str = r#"{"schema":"runwatch.pull_request.v1","event_id":"p1","provider":"github",
      "repository":{"owner":"o","name":"r","id":"7"},"commit_sha":"abc","pr_number":5,
      "branch":"forker:fix","updated_at":"2026-01-01T00:00:00Z"}"#;

    #[test]
    fn both_schemas_decode() {
        let Ok(Input::PullRequest(p)) = decode_input(LINK.as_bytes(), &Limits::default()) else {
            panic!("not a link")
        };
        assert_eq!((p.pr_number, p.commit_sha.as_str()), (5, "abc"));
        let code = |s: &str| {
            decode_input(s.as_bytes(), &Limits::default())
                .unwrap_err()
                .code
        };
        assert_eq!(
            code(&LINK.replace("\"pr_number\":5", "\"pr_number\":0")),
            RejectCode::Invalid
        );
        assert_eq!(
            code(&LINK.replace("\"pr_number\":5,", "")),
            RejectCode::Invalid
        );
        assert_eq!(code(&LINK.replace("\"abc\"", "\"\"")), RejectCode::Invalid);
        assert_eq!(
            code(&LINK.replace("forker:fix", &"x".repeat(2000))),
            RejectCode::Oversize
        );
        assert_eq!(code("not json"), RejectCode::NotJson);
        for t in ["-5000-01-01T00:00:00Z", "+10000-01-01T00:00:00Z"] {
            assert_eq!(
                code(&LINK.replace("2026-01-01T00:00:00Z", t)),
                RejectCode::Invalid,
                "{t}"
            );
        }
        assert_eq!(
            code(&LINK.replace("forker:fix", "fix\\r\\n")),
            RejectCode::Invalid
        );
        assert_eq!(
            code(&LINK.replace("\"o\"", "\"o\\u001b\"")),
            RejectCode::Invalid
        );
        assert_eq!(
            code(&LINK.replace("\"pr_number\":5", "\"pr_number\":5,\"state\":\"gone\"")),
            RejectCode::Invalid
        );
        assert_eq!(
            code(&LINK.replace("pull_request.v1", "pull_request.v0")),
            RejectCode::Schema
        );
    }
}
