use super::*;

#[test]
fn parses_design_example() {
    let set = RuleSet::from_toml(
        r#"
[[rules]]
kind = "all_completed_with_failure"
failure_conclusions = ["failure", "timed_out", "startup_failure"]
require_pr = true
settle = "0s"
refire_on_rerun = false
repositories = ["*"]
branches = ["*"]
workflows = ["*"]
cooldown = "0s"

[[rules]]
kind = "repeated_failure"
threshold = 3
branches = ["main"]
"#,
    )
    .unwrap();
    assert_eq!(set.rules().len(), 2);
    assert_eq!(set.rules()[1].name, "repeated_failure");
    assert!(set.rules()[1].branches.matches("main"));
    assert!(!set.rules()[1].branches.matches("dev"));
}

#[test]
fn errors_name_the_key() {
    let e = RuleSet::from_toml("[[rules]]\nkind = \"repeated_failure\"\nsettle = \"5s\"\n")
        .unwrap_err();
    assert_eq!(e.key, "rules[0].settle");
    let e = RuleSet::from_toml("[[rules]]\nkind = \"nope\"\n").unwrap_err();
    assert!(e.message.contains("nope"), "{e}");
    let e = RuleSet::from_toml("[[rules]]\nkind = \"repeated_failure\"\nworkflows = [\"[\"]\n")
        .unwrap_err();
    assert_eq!(e.key, "rules[0].workflows");
}

