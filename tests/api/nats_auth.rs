//! NATS authentication and TLS against real nats-server processes started by each test
//! (free port, temporary directory, a server configuration written by the test): user and
//! password (inline and from a file, and through `RUNWATCH_NATS__*` in the real binary),
//! token, nkey, a creds file in operator mode, mutual TLS with a CA and certificates made
//! here with the `openssl` command. Right credentials connect; wrong ones fail at once with
//! an error that says why and never contains a secret.

use crate::helpers::nats as nats_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runwatch::bus::Bus;
use runwatch::config::{Config, NatsAuth};
use runwatch::secret::Secret;

use nats_common::{free_port, init_tracing, nats_server_bin, test_config_for, unique_suffix};

/// A nats-server with the given configuration body (its `listen` is added), killed on drop.
struct AuthServer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl AuthServer {
    fn start(body: &str) -> AuthServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("server.conf");
        std::fs::write(&conf, format!("listen: \"127.0.0.1:{port}\"\n{body}\n"))
            .expect("write conf");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                panic!("nats-server did not listen on {port}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        AuthServer {
            port,
            child,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn config(&self) -> Config {
        let mut config = test_config_for(&self.url(), &unique_suffix());
        config.retry.min_delay = Duration::from_millis(20);
        config.retry.max_delay = Duration::from_millis(100);
        config
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects, and proves the connection works with a core request round trip.
async fn connects(config: &Config) {
    let bus = Bus::connect(config)
        .await
        .expect("connect with the right credentials");
    let client = bus.client();
    let mut sub = client.subscribe("auth.echo").await.expect("subscribe");
    client
        .publish("auth.echo", "hi".into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    let msg = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut sub))
        .await
        .expect("echo in time")
        .expect("a message");
    assert_eq!(&msg.payload[..], b"hi");
}

/// Connecting fails, quickly (not retried as if transient), and the error names the cause
/// and contains none of `secrets`.
async fn refused(config: &Config, cause: &str, secrets: &[&str]) -> String {
    let started = Instant::now();
    let err = Bus::connect(config).await.expect_err("connect must fail");
    assert!(!err.is_transient(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let text = format!("{err} / {err:?}");
    assert!(
        text.to_lowercase().contains(cause),
        "expected {cause:?} in {text}"
    );
    for s in secrets {
        assert!(!text.contains(s), "secret {s:?} in {text}");
    }
    text
}

#[tokio::test]
async fn user_and_password_inline_and_from_a_file() {
    init_tracing();
    let server =
        AuthServer::start(r#"authorization { user: "runwatch", password: "pw-Right-7f3a" }"#);
    let mut config = server.config();
    config.nats.user = Some("runwatch".into());
    config.nats.password = Some(Secret::new("pw-Right-7f3a"));
    assert!(matches!(
        config.nats.auth(),
        Ok(NatsAuth::UserPassword { .. })
    ));
    connects(&config).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "pw-Right-7f3a\n").unwrap();
    config.nats.password = None;
    config.nats.password_file = Some(file.clone());
    connects(&config).await;

    std::fs::write(&file, "pw-Wrong-91c0\n").unwrap();
    refused(
        &config,
        "authorization violation",
        &["pw-Wrong-91c0", "pw-Right-7f3a"],
    )
    .await;
    config.nats.password_file = None;
    config.nats.password = Some(Secret::new("pw-Wrong-91c0"));
    refused(&config, "authorization violation", &["pw-Wrong-91c0"]).await;

    // No credentials at all.
    config.nats.user = None;
    config.nats.password = None;
    refused(&config, "authorization violation", &[]).await;
}

#[tokio::test]
async fn token_inline_and_from_a_file() {
    init_tracing();
    let server = AuthServer::start(r#"authorization { token: "tok-Right-2b9e" }"#);
    let mut config = server.config();
    config.nats.token = Some(Secret::new("tok-Right-2b9e"));
    connects(&config).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "tok-Right-2b9e").unwrap();
    config.nats.token = None;
    config.nats.token_file = Some(file);
    connects(&config).await;

    config.nats.token_file = None;
    config.nats.token = Some(Secret::new("tok-Wrong-55aa"));
    refused(
        &config,
        "authorization violation",
        &["tok-Wrong-55aa", "tok-Right-2b9e"],
    )
    .await;
}

#[tokio::test]
async fn nkey_seed_inline_and_from_a_file() {
    init_tracing();
    let user = nkeys::KeyPair::new_user();
    let server = AuthServer::start(&format!(
        r#"authorization {{ users: [ {{ nkey: "{}" }} ] }}"#,
        user.public_key()
    ));
    let seed = user.seed().unwrap();
    let mut config = server.config();
    config.nats.nkey_seed = Some(Secret::new(seed.clone()));
    connects(&config).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seed");
    std::fs::write(&file, format!("{seed}\n")).unwrap();
    config.nats.nkey_seed = None;
    config.nats.nkey_seed_file = Some(file);
    connects(&config).await;

    let other = nkeys::KeyPair::new_user().seed().unwrap();
    config.nats.nkey_seed_file = None;
    config.nats.nkey_seed = Some(Secret::new(other.clone()));
    refused(&config, "authorization violation", &[&other, &seed]).await;

    // Not a seed at all: a configuration error naming the key, before any connection.
    config.nats.nkey_seed = Some(Secret::new("SUnot-a-seed"));
    let text = refused(&config, "nats.nkey_seed", &["SUnot-a-seed"]).await;
    assert!(text.contains("seed"), "{text}");
}

/// Base64url without padding (JWT encoding).
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A NATS JWT (v2) for `subject`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let claims = serde_json::json!({
        "jti": format!("{subject}{now}").chars().take(52).collect::<String>(),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signing = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(signing.as_bytes()).unwrap();
    format!("{signing}.{}", b64url(&signature))
}

#[tokio::test]
async fn creds_file_in_operator_mode() {
    init_tracing();
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test-operator",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "test-account",
        serde_json::json!({"limits": unlimited, "type": "account", "version": 2}),
    );
    let server = AuthServer::start(&format!(
        "operator: \"{operator_jwt}\"\nresolver: MEMORY\nresolver_preload: {{ {}: \"{account_jwt}\" }}",
        account.public_key()
    ));
    let creds = |user: &nkeys::KeyPair, signer: &nkeys::KeyPair| {
        let user_jwt = jwt(
            signer,
            &user.public_key(),
            "runwatch",
            serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                               "type": "user", "version": 2}),
        );
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runwatch.creds");
    std::fs::write(&file, creds(&user, &account)).unwrap();
    let mut config = server.config();
    config.nats.creds_file = Some(file.clone());
    connects(&config).await;

    // A user signed by a key the server does not know.
    let stranger = nkeys::KeyPair::new_account();
    std::fs::write(&file, creds(&user, &stranger)).unwrap();
    refused(&config, "authorization violation", &[&user.seed().unwrap()]).await;

    // Not a creds file.
    std::fs::write(&file, "hello").unwrap();
    refused(&config, "nats.creds_file", &["hello"]).await;

    // A missing file is a configuration error naming the key.
    config.nats.creds_file = Some(dir.path().join("absent.creds"));
    refused(&config, "nats.creds_file", &[]).await;
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl (needed by this test)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "1",
            "-subj",
            "/CN=runwatch test CA",
        ];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&ca);
        for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
            let key = format!("{name}-key.pem");
            let csr = format!("{name}.csr");
            let cert = format!("{name}.pem");
            let ext = format!("{name}.ext");
            std::fs::write(
                dir.path().join(&ext),
                format!(
                    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n\
                     basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                ),
            )
            .unwrap();
            let mut req = vec![
                "req",
                "-subj",
                "/CN=localhost",
                "-keyout",
                &key,
                "-out",
                &csr,
            ];
            req.extend(ec);
            run(&req);
            run(&[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &cert,
                "-extfile",
                &ext,
            ]);
        }
        Pki { dir }
    }

    fn server_tls(&self, verify: bool) -> String {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify}\n  timeout: 2\n}}",
            self.path("server.pem").display(),
            self.path("server-key.pem").display(),
            self.path("ca.pem").display()
        )
    }
}

