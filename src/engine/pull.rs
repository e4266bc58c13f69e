//! A pull request's state as runwatch knows it (docs/design.md "The pull request's state"):
//! open, draft, closed or merged, as of the newest `runwatch.pull_request.v1` message that
//! carried it. A group whose pull request is closed or merged does not fire
//! (`only_open`, default on); a draft's group does not fire with `skip_draft`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::rules::Rule;

/// Open, closed (without merging) or merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullState {
    Open,
    Closed,
    Merged,
}

impl PullState {
    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Open => "open",
            PullState::Closed => "closed",
            PullState::Merged => "merged",
        }
    }

    pub fn parse(s: &str) -> Option<PullState> {
        Some(match s {
            "open" => PullState::Open,
            "closed" => PullState::Closed,
            "merged" => PullState::Merged,
            _ => return None,
        })
    }
}

/// A pull request's state at `at` (the time of the message that said so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullStatus {
    pub state: PullState,
    pub draft: bool,
    pub at: DateTime<Utc>,
}

impl PullStatus {
    /// The order of reports: the newest wins; on a tie, merged > closed > open, then a
    /// draft over a ready one (a total order, so any delivery order ends the same).
    fn key(&self) -> (DateTime<Utc>, PullState, bool) {
        (self.at, self.state, self.draft)
    }

    /// Whether `self` replaces `current`.
    pub fn supersedes(&self, current: Option<&PullStatus>) -> bool {
        current.is_none_or(|c| self.key() > c.key())
    }
}

/// Why a rule does not fire for a pull request in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullBlock {
    /// Closed without merging (`only_open`).
    Closed,
    /// Merged (`only_open`).
    Merged,
    /// A draft (`skip_draft`).
    Draft,
}

impl PullBlock {
    /// The words `explain` prints.
    pub fn words(self) -> &'static str {
        match self {
            PullBlock::Closed => "the pull request is closed (the rule has only_open = true)",
            PullBlock::Merged => "the pull request is merged (the rule has only_open = true)",
            PullBlock::Draft => "the pull request is a draft (the rule has skip_draft = true)",
        }
    }
}

impl Rule {
    /// Whether the pull request's known state keeps the rule from firing. An unknown state
    /// (no `pull_request` delivery yet) counts as open and ready.
    pub fn pull_block(&self, status: Option<&PullStatus>) -> Option<PullBlock> {
        let s = status?;
        match s.state {
            PullState::Closed if self.only_open => Some(PullBlock::Closed),
            PullState::Merged if self.only_open => Some(PullBlock::Merged),
            _ if s.draft && self.skip_draft => Some(PullBlock::Draft),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(secs: i64, state: PullState, draft: bool) -> PullStatus {
        PullStatus {
            state,
            draft,
            at: DateTime::from_timestamp(secs, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn newest_wins_and_ties_are_ordered() {
        let open = st(10, PullState::Open, false);
        let closed = st(10, PullState::Closed, false);
        let reopened = st(11, PullState::Open, false);
        assert!(closed.supersedes(Some(&open)));
        assert!(!open.supersedes(Some(&closed)));
        assert!(reopened.supersedes(Some(&closed)));
        assert!(!closed.supersedes(Some(&reopened)));
        assert!(!open.supersedes(Some(&open)));
        assert!(open.supersedes(None));
    }
}
