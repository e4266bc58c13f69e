//! The `runwatch` binary: parse the command line, call the library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    runwatch::cli::main().await
}
