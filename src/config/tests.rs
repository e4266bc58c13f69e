use super::*;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};

use crate::secret::Secret;

#[test]
fn defaults_load_and_validate() {
    let c: Config = Figment::new()
        .merge(Toml::string(DEFAULT_TOML))
        .extract()
        .unwrap();
    c.validate().unwrap();
    assert_eq!(c.consumer.batch_size, 256);
    assert_eq!(c.rule_set().unwrap().rules().len(), 1);
}

#[test]
fn bad_value_names_the_key() {
    let err = Figment::new()
        .merge(Toml::string(DEFAULT_TOML))
        .merge(Toml::string("[consumer]\nbatch_size = \"lots\""))
        .extract::<Config>()
        .unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");

    let mut c: Config = Figment::new()
        .merge(Toml::string(DEFAULT_TOML))
        .extract()
        .unwrap();
    c.consumer.batch_size = 0;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("consumer.batch_size"), "{err}");
}

#[test]
fn unknown_key_is_an_error() {
    let err = Figment::new()
        .merge(Toml::string(DEFAULT_TOML))
        .merge(Toml::string("[consumer]\nbatchsize = 3"))
        .extract::<Config>()
        .unwrap_err();
    assert!(err.to_string().contains("batchsize"), "{err}");
}

#[test]
fn redacts_passwords() {
    assert_eq!(
        redact_url("postgres://u:secret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
    // sqlx and libpq also take the password from the query string.
    for url in [
        "postgres://u@h/db?password=s3cr3t-q",
        "postgres://u@h/db?sslmode=disable&PASSWORD=s3cr3t-q",
        "postgres://u:s3cr3t-q@h/db?sslpassword=s3cr3t-q&application_name=x",
        "postgresql://u:s3cr3t%40q@[::1]:5432/db",
    ] {
        let shown = redact_url(url);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }
    assert!(redact_url("postgres://u@h/db?sslmode=disable&password=x").contains("sslmode=disable"));
    assert!(!redact_url("not a url s3cr3t").contains("s3cr3t"));
}

#[test]
fn nats_url_credentials_are_split_off() {
    let (url, creds) = split_nats_url("nats://u:p%40ss@h:4222").unwrap();
    assert_eq!(url, "nats://h:4222");
    assert_eq!(
        creds,
        Some(UrlCredentials::UserPassword {
            user: "u".into(),
            password: Secret::new("p@ss")
        })
    );
    let (url, creds) = split_nats_url("tok123@h1:4222, tls://tok123@h2:4222").unwrap();
    assert_eq!(url, "nats://h1:4222,tls://h2:4222");
    assert_eq!(creds, Some(UrlCredentials::Token(Secret::new("tok123"))));
    let (url, creds) = split_nats_url("nats://h1:4222,h2:4222").unwrap();
    assert_eq!((url.as_str(), creds), ("nats://h1:4222,h2:4222", None));
    let err = split_nats_url("nats://u:a1@h1,nats://u:b2@h2")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`nats.url`") && !err.contains("a1") && !err.contains("b2"),
        "{err}"
    );
    // With another method too: one method only.
    let mut c: Config = Figment::new()
        .merge(Toml::string(DEFAULT_TOML))
        .extract()
        .unwrap();
    c.nats.url = "nats://u:pw-9@h:4222".into();
    assert_eq!(
        c.nats.auth().unwrap(),
        NatsAuth::UserPassword {
            user: "u".into(),
            password: Secret::new("pw-9")
        }
    );
    c.nats.token = Some(Secret::new("t"));
    let err = c.nats.auth().unwrap_err().to_string();
    assert!(err.contains("only one") && !err.contains("pw-9"), "{err}");
    assert_eq!(
        redact_url("nats://u:pw-9@h1:4222,h2:4222"),
        "nats://u:***@h1:4222,h2:4222"
    );
}

/// Settings under which each key's extremes are compatible with the cross-key rules
/// (heartbeat < ack_wait, lease < duplicate_window <= every max_age, batch_size <=
/// max_ack_pending, min_delay <= max_delay), so each bound is tested alone.
const ROOMY: &str = r#"
    [database]
    lock_timeout = "10ms"
    statement_timeout = "1h"
    [consumer]
    heartbeat = "100ms"
    ack_wait = "1h"
    batch_size = 1
    max_ack_pending = 1000000
    [retry]
    min_delay = "1ms"
    max_delay = "1h"
    [outbox]
    lease = "1s"
    [streams]
    duplicate_window = "1h"
    [deliver]
    min_delay = "10ms"
    max_delay = "1h"
    [ingest]
    max_body_bytes = 1024
    max_buffered_bytes = 1073741824
"#;

/// The configuration with `key = value` (a TOML literal) over [`ROOMY`], validated.
fn with_key(key: &str, value: &str) -> Result<Config, ConfigError> {
    let (section, field) = key.split_once('.').unwrap();
    let c: Config = Figment::new()
        .merge(Toml::string(DEFAULT_TOML))
        .merge(Toml::string(ROOMY))
        .merge(Toml::string(&format!("[{section}]\n{field} = {value}\n")))
        .extract()?;
    c.validate()?;
    Ok(c)
}

/// TOML literals just inside and just outside the bounds: (in, out).
fn extremes(b: &Bounds) -> (Vec<String>, Vec<String>) {
    let d = |d: Duration| format!("\"{}\"", short_duration(d));
    match *b {
        Bounds::Int { min, max, off } => {
            let mut inside = vec![min.to_string(), max.to_string()];
            if off {
                inside.push("0".into());
            }
            let outside = [min - 1, max + 1]
                .into_iter()
                .filter(|v| !(off && *v == 0))
                .map(|v| v.to_string());
            (inside, outside.collect())
        }
        Bounds::Float { min, max } => (
            vec![format!("{min:?}"), format!("{max:?}")],
            vec![format!("{:?}", min - 0.01), format!("{:?}", max + 0.01)],
        ),
        Bounds::Duration { min, max, off } => {
            let mut inside = vec![d(min), d(max)];
            let mut outside = vec![d(max + Duration::from_millis(1))];
            if !min.is_zero() {
                outside.push(d(min - Duration::from_millis(1)));
            }
            if off {
                inside.push("\"0s\"".into());
            }
            (inside, outside)
        }
    }
}

#[test]
fn every_key_accepts_its_range_and_names_itself_outside_it() {
    with_key("log.level", "\"info\"").expect("the roomy base is valid");
    for r in RANGES {
        let (inside, outside) = extremes(&r.bounds);
        for v in inside {
            if let Err(e) = with_key(r.key, &v) {
                panic!("{} = {v} must be accepted: {e}", r.key);
            }
        }
        for v in outside {
            let err = with_key(r.key, &v)
                .err()
                .unwrap_or_else(|| panic!("{} = {v} accepted", r.key));
            let text = err.to_string();
            assert!(
                text.contains(&format!("`{}`", r.key)),
                "{} = {v}: {text}",
                r.key
            );
            assert!(text.contains(&r.bounds.text()), "{} = {v}: {text}", r.key);
        }
    }
}

#[test]
fn a_lock_timeout_above_the_statement_timeout_is_refused_naming_the_key() {
    let err = Figment::new()
        .merge(Toml::string(DEFAULT_TOML))
        .merge(Toml::string(
            "[database]\nlock_timeout = \"31s\"\nstatement_timeout = \"30s\"\n",
        ))
        .extract::<Config>()
        .map_err(ConfigError::from)
        .and_then(|c| c.validate())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`database.lock_timeout`"), "{err}");
    assert!(err.contains("database.statement_timeout"), "{err}");
    let c: Config = Figment::new()
        .merge(Toml::string(DEFAULT_TOML))
        .extract()
        .unwrap();
    assert_eq!(c.database.lock_timeout, Duration::from_secs(5));
    assert_eq!(c.database.statement_timeout, Duration::from_secs(30));
}

#[test]
fn every_numeric_key_has_a_range() {
    // Each numeric leaf of the defaults (and the new stream limits) is in RANGES.
    let table: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
    let mut numeric = Vec::new();
    for (section, v) in &table {
        let Some(t) = v.as_table() else { continue };
        for (k, v) in t {
            let is_duration = v
                .as_str()
                .is_some_and(|s| humantime::parse_duration(s).is_ok());
            if v.is_integer() || v.is_float() || is_duration {
                numeric.push(format!("{section}.{k}"));
            }
        }
    }
    assert!(numeric.len() > 30, "{numeric:?}");
    for key in numeric {
        assert!(
            RANGES.iter().any(|r| r.key == key),
            "{key} has no range in RANGES"
        );
    }
}

#[test]
fn rule_keys_have_ranges() {
    let rules = |body: &str| {
        let c: Result<Config, _> = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(&format!("[[rules]]\n{body}\n")))
            .extract();
        c.map_err(ConfigError::from).and_then(|c| c.validate())
    };
    for ok in [
        "kind = \"all_completed_with_failure\"\nsettle = \"365d\"\ncooldown = \"365d\"",
        "kind = \"repeated_failure\"\nthreshold = 1000",
        "kind = \"all_completed_with_failure\"\nmax_triggers_per_pull_request = 1000\nmax_triggers_per_repository = 1\nbudget_window = \"365d\"",
        "kind = \"all_completed_with_failure\"\nmax_triggers_per_repository = 1000\nbudget_window = \"1s\"",
        "kind = \"all_completed_with_failure\"\nflaky_window = \"1m\"\nflaky_threshold = 1000",
        "kind = \"all_completed_with_failure\"\nflaky_window = \"365d\"\nflaky_threshold = 1",
    ] {
        rules(ok).unwrap();
    }
    for (bad, key) in [
        (
            "kind = \"all_completed_with_failure\"\nsettle = \"500000y\"",
            "rules[0].settle",
        ),
        (
            "kind = \"all_completed_with_failure\"\ncooldown = \"366d\"",
            "rules[0].cooldown",
        ),
        (
            "kind = \"repeated_failure\"\nthreshold = 1001",
            "rules[0].threshold",
        ),
        (
            "kind = \"all_completed_with_failure\"\nmax_triggers_per_pull_request = 1001",
            "rules[0].max_triggers_per_pull_request",
        ),
        (
            "kind = \"all_completed_with_failure\"\nmax_triggers_per_repository = 99999999999",
            "rules[0].max_triggers_per_repository",
        ),
        (
            "kind = \"all_completed_with_failure\"\nmax_triggers_per_repository = 5\nbudget_window = \"366d\"",
            "rules[0].budget_window",
        ),
        (
            "kind = \"all_completed_with_failure\"\nmax_triggers_per_repository = 5\nbudget_window = \"500ms\"",
            "rules[0].budget_window",
        ),
        (
            "kind = \"all_completed_with_failure\"\nflaky_window = \"59s\"",
            "rules[0].flaky_window",
        ),
        (
            "kind = \"all_completed_with_failure\"\nflaky_window = \"366d\"",
            "rules[0].flaky_window",
        ),
    ] {
        let e = rules(bad).unwrap_err().to_string();
        assert!(
            e.contains(&format!("`{key}`")) && e.contains("out of range"),
            "{e}"
        );
    }
}

