//! Three workers with their own connections over 5,000 groups × 4 runs (every run
//! completes, no re-runs, ~10% of groups failing), with duplicates and a shuffled order:
//! exactly one trigger per failing group, none for the others, no trigger id twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::helpers::env::TestEnv;
use crate::helpers::live::{all_triggers, publish_lines, start_worker, wait_quiet};
use crate::helpers::trace::shuffled;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_fire_exactly_the_failing_groups_once() {
    let groups: usize = std::env::var("RUNWATCH_TEST_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let trace = shuffled(7, groups, 4, 0.10, 0.05);
    let (lines, failing) = (trace.lines(), trace.must_fire());
    let env = TestEnv::new().await;
    let bus = crate::helpers::app::bus(&env.config).await;
    let started = Instant::now();
    let workers: Vec<_> = (0..3).map(|_| start_worker(&env.config)).collect();
    publish_lines(&bus, &lines).await;
    eprintln!(
        "published {} events in {:?}",
        lines.len(),
        started.elapsed()
    );
    wait_quiet(&env.config, &bus, Duration::from_secs(600)).await;
    eprintln!("quiet after {:?}", started.elapsed());
    let triggers = all_triggers(&bus).await;
    for w in workers {
        w.shutdown().await;
    }
    env.cleanup().await;

    let mut ids = BTreeSet::new();
    let mut per_group: BTreeMap<String, usize> = BTreeMap::new();
    for t in &triggers {
        assert!(
            ids.insert(t["trigger_id"].as_str().unwrap().to_string()),
            "trigger id twice: {t}"
        );
        *per_group
            .entry(t["commit_sha"].as_str().unwrap().to_string())
            .or_default() += 1;
        // No invention: the failed workflows it lists failed.
        for w in t["failed_workflows"].as_array().unwrap() {
            let failed = t["runs"]
                .as_object()
                .unwrap()
                .values()
                .any(|r| r["workflow"] == *w && r["conclusion"] == "failure");
            assert!(failed, "{w} listed but did not fail: {t}");
        }
    }
    let fired: BTreeSet<String> = per_group.keys().cloned().collect();
    let twice: Vec<_> = per_group.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "groups fired more than once: {twice:?}");
    let lost: Vec<_> = failing.difference(&fired).collect();
    let invented: Vec<_> = fired.difference(&failing).collect();
    assert!(
        lost.is_empty(),
        "{} lost triggers, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert!(
        invented.is_empty(),
        "{} invented triggers, e.g. {:?}",
        invented.len(),
        invented.first()
    );
    assert!(!failing.is_empty());
    eprintln!(
        "{} groups, {} failing, {} triggers",
        trace.groups.len(),
        failing.len(),
        triggers.len()
    );
}
