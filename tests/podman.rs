//! The counter as a real container's main process: podman + runc, image-less (`--rootfs` with
//! the binary and the libraries `ldd` lists), on the host's network (loopback only). With no
//! setting, the supervisor is on (the counter is the container's PID 1): `podman kill --signal
//! HUP` hot-restarts under load, `podman stop` saves every acknowledged hit, exit code 0.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::keepalive::KeepAliveLoad;
use common::*;

/// Runs `podman args...`, bounded in time; returns (success, stdout).
fn podman(args: &[&str]) -> (bool, String) {
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
fn rootfs(bin: &Path, dir: &Path) {
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
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        podman(&["rm", "--force", "--time", "0", &self.0]);
    }
}

/// A hard resource limit of this process, for `--ulimit` within the machine's own limits.
fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the local `limit` only.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
    limit.rlim_max.min(4096)
}

#[test]
fn podman_kill_hup_restarts_and_podman_stop_saves_the_state() {
    if !require("podman", "apt-get install podman runc") || !require("runc", "apt-get install runc")
    {
        return;
    }
    let service = Service::prepare("counter", &[]);
    let root = service.dir.path().join("rootfs");
    rootfs(&service.bin, &root);
    let name = format!("hotrestart-test-{}-{}", std::process::id(), service.port);
    let container = Container(name.clone());
    let nofile = hard_limit(libc::RLIMIT_NOFILE);
    let nproc = hard_limit(libc::RLIMIT_NPROC);
    let (ulimit_nofile, ulimit_nproc) = (
        format!("nofile={nofile}:{nofile}"),
        format!("nproc={nproc}:{nproc}"),
    );
    let volume = format!("{}:/state", service.dir.path().display());
    let port = format!("PORT={}", service.port);
    let (ok, _) = podman(&[
        "run",
        "--detach",
        "--name",
        &name,
        // crun fails on this kind of machine (cgroups in hybrid mode).
        "--runtime",
        "runc",
        "--network",
        "host",
        "--ulimit",
        &ulimit_nofile,
        "--ulimit",
        &ulimit_nproc,
        "--volume",
        &volume,
        "--env",
        &port,
        "--env",
        "HOTRESTART_STATE_FILE=/state/counter.state",
        "--rootfs",
        root.to_str().unwrap(),
        "/counter",
    ]);
    assert!(ok, "podman run");
    service.wait_serving();
    let (_, pid1) = podman(&["inspect", "--format", "{{.State.Pid}}", &name]);
    let init: u32 = pid1.parse().unwrap();
    let exe = std::fs::read_link(format!("/proc/{init}/exe")).unwrap();
    assert!(
        exe.ends_with("rootfs/counter") || exe == Path::new("/counter"),
        "the counter is the container's main process, not {}",
        exe.display()
    );

    let load = KeepAliveLoad::start(service.addr(), 4);
    let mut last = service.pid();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        assert!(podman(&["kill", "--signal", "HUP", &name]).0);
        last = service.wait_new_pid(last);
        let (_, state) = podman(&["inspect", "--format", "{{.State.Status}}", &name]);
        assert_eq!(state, "running");
    }
    std::thread::sleep(Duration::from_millis(100));
    let report = load.finish();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let count = service.count();
    assert_eq!(count, report.acked);
    let (_, same) = podman(&["inspect", "--format", "{{.State.Pid}}", &name]);
    assert_eq!(same, pid1, "the container's main process never changed");

    assert!(podman(&["stop", "--time", "20", &name]).0);
    let (_, code) = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    let (_, logs) = podman(&["logs", &name]);
    assert_eq!(code, "0", "container exit code; logs:\n{logs}");
    assert_eq!(
        service.saved_count(),
        count,
        "every acknowledged hit is in the state file"
    );
    drop(container);
}
