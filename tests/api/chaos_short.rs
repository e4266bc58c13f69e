//! The short chaos run of `make test`: about 10,000 events through 3 worker processes of
//! the debug binary, with the same faults as `make chaos` (a worker SIGKILLed every 2 s, a
//! nats-server restart, a Postgres restart in immediate mode, killed backends), each on its
//! own nats-server and Postgres. Nothing may be lost, duplicated or invented, and exactly
//! the poison is dead-lettered.

use crate::helpers::{chaos, trace};

use std::path::PathBuf;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_chaos_run_loses_duplicates_and_invents_nothing() {
    let mut o = chaos::Options::new(PathBuf::from(env!("CARGO_BIN_EXE_runwatch")));
    o.seed = std::env::var("RUNWATCH_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    o.events = 10_000;
    o.quiet_timeout = Duration::from_secs(150);
    let started = Instant::now();
    let report = chaos::run(&o).await.expect("the harness ran");
    for n in &report.notes {
        eprintln!("chaos: {n}");
    }
    eprintln!("{}", report.line());
    eprintln!("short chaos run took {:?}", started.elapsed());
    // The faults happened and the check had something to check.
    assert!(report.expected > 100, "{}", report.line());
    assert!(report.poison > 50, "{}", report.line());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("nats-server restarted")),
        "{:?}",
        report.notes
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("postgres restarted")),
        "{:?}",
        report.notes
    );
    assert!(report.ok(), "{}", report.line());
}

/// The verdict itself: a trigger missing, one published twice, an extra one for a group,
/// one for a group that must not fire and one naming a run with the wrong conclusion are
/// each counted.
#[test]
fn the_check_counts_lost_duplicated_and_invented_triggers() {
    let mut o = chaos::Options::new(PathBuf::from("unused"));
    o.events = 2_000;
    let trace = chaos::generate(&o);
    let trigger = |sha: &str, id: &str, g: &trace::GroupTruth, flip: bool| {
        let runs: serde_json::Map<String, serde_json::Value> = g
            .runs
            .iter()
            .map(|(id, r)| {
                let c = if flip { "success" } else { r.conclusion };
                (
                    id.clone(),
                    serde_json::json!({"workflow": r.workflow, "conclusion": c}),
                )
            })
            .collect();
        let failed: Vec<&str> = g
            .runs
            .values()
            .filter(|r| ["failure", "timed_out", "startup_failure"].contains(&r.conclusion))
            .map(|r| r.workflow.as_str())
            .collect();
        let t = serde_json::json!({"trigger_id": id, "commit_sha": sha, "runs": runs, "failed_workflows": failed});
        bytes::Bytes::from(t.to_string())
    };
    let mut expected: Vec<(&String, &trace::GroupTruth)> =
        trace.groups.iter().filter(|(_, g)| g.must_fire()).collect();
    expected.sort_by_key(|(sha, _)| (*sha).clone());
    let quiet = trace
        .groups
        .iter()
        .find(|(_, g)| !g.must_fire())
        .expect("a group that must not fire");
    let mut triggers: Vec<(u64, bytes::Bytes)> = Vec::new();
    for (i, (sha, g)) in expected.iter().enumerate().skip(1) {
        triggers.push((i as u64, trigger(sha, &format!("id-{i}"), g, i == 2)));
    }
    let all_good = chaos::check(&trace, &triggers).unwrap();
    assert_eq!(
        (all_good.lost, all_good.duplicated, all_good.invented),
        (1, 0, 1),
        "{}",
        all_good.line()
    );
    triggers.push((
        900_001,
        trigger(expected[3].0, "id-3", expected[3].1, false),
    ));
    triggers.push((
        900_002,
        trigger(expected[4].0, "id-extra", expected[4].1, false),
    ));
    triggers.push((900_003, trigger(quiet.0, "id-quiet", quiet.1, false)));
    let r = chaos::check(&trace, &triggers).unwrap();
    assert_eq!(r.expected, expected.len());
    assert_eq!(r.published, triggers.len());
    assert_eq!(
        (r.lost, r.duplicated, r.invented),
        (1, 2, 2),
        "{}",
        r.line()
    );
    assert!(!r.ok());
}
