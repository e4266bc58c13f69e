//! Throwaway server processes for fault tests and the chaos harness: a nats-server with
//! JetStream (free port, its own store), a Postgres cluster (`initdb` in a temp dir, free
//! port, trust auth; as the `postgres` OS user when run as root) and `runwatch run` worker
//! processes configured by environment variables. Each can be killed and started again.
//!
//! Shared by `tests/api/recovery.rs`, `tests/api/chaos_short.rs` (as `common::procs`) and
//! `examples/chaos.rs` (`#[path = "../tests/api/helpers/procs.rs"]`). Nothing here panics on a
//! process error; everything returns `io::Result`.
#![allow(dead_code)]

use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_listening(port: u16, within: Duration) -> io::Result<()> {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(other(format!(
                "nothing listens on port {port} after {within:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Sends `signal` (e.g. "TERM", "KILL") to a process with `kill(1)`.
pub fn signal(pid: u32, signal: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(other(format!("kill -{signal} {pid} failed")))
    }
}

/// Waits for a child to exit, at most `within`; `Ok(false)` when it is still running.
fn wait_exit(child: &mut Child, within: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// nats-server

// `nats_server_bin()`, shared by the helpers that start their own nats-server.
include!("nats_bin.rs");

/// A private nats-server with JetStream (file store in `dir/js`) on 127.0.0.1:`port`.
/// Killed (SIGKILL) when dropped.
pub struct NatsProc {
    bin: PathBuf,
    /// The client port.
    pub port: u16,
    dir: PathBuf,
    conf: PathBuf,
    /// Whether the server fsyncs every write (`jetstream.sync_interval: always`, nats-server
    /// 2.10 and later); 2.9 does not know the option and syncs every 2 minutes.
    pub sync_always: bool,
    child: Option<Child>,
}

impl NatsProc {
    /// Writes a configuration into `dir` (with `sync_interval: always` when this server
    /// accepts it), starts the server on a free port and waits until it listens.
    pub fn start(dir: &Path) -> io::Result<NatsProc> {
        fs::create_dir_all(dir)?;
        let bin = nats_server_bin();
        let port = free_port()?;
        let store = dir.join("js");
        let base = format!("listen: \"127.0.0.1:{port}\"\nmax_payload: 1048576\n",);
        let conf = dir.join("nats.conf");
        let with_sync = format!(
            "{base}jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
            store.display()
        );
        fs::write(&conf, &with_sync)?;
        // `-t` checks the configuration and exits.
        let sync_always = Command::new(&bin)
            .args(["-t", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !sync_always {
            fs::write(
                &conf,
                format!(
                    "{base}jetstream {{\n  store_dir: \"{}\"\n}}\n",
                    store.display()
                ),
            )?;
        }
        let mut server = NatsProc {
            bin,
            port,
            dir: dir.to_path_buf(),
            conf,
            sync_always,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats.log"))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| other(format!("cannot start {}: {e}", self.bin.display())))?;
        self.child = Some(child);
        wait_listening(self.port, Duration::from_secs(20))
    }

    /// Graceful stop: SIGTERM (the server flushes its stores), SIGKILL after 15 s.
    pub fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM")?;
            if !wait_exit(&mut child, Duration::from_secs(15))? {
                child.kill()?;
                child.wait()?;
            }
        }
        Ok(())
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (same port, same store) after [`NatsProc::stop`] or
    /// [`NatsProc::kill`].
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_none() {
            self.spawn()?;
        }
        Ok(())
    }

    /// Graceful stop, then start again.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.start_again()
    }
}

impl Drop for NatsProc {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Postgres

/// The directory of `initdb`, `pg_ctl`, `postgres`: `PG_BIN_DIR`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn pg_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// A private Postgres cluster in `dir/data`, trust authentication, listening on
/// 127.0.0.1:`port` (and a socket in `dir`). As root, every command runs as the `postgres`
/// OS user (Postgres refuses root), which then owns `dir`. Stopped in immediate mode when
/// dropped.
pub struct PgProc {
    bin: PathBuf,
    /// The TCP port.
    pub port: u16,
    dir: PathBuf,
    as_postgres: bool,
    running: bool,
}

impl PgProc {
    /// `initdb` (user `postgres`, trust) and start. `fsync = off`: the faults injected are
    /// process crashes, which lose nothing the kernel already has; it spares the shared disk.
    pub fn start(dir: &Path) -> io::Result<PgProc> {
        fs::create_dir_all(dir)?;
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir)
                .status()?;
            if !status.success() {
                return Err(other(format!("chown postgres {} failed", dir.display())));
            }
        }
        let mut pg = PgProc {
            bin: pg_bin_dir(),
            port: free_port()?,
            dir: dir.to_path_buf(),
            as_postgres,
            running: false,
        };
        let data = pg.data_dir();
        let out = pg
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()?;
        if !out.status.success() {
            return Err(other(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        pg.start_again()?;
        Ok(pg)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `pg_ctl start -w` (after [`PgProc::stop_immediate`] or a crash).
    pub fn start_again(&mut self) -> io::Result<()> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-o", &opts, "-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            return Err(other(format!(
                "pg_ctl start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        self.running = true;
        wait_listening(self.port, Duration::from_secs(30))
    }

    /// `pg_ctl stop -m immediate`: every backend exits at once, no checkpoint; the next
    /// start runs crash recovery.
    pub fn stop_immediate(&mut self) -> io::Result<()> {
        self.stop_mode("immediate")
    }

    /// `pg_ctl stop -m fast`.
    pub fn stop_fast(&mut self) -> io::Result<()> {
        self.stop_mode("fast")
    }

    fn stop_mode(&mut self, mode: &str) -> io::Result<()> {
        if !self.running {
            return Ok(());
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "stop"])
            .stdin(Stdio::null())
            .output()?;
        self.running = false;
        if !out.status.success() {
            return Err(other(format!(
                "pg_ctl stop -m {mode} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }
}

impl Drop for PgProc {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
    }
}

// ---------------------------------------------------------------------------------------
// Workers

/// A `runwatch run` process of the binary `bin`, configured by environment variables,
/// logging (stderr) to a file. Killed (SIGKILL) when dropped.
pub struct WorkerProc {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// How often this worker was started.
    pub starts: u32,
}

impl WorkerProc {
    /// Starts `bin run` with `env` (added to this process's environment), stderr appended
    /// to `log`.
    pub fn start(bin: &Path, env: Vec<(String, String)>, log: &Path) -> io::Result<WorkerProc> {
        Self::start_command(bin, &["run"], env, log)
    }

    /// Starts `bin ARGS…` (another long-running command, e.g. `deliver`) like [`WorkerProc::start`].
    pub fn start_command(
        bin: &Path,
        args: &[&str],
        env: Vec<(String, String)>,
        log: &Path,
    ) -> io::Result<WorkerProc> {
        let mut w = WorkerProc {
            bin: bin.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            log: log.to_path_buf(),
            child: None,
            starts: 0,
        };
        w.start_again()?;
        Ok(w)
    }

    /// Starts the process again if it is not running.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| other(format!("cannot start {}: {e}", self.bin.display())))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit (at most `within`, then SIGKILL); the exit code.
    pub fn terminate(&mut self, within: Duration) -> io::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        signal(child.id(), "TERM")?;
        if !wait_exit(&mut child, within)? {
            child.kill()?;
        }
        Ok(child.wait()?.code())
    }

    /// `Some(exit code)` if the process exited by itself (it is then no longer running).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.code())
            }
            _ => None,
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill();
    }
}
