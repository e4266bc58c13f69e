//! Tests that need the process to themselves: the metrics recorder is global and installs
//! once per process, and a heap measurement must see no other test's allocations. Such a
//! test starts with [`own_process!`]: in the test binary's process it runs the test again,
//! alone, in a child process of the same binary, and passes or fails with it.

use std::process::Command;

/// Set in the child process to the test it runs.
const CHILD: &str = "OWN_PROCESS_TEST";

/// `true` in the child process started for `path` (`api::module::test`, from
/// [`own_process!`]): run the test's body. Otherwise runs the test alone in a child process
/// of this binary, prints its output, asserts that it ran exactly that test and passed, and
/// returns `false`.
pub fn run_alone(path: &str) -> bool {
    // libtest names tests without the crate: `module::test`.
    let name = path.split_once("::").map_or(path, |(_, rest)| rest);
    if std::env::var(CHILD).is_ok_and(|v| v == name) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- {name} in its own process ---\n{stdout}{stderr}--- end of {name} ---");
    assert!(
        out.status.success(),
        "{name} failed in its own process ({})",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the child process did not run {name} (a wrong test path?)"
    );
    false
}

/// Runs the enclosing test (named by `$test`, the function's name) in a process of its own:
/// returns from the test in the parent after the child passed.
macro_rules! own_process {
    ($test:ident) => {
        if !$crate::helpers::own_process::run_alone(concat!(
            module_path!(),
            "::",
            stringify!($test)
        )) {
            return;
        }
    };
}
pub(crate) use own_process;
