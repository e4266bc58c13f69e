use super::*;

#[test]
fn form_bodies_carry_the_json_in_payload() {
    let json = r#"{"zen":"a+b & c=d %"}"#;
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", json)
        .finish();
    let got = json_body(Some("application/x-www-form-urlencoded"), form.as_bytes()).unwrap();
    assert_eq!(&*got, json.as_bytes());
    let got = json_body(
        Some("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
        form.as_bytes(),
    )
    .unwrap();
    assert_eq!(&*got, json.as_bytes());
    assert_eq!(
        &*json_body(Some("application/json"), json.as_bytes()).unwrap(),
        json.as_bytes()
    );
    assert_eq!(&*json_body(None, json.as_bytes()).unwrap(), json.as_bytes());
    assert!(matches!(
        json_body(Some("application/x-www-form-urlencoded"), b"other=1"),
        Err(NormalizeError::Field("payload"))
    ));
}

#[test]
fn signatures() {
    let secrets = vec![Secret::new("old"), Secret::new("new")];
    let body = b"{\"zen\":\"x\"}";
    assert!(verify_signature(&secrets, Some(&sign(b"new", body)), body));
    assert!(verify_signature(&secrets, Some(&sign(b"old", body)), body));
    assert!(!verify_signature(
        &secrets,
        Some(&sign(b"other", body)),
        body
    ));
    assert!(!verify_signature(
        &secrets,
        Some(&sign(b"new", b"tampered")),
        body
    ));
    assert!(!verify_signature(&secrets, None, body));
    assert!(!verify_signature(&secrets, Some("sha1=00"), body));
    assert!(!verify_signature(&secrets, Some("sha256=zz"), body));
    assert!(!verify_signature(&[], Some(&sign(b"new", body)), body));
    // GitHub's documented test vector.
    assert_eq!(
        sign(b"It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
}

fn run(prs: &str, head_repo_id: u64) -> Vec<u8> {
    format!(
        r#"{{"action":"completed","repository":{{"id":7,"name":"r","owner":{{"login":"o"}}}},
        "workflow":{{"name":"wf"}},
        "workflow_run":{{"id":99,"name":"","path":".github/workflows/ci.yml","head_branch":"main",
        "head_sha":"abc","run_attempt":2,"status":"completed","conclusion":"failure",
        "html_url":"u","updated_at":"2026-01-01T00:00:00Z","pull_requests":[{prs}],
        "head_repository":{{"id":{head_repo_id},"full_name":"forker/r","owner":{{"login":"forker"}}}}}}}}"#
    )
    .into_bytes()
}

#[test]
fn one_event_per_pull_request() {
    let Normalized::Events(e) = normalize(
        "workflow_run",
        "d1",
        &run(r#"{"number":3},{"number":1}"#, 7),
        &GithubOptions::default(),
    )
    .unwrap() else {
        panic!()
    };
    let ids: Vec<_> = e
        .iter()
        .map(|e| (e.event_id.as_str(), e.pr_number))
        .collect();
    assert_eq!(ids, vec![("d1:1", Some(1)), ("d1:3", Some(3))]);
    assert_eq!(e[0].run.workflow, "wf");
    assert_eq!(e[0].run.attempt, 2);
    assert_eq!(e[0].branch.as_deref(), Some("main"));
    let Normalized::Events(e) = normalize(
        "workflow_run",
        "d1",
        &run(r#"{"number":3}"#, 7),
        &GithubOptions::default(),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!((e[0].event_id.as_str(), e[0].pr_number), ("d1", Some(3)));
}

#[test]
fn forks_have_no_pull_request_and_a_qualified_branch() {
    let Normalized::Events(e) =
        normalize("workflow_run", "d", &run("", 8), &GithubOptions::default()).unwrap()
    else {
        panic!()
    };
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].pr_number, None);
    assert_eq!(e[0].branch.as_deref(), Some("forker:main"));
    assert_eq!(e[0].metadata["fork"], true);
}

#[test]
fn other_events_and_bad_bodies() {
    assert!(matches!(
        normalize("ping", "", b"{}", &GithubOptions::default()),
        Ok(Normalized::Ping)
    ));
    assert!(matches!(
        normalize("push", "d", b"x", &GithubOptions::default()),
        Ok(Normalized::Ignored { .. })
    ));
    assert!(matches!(
        normalize("workflow_job", "d", b"x", &GithubOptions::default()),
        Err(NormalizeError::Json(_))
    ));
    assert!(matches!(
        normalize("workflow_run", "d", b"nope", &GithubOptions::default()),
        Err(NormalizeError::Json(_))
    ));
    assert!(matches!(
        normalize("workflow_run", "", &run("", 7), &GithubOptions::default()),
        Err(NormalizeError::MissingHeader(_))
    ));
    let bad = String::from_utf8(run("", 7))
        .unwrap()
        .replace("\"completed\",\"conclusion\"", "\"weird\",\"conclusion\"");
    let err = normalize(
        "workflow_run",
        "d",
        bad.as_bytes(),
        &GithubOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("weird"), "{err}");
}