#[test]
fn pull_request_state_options() {
    let set = RuleSet::default_rules();
    assert!(set.rules()[0].only_open && !set.rules()[0].skip_draft);
    let set = RuleSet::from_toml(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nonly_open = false\nskip_draft = true\n",
    )
    .unwrap();
    assert!(!set.rules()[0].only_open && set.rules()[0].skip_draft);
    for key in ["only_open", "skip_draft"] {
        let e = RuleSet::from_toml(&format!(
            "[[rules]]\nkind = \"repeated_failure\"\n{key} = true\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, format!("rules[0].{key}"));
        let e = RuleSet::from_toml(&format!(
            "[[rules]]\nkind = \"all_completed_with_failure\"\n{key} = \"yes\"\n"
        ))
        .unwrap_err();
        assert!(e.message.contains(key), "{e}");
    }
}

#[test]
fn author_options() {
    let set = RuleSet::from_toml(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nauthors = [\"dependabot*\"]\n\
         exclude_authors = [\"Mallory\"]\nskip_bots = true\n",
    )
    .unwrap();
    let r = &set.rules()[0];
    assert!(r.authors.as_ref().unwrap().matches("Dependabot[bot]"));
    assert!(r.exclude_authors.as_ref().unwrap().matches("mallory"));
    assert!(r.skip_bots);
    let d = RuleSet::default_rules();
    assert!(d.rules()[0].authors.is_none() && !d.rules()[0].skip_bots);
    for (line, key) in [
        ("authors = [\"a\"]", "authors"),
        ("exclude_authors = [\"a\"]", "exclude_authors"),
        ("skip_bots = true", "skip_bots"),
    ] {
        let e = RuleSet::from_toml(&format!("[[rules]]\nkind = \"repeated_failure\"\n{line}\n"))
            .unwrap_err();
        assert_eq!(e.key, format!("rules[0].{key}"));
    }
    for (line, key) in [
        ("authors = []", "authors"),
        ("exclude_authors = []", "exclude_authors"),
        ("authors = [\"[\"]", "authors"),
        ("exclude_authors = [\"{a\"]", "exclude_authors"),
    ] {
        let e = RuleSet::from_toml(&format!(
            "[[rules]]\nkind = \"all_completed_with_failure\"\n{line}\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, format!("rules[0].{key}"), "{line}");
    }
    for (line, key) in [
        ("authors = \"alice\"", "authors"),
        ("skip_bots = \"yes\"", "skip_bots"),
        ("exclude_authors = [1]", "exclude_authors"),
    ] {
        let e = RuleSet::from_toml(&format!(
            "[[rules]]\nkind = \"all_completed_with_failure\"\n{line}\n"
        ))
        .unwrap_err();
        assert!(e.message.contains(key), "{line}: {e}");
    }
    // Two rules that differ only in their authors are two rules.
    RuleSet::from_toml(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nauthors = [\"a\"]\n\
         [[rules]]\nkind = \"all_completed_with_failure\"\nauthors = [\"b\"]\n",
    )
    .unwrap();
}

#[test]
fn flaky_options_default_and_apply_to_group_rules_only() {
    let default = RuleSet::default_rules();
    let r = &default.rules()[0];
    assert_eq!(
        (r.flaky_window, r.flaky_threshold, r.skip_flaky),
        (DEFAULT_FLAKY_WINDOW, 2, false)
    );
    for (key, value, words) in [
        ("flaky_window", "\"0s\"", "longer than 0s"),
        ("flaky_threshold", "0", "between 1 and 1000"),
        ("flaky_threshold", "1001", "between 1 and 1000"),
    ] {
        let e = RuleSet::from_toml(&format!(
            "[[rules]]\nkind = \"all_completed_with_failure\"\n{key} = {value}\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, format!("rules[0].{key}"));
        assert!(e.message.contains(words), "{e}");
        let e = RuleSet::from_toml(&format!(
            "[[rules]]\nkind = \"repeated_failure\"\n{key} = {value}\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, format!("rules[0].{key}"));
    }
    // With skip_flaky, the window and threshold change what fires: two such rules are
    // two rules; without it they only change what a trigger marks.
    let acwf = "[[rules]]\nkind = \"all_completed_with_failure\"";
    RuleSet::from_toml(&format!(
        "{acwf}\nskip_flaky = true\n{acwf}\nskip_flaky = true\nflaky_window = \"1d\"\n"
    ))
    .unwrap();
    let e = RuleSet::from_toml(&format!("{acwf}\n{acwf}\nflaky_window = \"1d\"\n")).unwrap_err();
    assert_eq!(e.key, "rules[1]");
    let set = RuleSet::from_toml(&format!(
        "{acwf}\nflaky_window = \"3d\"\n{acwf}\nskip_flaky = true\nflaky_window = \"9d\"\n\
         [[rules]]\nkind = \"repeated_failure\"\n"
    ))
    .unwrap();
    assert_eq!(set.longest_flaky_window(), Duration::from_secs(9 * 86_400));
    assert!(set.counts_flips());
    let streaks_only = RuleSet::from_toml("[[rules]]\nkind = \"repeated_failure\"\n").unwrap();
    assert!(!streaks_only.counts_flips());
    assert_eq!(streaks_only.longest_flaky_window(), Duration::ZERO);
}

#[test]
fn repository_filter_ignores_case_and_globs_cross_slashes() {
    let set = RuleSet::from_toml(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nrepositories = [\"acme/*\"]\nbranches = [\"release/*\"]\n",
    )
    .unwrap();
    let r = &set.rules()[0];
    assert!(r.matches_repository("ACME", "Widgets"));
    assert!(!r.matches_repository("other", "widgets"));
    assert!(r.matches_run("x", Some("release/1.0")));
    assert!(!r.matches_run("x", None));
}

#[test]
fn a_name_used_twice_names_both_rules() {
    let e = RuleSet::from_toml(
        "[[rules]]\nkind = \"all_completed_with_failure\"\nname = \"a\"\n\
         [[rules]]\nkind = \"repeated_failure\"\nname = \"a\"\n",
    )
    .unwrap_err();
    assert_eq!(e.key, "rules[1].name");
    assert!(e.message.contains("rules[0]"), "{e}");
}

#[test]
fn the_same_rule_under_two_names_is_refused() {
    let acwf = "kind = \"all_completed_with_failure\"";
    for (first, second) in [
        // Identical, names defaulted (`all_completed_with_failure` and `#2`).
        (acwf.to_string(), acwf.to_string()),
        // Identical but for the name, with defaults written out or not, patterns in
        // another order or case.
        (
            format!("{acwf}\nname = \"x\"\nrepositories = [\"acme/*\", \"b/c\"]"),
            format!(
                "{acwf}\nname = \"y\"\nrequire_pr = true\nrepositories = [\"B/C\", \"acme/*\"]\n\
                 failure_conclusions = [\"startup_failure\", \"failure\", \"timed_out\"]"
            ),
        ),
        (
            "kind = \"repeated_failure\"\nbranches = [\"main\", \"*\"]".to_string(),
            "kind = \"repeated_failure\"\nthreshold = 3".to_string(),
        ),
    ] {
        let e =
            RuleSet::from_toml(&format!("[[rules]]\n{first}\n[[rules]]\n{second}\n")).unwrap_err();
        assert_eq!(e.key, "rules[1]", "{first} / {second}");
        assert!(e.message.contains("the same rule as rules[0]"), "{e}");
    }
    // Rules that differ in anything that matters stay.
    for (first, second) in [
        (acwf.to_string(), format!("{acwf}\nsettle = \"1s\"")),
        (acwf.to_string(), format!("{acwf}\nbranches = [\"main\"]")),
        (
            acwf.to_string(),
            format!("{acwf}\nfailure_conclusions = [\"failure\"]"),
        ),
        (acwf.to_string(), "kind = \"repeated_failure\"".to_string()),
    ] {
        RuleSet::from_toml(&format!("[[rules]]\n{first}\n[[rules]]\n{second}\n")).unwrap();
    }
}

#[test]
fn budgets_are_positive_and_apply_to_group_rules_only() {
    let acwf = "[[rules]]\nkind = \"all_completed_with_failure\"\n";
    let set = RuleSet::from_toml(&format!(
        "{acwf}max_triggers_per_pull_request = 3\nmax_triggers_per_repository = 20\n"
    ))
    .unwrap();
    let r = &set.rules()[0];
    assert_eq!(r.max_triggers_per_pull_request, Some(3));
    assert_eq!(r.max_triggers_per_repository, Some(20));
    assert_eq!(r.budget_window, DEFAULT_BUDGET_WINDOW);
    assert!(set.uses_budgets());
    assert!(!RuleSet::default_rules().uses_budgets());
    for key in [
        "max_triggers_per_pull_request",
        "max_triggers_per_repository",
    ] {
        for bad in ["0", "-1", "-9223372036854775808"] {
            let e = RuleSet::from_toml(&format!("{acwf}{key} = {bad}\n")).unwrap_err();
            assert_eq!(e.key, format!("rules[0].{key}"), "{bad}");
            assert!(e.message.contains("at least 1"), "{e}");
        }
        let e = RuleSet::from_toml(&format!("{acwf}{key} = \"3\"\n")).unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
        let e = RuleSet::from_toml(&format!(
            "[[rules]]\nkind = \"repeated_failure\"\n{key} = 3\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, format!("rules[0].{key}"));
    }
    // Beyond u32: saturated, for the range check to refuse (config::RULE_RANGES).
    let set = RuleSet::from_toml(&format!(
        "{acwf}max_triggers_per_repository = 99999999999\n"
    ))
    .unwrap();
    assert_eq!(set.rules()[0].max_triggers_per_repository, Some(u32::MAX));
    // A window without a budget, or of no length, is refused.
    let e = RuleSet::from_toml(&format!("{acwf}budget_window = \"1h\"\n")).unwrap_err();
    assert_eq!(e.key, "rules[0].budget_window");
    assert!(e.message.contains("no effect"), "{e}");
    let e = RuleSet::from_toml(&format!(
        "{acwf}max_triggers_per_pull_request = 1\nbudget_window = \"0s\"\n"
    ))
    .unwrap_err();
    assert_eq!(e.key, "rules[0].budget_window");
}

#[test]
fn passing_conclusions_are_not_failures() {
    for c in ["success", "neutral", "skipped"] {
        let e = RuleSet::from_toml(&format!(
            "[[rules]]\nkind = \"repeated_failure\"\nfailure_conclusions = [\"failure\", \"{c}\"]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "rules[0].failure_conclusions");
        assert!(
            e.message
                .contains(&format!("\"{c}\" is a passing conclusion")),
            "{e}"
        );
    }
    for c in ["cancelled", "action_required", "stale"] {
        RuleSet::from_toml(&format!(
            "[[rules]]\nkind = \"repeated_failure\"\nfailure_conclusions = [\"{c}\"]\n"
        ))
        .unwrap();
    }
}
