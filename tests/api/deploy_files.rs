//! The deploy files agree with the code: the Grafana dashboard queries only metrics runwatch
//! records (and shows each of them), every recorded metric is described, the Kubernetes
//! ConfigMap is a configuration runwatch accepts, and the ports, names and time bounds in
//! the Dockerfile, compose file and manifests match the configuration.
//!
//! The Kubernetes manifests are rendered here as `kubectl apply -k deploy/k8s` would (the
//! kustomization's resources, its namespace set on every namespaced object; compared with
//! `kubectl kustomize` when kubectl is on PATH) and checked object by object: namespaces,
//! the restricted Pod Security Standard, references between objects (Secrets, ConfigMap,
//! Services, selectors, ports), the migrate init container. Every PromQL expression of the
//! alerts and the dashboard is parsed and may select only series runwatch exports, with
//! label values the code uses. docs/deploy.md says what is not checked offline.

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
    // Every pod that loads this configuration mounts the creds (loading reads them), except
    // the `migrate` init container, which needs none (see the tests below).
    for manifest in ["worker-deployment.yaml", "ingest.yaml"] {
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
    // The SQL macros compile offline from .sqlx/ (.cargo/config.toml sets SQLX_OFFLINE): both
    // are in the build context and copied, or the image build would need a database.
    assert!(
        dockerfile.contains("COPY .cargo ./.cargo") && dockerfile.contains("COPY .sqlx ./.sqlx")
    );
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l == "!.cargo/") && ignore.lines().any(|l| l == "!.sqlx/"));
    assert!(
        read(".cargo/config.toml").contains(r#"SQLX_OFFLINE = { value = "true", force = false }"#)
    );
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

// ---------------------------------------------------------------------------------------
// Kubernetes objects, parsed.

use serde::Deserialize;
use serde_json::Value;

const NAMESPACE: &str = "runwatch";

/// Files of deploy/k8s applied on their own (`kubectl apply -f`), each needing an
/// operator, or read by something else than kubectl.
const OPTIONAL: &[&str] = &[
    "deliver.yaml",
    "servicemonitor.yaml",
    "prometheusrule.yaml",
    "keda-scaledobject.yaml",
    "cnpg-cluster.yaml",
    "secret.example.yaml",
];
/// Values of the NATS Helm chart, not Kubernetes objects.
const NOT_OBJECTS: &[&str] = &["nats-values.yaml"];

/// Every document of a YAML file, as JSON values (empty documents skipped).
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn id(o: &Value) -> String {
    format!(
        "{}/{}/{}",
        kind(o),
        o["metadata"]["namespace"].as_str().unwrap_or("-"),
        name(o)
    )
}

/// Cluster-scoped kinds among those used here (kustomize leaves their namespace alone).
fn cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding")
}

/// The kustomization's resources, in order, each with the kustomization's namespace.
fn render() -> Vec<Value> {
    let k = yaml_docs("deploy/k8s/kustomization.yaml");
    assert_eq!(k.len(), 1);
    let k = &k[0];
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k["kind"], "Kustomization");
    assert_eq!(k["namespace"], NAMESPACE);
    let mut out = Vec::new();
    for r in k["resources"].as_array().expect("resources") {
        let file = r.as_str().expect("a file name");
        for mut o in yaml_docs(&format!("deploy/k8s/{file}")) {
            if !cluster_scoped(kind(&o)) {
                o["metadata"]["namespace"] = Value::from(NAMESPACE);
            }
            out.push(o);
        }
    }
    out
}

/// The objects of the optional files, as written.
fn optional_objects() -> Vec<(String, Value)> {
    OPTIONAL
        .iter()
        .flat_map(|f| {
            yaml_docs(&format!("deploy/k8s/{f}"))
                .into_iter()
                .map(|o| (f.to_string(), o))
        })
        .collect()
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let Some(sel) = selector.as_object() else {
        return false;
    };
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod[k].as_array())
        .flatten()
        .collect()
}

/// A YAML file mode as Kubernetes reads it (YAML 1.1: a leading 0 is octal).
fn file_mode(v: &Value) -> u32 {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .expect("mode"),
        Value::String(s) if s.starts_with('0') => u32::from_str_radix(s, 8).expect("octal mode"),
        other => panic!("defaultMode {other}"),
    }
}

