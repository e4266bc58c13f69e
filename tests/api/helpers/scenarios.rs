//! Loading the conformance scenarios (`tests/conformance/`) and projecting triggers as
//! docs/design.md's "Conformance scenarios" says.

use std::path::PathBuf;

pub struct Scenario {
    pub name: String,
    pub events: String,
    pub rules_toml: Option<String>,
    /// Sorted projections, as JSON strings with sorted keys.
    pub expected: Vec<String>,
    /// Why the scenario holds for `simulate` only (a `simulate-only` file in its directory):
    /// what it tests cannot cross the bus, e.g. two events sharing an id, which JetStream's
    /// duplicate window drops before any worker sees the second.
    pub simulate_only: Option<String>,
}

/// The repository's suite, `tests/conformance/` (every subdirectory is a scenario), unless
/// `RUNWATCH_SCENARIOS` names another directory laid out the same way.
pub fn scenarios_dir() -> PathBuf {
    std::env::var_os("RUNWATCH_SCENARIOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance"))
}

pub fn load_scenarios() -> Vec<Scenario> {
    let dir = scenarios_dir();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let d = dir.join(&name);
            // Both files are required: a scenario without expected.jsonl would pass by firing
            // nothing. An empty expected.jsonl says that nothing fires.
            let read = |file: &str| {
                std::fs::read_to_string(d.join(file))
                    .unwrap_or_else(|e| panic!("{name}/{file}: {e}"))
            };
            let expected_text = read("expected.jsonl");
            let mut expected: Vec<String> = expected_text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let v = serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("{name}/expected.jsonl: {e}: {l}"));
                    canonical(&v)
                })
                .collect();
            expected.sort();
            Scenario {
                events: read("events.jsonl"),
                rules_toml: std::fs::read_to_string(d.join("rules.toml")).ok(),
                simulate_only: std::fs::read_to_string(d.join("simulate-only")).ok(),
                expected,
                name,
            }
        })
        .collect()
}

fn canonical(v: &serde_json::Value) -> String {
    // serde_json's Map is a BTreeMap without the preserve_order feature: keys come sorted.
    serde_json::to_string(v).unwrap()
}

/// The projection the conformance scenarios compare (docs/design.md), sorted.
pub fn project<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let t: serde_json::Value = serde_json::from_str(l).unwrap();
            project_value(&t)
        })
        .collect();
    out.sort();
    out
}

pub fn project_value(t: &serde_json::Value) -> String {
    let mut failed: Vec<String> = t["failed_workflows"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    failed.sort();
    let mut p = serde_json::json!({
        "rule": t["rule"],
        "provider": t["provider"],
        "repository": format!("{}/{}", t["repository"]["owner"].as_str().unwrap_or_default(),
                              t["repository"]["name"].as_str().unwrap_or_default()).to_lowercase(),
        "pr_number": t["pr_number"],
        "commit_sha": t["commit_sha"],
        "failed_workflows": failed,
    });
    if t["rule"] == "repeated_failure" {
        p["branch"] = t["branch"].clone();
    }
    // A rule with a trigger budget: the trigger's place in it (deterministic in both runners).
    if !t["budget"].is_null() {
        p["budget"] = t["budget"].clone();
    }
    if let Some(known) = t.get("known_flaky") {
        p["known_flaky"] = known.clone();
    }
    canonical(&p)
}

impl Scenario {
    /// The scenario through the library's `simulate`: (stdout, stderr).
    pub fn simulate(&self) -> (String, String) {
        use runwatch::engine::{Engine, RuleSet};
        use runwatch::event::Limits;
        let rules = match &self.rules_toml {
            Some(t) => {
                RuleSet::from_toml(t).unwrap_or_else(|e| panic!("{}/rules.toml: {e}", self.name))
            }
            None => RuleSet::default_rules(),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        runwatch::simulate::run(
            Engine::new(rules, Limits::default()),
            Limits::default(),
            self.events.as_bytes(),
            &mut out,
            &mut err,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        (
            String::from_utf8(out).expect("UTF-8 triggers"),
            String::from_utf8(err).expect("UTF-8 stderr"),
        )
    }
}
