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
