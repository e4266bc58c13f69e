use super::*;

#[test]
fn every_provider_has_one_name_on_the_command_line_and_in_json() {
    use clap::ValueEnum;
    for p in Provider::value_variants() {
        let name = p.to_possible_value().map(|v| v.get_name().to_string());
        assert_eq!(name.as_deref(), Some(p.as_str()));
        assert_eq!(Provider::parse(p.as_str()), Some(*p));
        assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
    }
    assert_eq!(Provider::value_variants().len(), 7);
}

const GOOD: &str = r#"{"schema":"runwatch.workflow_run.v1","event_id":"e1","provider":"github",
  "repository":{"owner":"octo-org","name":"octo-repo","id":"300029405"},
  "commit_sha":"3484a3fb","branch":"feature/x","pr_number":2,
  "run":{"id":"289782451","attempt":1,"workflow":"test","status":"completed","conclusion":"failure",
  "url":"https://x","updated_at":"2020-10-05T16:33:24Z"},"metadata":{},"extra":1}"#;

fn code(s: &str) -> RejectCode {
    decode(s.as_bytes(), &Limits::default()).unwrap_err().code
}

#[test]
fn decodes_the_design_example() {
    let e = decode(GOOD.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(e.run.conclusion, Some(Conclusion::Failure));
    assert_eq!(e.pr_number, Some(2));
    assert_eq!(e.provider, Provider::Github);
}

#[test]
fn rejections_have_reasons() {
    assert_eq!(code("not json"), RejectCode::NotJson);
    assert_eq!(code("[1,2]"), RejectCode::NotJson);
    assert_eq!(
        code(&GOOD.replace("workflow_run.v1", "v0")),
        RejectCode::Schema
    );
    assert_eq!(
        code(&GOOD.replace("\"pr_number\":2", "\"pr_number\":\"2\"")),
        RejectCode::Invalid
    );
    assert_eq!(
        code(&GOOD.replace("\"conclusion\":\"failure\",", "")),
        RejectCode::Invalid
    );
    assert_eq!(
        code(&GOOD.replace("github", "sourceforge")),
        RejectCode::Invalid
    );
    assert_eq!(
        code(&GOOD.replace("\"event_id\":\"e1\",", "")),
        RejectCode::Invalid
    );
    let long = "x".repeat(2000);
    assert_eq!(
        code(&GOOD.replace("feature/x", &long)),
        RejectCode::Oversize
    );
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000));
    assert_eq!(code(&big), RejectCode::Oversize);
}

#[test]
fn times_outside_years_0001_to_9999_are_invalid() {
    let at = |t: &str| GOOD.replace("2020-10-05T16:33:24Z", t);
    for bad in [
        "-5000-01-01T00:00:00Z",
        "+10000-01-01T00:00:00Z",
        "0000-12-31T23:59:59Z",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-01:00",
    ] {
        let r = decode(at(bad).as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(r.code, RejectCode::Invalid, "{bad}: {r}");
        assert!(r.detail.contains("run.updated_at"), "{bad}: {r}");
    }
    for good in [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
        "1970-01-01T00:00:00Z",
    ] {
        let e = decode(at(good).as_bytes(), &Limits::default()).unwrap();
        let text = serde_json::to_string(&e.run.updated_at).unwrap();
        assert_eq!(
            &text[1..5],
            &good[..4],
            "four-digit year when written: {text}"
        );
    }
}

#[test]
fn control_characters_in_identifiers_are_invalid_and_details_are_escaped() {
    for (field, from) in [
        ("repository.owner", "octo-org"),
        ("repository.name", "octo-repo"),
        ("repository.id", "300029405"),
        ("commit_sha", "3484a3fb"),
        ("branch", "feature/x"),
        ("run.id", "289782451"),
        ("run.workflow", "\"test\""),
    ] {
        for c in ["\\u001b[31m", "\\r", "\\n", "\\t", "\\u007f", "\\u0085"] {
            let to = if from.starts_with('"') {
                format!("\"te{c}st\"")
            } else {
                format!("{from}{c}x")
            };
            let r = decode(GOOD.replacen(from, &to, 1).as_bytes(), &Limits::default()).unwrap_err();
            assert_eq!(r.code, RejectCode::Invalid, "{field} {c}: {r}");
            assert!(r.detail.starts_with(field), "{field} {c}: {r}");
        }
    }
    // A parser message quoting the hostile value is escaped.
    let r = decode(
        GOOD.replace("\"github\"", "\"git\\r\\nhub\\u001b\"")
            .as_bytes(),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(!r.detail.chars().any(char::is_control), "{r:?}");
    assert!(r.detail.contains("git\\r\\nhub"), "{r:?}");
    // Free text keeps them: a URL is carried, never printed as a column.
    assert!(
        decode(
            GOOD.replace("https://x", "https://x\\ty").as_bytes(),
            &Limits::default()
        )
        .is_ok()
    );
}

#[test]
fn github_statuses_map_to_queued_and_conclusion_is_dropped_before_completion() {
    let s = GOOD.replace("\"status\":\"completed\"", "\"status\":\"requested\"");
    let e = decode(s.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(e.run.status, Status::Queued);
    assert_eq!(e.run.conclusion, None);
}
