//! What GitHub's workflow and check deliveries share: the repository object, the status
//! and conclusion words, one event per pull request.

use serde::Deserialize;

use crate::event::{Conclusion, Event, Repository, Status};

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