fn with_tls(config: &mut Config, ca: Option<&Path>, client: Option<(&Path, &Path)>) {
    config.nats.tls_ca_file = ca.map(Path::to_path_buf);
    config.nats.tls_cert_file = client.map(|c| c.0.to_path_buf());
    config.nats.tls_key_file = client.map(|c| c.1.to_path_buf());
}

#[tokio::test]
async fn mutual_tls_with_a_private_ca() {
    init_tracing();
    let pki = Pki::new();
    let server = AuthServer::start(&pki.server_tls(true));
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client-key.pem"),
    );
    let mut config = server.config();
    config.nats.tls_required = true;
    with_tls(&mut config, Some(&ca), Some((&cert, &key)));
    connects(&config).await;

    // The server's certificate is not trusted without our CA.
    with_tls(&mut config, None, Some((&cert, &key)));
    refused(&config, "tls", &[]).await;

    // The server requires a client certificate.
    with_tls(&mut config, Some(&ca), None);
    refused(&config, "tls", &[]).await;

    // A client certificate without its key is a configuration error naming the key.
    config.nats.tls_cert_file = Some(cert.clone());
    let text = refused(&config, "nats.tls_key_file", &[]).await;
    assert!(text.contains("nats.tls_cert_file needs"), "{text}");
}