#[test]
fn the_kustomization_renders_every_core_object_into_the_runwatch_namespace() {
    let objects = render();
    assert_eq!(
        kind(&objects[0]),
        "Namespace",
        "the Namespace is the first resource"
    );
    assert_eq!(name(&objects[0]), NAMESPACE);
    assert_eq!(
        objects[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
        "the namespace enforces the restricted Pod Security Standard"
    );
    let mut ids = BTreeSet::new();
    for o in &objects {
        assert!(
            o["apiVersion"].is_string() && !kind(o).is_empty() && !name(o).is_empty(),
            "{o}"
        );
        assert!(ids.insert(id(o)), "duplicate object {}", id(o));
        // A Job's pod template is immutable: one with a fixed name fails the next apply of
        // a new image. Migrations run as an init container instead.
        assert_ne!(kind(o), "Job", "{}: no Job among the core objects", id(o));
        if !cluster_scoped(kind(o)) {
            assert_eq!(o["metadata"]["namespace"], NAMESPACE);
        }
    }
    for k in [
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(objects.iter().any(|o| kind(o) == k), "a {k}");
    }

    // Every file of deploy/k8s is a resource, an optional file, or chart values; each
    // optional object names the namespace itself (it is applied without the kustomization).
    let resources: BTreeSet<String> = yaml_docs("deploy/k8s/kustomization.yaml")[0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    for entry in std::fs::read_dir(root().join("deploy/k8s")).expect("deploy/k8s") {
        let file = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if file == "kustomization.yaml" {
            continue;
        }
        assert!(
            resources.contains(&file)
                || OPTIONAL.contains(&file.as_str())
                || NOT_OBJECTS.contains(&file.as_str()),
            "deploy/k8s/{file} is neither a resource of kustomization.yaml nor a known optional file"
        );
    }
    for (file, o) in optional_objects() {
        assert_eq!(
            o["metadata"]["namespace"],
            NAMESPACE,
            "{file}: {} lands in namespace {NAMESPACE}",
            id(&o)
        );
    }

    // The real kustomize, when kubectl is here, renders the same objects.
    match std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(root().join("deploy/k8s"))
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8(out.stdout).expect("UTF-8");
            let theirs: BTreeSet<String> = serde_norway::Deserializer::from_str(&text)
                .map(|d| id(&Value::deserialize(d).expect("kustomize output is YAML")))
                .collect();
            assert_eq!(theirs, ids, "kubectl kustomize renders the same objects");
        }
        Ok(out) => panic!(
            "kubectl kustomize deploy/k8s failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!("kubectl is not on PATH: compared with our own rendering only"),
    }
}

#[test]
fn every_pod_is_restricted_reads_its_secrets_and_references_what_exists() {
    let objects = render();
    let secrets: Vec<Value> = yaml_docs("deploy/k8s/secret.example.yaml");
    let secret_has = |name: &str, key: Option<&str>| {
        secrets.iter().any(|s| {
            kind(s) == "Secret"
                && self::name(s) == name
                && key
                    .is_none_or(|k| s["stringData"].get(k).is_some() || s["data"].get(k).is_some())
        })
    };
    let configmaps: Vec<&Value> = objects.iter().filter(|o| kind(o) == "ConfigMap").collect();
    let deployments: Vec<&Value> = objects.iter().filter(|o| kind(o) == "Deployment").collect();
    assert!(deployments.len() >= 2, "the worker and the ingest");

    for d in &deployments {
        let what = id(d);
        let template = &d["spec"]["template"];
        assert!(
            labels_match(
                &d["spec"]["selector"]["matchLabels"],
                &template["metadata"]["labels"]
            ),
            "{what}: the selector matches the pod labels"
        );
        let pod = &template["spec"];
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{what}");
        assert!(psc["runAsUser"].as_u64().is_some_and(|u| u > 0), "{what}");
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
        for c in containers(pod) {
            let cw = format!("{what} container {}", c["name"]);
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{cw}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{cw}");
            assert!(
                sc["capabilities"]["drop"]
                    .as_array()
                    .is_some_and(|d| d.contains(&Value::from("ALL"))),
                "{cw}: drops ALL capabilities"
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{cw}: a memory limit"
            );
            for e in c["env"].as_array().into_iter().flatten() {
                let r = &e["valueFrom"]["secretKeyRef"];
                if let Some(n) = r["name"].as_str() {
                    assert!(
                        secret_has(n, r["key"].as_str()),
                        "{cw}: Secret {n} key {} is in secret.example.yaml",
                        r["key"]
                    );
                }
            }
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let v = pod["volumes"]
                    .as_array()
                    .and_then(|vs| vs.iter().find(|v| v["name"] == m["name"]))
                    .unwrap_or_else(|| {
                        panic!("{cw}: mounts volume {} that the pod lacks", m["name"])
                    });
                if let Some(cm) = v["configMap"]["name"].as_str() {
                    let found = configmaps.iter().find(|o| name(o) == cm);
                    let found = found.unwrap_or_else(|| panic!("{cw}: ConfigMap {cm}"));
                    if let Some(key) = m["subPath"].as_str() {
                        assert!(
                            found["data"].get(key).is_some(),
                            "{cw}: ConfigMap {cm} has {key}"
                        );
                    }
                }
            }
        }
        // Secret files: the non-root user reads them through fsGroup (group bits) or the
        // "other" bits of the mode.
        for v in pod["volumes"].as_array().into_iter().flatten() {
            let Some(secret) = v["secret"]["secretName"].as_str() else {
                continue;
            };
            assert!(
                secret_has(secret, None),
                "{what}: Secret {secret} is in secret.example.yaml"
            );
            let mode = v["secret"].get("defaultMode").map_or(0o644, file_mode);
            let group_reads = mode & 0o040 != 0 && psc["fsGroup"].as_u64().is_some();
            assert!(
                group_reads || mode & 0o004 != 0,
                "{what}: Secret {secret} (mode {mode:o}) is unreadable by uid {} without fsGroup",
                psc["runAsUser"]
            );
        }
    }

    // The migrations: an init container of every worker pod, with the worker's image,
    // the schema owner's URL, and no NATS credentials.
    let worker = deployments
        .iter()
        .find(|d| name(d) == "runwatch-worker")
        .expect("Deployment runwatch-worker");
    let pod = &worker["spec"]["template"]["spec"];
    let inits = pod["initContainers"].as_array().expect("initContainers");
    assert_eq!(inits.len(), 1);
    let migrate = &inits[0];
    let main = &pod["containers"][0];
    let args = |c: &Value| -> Vec<String> {
        c["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg").to_string())
            .collect()
    };
    assert_eq!(args(migrate).last().map(String::as_str), Some("migrate"));
    assert_eq!(
        migrate["image"], main["image"],
        "migrate runs the worker's image"
    );
    assert!(args(main).ends_with(&["run".to_string(), "--no-migrate".to_string()]));
    let mounts: Vec<&Value> = migrate["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .collect();
    assert!(
        mounts.iter().all(|m| m["name"] != "nats-creds"),
        "migrate needs no NATS credentials"
    );
    let url = |c: &Value| {
        c["env"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == "DATABASE_URL"))
            .map(|e| e["valueFrom"]["secretKeyRef"]["name"].clone())
            .expect("DATABASE_URL from a Secret")
    };
    assert_eq!(url(migrate), "runwatch-database-owner");
    assert_eq!(url(main), "runwatch-database");

    // Services and disruption budgets select pods of a Deployment, on ports they have.
    for o in objects
        .iter()
        .filter(|o| matches!(kind(o), "Service" | "PodDisruptionBudget"))
    {
        let selector = if kind(o) == "Service" {
            &o["spec"]["selector"]
        } else {
            &o["spec"]["selector"]["matchLabels"]
        };
        let target = deployments
            .iter()
            .find(|d| labels_match(selector, &d["spec"]["template"]["metadata"]["labels"]))
            .unwrap_or_else(|| panic!("{} selects no Deployment's pods", id(o)));
        for p in o["spec"]["ports"].as_array().into_iter().flatten() {
            let port = &p["targetPort"];
            let pods_ports: Vec<&Value> = target["spec"]["template"]["spec"]["containers"]
                .as_array()
                .expect("containers")
                .iter()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .collect();
            assert!(
                pods_ports
                    .iter()
                    .any(|cp| cp["name"] == *port || cp["containerPort"] == *port),
                "{}: targetPort {port} is a port of {}",
                id(o),
                id(target)
            );
        }
    }
}