#[test]
fn ingest_buffer_holds_at_least_one_body() {
    let with = |extra: &str| {
        let c: Config = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(extra))
            .extract()
            .unwrap();
        c.validate()
    };
    with("[ingest]\nmax_body_bytes = 2048\nmax_buffered_bytes = 2048\n").unwrap();
    let e = with("[ingest]\nmax_body_bytes = 2048\nmax_buffered_bytes = 2047\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`ingest.max_buffered_bytes`") && e.contains("ingest.max_body_bytes (2048)"),
        "{e}"
    );
}

/// The README's configuration table shows each key's range exactly as the code checks
/// it: the row that names the key has the range in its `range` column.
#[test]
fn readme_shows_every_range() {
    let readme = include_str!("../../README.md");
    let rows: Vec<Vec<&str>> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.split(" | ").collect())
        .collect();
    let header = readme
        .lines()
        .find(|l| l.starts_with("| key | default |"))
        .expect("configuration table");
    assert!(header.contains("| range |"), "{header}");
    let mut keys: Vec<(String, String)> = RANGES
        .iter()
        .map(|r| (r.key.to_string(), r.bounds.text()))
        .collect();
    keys.extend(
        RULE_RANGES
            .iter()
            .map(|(k, b)| (format!("rules[].{k}"), b.text())),
    );
    keys.extend(
        TARGET_RANGES
            .iter()
            .map(|(k, b)| (format!("deliver.targets[].{k}"), b.text())),
    );
    for (key, range) in keys {
        let (section, field) = key.split_once('.').unwrap();
        // A row names the key in full, or its section in full and the field after it.
        let row = rows.iter().find(|cells| {
            let first = cells[0];
            first.contains(&format!("`{key}`"))
                || (first.contains(&format!("`{section}."))
                    && first.contains(&format!("`{field}`")))
        });
        let row = row.unwrap_or_else(|| panic!("no README configuration row names {key}"));
        assert!(row.len() >= 4, "{row:?}");
        assert!(
            row[2].contains(&range),
            "{key}: README says {:?}, the code {range}",
            row[2]
        );
    }
}
