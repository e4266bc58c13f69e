//! Which groups an input joins (docs/design.md "Pull requests of a commit"), decided once
//! for the worker (store/groups) and `simulate` alike.
//!
//! A run is applied to the group of its (repository, pull request or none, commit). A run
//! without a pull request also counts in the group of every pull request its commit is
//! known to belong to ([`super::Engine::absorb`]), and its own group then defers to those.
//! An input that carries a pull request its commit was not yet known to belong to records
//! that association: the pull request's group inherits what the commit's group without a
//! pull request fired ([`super::Engine::inherit_fired`]) and absorbs its runs. A pull
//! request message whose state or info is newer has its head commit's group judged again
//! ([`super::Engine::reconsider`]).
//!
//! Pure: the caller hands over the known associations and heads, this module says which
//! groups to lock and what to merge into each; the caller loads, locks and stores.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use super::{GroupState, PullInfo, PullStatus};

/// A group's key: (repository internal id, pull request or none, commit).
pub type GroupKey = (i64, Option<u64>, String);

/// A (repository internal id, commit) pair.
pub type Commit = (i64, String);

/// What an input carries, as far as routing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// A workflow run, of a pull request or of none.
    Run(Option<u64>),
    /// A pull request message (its head commit).
    PullRequest(u64),
    /// A job: it joins no group.
    Job,
}

/// One input, as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival<'a> {
    pub repository_id: i64,
    pub commit_sha: &'a str,
    pub carries: Carries,
}

/// A pull request newly known to hold a commit: `into` (its group) takes over from `from`
/// (the commit's group without a pull request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub into: GroupKey,
    pub from: GroupKey,
}

/// Where one input goes, in the order the caller acts on it: apply the run to `own`, merge
/// it into each of `also`, judge `pull` again if the pull request's state or info changed
/// ([`Pull::learn`]), record the association of `join` ([`Associations::learn`]) and merge
/// `join.from`'s runs into `join.into`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The run's own group.
    pub own: Option<GroupKey>,
    /// A run without a pull request whose commit is known to belong to one: its own group
    /// does not fire ([`GroupState::commit_in_pull`]).
    pub commit_in_pull: bool,
    /// The groups of the pull requests the commit of a run without one belongs to.
    pub also: Vec<GroupKey>,
    /// A pull request message: its group for the commit it carries.
    pub pull: Option<GroupKey>,
    /// The association this input teaches, if it is new.
    pub join: Option<Join>,
}

/// The groups a batch touches, computed before any is loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every group to lock (created when absent).
    pub groups: BTreeSet<GroupKey>,
    /// Commits whose group without a pull request is read, not locked: a join takes its
    /// runs, and it is not among `groups`.
    pub pr_less: BTreeSet<Commit>,
}

/// The pull requests each commit is known to belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Associations(HashMap<Commit, BTreeSet<u64>>);

impl From<HashMap<Commit, BTreeSet<u64>>> for Associations {
    fn from(m: HashMap<Commit, BTreeSet<u64>>) -> Associations {
        Associations(m)
    }
}

impl Associations {
    /// The pull requests `commit` is known to belong to.
    pub fn of(&self, repository_id: i64, commit_sha: &str) -> impl Iterator<Item = u64> + '_ {
        self.0
            .get(&(repository_id, commit_sha.to_string()))
            .into_iter()
            .flatten()
            .copied()
    }

    /// Whether the commit is known to belong to a pull request.
    pub fn in_pull(&self, repository_id: i64, commit_sha: &str) -> bool {
        self.of(repository_id, commit_sha).next().is_some()
    }

    /// Records that the commit belongs to `pr`; whether that was new.
    pub fn learn(&mut self, repository_id: i64, commit_sha: &str, pr: u64) -> bool {
        self.0
            .entry((repository_id, commit_sha.to_string()))
            .or_default()
            .insert(pr)
    }

    /// Where `a` goes, given what is known now.
    pub fn route(&self, a: Arrival<'_>) -> Route {
        let (r, sha) = (a.repository_id, a.commit_sha);
        let key = |pr: Option<u64>| (r, pr, sha.to_string());
        let mut route = Route::default();
        let carried = match a.carries {
            Carries::Job => return route,
            Carries::Run(pr) => {
                route.own = Some(key(pr));
                if pr.is_none() {
                    route.also = self.of(r, sha).map(|n| key(Some(n))).collect();
                    route.commit_in_pull = !route.also.is_empty();
                }
                pr
            }
            Carries::PullRequest(n) => {
                route.pull = Some(key(Some(n)));
                Some(n)
            }
        };
        if let Some(n) = carried
            && !self.of(r, sha).any(|k| k == n)
        {
            route.join = Some(Join {
                into: key(Some(n)),
                from: key(None),
            });
        }
        route
    }

    /// The groups a batch touches: every group any of its inputs may reach, with what is
    /// known before the batch (an association the batch teaches names its group itself).
    pub fn plan<'a>(&self, arrivals: impl IntoIterator<Item = Arrival<'a>>) -> Plan {
        let mut plan = Plan::default();
        let mut joined = Vec::new();
        for a in arrivals {
            let route = self.route(a);
            plan.groups.extend(route.own);
            plan.groups.extend(route.also);
            plan.groups.extend(route.pull);
            if let Some(j) = route.join {
                plan.groups.insert(j.into);
                joined.push(j.from);
            }
        }
        plan.pr_less = joined
            .into_iter()
            .filter(|k| !plan.groups.contains(k))
            .map(|(r, _, sha)| (r, sha))
            .collect();
        plan
    }
}

