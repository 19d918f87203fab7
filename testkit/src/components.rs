//! Real components a test drives (podman, systemd, tini, ...): present, skipped with the
//! install command, or under `CI=true` a failure.

use std::process::{Command, Stdio};

/// Whether the real component `tool` is on this machine. A newcomer without it gets a line
/// naming the command that installs it and the test is skipped; under `CI=true` a missing
/// component fails the run instead (`.ci/run` installs them all).
pub fn require(tool: &str, install: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("`{tool}` is missing and CI=true: install it with `{install}`");
    }
    eprintln!("SKIPPED: `{tool}` is not installed; install it with `{install}`");
    false
}

/// Where the test may not go for want of privilege (e.g. `unshare` outside root): skipped,
/// or under `CI=true` a failure.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why} (CI=true: nothing is skipped)");
    }
    eprintln!("SKIPPED: {why}");
}

/// The Python install command for the clients the tests drive (`tests/clients/`).
pub const PYTHON_CLIENTS: &str = "python3 -m pip install websockets grpcio grpcio-health-checking";

/// Whether `python3` can import `modules` (real clients no one here wrote: `websockets`,
/// `grpcio`). Missing: skipped with the install command, or under `CI=true` a failure.
pub fn require_python(modules: &[&str]) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {}", modules.join(", "))])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "python3 cannot import {modules:?} and CI=true: install them with `{PYTHON_CLIENTS}`"
        );
    }
    eprintln!("SKIPPED: python3 cannot import {modules:?}; install them with `{PYTHON_CLIENTS}`");
    false
}

/// Runs a client script of `tests/clients/` with `args`, bounded by `limit`; returns its exit
/// status and what it printed (stdout and stderr).
pub fn run_client(
    script: &str,
    args: &[String],
    limit: std::time::Duration,
) -> (Option<i32>, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients");
    let mut child = Command::new("timeout")
        .arg(format!("{}s", limit.as_secs()))
        .arg("python3")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    // The harness reaps every child (procs::reap): the status is read from there.
    let pid = child.id();
    drop(child);
    let code = crate::procs::wait_exit(pid, limit + std::time::Duration::from_secs(5));
    (Some(code), format!("{out}{err}"))
}
