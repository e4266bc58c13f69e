//! The `runwatch` binary: parse the command line, call the library.

/// mimalloc instead of glibc's malloc (docs/performance.md "Where the time goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    runwatch::cli::main().await
}
