//! Hooks with real processes: a hook that hangs is abandoned at its time limit and the restart
//! goes on (examples/faulty.rs's hook sleeps as long as it is told).

use hotrestart_testkit as common;

use common::*;

#[test]
fn a_hook_that_hangs_is_abandoned_at_its_limit_and_the_restart_goes_on() {
    let svc = Service::start_faulty(&[("HOTRESTART_HOOK_TIMEOUT", "300ms")]);
    assert_eq!(svc.hit(), 1);
    let old = svc.pid();
    // 20 s: far past the limit, and past the ready timeout's default budget of the test.
    svc.plan("hook-sleep-ms=20000");
    svc.signal(old, libc::SIGHUP);
    let new = svc.wait_new_pid(old);
    assert_eq!(
        wait_exit(old, WAIT),
        0,
        "the old process hands over and exits"
    );
    let log = svc.log_text();
    assert_eq!(
        svc.count_log("hook: done"),
        0,
        "the successor served while the hook was still sleeping: it was abandoned; log:\n{log}"
    );
    assert_eq!(
        svc.count_log("did not finish within its time limit (300ms)"),
        1,
        "one line names the hook; log:\n{log}"
    );
    assert!(log.contains("faulty::"), "the line names the hook's path");
    assert_eq!(svc.pid(), new);
    assert_eq!(svc.hit(), 2, "the state moved, the service serves on");
}
