//! Issue 17 item 10 against the real binary: two rules that are one (the same name, or the
//! same meaning under two names) and a passing conclusion in `failure_conclusions` are
//! refused with exit status 2 naming both rules or the key, in `[[rules]]`, in a rules file
//! and in `simulate --rules`; every rules error is printed once; `explain --help` and
//! `repo-id --help` list every provider.

use crate::helpers::app::{runwatch_offline, simulate_rules};

/// Runs `simulate` with `rules` as a rules file (`--rules`), as `rules_file` and as
/// `[[rules]]` in the configuration file; returns each run's stderr after checking the exit
/// status is 2.
fn refused(rules: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    std::fs::write(&file, rules).unwrap();
    let inline = dir.path().join("inline.toml");
    std::fs::write(&inline, rules).unwrap();
    let via_file = dir.path().join("via_file.toml");
    std::fs::write(
        &via_file,
        format!("rules_file = {:?}\n", file.to_str().unwrap()),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    [
        vec!["simulate", "--rules", file, "/dev/null"],
        vec![
            "--config",
            inline.to_str().unwrap(),
            "simulate",
            "/dev/null",
        ],
        vec![
            "--config",
            via_file.to_str().unwrap(),
            "simulate",
            "/dev/null",
        ],
        vec!["--config", inline.to_str().unwrap(), "run", "--no-migrate"],
    ]
    .iter()
    .map(|args| {
        let out = runwatch_offline(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        err
    })
    .collect()
}

const ACWF: &str = "kind = \"all_completed_with_failure\"";

#[test]
fn the_same_rule_twice_is_refused_naming_both() {
    // Identical rules: the second is named `all_completed_with_failure#2` and would fire
    // every trigger again under its own trigger id.
    for err in refused(&format!("[[rules]]\n{ACWF}\n\n[[rules]]\n{ACWF}\n")) {
        assert!(
            err.contains("`rules[1]`")
                && err.contains("\"all_completed_with_failure#2\" is the same rule as rules[0] (\"all_completed_with_failure\")"),
            "{err}"
        );
    }
    // The same meaning under two names, written differently.
    let rules = format!(
        "[[rules]]\n{ACWF}\nname = \"a\"\nworkflows = [\"test\", \"build\"]\n\n\
         [[rules]]\n{ACWF}\nname = \"b\"\nworkflows = [\"build\", \"test\"]\nsettle = \"0s\"\nrequire_pr = true\n"
    );
    for err in refused(&rules) {
        assert!(
            err.contains("rule \"b\" is the same rule as rules[0] (\"a\")"),
            "{err}"
        );
        assert!(err.contains("fire twice"), "{err}");
    }
    // One name for two rules: both are named.
    let rules = format!(
        "[[rules]]\n{ACWF}\nname = \"x\"\n\n[[rules]]\nkind = \"repeated_failure\"\nname = \"x\"\n"
    );
    for err in refused(&rules) {
        assert!(
            err.contains("`rules[1].name`")
                && err.contains("\"x\" is already the name of rules[0]"),
            "{err}"
        );
    }
}

#[test]
fn a_passing_conclusion_is_not_a_failure() {
    for c in ["success", "neutral", "skipped"] {
        for kind in ["all_completed_with_failure", "repeated_failure"] {
            let rules = format!(
                "[[rules]]\nkind = \"{kind}\"\nfailure_conclusions = [\"failure\", \"{c}\"]\n"
            );
            for err in refused(&rules) {
                assert!(
                    err.contains("`rules[0].failure_conclusions`")
                        && err.contains(&format!("\"{c}\" is a passing conclusion")),
                    "{err}"
                );
            }
        }
    }
    // A conclusion that is not a pass is the operator's choice.
    let out = simulate_rules(&format!(
        "[[rules]]\n{ACWF}\nfailure_conclusions = [\"failure\", \"cancelled\"]\n"
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_rules_error_is_printed_once() {
    let cases = [
        // Parse error (the TOML message spans several lines).
        (
            "[[rules]]\nname = \"no kind\"\n".to_string(),
            "missing field `kind`",
        ),
        (
            format!("[[rules]]\n{ACWF}\nthreshold = 2\n"),
            "does not apply to kind",
        ),
        (
            format!("[[rules]]\n{ACWF}\nworkflows = []\n"),
            "must list at least one pattern",
        ),
        (
            format!("[[rules]]\n{ACWF}\n[[rules]]\n{ACWF}\n"),
            "fire twice",
        ),
    ];
    for (rules, says) in cases {
        for err in refused(&rules) {
            assert_eq!(err.matches(says).count(), 1, "{says:?} once: {err}");
            assert_eq!(
                err.matches("runwatch: ").count(),
                1,
                "one error line: {err}"
            );
        }
    }
    // A rules file that cannot be read: the OS error once.
    let out = runwatch_offline(&[
        "simulate",
        "--rules",
        "/nonexistent/rules.toml",
        "/dev/null",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn help_lists_every_provider() {
    let providers = [
        "github",
        "gitlab",
        "bitbucket",
        "azure_devops",
        "generic",
        "buildkite",
        "circleci",
    ];
    for (command, args) in [
        ("explain", &["acme/app", "1", "c"][..]),
        ("repo-id", &["acme/app"]),
    ] {
        let out = runwatch_offline(&[command, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{help}");
        let line = help
            .lines()
            .find(|l| l.contains("PROVIDER") && l.contains("possible values"));
        let line = line.unwrap_or_else(|| panic!("{command} --help has no provider line: {help}"));
        for p in providers {
            assert!(line.contains(p), "{command} --help lacks {p}: {line}");
        }
        // An unknown provider is refused by the parser, with the list.
        let out = runwatch_offline(&[&[command, "gitub"][..], args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(providers.iter().all(|p| err.contains(p)), "{err}");
    }
}

/// The flaky keys (docs/design.md "Flaky workflows"): out of range, of the wrong type, or on
/// `repeated_failure`, each is refused naming `rules[N].<key>`, in every way rules are given.
#[test]
fn flaky_keys_out_of_range_or_misplaced_are_refused_naming_the_key() {
    for (body, key, words) in [
        ("flaky_window = \"0s\"", "flaky_window", "0s"),
        ("flaky_window = \"59s\"", "flaky_window", "out of range"),
        ("flaky_window = \"366d\"", "flaky_window", "out of range"),
        ("flaky_window = \"500000y\"", "flaky_window", "out of range"),
        ("flaky_window = \"soon\"", "flaky_window", "flaky_window"),
        ("flaky_window = 7", "flaky_window", "flaky_window"),
        (
            "flaky_threshold = 0",
            "flaky_threshold",
            "between 1 and 1000",
        ),
        (
            "flaky_threshold = 1001",
            "flaky_threshold",
            "between 1 and 1000",
        ),
        ("flaky_threshold = -1", "flaky_threshold", "flaky_threshold"),
        (
            "flaky_threshold = 4294967296",
            "flaky_threshold",
            "flaky_threshold",
        ),
        ("skip_flaky = \"yes\"", "skip_flaky", "skip_flaky"),
    ] {
        for err in refused(&format!("[[rules]]\n{ACWF}\n{body}\n")) {
            assert!(err.contains(key) && err.contains(words), "{body}: {err}");
        }
    }
    for key in [
        "flaky_window = \"1d\"",
        "flaky_threshold = 2",
        "skip_flaky = true",
    ] {
        let name = key.split(' ').next().unwrap_or_default();
        for err in refused(&format!("[[rules]]\nkind = \"repeated_failure\"\n{key}\n")) {
            assert!(
                err.contains(&format!("`rules[0].{name}`"))
                    && err.contains("does not apply to kind repeated_failure"),
                "{key}: {err}"
            );
        }
    }
    // Both ends are accepted.
    let out = simulate_rules(&format!(
        "[[rules]]\n{ACWF}\nflaky_window = \"1m\"\nflaky_threshold = 1000\nskip_flaky = true\n\
         [[rules]]\n{ACWF}\nname = \"long\"\nflaky_window = \"365d\"\nflaky_threshold = 1\n"
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