#[test]
fn the_operator_objects_point_at_the_core_objects() {
    let core = render();
    let optional = optional_objects();
    let find = |k: &str| {
        optional
            .iter()
            .find(|(_, o)| kind(o) == k)
            .map(|(_, o)| o)
            .unwrap_or_else(|| panic!("an optional {k}"))
    };
    let sm = find("ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    let services: Vec<&Value> = core
        .iter()
        .filter(|o| {
            kind(o) == "Service"
                && labels_match(
                    &sm["spec"]["selector"]["matchLabels"],
                    &o["metadata"]["labels"],
                )
        })
        .collect();
    assert!(
        services.len() >= 2,
        "the ServiceMonitor selects the worker and ingest Services"
    );
    for e in sm["spec"]["endpoints"].as_array().expect("endpoints") {
        assert!(
            services.iter().any(|s| s["spec"]["ports"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == e["port"]))),
            "ServiceMonitor endpoint port {} is a port of a selected Service",
            e["port"]
        );
    }
    let so = find("ScaledObject");
    assert_eq!(so["apiVersion"], "keda.sh/v1alpha1");
    let target = &so["spec"]["scaleTargetRef"];
    assert!(
        core.iter()
            .any(|o| kind(o) == "Deployment" && name(o) == target["name"]),
        "KEDA scales a Deployment of the kustomization"
    );
    assert_eq!(
        find("PrometheusRule")["apiVersion"],
        "monitoring.coreos.com/v1"
    );
    assert_eq!(find("Cluster")["apiVersion"], "postgresql.cnpg.io/v1");
}

