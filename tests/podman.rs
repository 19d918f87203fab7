//! The counter as a real container's main process: podman + runc, image-less (`--rootfs` with
//! the binary and the libraries `ldd` lists), on the host's network (loopback only). With no
//! setting, the supervisor is on (the counter is the container's PID 1): `podman kill --signal
//! HUP` hot-restarts under load, `podman stop` saves every acknowledged hit, exit code 0.

use hotrestart_testkit as common;

use std::path::Path;
use std::time::Duration;

use common::keepalive::KeepAliveLoad;
use common::podman::*;
use common::*;

#[test]
fn podman_kill_hup_restarts_and_podman_stop_saves_the_state() {
    if !require("podman", "apt-get install podman runc") || !require("runc", "apt-get install runc")
    {
        return;
    }
    let mut service = Service::prepare("counter", &[]);
    // The container's counter binds the port itself (no fd crosses `podman run --detach`).
    service.release_port();
    let root = service.dir.path().join("rootfs");
    rootfs(&service.bin, &root);
    let name = format!("hotrestart-test-{}-{}", std::process::id(), service.port);
    let container = Container(name.clone());
    let volume = format!("{}:/state", service.dir.path().display());
    let port = format!("PORT={}", service.port);
    let mut args = run_args(&name);
    for extra in [
        "--volume",
        &volume,
        "--env",
        &port,
        "--env",
        "HOTRESTART_STATE_FILE=/state/counter.state",
        "--rootfs",
        root.to_str().unwrap(),
        "/counter",
    ] {
        args.push(extra.to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _) = podman(&args);
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

    // The container's PID 1 is the supervisor: the serving generation is another process.
    assert_ne!(
        service.pid(),
        1,
        "a generation serves, beneath the supervisor"
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
