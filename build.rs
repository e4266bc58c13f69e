// `sqlx::migrate!` embeds `migrations/` at compile time; without this, adding or editing a
// migration does not rebuild the crate and the binary keeps the old set.
//
// RUNWATCH_GIT_SHA (the `git_sha` label of `runwatch_build_info`): the variable of that
// name when set (a Docker build without `.git`: `--build-arg RUNWATCH_GIT_SHA=…`), else
// `git rev-parse` of the checkout, else `unknown`.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=RUNWATCH_GIT_SHA");
    let sha = std::env::var("RUNWATCH_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=RUNWATCH_GIT_SHA={sha}");
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the ref it points to (a commit).
    // A path that does not exist (a packed ref) is left out: cargo would rerun every build.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(name) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &name]));
    }
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
