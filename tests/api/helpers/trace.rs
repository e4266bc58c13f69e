//! The one seeded trace generator of the tests, the chaos harness and the bench.
//!
//! Groups (one pull-request commit each) of workflow runs that are queued, sometimes in
//! progress, and completed; a share of the groups has failing runs. [`Shape`] says how many
//! groups, runs and failures, and how the events arrive ([`Arrival`]): shuffled, along a
//! timeline with groups interleaved, or in waves where a group's completions follow all its
//! queued events. Duplicates (the same event id again), poison and swapped neighbours are
//! added on top. The [`Trace`] keeps the truth of every group for the checks.
//!
//! Included by `tests/api/helpers/mod.rs`, `tests/api/chaos_short.rs` and the `chaos` and `bench`
//! examples (`#[path]`).
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

/// The conclusions of the default rule that count as failing.
pub const FAILING: [&str; 3] = ["failure", "timed_out", "startup_failure"];
/// Conclusions that do not fail.
pub const PASSING: [&str; 4] = ["success", "skipped", "cancelled", "neutral"];

/// How the events of the groups are ordered for publishing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    /// A uniform shuffle of everything (duplicates included).
    Shuffled,
    /// In event-time order: a group starts every 3 s, its runs 5 s apart, each completing
    /// 20..220 s after it was queued, so neighbouring groups interleave. A duplicate
    /// arrives up to 300 s of trace time after its original.
    Timeline,
    /// Groups in windows of `window`: every group of a window sends its first event, then
    /// its second, and so on; all queued events of a group come before its completions, so a
    /// group is decided by its last event. A duplicate arrives up to 300 places later.
    Waves { window: usize },
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Shape {
    pub seed: u64,
    /// A fixed number of groups; `None`: as many as `events` needs.
    pub groups: Option<usize>,
    /// Messages in all (valid, duplicates and poison) when `groups` is `None`.
    pub events: usize,
    /// Runs per group, chosen uniformly.
    pub runs: RangeInclusive<usize>,
    /// Share of groups with failing runs.
    pub fail_share: f64,
    /// A failing group has 1..=this many failing runs.
    pub max_failing_runs: usize,
    /// Conclusions drawn from [`FAILING`] and [`PASSING`] rather than failure and success.
    pub varied_conclusions: bool,
    /// Share of groups with a pull request (the others must never fire).
    pub pr_share: f64,
    /// Share of runs with an `in_progress` event between queued and completed.
    pub in_progress_share: f64,
    /// Repositories the groups are spread over.
    pub repos: usize,
    /// Share of duplicated events (of the messages, or of the valid events with `groups`).
    pub duplicates: f64,
    /// Share of poison messages (not JSON, wrong types, oversize), likewise.
    pub poison: f64,
    /// Share of messages swapped with their neighbour.
    pub swaps: f64,
    pub arrival: Arrival,
}

impl Shape {
    /// `groups` groups of `runs` runs (queued, completed), all with a pull request; a
    /// `fail_share` of them has one failed run; no duplicates, poison or swaps.
    pub fn groups(seed: u64, groups: usize, runs: usize, fail_share: f64) -> Shape {
        Shape {
            seed,
            groups: Some(groups),
            events: 0,
            runs: runs.max(1)..=runs.max(1),
            fail_share,
            max_failing_runs: 1,
            varied_conclusions: false,
            pr_share: 1.0,
            in_progress_share: 0.0,
            repos: 50,
            duplicates: 0.0,
            poison: 0.0,
            swaps: 0.0,
            arrival: Arrival::Shuffled,
        }
    }
}

/// One run of a group as the generator made it.
#[derive(Debug, Clone)]
pub struct RunTruth {
    pub workflow: String,
    pub conclusion: &'static str,
}

/// One group as the generator made it.
#[derive(Debug, Clone, Default)]
pub struct GroupTruth {
    pub has_pr: bool,
    /// By run id.
    pub runs: HashMap<String, RunTruth>,
}

