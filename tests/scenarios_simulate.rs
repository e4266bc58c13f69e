//! The conformance scenarios in ../shared/scenarios through the library's simulate.

mod common;

use common::scenarios::{load_scenarios, project};
use runwatch::engine::{Engine, RuleSet};
use runwatch::event::Limits;

#[test]
fn every_scenario_passes_through_simulate() {
    let scenarios = load_scenarios();
    assert!(!scenarios.is_empty(), "no scenarios found");
    let mut failures = Vec::new();
    for s in &scenarios {
        let rules = match &s.rules_toml {
            Some(t) => RuleSet::from_toml(t).unwrap(),
            None => RuleSet::default_rules(),
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        runwatch::simulate::run(
            Engine::new(rules, Limits::default()),
            Limits::default(),
            s.events.as_bytes(),
            &mut out,
            &mut err,
        )
        .unwrap();
        assert!(err.is_empty(), "{}: {}", s.name, String::from_utf8_lossy(&err));
        let got = project(String::from_utf8(out).unwrap().lines());
        if got != s.expected {
            failures.push(format!("{}:\n  expected {:?}\n  got      {:?}", s.name, s.expected, got));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
