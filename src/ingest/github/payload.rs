//! What GitHub's workflow and check deliveries share: the repository object, the status
//! and conclusion words, one event per pull request.

use serde::Deserialize;

use crate::event::{Conclusion, Event, Repository, Status};
use crate::ingest::NormalizeError;

#[derive(Deserialize)]
pub(super) struct Repo {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) owner: Owner,
    #[serde(default)]
    pub(super) html_url: Option<String>,
}

impl Repo {
    pub(super) fn into_repository(self) -> Repository {
        Repository {
            owner: self.owner.login,
            name: self.name,
            id: Some(self.id.to_string()),
            host: None,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct Owner {
    pub(super) login: String,
}

/// The run status as runwatch knows it.
pub(super) fn map_status(s: &str) -> Option<Status> {
    Some(match s {
        "requested" | "waiting" | "pending" | "queued" => Status::Queued,
        "in_progress" => Status::InProgress,
        "completed" => Status::Completed,
        _ => return None,
    })
}

pub(super) fn map_conclusion(s: &str) -> Option<Conclusion> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

/// One event per pull request: with none or one the event id is the delivery id, with
/// several it is `<delivery>:<number>` for each.
pub(super) fn per_pull_request(base: Event, delivery: &str, mut prs: Vec<u64>) -> Vec<Event> {
    prs.sort_unstable();
    prs.dedup();
    match prs.as_slice() {
        [] => vec![base],
        [one] => vec![Event {
            pr_number: Some(*one),
            ..base
        }],
        many => many
            .iter()
            .map(|n| Event {
                event_id: format!("{delivery}:{n}"),
                pr_number: Some(*n),
                ..base.clone()
            })
            .collect(),
    }
}

/// its conclusion; `fields` name the two in errors.
pub(super) fn status_and_conclusion(
    status: Option<&str>,
    conclusion: Option<&str>,
    fields: (&'static str, &'static str),
) -> Result<(Status, Option<Conclusion>), NormalizeError> {
    let status_text = status.ok_or(NormalizeError::Field(fields.0))?;
    let status = map_status(status_text).ok_or_else(|| NormalizeError::Value {
        field: fields.0,
        value: status_text.chars().take(64).collect(),
    })?;
    let conclusion = match (status, conclusion) {
        (Status::Completed, None) => return Err(NormalizeError::Field(fields.1)),
        (Status::Completed, Some(c)) => {
            Some(map_conclusion(c).ok_or_else(|| NormalizeError::Value {
                field: fields.1,
                value: c.chars().take(64).collect(),
            })?)
        }
        _ => None,
    };
    Ok((status, conclusion))
}

/// The repository a run's or pull request's head is in (another one for a fork).
#[derive(Deserialize)]
pub(super) struct HeadRepo {
    pub(super) id: u64,
    #[serde(default)]
    pub(super) full_name: Option<String>,
    #[serde(default)]
    pub(super) owner: Option<Owner>,
}
