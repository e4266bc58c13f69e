//! The deploy files agree with the code: the Grafana dashboard queries only metrics runwatch
//! records (and shows each of them), every recorded metric is described, the Kubernetes
//! ConfigMap is a configuration runwatch accepts, and the ports, names and time bounds in
//! the Dockerfile, compose file and manifests match the configuration.
//!
//! No YAML parser is a dependency: YAML is read here only for the few scalar lines checked;
//! `kubernetes-validate` / `check-jsonschema` check the files' structure (README, Deploy).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runwatch::config::Config;
use runwatch::telemetry::{METRICS, MetricKind, PROCESS_METRICS};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `runwatch_…` identifiers in a text.
fn metric_tokens(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("runwatch_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// `process_…` identifiers in a text.
fn process_tokens(text: &str) -> BTreeSet<String> {
    metric_tokens(&text.replace("process_", "runwatch_process_"))
        .into_iter()
        .filter_map(|t| t.strip_prefix("runwatch_").map(str::to_string))
        .filter(|t| t.starts_with("process_"))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// (name, kind as u8) of every `metrics::counter!/gauge!/histogram!("runwatch_…"` in src/,
/// outside telemetry.rs (which describes them and registers zeros), plus the build
/// information telemetry.rs sets itself.
fn recorded_in_source() -> BTreeSet<(String, u8)> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut out = BTreeSet::new();
    let telemetry = read("src/telemetry.rs");
    assert!(
        telemetry.contains(
            "metrics::gauge!(BUILD_INFO, \"version\" => VERSION, \"git_sha\" => GIT_SHA).set(1.0)"
        ),
        "telemetry.rs sets runwatch_build_info"
    );
    out.insert((
        runwatch::telemetry::BUILD_INFO.to_string(),
        MetricKind::Gauge as u8,
    ));
    for f in files.iter().filter(|f| !f.ends_with("telemetry.rs")) {
        let text = std::fs::read_to_string(f).expect("read source");
        for (macro_, kind) in [
            ("counter!(", MetricKind::Counter),
            ("gauge!(", MetricKind::Gauge),
            ("histogram!(", MetricKind::Histogram),
        ] {
            for (i, _) in text.match_indices(macro_) {
                let args = text[i + macro_.len()..].trim_start();
                if let Some(name) = args.strip_prefix('"').and_then(|a| a.split('"').next()) {
                    out.insert((name.to_string(), kind as u8));
                }
            }
        }
    }
    out
}

#[test]
fn every_recorded_metric_is_described_and_every_description_is_recorded() {
    let recorded = recorded_in_source();
    let described: BTreeSet<(String, u8)> = METRICS
        .iter()
        .map(|(n, k, _, _)| (n.to_string(), *k as u8))
        .collect();
    assert!(
        recorded.len() >= 12,
        "the source scan found the metrics: {recorded:?}"
    );
    let undescribed: Vec<_> = recorded.difference(&described).collect();
    assert!(
        undescribed.is_empty(),
        "recorded but not in telemetry::METRICS (add a description there, and a README row): {undescribed:?}"
    );
    let stale: Vec<_> = described.difference(&recorded).collect();
    assert!(
        stale.is_empty(),
        "described in telemetry::METRICS but never recorded: {stale:?}"
    );
}

#[test]
fn the_dashboard_is_valid_json_and_queries_only_recorded_metrics() {
    let text = read("deploy/grafana/runwatch-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert_eq!(dash["uid"], "runwatch");

    // A Prometheus datasource variable, used by every panel and query.
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id {}",
            p["id"]
        );
        assert!(
            p["gridPos"]["w"].as_u64().is_some_and(|w| w <= 24),
            "gridPos of {}",
            p["title"]
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {}",
            p["title"]
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has queries", p["title"]);
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "query of {}",
                p["title"]
            );
            let e = t["expr"].as_str().expect("expr").to_string();
            assert_eq!(
                e.matches('(').count(),
                e.matches(')').count(),
                "balanced parentheses: {e}"
            );
            assert_eq!(
                e.matches('{').count(),
                e.matches('}').count(),
                "balanced braces: {e}"
            );
            exprs.push(e);
        }
    }

    // Every metric name queried exists (histograms through _bucket/_sum/_count), and
    // every metric runwatch records has a panel.
    let mut queried = BTreeSet::new();
    for e in &exprs {
        for token in process_tokens(e) {
            assert!(
                PROCESS_METRICS.contains(&token.as_str()),
                "the dashboard queries {token}, which runwatch does not export: {e}"
            );
            queried.insert(token);
        }
        for token in metric_tokens(e) {
            let base = METRICS
                .iter()
                .find(|(n, k, _, _)| {
                    token == *n
                        || (*k == MetricKind::Histogram
                            && ["_bucket", "_sum", "_count"]
                                .iter()
                                .any(|s| token == format!("{n}{s}")))
                })
                .map(|(n, _, _, _)| n.to_string());
            match base {
                Some(b) => {
                    queried.insert(b);
                }
                None => {
                    panic!("the dashboard queries {token}, which runwatch does not record: {e}")
                }
            }
        }
    }
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(queried.contains(name), "no panel shows {name}");
    }
    for (name, kind, _, _) in METRICS {
        assert!(queried.contains(*name), "no panel shows {name}");
        if *kind == MetricKind::Histogram && *name != "runwatch_batch_size" {
            for q in ["0.5", "0.99"] {
                assert!(
                    exprs
                        .iter()
                        .any(|e| e.contains(&format!("histogram_quantile({q},"))
                            && e.contains(&format!("{name}_bucket"))),
                    "{name}: p{} from the histogram",
                    &q[2..]
                );
            }
        }
    }
}

