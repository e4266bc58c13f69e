//! `runwatch deliver`'s configuration against the real binary: every bad target key is
//! exit status 2 naming the key (and the target), before anything connects, without
//! printing a secret; and the shipped body templates render a real trigger (the one
//! `runwatch simulate examples/demo.jsonl` prints) into the JSON their receivers expect.

use std::process::{Command, Output};

use runwatch::deliver::template::BodyTemplate;

const BIN: &str = env!("CARGO_BIN_EXE_runwatch");
const SECRET: &str = "tgt-s3cret-7Hq";

/// `runwatch --config FILE deliver ARGS` with the given configuration, NATS pointing at a
/// closed port (nothing must connect).
fn deliver(config: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).expect("write");
    Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("deliver")
        .args(args)
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("RUNWATCH_NATS__CONNECT_TIMEOUT", "100ms")
        .envs(env.iter().copied())
        .output()
        .expect("run")
}

fn target(extra: &str) -> String {
    format!(
        "[[deliver.targets]]\nname = \"t1\"\nurl = \"http://127.0.0.1:9/x\"\nsecret = \"{SECRET}\"\n{extra}\n"
    )
}

#[test]
fn bad_target_keys_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let bad_template = dir.path().join("bad.j2");
    std::fs::write(&bad_template, "{\"a\": {{ trigger.x ").expect("write");
    let cases: Vec<(String, &str)> = vec![
        (target("") + &target(""), "`deliver.targets[1].name`"),
        (
            "[[deliver.targets]]\nname = \"a b\"\nurl = \"http://h/\"\n".into(),
            "`deliver.targets[0].name`",
        ),
        (
            "[[deliver.targets]]\nname = \"a.b\"\nurl = \"http://h/\"\n".into(),
            "`deliver.targets[0].name`",
        ),
        (
            "[[deliver.targets]]\nname = \"x\"\nurl = \"ftp://h/\"\n".into(),
            "`deliver.targets[0].url`",
        ),
        (
            "[[deliver.targets]]\nname = \"x\"\nurl = \"not a url\"\n".into(),
            "`deliver.targets[0].url`",
        ),
        (
            "[[deliver.targets]]\nname = \"x\"\n".into(),
            "`deliver.targets[0].url`",
        ),
        (
            target("secret_file = \"/nonexistent/s\""),
            "`deliver.targets[0].secret`",
        ),
        (target("timeout = \"0s\""), "`deliver.targets[0].timeout`"),
        (target("timeout = \"11m\""), "`deliver.targets[0].timeout`"),
        (
            target("max_attempts = 0"),
            "`deliver.targets[0].max_attempts`",
        ),
        (
            target("concurrency = 257"),
            "`deliver.targets[0].concurrency`",
        ),
        (
            target("repositories = []"),
            "`deliver.targets[0].repositories`",
        ),
        (
            target("providers = [\"[\"]"),
            "`deliver.targets[0].providers`",
        ),
        (
            target("headers = { \"Runwatch-Signature-256\" = \"x\" }"),
            "`deliver.targets[0].headers`",
        ),
        (
            target("headers = { \"Bad Name\" = \"x\" }"),
            "`deliver.targets[0].headers`",
        ),
        (
            target("headers_from_env = { \"Authorization\" = \"RUNWATCH_TEST_NO_SUCH_VAR\" }"),
            "`deliver.targets[0].headers_from_env`",
        ),
        (
            target("template = \"{{ unclosed\""),
            "`deliver.targets[0].template`",
        ),
        (
            target(&format!("template_file = \"{}\"", bad_template.display())),
            "`deliver.targets[0].template_file`",
        ),
        (
            target("template = \"{}\"\ntemplate_file = \"x\""),
            "`deliver.targets[0].template`",
        ),
        (target("from = \"yesterday\""), "from"),
        (target("unknown_key = 1"), "unknown_key"),
        (
            "[deliver]\nmin_delay = \"10m\"\nmax_delay = \"1m\"\n".into(),
            "`deliver.min_delay`",
        ),
        (
            "[deliver]\nretry_after_max = \"2d\"\n".into(),
            "`deliver.retry_after_max`",
        ),
    ];
    for (config, key) in cases {
        let out = deliver(&config, &[], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}\n{stderr}");
        assert!(
            stderr.contains(key),
            "{config}: expected {key} in\n{stderr}"
        );
        assert!(!stderr.contains(SECRET), "the secret is shown:\n{stderr}");
        assert!(
            !stderr.contains("connect"),
            "{config}: it tried to connect:\n{stderr}"
        );
    }
}

