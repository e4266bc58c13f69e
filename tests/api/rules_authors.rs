//! `authors`, `exclude_authors` and `skip_bots` against the real binary: a bad value is
//! refused with exit status 2 and a message naming `rules[N].<key>`, in a rules file
//! (`simulate --rules`) and in `[[rules]]` of the configuration file; a good rule set
//! runs.

use crate::helpers::app::{runwatch_offline, simulate_rules};

#[test]
fn bad_author_options_name_their_key() {
    let acwf = "[[rules]]\nkind = \"all_completed_with_failure\"\n";
    let rf = "[[rules]]\nkind = \"repeated_failure\"\n";
    for (rules, key) in [
        (format!("{acwf}authors = []\n"), "rules[0].authors"),
        (format!("{acwf}authors = [\"[a\"]\n"), "rules[0].authors"),
        (
            format!("{acwf}exclude_authors = []\n"),
            "rules[0].exclude_authors",
        ),
        (
            format!("{acwf}exclude_authors = [\"{{x\"]\n"),
            "rules[0].exclude_authors",
        ),
        (format!("{rf}authors = [\"a\"]\n"), "rules[0].authors"),
        (
            format!("{rf}exclude_authors = [\"a\"]\n"),
            "rules[0].exclude_authors",
        ),
        (format!("{rf}skip_bots = true\n"), "rules[0].skip_bots"),
        (
            format!(
                "{acwf}name = \"a\"\n{acwf}name = \"b\"\nskip_bots = false\nauthors = [\"x\", \"[\"]\n"
            ),
            "rules[1].authors",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        std::fs::write(&file, &rules).unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, &rules).unwrap();
        for args in [
            vec!["simulate", "--rules", file.to_str().unwrap(), "/dev/null"],
            vec![
                "--config",
                config.to_str().unwrap(),
                "simulate",
                "/dev/null",
            ],
        ] {
            let out = runwatch_offline(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{rules}\n{args:?}: {stderr}");
            assert!(stderr.contains(key), "{rules}\n{args:?}: {stderr}");
        }
    }
    // Wrong types are refused by the parser, naming the key.
    for (line, key) in [
        ("authors = \"alice\"", "authors"),
        ("exclude_authors = [1]", "exclude_authors"),
        ("skip_bots = \"yes\"", "skip_bots"),
    ] {
        let out = simulate_rules(&format!("{acwf}{line}\n"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {stderr}");
        assert!(stderr.contains(key), "{line}: {stderr}");
    }
    // A good one runs.
    let out = simulate_rules(&format!(
        "{acwf}authors = [\"*\"]\nexclude_authors = [\"renovate*\"]\nskip_bots = true\n"
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
