//! A pull request's state as runwatch knows it (docs/design.md "The pull request's state"):
//! open, draft, closed or merged, as of the newest `runwatch.pull_request.v1` message that
//! carried it. A group whose pull request is closed or merged does not fire
//! (`only_open`, default on); a draft's group does not fire with `skip_draft`.
//!
//! Besides its state, what runwatch knows of a pull request's author, title and branches
//! ([`PullInfo`], docs/design.md "The pull request in the trigger") goes into the trigger
//! and decides `authors`, `exclude_authors` and `skip_bots`.

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

/// A pull request's author: the login and whether the account is a bot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PullAuthor {
    pub login: String,
    #[serde(default)]
    pub bot: bool,
}

/// What a pull request is, as of the newest `runwatch.pull_request.v1` message that said
/// anything about it (title, author, base branch or url): for the trigger and for the
/// author filters. Every field is what that message carried (absent ones are `None`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullInfo {
    pub title: Option<String>,
    pub author: Option<PullAuthor>,
    /// The head branch (as the message's `branch`, `<fork owner>:<ref>` for a fork).
    pub head_branch: Option<String>,
    pub base_branch: Option<String>,
    pub url: Option<String>,
    /// When the provider reported it (`state_at`, else `updated_at`).
    pub at: DateTime<Utc>,
}

impl PullInfo {
    /// The order of reports: the newest wins; on a tie, the fields compared as bytes in
    /// declaration order, an absent one as the empty string (the decoder turns empty
    /// strings into absent ones, so this is a total order on what can be stored, and any
    /// delivery order ends the same; `write_heads` in the store compares the same way).
    #[allow(clippy::type_complexity)]
    fn key(&self) -> (DateTime<Utc>, &str, &str, bool, &str, &str, &str) {
        fn s(o: &Option<String>) -> &str {
            o.as_deref().unwrap_or("")
        }
        (
            self.at,
            s(&self.title),
            self.author.as_ref().map_or("", |a| a.login.as_str()),
            self.author.as_ref().is_some_and(|a| a.bot),
            s(&self.head_branch),
            s(&self.base_branch),
            s(&self.url),
        )
    }

    /// Whether `self` replaces `current`.
    pub fn supersedes(&self, current: Option<&PullInfo>) -> bool {
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

/// Why a rule does not fire for a pull request's author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorBlock {
    /// The rule lists `authors` and the author is not known (no `pull_request` delivery
    /// with an author yet, or no pull request at all).
    Unknown,
    /// The author is not one of the rule's `authors`.
    NotListed(String),
    /// The author is one of the rule's `exclude_authors`.
    Excluded(String),
    /// The author is a bot (`skip_bots`).
    Bot(String),
}

impl AuthorBlock {
    /// The words `explain` prints.
    pub fn words(&self) -> String {
        let show = |l: &str| crate::printable::escape_controls(l).into_owned();
        match self {
            AuthorBlock::Unknown => "the pull request's author is not known yet (no pull_request delivery with an author; the rule has authors)".to_string(),
            AuthorBlock::NotListed(l) => format!("the author {} is not one of the rule's authors", show(l)),
            AuthorBlock::Excluded(l) => format!("the author {} is excluded (exclude_authors)", show(l)),
            AuthorBlock::Bot(l) => format!("the author {} is a bot (the rule has skip_bots = true)", show(l)),
        }
    }
}

impl Rule {
    /// Whether the pull request's author keeps the rule from firing. With `authors`, an
    /// unknown author blocks (the rule waits for the `pull_request` delivery); an unknown
    /// author never counts as excluded or as a bot.
    pub fn author_block(&self, info: Option<&PullInfo>) -> Option<AuthorBlock> {
        let author = info.and_then(|i| i.author.as_ref());
        if let Some(authors) = &self.authors {
            match author {
                None => return Some(AuthorBlock::Unknown),
                Some(a) if !authors.matches(&a.login) => {
                    return Some(AuthorBlock::NotListed(a.login.clone()));
                }
                Some(_) => {}
            }
        }
        let a = author?;
        if self
            .exclude_authors
            .as_ref()
            .is_some_and(|f| f.matches(&a.login))
        {
            return Some(AuthorBlock::Excluded(a.login.clone()));
        }
        if self.skip_bots && a.bot {
            return Some(AuthorBlock::Bot(a.login.clone()));
        }
        None
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

    #[test]
    fn info_order_is_total() {
        let at = DateTime::from_timestamp(10, 0).unwrap_or_default();
        let a = PullInfo {
            title: Some("a".into()),
            at,
            ..PullInfo::default()
        };
        let b = PullInfo {
            title: Some("b".into()),
            at,
            ..PullInfo::default()
        };
        assert!(b.supersedes(Some(&a)) && !a.supersedes(Some(&b)));
        assert!(!a.supersedes(Some(&a)));
        let later = PullInfo {
            at: DateTime::from_timestamp(11, 0).unwrap_or_default(),
            ..PullInfo::default()
        };
        assert!(later.supersedes(Some(&b)));
    }

    #[test]
    fn author_filters() {
        let rules = crate::engine::RuleSet::from_toml(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nauthors = [\"Alice\", \"team-*\"]\n\
             exclude_authors = [\"team-x\"]\nskip_bots = true\n",
        )
        .unwrap();
        let r = &rules.rules()[0];
        let info = |login: &str, bot: bool| PullInfo {
            author: Some(PullAuthor {
                login: login.into(),
                bot,
            }),
            ..PullInfo::default()
        };
        assert_eq!(r.author_block(None), Some(AuthorBlock::Unknown));
        assert_eq!(
            r.author_block(Some(&PullInfo::default())),
            Some(AuthorBlock::Unknown)
        );
        assert_eq!(r.author_block(Some(&info("alice", false))), None);
        assert_eq!(
            r.author_block(Some(&info("bob", false))),
            Some(AuthorBlock::NotListed("bob".into()))
        );
        assert_eq!(
            r.author_block(Some(&info("TEAM-X", false))),
            Some(AuthorBlock::Excluded("TEAM-X".into()))
        );
        assert_eq!(
            r.author_block(Some(&info("team-bot[bot]", true))),
            Some(AuthorBlock::Bot("team-bot[bot]".into()))
        );
        let open = crate::engine::RuleSet::from_toml(
            "[[rules]]\nkind = \"all_completed_with_failure\"\nexclude_authors = [\"x\"]\nskip_bots = true\n",
        )
        .unwrap();
        assert_eq!(open.rules()[0].author_block(None), None);
        assert_eq!(open.rules()[0].author_block(Some(&info("y", false))), None);
    }
}