/// A pull request's head: (when reported, commit). The latest by this order wins.
pub type Head = (DateTime<Utc>, String);

/// What runwatch knows of a pull request: its head, its state and what it is (title,
/// author, branches, url), each the newest by its own order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pull {
    pub head: Option<Head>,
    pub status: Option<PullStatus>,
    pub info: Option<PullInfo>,
}

/// What [`Pull::learn`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learnt {
    pub head: bool,
    pub status: bool,
    pub info: bool,
}

impl Learnt {
    /// Whether anything changed.
    pub fn any(self) -> bool {
        self.head || self.status || self.info
    }

    /// Whether the pull request's group for its head is judged again (closed, merged,
    /// reopened, ready for review, its author known).
    pub fn rejudge(self) -> bool {
        self.status || self.info
    }
}

impl Pull {
    /// Takes what a pull request message says where it is newer; returns what changed.
    pub fn learn(
        &mut self,
        head: Head,
        status: Option<PullStatus>,
        info: Option<PullInfo>,
    ) -> Learnt {
        let new_head = newer_head(self.head.as_ref(), &head);
        if new_head {
            self.head = Some(head);
        }
        let status = status.filter(|s| s.supersedes(self.status.as_ref()));
        let new_status = status.is_some();
        if status.is_some() {
            self.status = status;
        }
        let info = info.filter(|i| i.supersedes(self.info.as_ref()));
        let new_info = info.is_some();
        if info.is_some() {
            self.info = info;
        }
        Learnt {
            head: new_head,
            status: new_status,
            info: new_info,
        }
    }

    /// The head's commit.
    pub fn head_sha(&self) -> Option<&str> {
        self.head.as_ref().map(|(_, sha)| sha.as_str())
    }
}

/// Hands a group what the engine reads of its pull request (not stored with the group).
pub fn show_pull(state: &mut GroupState, pull: Option<&Pull>) {
    state.pr_head = pull.and_then(Pull::head_sha).map(str::to_string);
    state.pr_status = pull.and_then(|p| p.status);
    state.pr_info = pull.and_then(|p| p.info.clone());
}