#[tokio::test]
async fn tls_required_refuses_a_plain_server() {
    init_tracing();
    let server = AuthServer::start("");
    let mut config = server.config();
    connects(&config).await;
    config.nats.tls_required = true;
    refused(&config, "tls", &[]).await;
}

#[test]
fn debug_and_errors_never_show_secrets() {
    let mut config = test_config_for("nats://u:url-Secret-1@127.0.0.1:4222", "dbg");
    config.database.url = "postgres://runwatch:db-Secret-2@127.0.0.1/runwatch".into();
    config.nats.user = Some("runwatch".into());
    config.nats.password = Some(Secret::new("pw-Secret-3"));
    config.nats.token = Some(Secret::new("tok-Secret-4"));
    config.nats.nkey_seed = Some(Secret::new("seed-Secret-5"));
    let secrets = [
        "url-Secret-1",
        "db-Secret-2",
        "pw-Secret-3",
        "tok-Secret-4",
        "seed-Secret-5",
    ];
    let debug = format!("{config:?} {config:#?}");
    for s in secrets {
        assert!(!debug.contains(s), "{s} in {debug}");
    }
    assert!(debug.contains("[REDACTED]"), "{debug}");
    // Two methods at once: an error naming both keys, showing neither value.
    let err = config.nats.auth().unwrap_err().to_string();
    assert!(
        err.contains("nats.token") && err.contains("only one"),
        "{err}"
    );
    let auth_debug = {
        config.nats.token = None;
        config.nats.nkey_seed = None;
        // Credentials in the URL are a method of their own: one method only.
        let err = config.nats.auth().unwrap_err().to_string();
        assert!(
            err.contains("nats.url") && err.contains("only one"),
            "{err}"
        );
        config.nats.url = "nats://127.0.0.1:4222".into();
        format!("{err} {:?}", config.nats.auth().unwrap())
    };
    for s in secrets {
        assert!(
            !err.contains(s) && !auth_debug.contains(s),
            "{s} in {err} / {auth_debug}"
        );
    }
    // Inline and file together, an unreadable file, an empty file.
    let dir = tempfile::tempdir().unwrap();
    config.nats.password_file = Some(dir.path().join("absent"));
    let err = config.nats.auth().unwrap_err().to_string();
    assert!(
        err.contains("nats.password") && err.contains("not both"),
        "{err}"
    );
    config.nats.password = None;
    let err = config.nats.auth().unwrap_err().to_string();
    assert!(
        err.contains("nats.password_file") && err.contains("cannot read"),
        "{err}"
    );
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    config.nats.password_file = Some(dir.path().join("empty"));
    let err = config.nats.auth().unwrap_err().to_string();
    assert!(
        err.contains("nats.password_file") && err.contains("empty"),
        "{err}"
    );
}

/// The real binary, configured through the environment: a wrong password gives exit status
/// 2 and a clear message without the password; `--help` never shows it either.
#[test]
fn binary_with_secrets_from_the_environment() {
    let server =
        AuthServer::start(r#"authorization { user: "runwatch", password: "env-Right-c4d1" }"#);
    let bin = env!("CARGO_BIN_EXE_runwatch");
    let run = |password: &str, args: &[&str]| {
        Command::new(bin)
            .args(args)
            .env("NATS_URL", server.url())
            .env("RUNWATCH_NATS__USER", "runwatch")
            .env("RUNWATCH_NATS__PASSWORD", password)
            .env("RUNWATCH_NATS__CONNECT_TIMEOUT", "2s")
            .env(
                "RUNWATCH_STREAMS__EVENTS",
                format!("RWT_AUTH_{}_EVENTS", unique_suffix().to_uppercase()),
            )
            .env(
                "RUNWATCH_STREAMS__EVENTS_SUBJECT_PREFIX",
                format!("rwt.auth{}.events", std::process::id()),
            )
            .stdin(Stdio::null())
            .output()
            .expect("run runwatch")
    };
    let out = run("env-Wrong-0e77", &["publish", "-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("authorization violation"), "{stderr}");
    assert!(
        !stderr.contains("env-Wrong-0e77") && !stdout.contains("env-Wrong-0e77"),
        "{stderr}"
    );

    for args in [
        &["--help"][..],
        &["run", "--help"][..],
        &["publish", "--help"][..],
    ] {
        let out = run("env-Right-c4d1", args);
        assert!(out.status.success());
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("env-Right-c4d1"), "{all}");
    }
}