// ---------------------------------------------------------------------------------------
// PromQL: the alerts and the dashboard.

/// A label matcher: (label, operator, value).
type LabelMatcher = (String, String, String);
/// A series selector: (metric name, its label matchers).
type Selector = (String, Vec<LabelMatcher>);

/// Every series selector of a PromQL expression.
fn selectors(expr: &str) -> Vec<Selector> {
    use promql_parser::parser::Expr;
    struct Collect(Vec<Selector>);
    impl promql_parser::util::ExprVisitor for Collect {
        type Error = ();
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
            let vs = match e {
                Expr::VectorSelector(vs) => vs,
                Expr::MatrixSelector(ms) => &ms.vs,
                _ => return Ok(true),
            };
            let matchers = vs
                .matchers
                .matchers
                .iter()
                .map(|m| {
                    let op = m.op.to_string();
                    (m.name.clone(), op, m.value.clone())
                })
                .collect();
            self.0.push((vs.name.clone().unwrap_or_default(), matchers));
            Ok(true)
        }
    }
    let ast =
        promql_parser::parser::parse(expr).unwrap_or_else(|e| panic!("not PromQL ({e}): {expr}"));
    let mut c = Collect(Vec::new());
    promql_parser::util::walk_expr(&mut c, &ast).expect("walk");
    c.0
}

/// A metric name runwatch exports: a described metric (a histogram through its series),
/// a process metric, or Prometheus' own `up`.
fn exported(name: &str) -> bool {
    name == "up"
        || PROCESS_METRICS.contains(&name)
        || METRICS.iter().any(|(n, k, _, _)| {
            name == *n
                || (*k == MetricKind::Histogram
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{n}{s}")))
        })
}

/// All of src/ as one text, to find label values as string literals.
fn source_text() -> String {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("read source"))
        .collect()
}

