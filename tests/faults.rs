//! Faults of either generation during a hot restart, with real processes: whatever fails, one
//! healthy process serves, no acknowledged write is lost, and one log line says what happened.

use hotrestart_testkit as common;

use common::*;

/// Hits the service `n` times.
fn hits(svc: &Service, n: u64) {
    for _ in 0..n {
        svc.hit();
    }
}

/// Waits until the service reports the one rollback of this test (its control socket's
/// status) and checks that `pid` is the process that serves on, that no child of it is left
/// (the successor is killed and reaped before the old process serves again) and that the one
/// restart made one outcome. Returns the rollback's reason.
fn rolled_back(svc: &Service, pid: u32) -> String {
    let status = svc.wait_rollbacks(1);
    assert_eq!(status.pid, pid, "the old process serves on: {status:?}");
    assert_eq!(svc.pid(), pid, "the old process answers");
    let children = children(pid);
    assert!(
        children.is_empty(),
        "the failed successor is gone: {children:?}"
    );
    assert_eq!(status.history.len(), 1, "one outcome per fault: {status:?}");
    status.rollbacks().remove(0)
}

/// Arms `fault` in the successor, triggers a restart under load, and checks the rollback:
/// the old process serves on with every acknowledged hit; the disarmed binary then takes over.
fn successor_fault_rolls_back(fault: &str, ready_timeout: &str) -> String {
    let svc = Service::start_faulty(&[("HOTRESTART_READY_TIMEOUT", ready_timeout)]);
    hits(&svc, 3);
    let pid = svc.pid();
    let load = Load::start(svc.addr());
    svc.plan(fault);
    svc.signal(pid, libc::SIGHUP);
    let line = rolled_back(&svc, pid);
    let (acked, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} requests failed: {failures:?}",
        failures.len()
    );
    assert_eq!(svc.count(), 3 + acked, "the live state is kept");

    svc.plan("");
    let new = svc.hot_restart();
    assert_ne!(new, pid);
    assert_eq!(svc.count(), 3 + acked, "and handed over afterwards");
    line
}

#[test]
fn successor_exiting_with_an_error_is_rolled_back() {
    let line = successor_fault_rolls_back("exit", "5s");
    assert!(
        line.contains("exited (exit status: 1) before PREPARED"),
        "{line}"
    );
}

#[test]
fn successor_panicking_before_ready_is_rolled_back() {
    let line = successor_fault_rolls_back("panic", "5s");
    assert!(
        line.contains("exited (exit status: 101) before PREPARED"),
        "{line}"
    );
}

#[test]
fn successor_hanging_past_the_ready_timeout_is_killed_and_rolled_back() {
    let line = successor_fault_rolls_back("hang", "1500ms");
    assert!(
        line.contains("not PREPARED within the ready timeout (1.5s)"),
        "{line}"
    );
}

