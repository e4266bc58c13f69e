//! The verdict: the triggers stream against the trace's truth.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::trace::FAILING;
use super::{Error, Report, Trace};

/// Compares the triggers stream with the trace.
pub fn check(trace: &Trace, triggers: &[(u64, bytes::Bytes)]) -> Result<Report, Error> {
    let mut report = Report::default();
    let expected: BTreeSet<&String> = trace
        .groups
        .iter()
        .filter(|(_, g)| g.must_fire())
        .map(|(sha, _)| sha)
        .collect();
    report.expected = expected.len();
    report.published = triggers.len();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut per_group: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut invented_examples = Vec::new();
    for (seq, body) in triggers {
        let t: Value = serde_json::from_slice(body)?;
        let id = t["trigger_id"].as_str().unwrap_or_default().to_string();
        let sha = t["commit_sha"].as_str().unwrap_or_default().to_string();
        let seen = ids.entry(id.clone()).or_default();
        *seen += 1;
        if *seen > 1 {
            continue;
        }
        per_group.entry(sha.clone()).or_default().insert(id.clone());
        if let Some(why) = invention(trace, &expected, &sha, &t) {
            report.invented += 1;
            if invented_examples.len() < 5 {
                invented_examples.push(format!("seq {seq}: {why}"));
            }
        }
    }
    let twice: usize = ids.values().map(|n| n - 1).sum();
    let extra: usize = per_group.values().map(|s| s.len().saturating_sub(1)).sum();
    report.duplicated = twice + extra;
    let lost: Vec<&&String> = expected
        .iter()
        .filter(|s| !per_group.contains_key(**s))
        .collect();
    report.lost = lost.len();
    if !lost.is_empty() {
        report.notes.push(format!(
            "lost, e.g.: {:?}",
            lost.iter().take(5).collect::<Vec<_>>()
        ));
    }
    if twice + extra > 0 {
        report.notes.push(format!(
            "duplicated: {twice} trigger ids seen more than once, {extra} extra triggers for a group"
        ));
    }
    for e in invented_examples {
        report.notes.push(format!("invented: {e}"));
    }
    Ok(report)
}

/// Why a trigger is invented, if it is: its group must not fire, or it names a run the
/// group does not have, with another conclusion, or lists a workflow that did not fail.
fn invention(
    trace: &Trace,
    expected: &BTreeSet<&String>,
    sha: &String,
    t: &Value,
) -> Option<String> {
    if !expected.contains(sha) {
        return Some(format!("group {sha} must not fire"));
    }
    let Some(truth) = trace.groups.get(sha) else {
        return Some(format!("group {sha} does not exist"));
    };
    let Some(runs) = t["runs"].as_object() else {
        return Some(format!("group {sha}: trigger without runs"));
    };
    for (id, r) in runs {
        let Some(run) = truth.runs.get(id) else {
            return Some(format!("group {sha}: run {id} does not exist"));
        };
        if r["conclusion"].as_str() != Some(run.conclusion) {
            return Some(format!(
                "group {sha}: run {id} listed as {}, it is {}",
                r["conclusion"], run.conclusion
            ));
        }
    }
    let failed: Vec<&str> = t["failed_workflows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if failed.is_empty() {
        return Some(format!("group {sha}: no failed workflow listed"));
    }
    for w in failed {
        let ok = truth
            .runs
            .values()
            .any(|r| r.workflow == w && FAILING.contains(&r.conclusion));
        if !ok {
            return Some(format!("group {sha}: workflow {w} did not fail"));
        }
    }
    None
}
