// Included (`include!`) by tests/api/helpers/procs.rs, which `examples/chaos.rs` also
// includes by path.

/// The nats-server binary: `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else
/// `/usr/sbin/nats-server`.
pub fn nats_server_bin() -> std::path::PathBuf {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        return std::path::PathBuf::from(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    std::path::PathBuf::from("/usr/sbin/nats-server")
}
