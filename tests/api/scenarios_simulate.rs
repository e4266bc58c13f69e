//! The conformance scenarios in tests/conformance through `simulate`: the library's
//! `simulate::run`, and the `runwatch simulate` command as a user runs it.

use std::process::Command;

use crate::helpers::scenarios::{load_scenarios, project, scenarios_dir};

#[test]
fn every_scenario_passes_through_simulate() {
    let scenarios = load_scenarios();
    assert!(!scenarios.is_empty(), "no scenarios found");
    let mut failures = Vec::new();
    for s in &scenarios {
        let (out, err) = s.simulate();
        assert!(err.is_empty(), "{}: {err}", s.name);
        let got = project(out.lines());
        if got != s.expected {
            failures.push(format!(
                "{}:\n  expected {:?}\n  got      {:?}",
                s.name, s.expected, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same scenarios through the binary (`runwatch simulate [--rules FILE] FILE`), so the
/// command line, the rules file loader and the printed JSON lines are checked too.
#[test]
fn every_scenario_passes_through_the_simulate_command() {
    let dir = scenarios_dir();
    let scenarios = load_scenarios();
    assert!(!scenarios.is_empty(), "no scenarios found");
    let mut failures = Vec::new();
    for s in &scenarios {
        let d = dir.join(&s.name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runwatch"));
        // The default configuration, whatever the environment holds (RUNWATCH_RULES_FILE,
        // RUNWATCH_LIMITS__…).
        cmd.env_clear().arg("simulate");
        if s.rules_toml.is_some() {
            cmd.arg("--rules").arg(d.join("rules.toml"));
        }
        let out = cmd.arg(d.join("events.jsonl")).output().unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{}: {}: {}",
                s.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let got = project(String::from_utf8(out.stdout).unwrap().lines());
        if got != s.expected {
            failures.push(format!(
                "{}:\n  expected {:?}\n  got      {:?}",
                s.name, s.expected, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