impl GroupTruth {
    /// A group with a pull request and a failing run must fire exactly once.
    pub fn must_fire(&self) -> bool {
        self.has_pr && self.runs.values().any(|r| FAILING.contains(&r.conclusion))
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Msg {
    /// The event id (the JetStream message id).
    pub id: String,
    pub body: Bytes,
    /// The commit sha of its group; `None` for poison.
    pub sha: Option<String>,
    pub poison: bool,
}

/// A generated trace and its truth.
#[derive(Debug)]
pub struct Trace {
    /// In publish order.
    pub messages: Vec<Msg>,
    /// By commit sha (unique per seed and group).
    pub groups: HashMap<String, GroupTruth>,
    pub valid: usize,
    pub duplicates: usize,
    pub poison: usize,
}

impl Trace {
    /// The messages as JSON lines, in publish order.
    pub fn lines(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect()
    }

    /// The commit shas of the groups that must fire.
    pub fn must_fire(&self) -> BTreeSet<String> {
        self.groups
            .iter()
            .filter(|(_, g)| g.must_fire())
            .map(|(sha, _)| sha.clone())
            .collect()
    }

    /// For each group that must fire, the index in `messages` of its last event (the first
    /// copy of it: a later duplicate decides nothing).
    pub fn last_of_firing(&self) -> HashMap<String, usize> {
        let firing = self.must_fire();
        let mut seen = std::collections::HashSet::new();
        let mut last = HashMap::new();
        for (i, m) in self.messages.iter().enumerate() {
            if let Some(sha) = &m.sha
                && firing.contains(sha)
                && seen.insert(m.id.as_str())
            {
                last.insert(sha.clone(), i);
            }
        }
        last
    }
}

/// The tests' trace: `groups` groups of `runs` runs, a `fail_share` of them with one failed
/// run, a `dup_share` of duplicates, all shuffled.
pub fn shuffled(seed: u64, groups: usize, runs: usize, fail_share: f64, dup_share: f64) -> Trace {
    let mut shape = Shape::groups(seed, groups, runs, fail_share);
    shape.duplicates = dup_share;
    generate(&shape)
}

/// Generates the trace of `shape`.
pub fn generate(shape: &Shape) -> Trace {
    let mut rng = StdRng::seed_from_u64(shape.seed);
    let mut keyed: Vec<(f64, Msg)> = Vec::new();
    let mut groups = HashMap::new();
    let (dup_share, poison_share) = (shape.duplicates, shape.poison);
    let (dup_n, poison_n) = (
        (shape.events as f64 * dup_share) as usize,
        (shape.events as f64 * poison_share) as usize,
    );
    let target = shape.events.saturating_sub(dup_n + poison_n).max(1);
    let mut g = 0usize;
    let mut n = 0u64;
    loop {
        let done = match shape.groups {
            Some(max) => g >= max,
            None => keyed.len() >= target,
        };
        if done {
            break;
        }
        let (sha, truth) = group(shape, &mut rng, g, &mut n, &mut keyed);
        groups.insert(sha, truth);
        g += 1;
    }
    let valid = keyed.len();
    let (dup_n, poison_n) = match shape.groups {
        None => (dup_n, poison_n),
        // A fixed number of groups: the shares apply to what they produced.
        Some(_) => (
            (valid as f64 * dup_share) as usize,
            (valid as f64 * poison_share) as usize,
        ),
    };
    add_duplicates(shape.arrival, &mut rng, &mut keyed, dup_n);
    add_poison(shape.seed, &mut rng, &mut keyed, poison_n);
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut messages: Vec<Msg> = keyed.into_iter().map(|(_, m)| m).collect();
    swap_neighbours(&mut rng, &mut messages, shape.swaps);
    Trace {
        messages,
        groups,
        valid,
        duplicates: dup_n,
        poison: poison_n,
    }
}

/// 2026-01-01T00:00:00Z plus `seconds`.
fn timestamp(seconds: i64) -> String {
    let base = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    (base + chrono::Duration::seconds(seconds))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The conclusions of a group's runs: which fail, and with which conclusion.
fn conclusions(shape: &Shape, rng: &mut StdRng, runs: usize) -> Vec<&'static str> {
    let mut failing = BTreeSet::new();
    if rng.random_bool(shape.fail_share.clamp(0.0, 1.0)) {
        let k = rng.random_range(1..=runs.min(shape.max_failing_runs.max(1)));
        while failing.len() < k {
            failing.insert(rng.random_range(0..runs));
        }
    }
    (0..runs)
        .map(|r| match (failing.contains(&r), shape.varied_conclusions) {
            (true, true) => FAILING[rng.random_range(0..FAILING.len())],
            (false, true) => PASSING[rng.random_range(0..PASSING.len())],
            (true, false) => "failure",
            (false, false) => "success",
        })
        .collect()
}

/// The events of run `r` of group `g`: status, event time (seconds) and sort key.
fn phases(
    shape: &Shape,
    rng: &mut StdRng,
    g: usize,
    r: usize,
    runs: usize,
) -> Vec<(&'static str, i64, f64)> {
    let mut statuses = vec!["queued"];
    if rng.random_bool(shape.in_progress_share.clamp(0.0, 1.0)) {
        statuses.push("in_progress");
    }
    statuses.push("completed");
    let (g64, r64) = (g as i64, r as i64);
    let queued = g64 * 3 + r64 * 5;
    let done = queued + 20 + rng.random_range(0..200i64);
    statuses
        .into_iter()
        .enumerate()
        .map(|(k, status)| {
            let (at, key) = match shape.arrival {
                Arrival::Shuffled => ((r * 3 + k) as i64, rng.random_range(0.0..1.0)),
                Arrival::Timeline => {
                    let at = match status {
                        "queued" => queued,
                        "in_progress" => queued + 10,
                        _ => done,
                    };
                    (at, at as f64)
                }
                Arrival::Waves { window } => {
                    let window = window.max(1);
                    // Step k * runs + r: all runs' first events, then their second...
                    let step = (k * runs + r) as f64;
                    let at = g64 * 10 + step as i64;
                    let wave = (g / window) as f64;
                    let slot = (g % window) as f64;
                    let steps = 3.0 * *shape.runs.end() as f64;
                    (at, (wave * steps + step) * window as f64 + slot)
                }
            };
            (status, at, key)
        })
        .collect()
}

/// Generates group `g` into `keyed`; its sha and truth.
fn group(
    shape: &Shape,
    rng: &mut StdRng,
    g: usize,
    n: &mut u64,
    keyed: &mut Vec<(f64, Msg)>,
) -> (String, GroupTruth) {
    let seed = shape.seed;
    let sha = format!("{seed:016x}{g:024x}");
    let repo = g % shape.repos.max(1);
    let has_pr = rng.random_bool(shape.pr_share.clamp(0.0, 1.0));
    let runs = rng.random_range(shape.runs.clone()).max(1);
    let mut truth = GroupTruth {
        has_pr,
        runs: HashMap::new(),
    };
    for (r, conclusion) in conclusions(shape, rng, runs).into_iter().enumerate() {
        let run_id = format!("{g}-{r}");
        let workflow = format!("wf-{r}");
        for (status, at, key) in phases(shape, rng, g, r, runs) {
            *n += 1;
            let mut run = json!({
                "id": run_id, "attempt": 1, "workflow": workflow, "status": status,
                "url": format!("https://ci.example/runs/{run_id}"),
                "updated_at": timestamp(at),
            });
            if status == "completed" {
                run["conclusion"] = json!(conclusion);
            }
            let id = format!("ev-{seed}-{n}");
            let e = json!({
                "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
                "repository": {"owner": "acme", "name": format!("repo-{repo}"), "id": format!("{}", 1000 + repo)},
                "commit_sha": sha, "branch": format!("feature-{g}"),
                "pr_number": if has_pr { json!(g + 1) } else { Value::Null },
                "run": run, "metadata": {"seq": *n},
            });
            // Equal event times keep their generation order.
            let key =
                key + (*n % 1000) as f64 * 1e-4 * f64::from(shape.arrival == Arrival::Timeline);
            let body = Bytes::from(e.to_string());
            let sha = Some(sha.clone());
            keyed.push((
                key,
                Msg {
                    id,
                    body,
                    sha,
                    poison: false,
                },
            ));
        }
        truth.runs.insert(
            run_id,
            RunTruth {
                workflow,
                conclusion,
            },
        );
    }
    (sha, truth)
}

/// Copies of `n` random events, arriving after their original (anywhere when shuffled).
fn add_duplicates(arrival: Arrival, rng: &mut StdRng, keyed: &mut Vec<(f64, Msg)>, n: usize) {
    let valid = keyed.len();
    if valid == 0 {
        return;
    }
    for _ in 0..n {
        let i = rng.random_range(0..valid);
        let (k, m) = (keyed[i].0, keyed[i].1.clone());
        let key = match arrival {
            Arrival::Shuffled => rng.random_range(0.0..1.0),
            Arrival::Timeline | Arrival::Waves { .. } => k + rng.random_range(1.0..300.0),
        };
        keyed.push((key, m));
    }
}

/// `n` poison messages at random places: a third not JSON, a third with wrong types, a
/// third over the size limit. The valid-looking ones fail with a pull request: if a worker
/// accepted one, its trigger would count as invented.
fn add_poison(seed: u64, rng: &mut StdRng, keyed: &mut Vec<(f64, Msg)>, n: usize) {
    let span = keyed
        .iter()
        .map(|(k, _)| *k)
        .fold(0.0f64, f64::max)
        .max(1.0);
    for i in 0..n {
        let id = format!("poison-{seed}-{i}");
        let sha = format!("{:016x}{:024x}", seed ^ 0xdead, i);
        let body = match i % 3 {
            0 => format!("chaos poison {i}: this is not JSON {{"),
            1 => json!({
                "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
                "repository": {"owner": "acme", "name": "poison", "id": "999"},
                "commit_sha": sha, "branch": "poison", "pr_number": "seven",
                "run": {"id": format!("p{i}"), "attempt": "one", "workflow": "wf", "status": "completed",
                        "conclusion": "failure", "updated_at": timestamp(0)},
            })
            .to_string(),
            _ => json!({
                "schema": "runwatch.workflow_run.v1", "event_id": id, "provider": "github",
                "repository": {"owner": "acme", "name": "poison", "id": "999"},
                "commit_sha": sha, "branch": "poison", "pr_number": 1,
                "run": {"id": format!("p{i}"), "attempt": 1, "workflow": "wf", "status": "completed",
                        "conclusion": "failure", "updated_at": timestamp(0)},
                "metadata": {"padding": "x".repeat(70 * 1024)},
            })
            .to_string(),
        };
        let key = rng.random_range(0.0..span);
        let body = Bytes::from(body);
        keyed.push((
            key,
            Msg {
                id,
                body,
                sha: None,
                poison: true,
            },
        ));
    }
}

/// Swaps a `share` of the messages with their next neighbour (each message moves once).
fn swap_neighbours(rng: &mut StdRng, messages: &mut [Msg], share: f64) {
    let mut i = 0;
    while i + 1 < messages.len() {
        if rng.random_bool((share / 2.0).clamp(0.0, 1.0)) {
            messages.swap(i, i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
}

/// A permutation of `lines` by the sort keys `order` (the key of line `i` is
/// `order[i % order.len()]`, ties in line order), with a copy of line `d % lines.len()`
/// appended first for each `d` of `dups`.
pub fn reordered<T: Clone>(mut lines: Vec<T>, order: &[usize], dups: &[usize]) -> Vec<T> {
    for d in dups {
        let copy = lines[d % lines.len()].clone();
        lines.push(copy);
    }
    let mut keyed: Vec<(usize, usize, T)> = lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| (order[i % order.len()], i, l))
        .collect();
    keyed.sort_by_key(|(k, i, _)| (*k, *i));
    keyed.into_iter().map(|(_, _, l)| l).collect()
}
