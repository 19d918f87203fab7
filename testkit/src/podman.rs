//! podman + runc, for the tests that run the counter in a real container.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::service::FORK_LOCK;

/// Runs `podman args...`, bounded in time; returns (success, stdout).
pub fn podman(args: &[&str]) -> (bool, String) {
    let out = {
        let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        Command::new("timeout")
            .arg("120")
            .arg("podman")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        eprintln!(
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), text)
}

/// A root file system holding `bin` as `/counter` and the shared libraries it needs.
pub fn rootfs(bin: &Path, dir: &Path) {
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::copy(bin, dir.join("counter")).unwrap();
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let target = dir.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(lib, &target).unwrap();
    }
}

/// Removes the container, whatever happened to the test.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        podman(&["rm", "--force", "--time", "0", &self.0]);
    }
}

/// A hard resource limit of this process, for `--ulimit` within the machine's own limits.
pub fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the local `limit` only.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
    limit.rlim_max.min(4096)
}

/// `podman run --detach --name <name>` with what every test here needs: runc (crun fails on
/// this kind of machine, cgroups in hybrid mode), the host's network (loopback only), and
/// resource limits within the machine's own hard limits.
pub fn run_args(name: &str) -> Vec<String> {
    let nofile = hard_limit(libc::RLIMIT_NOFILE);
    let nproc = hard_limit(libc::RLIMIT_NPROC);
    [
        "run",
        "--detach",
        "--name",
        name,
        "--runtime",
        "runc",
        "--network",
        "host",
        "--ulimit",
        &format!("nofile={nofile}:{nofile}"),
        "--ulimit",
        &format!("nproc={nproc}:{nproc}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
