//! The counter as a container's main process, in a real PID namespace (`unshare --pid --fork
//! --mount-proc`, util-linux): bare as PID 1, and as the child of `tini`. With no setting, the
//! supervisor turns itself on; 20 hot restarts under keep-alive load lose nothing; the
//! namespace's PID 1 never changes; SIGTERM to it saves every acknowledged hit and exits 0.

use hotrestart_testkit as common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::keepalive::KeepAliveLoad;
use common::*;

/// The host pid of the namespace's PID 1: the only child of `unshare`.
fn namespace_init(unshare: u32) -> u32 {
    let start = Instant::now();
    loop {
        if let [(pid, _)] = children(unshare)[..] {
            return pid;
        }
        assert!(start.elapsed() < WAIT, "unshare started no child");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether this machine lets us make PID namespaces (root, or a kernel that allows it).
fn can_unshare() -> bool {
    if !require("unshare", "apt-get install util-linux") {
        return false;
    }
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_or_fail("`unshare --pid --fork --mount-proc` is not permitted here (it needs root)");
    }
    ok
}

fn run_in_namespace(wrapper: &[&str]) {
    let service = Service::prepare("counter", &[]);
    let bin = service.bin.to_str().unwrap().to_owned();
    let mut argv: Vec<&str> = vec!["--pid", "--fork", "--mount-proc", "--kill-child"];
    argv.extend_from_slice(wrapper);
    argv.push(&bin);
    let unshare = service.spawn_wrapped("unshare", &argv);
    service.wait_serving();
    let init = namespace_init(unshare);
    let exe = std::fs::read_link(format!("/proc/{init}/exe")).unwrap();
    if wrapper.is_empty() {
        assert_eq!(exe, service.bin, "the counter itself is PID 1");
    } else {
        assert!(exe.ends_with(wrapper[0]), "{} is PID 1", exe.display());
    }
    // x-pid is the namespace's pid of the serving generation, beneath the supervisor (PID 1
    // bare, PID 2 under tini).
    let supervisor = if wrapper.is_empty() { 1 } else { 2 };
    let first = service.pid();
    assert!(
        first > supervisor,
        "generation 0 runs beneath the supervisor (x-pid {first})"
    );

    // An orphan of the namespace (its parent exits at once) is re-parented to PID 1, the
    // supervisor or tini, which must reap it: no zombie is left.
    let orphan = Command::new("nsenter")
        .args(["--target", &init.to_string(), "--pid", "--mount", "--"])
        .args(["sh", "-c", "sleep 0.2 & exit 0"])
        .status()
        .unwrap();
    assert!(orphan.success());
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        zombie_children(init).is_empty(),
        "orphans are reaped: {:?}",
        children(init)
    );
    let supervisor_pid = if wrapper.is_empty() {
        init
    } else {
        let kids = children(init);
        assert_eq!(kids.len(), 1, "tini's only child: {kids:?}");
        let exe = std::fs::read_link(format!("/proc/{}/exe", kids[0].0)).unwrap();
        assert_eq!(exe, service.bin, "tini's child is the supervisor");
        kids[0].0
    };

    let load = KeepAliveLoad::start(service.addr(), 4);
    let mut last = first;
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: kill with integer arguments, on the namespace's init that this test started.
        assert_eq!(unsafe { libc::kill(init as i32, libc::SIGHUP) }, 0);
        let new = service.wait_new_pid(last);
        assert!(new > supervisor, "restart {i}: x-pid {new}");
        assert!(is_alive(init), "restart {i}: the namespace's PID 1 exited");
        // The same supervisor process throughout (under tini: still tini's only child).
        assert!(
            supervisor_pid == init || children(init).iter().any(|&(p, _)| p == supervisor_pid),
            "restart {i}: the supervisor was replaced"
        );
        assert!(is_alive(unshare));
        last = new;
    }
    std::thread::sleep(Duration::from_millis(100));
    let report = load.finish();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.acked > 100, "{report:?}");
    assert_eq!(namespace_init(unshare), init, "PID 1 never changed");
    let count = service.count();
    assert_eq!(count, report.acked, "every acknowledged hit counted once");

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(init as i32, libc::SIGTERM) }, 0);
    assert_eq!(
        wait_exit(unshare, WAIT),
        0,
        "the namespace ends with status 0; log:\n{}",
        service.log_text()
    );
    assert_eq!(
        service.saved_count(),
        count,
        "the state file holds every hit"
    );
    assert!(service.live_processes().is_empty());
}

#[test]
fn bare_as_pid_1_of_a_pid_namespace() {
    if can_unshare() {
        run_in_namespace(&[]);
    }
}

#[test]
fn under_tini_in_a_pid_namespace() {
    if can_unshare() && require("tini", "apt-get install tini") {
        let tini = String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v tini"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        run_in_namespace(&[tini.trim(), "--"]);
    }
}