#[test]
fn unreadable_secret_file_names_the_target_and_shows_no_secret() {
    let config = "[[deliver.targets]]\nname = \"agents\"\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"/nonexistent/agents-secret\"\n";
    let out = deliver(config, &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`deliver.targets[0].secret_file`") && stderr.contains("agents"),
        "{stderr}"
    );

    // A URL with a credential in it (Slack's webhooks) is never quoted, even when wrong.
    let config = "[[deliver.targets]]\nname = \"chat\"\nurl = \"hxxps://hooks.example/services/T0/B0/tok-9Zx\"\n";
    let out = deliver(config, &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("tok-9Zx"), "{stderr}");

    // url_file: unreadable, or not a URL (its content never shown).
    let dir = tempfile::tempdir().expect("dir");
    let url_file = dir.path().join("url");
    std::fs::write(&url_file, "hxxps://hooks.example/services/T0/B0/tok-5Wm\n").expect("write");
    for (path, shown) in [
        (url_file.display().to_string(), "tok-5Wm"),
        ("/nonexistent/url".into(), ""),
    ] {
        let config = format!("[[deliver.targets]]\nname = \"chat\"\nurl_file = \"{path}\"\n");
        let out = deliver(&config, &[], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("`deliver.targets[0].url_file`"), "{stderr}");
        assert!(shown.is_empty() || !stderr.contains(shown), "{stderr}");
    }

    // A secret header's value is never shown when it is not a valid header value.
    let config = "[[deliver.targets]]\nname = \"gh\"\nurl = \"http://127.0.0.1:9/\"\nheaders_from_env = { \"Authorization\" = \"RUNWATCH_TEST_AUTH\" }\n";
    let out = deliver(config, &[], &[("RUNWATCH_TEST_AUTH", "Bearer tok-\n-8Kq")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("headers_from_env") && !stderr.contains("8Kq"),
        "{stderr}"
    );
}

/// A Standard Webhooks key of 32 bytes, as `whsec_<base64>` (hand-written: no key crate).
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMTIzNDU2Nzg=";

#[test]
fn signature_and_cloudevents_keys_are_checked_without_showing_a_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let bad_file = dir.path().join("whsec");
    std::fs::write(&bad_file, "whsec_not*base64-Hd7\n").expect("write");
    let with = |secret: &str, extra: &str| {
        format!(
            "[[deliver.targets]]\nname = \"t1\"\nurl = \"http://127.0.0.1:9/x\"\nsecret = \"{secret}\"\n{extra}\n"
        )
    };
    let nine = [WHSEC; 9].join(" ");
    let cases: Vec<(String, &str, &str)> = vec![
        (target("signature = \"hmac\""), "signature", SECRET),
        (target("cloudevents = \"json\""), "cloudevents", SECRET),
        // An explicit Standard Webhooks target needs whsec_ secrets...
        (
            target("signature = \"standard-webhooks\""),
            "`deliver.targets[0].secret`",
            SECRET,
        ),
        // ...and a secret at all.
        (
            "[[deliver.targets]]\nname = \"x\"\nurl = \"http://h/\"\nsignature = \"standard-webhooks\"\n".into(),
            "`deliver.targets[0].signature`",
            "",
        ),
        (with("whsec_!!notbase64-Qz", ""), "`deliver.targets[0].secret`", "notbase64-Qz"),
        // 5 bytes: under the 24 the specification asks for.
        (with("whsec_c2hvcnQ=", ""), "24 to 64 bytes", "c2hvcnQ"),
        (
            with(&format!("{WHSEC} plain-Vb3"), ""),
            "`deliver.targets[0].secret`",
            "plain-Vb3",
        ),
        (with(&nine, ""), "at most 8", "MfKQ9r8"),
        (
            format!(
                "[[deliver.targets]]\nname = \"x\"\nurl = \"http://h/\"\nsecret_file = \"{}\"\n",
                bad_file.display()
            ),
            "`deliver.targets[0].secret_file`",
            "base64-Hd7",
        ),
        (
            with(WHSEC, "headers = { \"webhook-signature\" = \"v1,x\" }"),
            "`deliver.targets[0].headers`",
            "MfKQ9r8",
        ),
        (
            with(WHSEC, "cloudevents = \"binary\"\nheaders = { \"ce-type\" = \"x\" }"),
            "`deliver.targets[0].headers`",
            "MfKQ9r8",
        ),
    ];
    for (config, key, secret) in cases {
        let out = deliver(&config, &[], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}\n{stderr}");
        assert!(
            stderr.contains(key),
            "{config}: expected {key} in\n{stderr}"
        );
        assert!(
            secret.is_empty() || !stderr.contains(secret),
            "the secret is shown:\n{stderr}"
        );
        assert!(
            !stderr.contains("connect"),
            "{config}: it tried to connect:\n{stderr}"
        );
    }
    // The same keys, well formed, pass the check (through the library: the binary would
    // go on to connect).
    use runwatch::deliver::config::{CloudEventsMode, SignatureScheme};
    for (body, scheme, mode) in [
        (
            format!("secret = \"{WHSEC}\"\ncloudevents = \"structured\""),
            Some(SignatureScheme::StandardWebhooks),
            CloudEventsMode::Structured,
        ),
        (
            format!("secret = \"{WHSEC}\\n{WHSEC}\"\nsignature = \"standard-webhooks\""),
            Some(SignatureScheme::StandardWebhooks),
            CloudEventsMode::Off,
        ),
        (
            format!(
                "secret = \"{WHSEC}\"\nsignature = \"runwatch\"\nheaders = {{ \"ce-type\" = \"x\" }}"
            ),
            Some(SignatureScheme::Runwatch),
            CloudEventsMode::Off,
        ),
        (
            format!("secret = \"{SECRET}\"\ncloudevents = \"binary\""),
            Some(SignatureScheme::Runwatch),
            CloudEventsMode::Binary,
        ),
        (
            "cloudevents = \"binary\"".to_string(),
            None,
            CloudEventsMode::Binary,
        ),
    ] {
        let toml_text = format!("name = \"t1\"\nurl = \"http://127.0.0.1:9/x\"\n{body}\n");
        let config: runwatch::deliver::TargetConfig = toml::from_str(&toml_text).expect("toml");
        let built = runwatch::deliver::target::build(&[config], true)
            .unwrap_or_else(|e| panic!("{toml_text}: {e}"));
        assert_eq!(built[0].signing.scheme(), scheme, "{toml_text}");
        assert_eq!(built[0].cloudevents, mode, "{toml_text}");
    }
}