#[test]
fn successor_that_cannot_decode_the_snapshot_rejects_it_and_is_rolled_back() {
    let svc = Service::start(&[]);
    hits(&svc, 4);
    let pid = svc.pid();
    let load = Load::start(svc.addr());
    // A new build whose `#[persist] hits` is a Mutex<String> instead of an AtomicU64.
    svc.replace_binary(&std::fs::read(example("counter_incompatible")).unwrap());
    svc.signal(pid, libc::SIGHUP);
    let line = rolled_back(&svc, pid);
    assert!(
        line.contains("rejected the handover")
            && line.contains("`hits` changed type")
            && line.contains("AtomicU64")
            && line.contains("Mutex<alloc::string::String>"),
        "{line}"
    );
    let (acked, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(svc.count(), 4 + acked);

    svc.restore_binary();
    svc.hot_restart();
    assert_eq!(svc.count(), 4 + acked);
}

/// A faulty service whose snapshot (8 MiB) cannot pass the channel's buffers at once.
fn big_state() -> Service {
    Service::start_faulty(&[
        ("FAULTY_BALLAST_MB", "8"),
        ("HOTRESTART_READY_TIMEOUT", "20s"),
    ])
}

/// Makes the old process's hook hold the handover for 1 s after it stopped accepting,
/// triggers a restart, and stops the successor (SIGSTOP) while the hook runs, i.e. after
/// PREPARED and before any byte of the snapshot; returns once the hook is over and the old
/// process is blocked sending a snapshot that the stopped successor cannot read.
fn stop_successor_mid_snapshot(svc: &Service, old: u32) -> u32 {
    let hooks = svc.count_log("hook: done");
    svc.plan("hook-sleep-ms=1000");
    svc.signal(old, libc::SIGHUP);
    svc.wait_log("hook: sleeping", hooks + 1);
    let successor = svc.successor_of(old);
    svc.signal(successor, libc::SIGSTOP);
    // After the hook the old process sends the snapshot, which blocks once the socket
    // buffers (a few hundred KiB) are full: 64 KiB waiting in the stopped successor's end of
    // the channel is the snapshot under way.
    wait_handoff_queued(successor, 64 << 10);
    successor
}

#[test]
fn successor_killed_while_receiving_the_snapshot_is_rolled_back() {
    let svc = big_state();
    hits(&svc, 5);
    let ballast = get(svc.addr(), "/ballast").unwrap().body;
    assert!(ballast.starts_with("8388608:"), "{ballast}");
    let old = svc.pid();
    let load = Load::start(svc.addr());
    let successor = stop_successor_mid_snapshot(&svc, old);
    svc.signal(successor, libc::SIGKILL);
    let line = rolled_back(&svc, old);
    assert!(
        line.contains(&format!("successor pid {successor}"))
            && line.contains("SIGKILL")
            && line.contains("while receiving the snapshot"),
        "{line}"
    );
    let (acked, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(svc.count(), 5 + acked, "the live count is kept");
    assert_eq!(get(svc.addr(), "/ballast").unwrap().body, ballast);
}

#[test]
fn old_process_killed_while_sending_the_snapshot_leaves_the_successor_serving_the_state_file() {
    let svc = big_state();
    // A state file with 3 hits, then 2 more hits that only the live process knows.
    hits(&svc, 3);
    let first = svc.pid();
    svc.signal(first, libc::SIGTERM);
    assert_eq!(wait_exit(first, WAIT), 0);
    svc.spawn();
    assert_eq!(svc.count(), 3);
    hits(&svc, 2);
    let old = svc.pid();
    let successor = stop_successor_mid_snapshot(&svc, old);
    svc.signal(old, libc::SIGKILL);
    assert_eq!(wait_exit(old, WAIT), 128 + libc::SIGKILL);
    svc.signal(successor, libc::SIGCONT);

    assert_eq!(svc.wait_new_pid(old), successor, "the successor serves");
    let lines = svc.wait_log("went away before handing over its state", 1);
    assert_eq!(lines.len(), 1, "one line says so");
    assert!(
        lines[0].contains("SNAPSHOT frame truncated")
            && lines[0].contains("falling back to the state file"),
        "{}",
        lines[0]
    );
    assert_eq!(svc.count(), 3, "the best state left: the state file's");
    assert_eq!(svc.hit(), 4);
    assert!(is_alive(successor), "the successor neither exits nor hangs");
    assert_eq!(svc.pid(), successor);
    assert!(get(svc.addr(), "/ballast")
        .unwrap()
        .body
        .starts_with("8388608:"));
}

#[test]
fn old_process_killed_after_ready_while_it_winds_down_does_not_disturb_the_successor() {
    // After READY the old process leaves `serve` and lingers in main (an application closing
    // its pools) for up to drain_timeout + 1 s: it is killed there.
    let svc = Service::start_faulty(&[("HOTRESTART_DRAIN_TIMEOUT", "1s")]);
    hits(&svc, 6);
    let old = svc.pid();
    let load = Load::start(svc.addr());
    svc.plan("linger-ms=10000");
    svc.signal(old, libc::SIGHUP);
    let handed = svc.wait_log("handed over to pid", 1).remove(0);
    let new: u32 = field(&handed, "new_pid").unwrap();
    svc.wait_log("lingering", 1);
    assert!(is_alive(old), "the old process is still winding down");
    svc.signal(old, libc::SIGKILL);
    assert_eq!(wait_exit(old, WAIT), 128 + libc::SIGKILL);

    load.wait_more(20);
    let (acked, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(svc.pid(), new);
    assert_eq!(
        svc.count(),
        6 + acked,
        "every acknowledged hit is in the successor"
    );
    assert!(is_alive(new));
    let log = svc.log_text();
    for alarm in [
        "went away",
        "could not report READY",
        "rolled back",
        "ERROR",
    ] {
        assert!(!log.contains(alarm), "{alarm:?} in:\n{log}");
    }
}

#[test]
fn old_process_killed_while_its_successor_waits_leaves_the_successor_serving_the_state_file() {
    // Unlike the test above, the successor is not stopped: it is waiting for the snapshot when
    // the old process dies, and sees the channel end at once — before the kernel has even
    // re-parented it (a dying process's fds close first). It must still conclude that its
    // predecessor is dead, and serve on the state file.
    let svc = Service::start_faulty(&[("HOTRESTART_READY_TIMEOUT", "20s")]);
    hits(&svc, 3);
    let first = svc.pid();
    svc.signal(first, libc::SIGTERM);
    assert_eq!(wait_exit(first, WAIT), 0);
    svc.spawn();
    hits(&svc, 2);
    let old = svc.pid();
    svc.plan("hook-sleep-ms=1000");
    svc.signal(old, libc::SIGHUP);
    svc.wait_log("hook: sleeping", 1);
    let successor = svc.successor_of(old);
    svc.signal(old, libc::SIGKILL);
    assert_eq!(wait_exit(old, WAIT), 128 + libc::SIGKILL);
    assert_eq!(svc.wait_new_pid(old), successor, "log:\n{}", svc.log_text());
    assert_eq!(svc.count(), 3, "the best state left: the state file's");
    assert_eq!(svc.count_log("refusing the previous process's handover"), 0);
}