/// The block of a ConfigMap key written as `key: |`, unindented.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    assert!(lines.next().is_some(), "no `{key}: |` block");
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    body.iter()
        .map(|l| l.get(4..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of the first `key: value` line (trimmed, quotes removed).
fn scalar<'a>(yaml: &'a str, key: &str) -> &'a str {
    yaml.lines()
        .find_map(|l| {
            l.trim()
                .trim_start_matches("- ")
                .strip_prefix(&format!("{key}:"))
        })
        .map(|v| v.split(" #").next().unwrap_or(v).trim().trim_matches('"'))
        .unwrap_or_else(|| panic!("no `{key}:` line"))
}

#[test]
fn the_configmap_is_a_configuration_runwatch_accepts_and_the_manifests_agree_with_it() {
    let configmap = read("deploy/k8s/configmap.yaml");
    let toml = block_scalar(&configmap, "runwatch.toml");
    // Loading reads the NATS creds file: point it at a stand-in of the mounted Secret.
    let creds_mount = "/run/secrets/nats/runwatch.creds";
    assert!(
        toml.contains(creds_mount),
        "nats.creds_file is where the Secret is mounted"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = dir.path().join("runwatch.creds");
    std::fs::write(&creds, "stand-in\n").expect("write creds");
    let path = dir.path().join("runwatch.toml");
    std::fs::write(
        &path,
        toml.replace(creds_mount, &creds.display().to_string()),
    )
    .expect("write");
    let config =
        Config::load(Some(&path)).expect("the ConfigMap's runwatch.toml is a valid configuration");
    assert_eq!(
        config.streams.replicas, 3,
        "R3 streams on the R3 NATS cluster"
    );

    // The grace period outlasts the worker's own shutdown bound.
    let worker = read("deploy/k8s/worker-deployment.yaml");
    for manifest in [&worker, &read("deploy/k8s/ingest.yaml")] {
        let grace: u64 = scalar(manifest, "terminationGracePeriodSeconds")
            .parse()
            .expect("seconds");
        assert!(
            Duration::from_secs(grace) > config.shutdown.timeout,
            "terminationGracePeriodSeconds {grace}s must exceed shutdown.timeout {:?}",
            config.shutdown.timeout
        );
    }
    assert_eq!(scalar(&worker, "replicas"), "3");
    for needle in [
        "path: /healthz",
        "path: /readyz",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "\"run\", \"--no-migrate\"",
        "containerPort: 9464",
        "/run/secrets/nats",
    ] {
        assert!(worker.contains(needle), "worker Deployment: {needle}");
    }
    // Every pod that loads this configuration mounts the creds (loading reads them).
    for manifest in ["worker-deployment.yaml", "ingest.yaml", "migrate-job.yaml"] {
        let text = read(&format!("deploy/k8s/{manifest}"));
        assert!(
            text.contains("mountPath: /run/secrets/nats")
                && text.contains("secretName: runwatch-nats-creds"),
            "{manifest} mounts the NATS creds"
        );
    }

    // KEDA watches our durable on our stream.
    let keda = read("deploy/k8s/keda-scaledobject.yaml");
    assert!(
        keda.contains("- type: nats-jetstream"),
        "the nats-jetstream scaler"
    );
    assert_eq!(scalar(&keda, "stream"), config.streams.events);
    assert_eq!(scalar(&keda, "consumer"), config.consumer.durable);
    assert_eq!(scalar(&keda, "name"), "runwatch-worker");

    // Ports: the image, compose and the manifests use the default listeners' ports.
    let defaults = Config::load(None).expect("defaults");
    let metrics_port = defaults.http.listen.port().to_string();
    let ingest_port = defaults.ingest.listen.port().to_string();
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains(&format!("EXPOSE {metrics_port} {ingest_port}")));
    assert!(dockerfile.contains("cargo build --release --locked"));
    // build.rs is part of the build (migrations, the git_sha of runwatch_build_info).
    assert!(dockerfile.contains("COPY Cargo.toml Cargo.lock build.rs ./"));
    assert!(dockerfile.contains("ARG RUNWATCH_GIT_SHA"));
    assert!(read(".dockerignore").lines().any(|l| l == "!build.rs"));
    assert!(
        dockerfile.contains("ENTRYPOINT [\"runwatch\"]") && dockerfile.contains("CMD [\"run\"]")
    );
    assert!(dockerfile.contains("USER 65532"), "a non-root user");
    assert!(read("deploy/k8s/ingest.yaml").contains(&format!("containerPort: {ingest_port}")));

    let compose = read("deploy/compose.yaml");
    assert_eq!(
        compose.matches("<<: *worker").count(),
        3,
        "three worker replicas"
    );
    assert!(compose.contains("command: [\"run\", \"--no-migrate\"]"));
    assert!(
        compose.contains("command: [\"migrate\"]") && compose.contains("command: [\"ingest\"]")
    );
    assert!(compose.contains("condition: service_completed_successfully"));
    assert!(compose.contains("./nats/nats.conf:/etc/nats/nats.conf:ro"));
    let stop = humantime::parse_duration(scalar(&compose, "stop_grace_period")).expect("duration");
    assert!(
        stop > defaults.shutdown.timeout,
        "stop_grace_period above shutdown.timeout"
    );
}