#[test]
fn the_alerts_parse_and_select_only_series_runwatch_exports() {
    let docs = yaml_docs("deploy/k8s/prometheusrule.yaml");
    assert_eq!(docs.len(), 1);
    let rule = &docs[0];
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
    let source = source_text();
    // Jobs are the Services the ServiceMonitor scrapes (the operator's default job label).
    let services: Vec<String> = render()
        .iter()
        .filter(|o| kind(o) == "Service")
        .map(|o| name(o).to_string())
        .collect();

    let mut alerts = BTreeSet::new();
    let mut by_metric: Vec<(String, BTreeSet<String>)> = Vec::new();
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            let alert = r["alert"].as_str().expect("an alerting rule").to_string();
            assert!(alerts.insert(alert.clone()), "duplicate alert {alert}");
            assert!(
                matches!(
                    r["labels"]["severity"].as_str(),
                    Some("critical" | "warning" | "info")
                ),
                "{alert}: severity"
            );
            for a in ["summary", "description"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                    "{alert}: {a}"
                );
            }
            if let Some(f) = r.get("for") {
                humantime::parse_duration(f.as_str().expect("for")).expect("for: a duration");
            }
            let expr = r["expr"].as_str().expect("expr");
            let mut names = BTreeSet::new();
            for (metric, matchers) in selectors(expr) {
                assert!(
                    exported(&metric),
                    "{alert}: {metric} is not a series runwatch exports"
                );
                names.insert(metric.clone());
                for (label, op, value) in matchers {
                    match label.as_str() {
                        "namespace" => assert_eq!(value, NAMESPACE, "{alert}"),
                        "job" => assert!(
                            services.contains(&value),
                            "{alert}: job {value} is no Service"
                        ),
                        _ => {
                            // Label values: literals the code records (a regex: each alternative).
                            let values: Vec<&str> = if op.contains('~') {
                                value.split('|').collect()
                            } else {
                                vec![value.as_str()]
                            };
                            for v in values {
                                assert!(
                                    source.contains(&format!("\"{v}\"")),
                                    "{alert}: {metric}{{{label}{op}\"{v}\"}}: no such value in src/"
                                );
                            }
                        }
                    }
                }
            }
            by_metric.push((alert, names));
        }
    }
    // What operators asked for: dead letters, outbox backlog, consumer lag, no progress.
    let has = |metrics: &[&str]| {
        by_metric
            .iter()
            .any(|(_, n)| metrics.iter().all(|m| n.contains(*m)))
    };
    assert!(
        has(&["runwatch_dead_letters_total"]),
        "an alert on dead letters"
    );
    assert!(
        has(&["runwatch_outbox_backlog"]),
        "an alert on the outbox backlog"
    );
    assert!(
        has(&["runwatch_consumer_pending"]),
        "an alert on consumer lag"
    );
    assert!(
        has(&["runwatch_consumer_pending", "runwatch_events_total"]),
        "an alert on no progress while events wait"
    );
    assert!(alerts.len() >= 4);
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let dash: Value =
        serde_json::from_str(&read("deploy/grafana/runwatch-dashboard.json")).expect("JSON");
    let mut n = 0;
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().expect("expr");
            // Grafana's variables, as Grafana substitutes them.
            let e = e
                .replace("$__rate_interval", "5m")
                .replace("$__interval", "1m")
                .replace("$job", ".*")
                .replace("$instance", ".*");
            for (metric, _) in selectors(&e) {
                assert!(exported(&metric), "the dashboard queries {metric}: {e}");
            }
            n += 1;
        }
    }
    assert!(n >= 20, "{n} queries");
}

// ---------------------------------------------------------------------------------------
// `runwatch migrate` needs the database only.

#[test]
fn migrate_reads_no_nats_credentials_and_connects_to_no_nats() {
    let configmap = read("deploy/k8s/configmap.yaml");
    let toml = block_scalar(&configmap, "runwatch.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("runwatch.toml");
    // The ConfigMap as the init container sees it: nats.creds_file names a file that is
    // not mounted.
    std::fs::write(&path, &toml).expect("write");
    assert!(toml.contains("creds_file = \"/run/secrets/nats/runwatch.creds\""));
    assert!(!Path::new("/run/secrets/nats/runwatch.creds").exists());
    let err = Config::load(Some(&path)).expect_err("the worker's loading reads the creds");
    assert!(err.to_string().contains("nats.creds_file"), "{err}");
    Config::load_without_nats_secrets(Some(&path)).expect("migrate's loading does not");

    // The binary: that configuration, NATS on a port nobody listens on, a fresh database.
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/runwatch".into());
    let db = format!("rwdeploy_{}", std::process::id());
    let (prefix, _) = base.rsplit_once('/').expect("a database URL");
    let url = format!("{prefix}/{db}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runwatch"))
        .args(["--config"])
        .arg(&path)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("RUNWATCH_DATABASE__CREATE_IF_MISSING", "true")
        .env("NATS_URL", format!("nats://127.0.0.1:{closed}"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run runwatch migrate");
    let dropped = std::process::Command::new("psql")
        .args([
            &format!("{prefix}/postgres"),
            "-qXc",
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .output();
    assert!(
        out.status.success(),
        "runwatch migrate without NATS: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "migrations applied\n");
    assert!(dropped.is_ok_and(|d| d.status.success()), "dropped {db}");
}