/// Whether `candidate` replaces `current` as a pull request's head: a later `updated_at`,
/// then the larger commit as bytes (the order the store writes heads in).
pub fn newer_head(current: Option<&Head>, candidate: &Head) -> bool {
    current.is_none_or(|c| (candidate.0, candidate.1.as_bytes()) > (c.0, c.1.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(pairs: &[(&str, u64)]) -> Associations {
        let mut a = Associations::default();
        for (sha, n) in pairs {
            a.learn(1, sha, *n);
        }
        a
    }

    fn k(pr: Option<u64>, sha: &str) -> GroupKey {
        (1, pr, sha.to_string())
    }

    fn arrival(sha: &str, carries: Carries) -> Arrival<'_> {
        Arrival {
            repository_id: 1,
            commit_sha: sha,
            carries,
        }
    }

    fn join(n: u64, sha: &str) -> Option<Join> {
        Some(Join {
            into: k(Some(n), sha),
            from: k(None, sha),
        })
    }

    #[test]
    fn routes_by_what_the_input_carries_and_what_is_known() {
        use Carries::*;
        let cases: Vec<(&str, Associations, Carries, Route)> = vec![
            (
                "a push build of an unknown commit stays in its own group",
                known(&[]),
                Run(None),
                Route {
                    own: Some(k(None, "a")),
                    ..Route::default()
                },
            ),
            (
                "a push build of a commit in two pull requests joins both and defers",
                known(&[("a", 7), ("a", 9), ("b", 3)]),
                Run(None),
                Route {
                    own: Some(k(None, "a")),
                    commit_in_pull: true,
                    also: vec![k(Some(7), "a"), k(Some(9), "a")],
                    ..Route::default()
                },
            ),
            (
                "a run of a pull request teaches the association once",
                known(&[]),
                Run(Some(7)),
                Route {
                    own: Some(k(Some(7), "a")),
                    join: join(7, "a"),
                    ..Route::default()
                },
            ),
            (
                "a run of a known pull request joins only its group",
                known(&[("a", 7)]),
                Run(Some(7)),
                Route {
                    own: Some(k(Some(7), "a")),
                    ..Route::default()
                },
            ),
            (
                "a run of another pull request of the commit teaches that one",
                known(&[("a", 7)]),
                Run(Some(9)),
                Route {
                    own: Some(k(Some(9), "a")),
                    join: join(9, "a"),
                    ..Route::default()
                },
            ),
            (
                "a pull request message names its group and teaches the association",
                known(&[("b", 7)]),
                PullRequest(7),
                Route {
                    pull: Some(k(Some(7), "a")),
                    join: join(7, "a"),
                    ..Route::default()
                },
            ),
            (
                "a pull request message of a known head names its group only",
                known(&[("a", 7)]),
                PullRequest(7),
                Route {
                    pull: Some(k(Some(7), "a")),
                    ..Route::default()
                },
            ),
            (
                "a job joins nothing",
                known(&[("a", 7)]),
                Job,
                Route::default(),
            ),
        ];
        for (what, assoc, carries, want) in cases {
            assert_eq!(assoc.route(arrival("a", carries)), want, "{what}");
        }
    }

    #[test]
    fn a_plan_locks_every_reachable_group_and_reads_the_joined_push_groups() {
        let assoc = known(&[("a", 7)]);
        let plan = assoc.plan([
            arrival("a", Carries::Run(None)),
            arrival("b", Carries::PullRequest(8)),
            arrival("c", Carries::Run(Some(9))),
            arrival("c", Carries::Run(None)),
            arrival("d", Carries::Job),
        ]);
        let groups: BTreeSet<GroupKey> = [
            k(None, "a"),
            k(Some(7), "a"),
            k(Some(8), "b"),
            k(Some(9), "c"),
            k(None, "c"),
        ]
        .into_iter()
        .collect();
        assert_eq!(plan.groups, groups);
        // "c"'s group without a pull request is locked already: only "b"'s is read.
        let pr_less: BTreeSet<Commit> = [(1, "b".to_string())].into_iter().collect();
        assert_eq!(plan.pr_less, pr_less);
    }

    #[test]
    fn learning_an_association_is_new_once() {
        let mut a = Associations::default();
        assert!(!a.in_pull(1, "a"));
        assert!(a.learn(1, "a", 7));
        assert!(!a.learn(1, "a", 7));
        assert!(a.in_pull(1, "a"));
        assert!(!a.in_pull(2, "a"));
        assert_eq!(a.route(arrival("a", Carries::PullRequest(7))).join, None);
    }

    #[test]
    fn the_latest_head_wins_then_the_larger_commit() {
        let t0 = DateTime::from_timestamp(0, 0).unwrap_or_default();
        let t1 = DateTime::from_timestamp(1, 0).unwrap_or_default();
        let mut p = Pull::default();
        assert!(p.learn((t0, "b".into()), None, None).head);
        assert!(!p.learn((t0, "a".into()), None, None).any());
        assert!(p.learn((t0, "c".into()), None, None).head);
        assert!(!p.learn((t0, "c".into()), None, None).any());
        assert!(p.learn((t1, "a".into()), None, None).head);
        assert_eq!(p.head_sha(), Some("a"));
        let mut state = GroupState::default();
        show_pull(&mut state, Some(&p));
        assert_eq!(state.pr_head.as_deref(), Some("a"));
        show_pull(&mut state, None);
        assert_eq!(state.pr_head, None);
    }
}