#[test]
fn quick_start_options_are_checked() {
    let out = deliver("", &["--url", "ftp://h/"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`--url`"), "{stderr}");

    let out = deliver(
        "",
        &[
            "--url",
            "http://127.0.0.1:9/",
            "--secret-file",
            "/nonexistent/x",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`--secret-file`"), "{stderr}");

    // --secret-file needs --url (clap), and no target at all is an error.
    let out = deliver("", &["--secret-file", "/tmp/x"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = deliver("", &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no delivery target"), "{stderr}");
}

/// The trigger `runwatch simulate examples/demo.jsonl` prints.
fn demo_trigger() -> serde_json::Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(BIN)
        .args(["simulate", &format!("{root}/examples/demo.jsonl")])
        .output()
        .expect("simulate");
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).expect("utf-8");
    serde_json::from_str(line.lines().next().expect("a trigger")).expect("json")
}

fn render(file: &str, trigger: &serde_json::Value) -> serde_json::Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let source =
        std::fs::read_to_string(format!("{root}/examples/deliver/{file}")).expect("template");
    let template = BodyTemplate::parse(source).expect("parses");
    let body = template.render(trigger, "example").expect("renders");
    serde_json::from_slice(&body).expect("JSON")
}

#[test]
fn shipped_templates_render_a_real_trigger() {
    let trigger = demo_trigger();
    let slack = render("slack.json.j2", &trigger);
    let text = slack["text"].as_str().expect("text");
    assert!(
        text.contains("octo-org/octo-repo") && text.contains("#12") && text.contains("test"),
        "{text}"
    );
    assert_eq!(slack["blocks"][0]["type"], "section");
    assert_eq!(slack["blocks"][0]["text"]["type"], "mrkdwn");

    let dispatch = render("github-dispatch.json.j2", &trigger);
    assert_eq!(dispatch["event_type"], "runwatch-ci-failed");
    let payload = dispatch["client_payload"]
        .as_object()
        .expect("client_payload");
    assert!(
        payload.len() <= 10,
        "GitHub allows at most 10 top-level keys: {payload:?}"
    );
    assert_eq!(payload["trigger_id"], trigger["trigger_id"]);
    assert_eq!(payload["repository"], "octo-org/octo-repo");
    assert_eq!(payload["pr_number"], 12);
    assert_eq!(payload["failed"]["workflows"], serde_json::json!(["test"]));
    assert_eq!(payload["pull_request"], serde_json::Value::Null);
    // With what runwatch knows of the pull request (runwatch.trigger.v1 `pull_request`).
    let mut known = trigger.clone();
    known["pull_request"] = serde_json::json!({
        "number": 12, "title": "Fix the \"parser\"", "author": "octocat",
        "author_is_bot": false, "base_branch": "main", "state": "open"
    });
    let dispatch = render("github-dispatch.json.j2", &known);
    assert_eq!(
        dispatch["client_payload"]["pull_request"],
        known["pull_request"]
    );
    let slack = render("slack.json.j2", &known);
    let text = slack["blocks"][0]["text"]["text"].as_str().expect("text");
    assert!(text.contains("\nFix the \"parser\" by octocat\n"), "{text}");
    assert!(!slack["text"].as_str().expect("text").contains("octocat"));
    let plain = render("slack.json.j2", &trigger);
    assert!(
        !plain["blocks"][0]["text"]["text"]
            .as_str()
            .expect("text")
            .contains(" by ")
    );

    assert_eq!(payload["rule"]["budget"], serde_json::Value::Null);
    assert_eq!(payload["rule"]["name"], trigger["rule_name"]);
    // A trigger of a rule with a budget says where it stands.
    let mut budgeted = trigger.clone();
    budgeted["budget"] = serde_json::json!({
        "pull_request": {"used": 2, "limit": 3, "window_seconds": 86400}
    });
    let dispatch = render("github-dispatch.json.j2", &budgeted);
    assert_eq!(
        dispatch["client_payload"]["rule"]["budget"],
        budgeted["budget"]
    );
    let slack = render("slack.json.j2", &budgeted);
    assert!(
        slack["blocks"][0]["text"]["text"]
            .as_str()
            .expect("text")
            .ends_with("\nBudget: trigger 2 of 3 for this pull request"),
        "{slack}"
    );
    assert!(
        !render("slack.json.j2", &trigger)["blocks"][0]["text"]["text"]
            .as_str()
            .expect("text")
            .contains("Budget"),
    );
    assert_eq!(payload["failed"]["known_flaky"], serde_json::json!([]));
    assert!(!text.contains("Known flaky"), "{text}");

    // A trigger that marks a known flaky workflow says so.
    let mut flaky = trigger.clone();
    flaky["known_flaky"] =
        serde_json::json!([{"workflow": "test", "flips": 3, "window_seconds": 604800}]);
    let slack = render("slack.json.j2", &flaky);
    let block = slack["blocks"][0]["text"]["text"].as_str().expect("text");
    assert!(block.contains("\nKnown flaky: test\n"), "{block}");
    let dispatch = render("github-dispatch.json.j2", &flaky);
    assert_eq!(
        dispatch["client_payload"]["failed"]["known_flaky"][0]["flips"],
        3
    );

    assert_eq!(payload["failed"]["jobs"], serde_json::json!([]));

    // A failed run's failed jobs and steps (runs.*.jobs) are shown.
    let mut with_jobs = trigger.clone();
    let run = with_jobs["runs"]
        .as_object_mut()
        .expect("runs")
        .values_mut()
        .find(|r| r["conclusion"] == "failure")
        .expect("a failed run");
    run["jobs"] = serde_json::json!([
        {"id": "1", "name": "unit \"tests\"", "conclusion": "failure", "url": "https://ci/1",
         "failed_steps": [{"number": 4, "name": "Run cargo test"}]},
        {"id": "2", "name": "lint", "conclusion": "timed_out"}
    ]);
    let slack = render("slack.json.j2", &with_jobs);
    let text = slack["blocks"][0]["text"]["text"].as_str().expect("text");
    assert!(
        text.contains("Failed jobs:\n• test / unit \"tests\": Run cargo test\n• test / lint\n"),
        "{text}"
    );
    let dispatch = render("github-dispatch.json.j2", &with_jobs);
    assert_eq!(
        dispatch["client_payload"]["failed"]["jobs"],
        serde_json::json!([
            {"run": "9001", "workflow": "test", "job": "unit \"tests\"", "url": "https://ci/1",
             "failed_steps": ["Run cargo test"]},
            {"run": "9001", "workflow": "test", "job": "lint", "url": null, "failed_steps": []}
        ])
    );
    assert!(
        dispatch["client_payload"]
            .as_object()
            .expect("payload")
            .len()
            <= 10
    );

    // A push build (no pull request) renders too.
    let mut push = trigger.clone();
    push["pr_number"] = serde_json::Value::Null;
    let slack = render("slack.json.j2", &push);
    assert!(
        slack["text"]
            .as_str()
            .expect("text")
            .contains("feature/demo"),
        "{slack}"
    );

    // The example configuration loads and validates.
    let root = env!("CARGO_MANIFEST_DIR");
    let config = runwatch::config::Config::load(Some(std::path::Path::new(&format!(
        "{root}/examples/deliver/deliver.toml"
    ))))
    .expect("examples/deliver/deliver.toml is valid");
    assert_eq!(config.deliver.targets.len(), 4);
    let built = runwatch::deliver::target::build(&config.deliver.targets, false).expect("targets");
    assert_eq!(
        built[3].cloudevents,
        runwatch::deliver::config::CloudEventsMode::Binary
    );
}
