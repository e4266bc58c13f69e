//! The conformance scenarios (tests/conformance) through the live pipeline: publish → one
//! worker → outbound stream, compared with expected.jsonl (the projection of
//! docs/design.md), every published trigger validated against schemas/trigger.v1.json.

use std::time::Duration;

use crate::helpers::env::TestEnv;
use crate::helpers::live::{all_triggers, publish_in_order, start_worker, wait_quiet};
use crate::helpers::scenarios::{Scenario, load_scenarios, project_value};
use crate::helpers::schemas::{errors, trigger_schema};
use futures::StreamExt;
use runwatch::bus::Bus;

async fn run_one(s: &Scenario) -> Result<(), String> {
    let mut env = TestEnv::new().await;
    env.config.database.max_connections = 3;
    let rules_file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    if let Some(rules) = &s.rules_toml {
        std::fs::write(rules_file.path(), rules).map_err(|e| e.to_string())?;
        env.config.rules_file = Some(rules_file.path().to_path_buf());
    }
    let bus = Bus::connect(&env.config).await.map_err(|e| e.to_string())?;
    bus.ensure_streams().await.map_err(|e| e.to_string())?;
    publish_in_order(&bus, &s.events).await;
    let worker = start_worker(&env.config);
    wait_quiet(&env.config, &bus, Duration::from_secs(90)).await;
    let triggers = all_triggers(&bus).await;
    worker.shutdown().await;
    env.cleanup().await;
    // Every published trigger is a valid runwatch.trigger.v1 (schemas/trigger.v1.json).
    for t in &triggers {
        let why = errors(trigger_schema(), t);
        if !why.is_empty() {
            return Err(format!(
                "{}: a published trigger does not validate:\n{why}\n{t}",
                s.name
            ));
        }
    }
    let mut got: Vec<String> = triggers.iter().map(project_value).collect();
    got.sort();
    if got == s.expected {
        Ok(())
    } else {
        Err(format!(
            "{}:\n  expected {:?}\n  got      {:?}",
            s.name, s.expected, got
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_through_the_live_pipeline() {
    let mut scenarios = load_scenarios();
    assert!(!scenarios.is_empty());
    scenarios.retain(|s| match &s.simulate_only {
        Some(why) => {
            eprintln!("{}: simulate only: {}", s.name, why.trim());
            false
        }
        None => true,
    });
    let results: Vec<Result<(), String>> = futures::stream::iter(scenarios.iter().map(run_one))
        .buffer_unordered(6)
        .collect()
        .await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
