//! The JSON Schemas in `schemas/`, compiled once per test binary, with `format` checked
//! (draft 2020-12 treats `format` as an annotation unless asked).

use std::path::PathBuf;
use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

fn load(file: &str) -> Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    jsonschema::draft202012::meta::validate(&schema).unwrap_or_else(|e| {
        panic!(
            "{} is not a valid draft 2020-12 schema: {e}",
            path.display()
        )
    });
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `schemas/workflow_run.v1.json`.
pub fn event_schema() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| load("workflow_run.v1.json"))
}

/// `schemas/pull_request.v1.json`.
pub fn pull_request_schema() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| load("pull_request.v1.json"))
}

/// `schemas/workflow_job.v1.json`.
pub fn job_schema() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| load("workflow_job.v1.json"))
}

/// `schemas/trigger.v1.json`.
pub fn trigger_schema() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| load("trigger.v1.json"))
}

/// Every reason `instance` fails `validator`, one per line; empty when it is valid.
pub fn errors(validator: &Validator, instance: &Value) -> String {
    validator
        .iter_errors(instance)
        .map(|e| format!("  {}: {e}", e.instance_path()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Panics with every reason when `trigger` does not validate against the trigger schema.
pub fn assert_valid_trigger(trigger: &Value, context: &str) {
    let why = errors(trigger_schema(), trigger);
    assert!(
        why.is_empty(),
        "{context}: trigger does not validate:\n{why}\n{trigger}"
    );
}
