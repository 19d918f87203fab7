//! The counter example as real processes: hot restart, cold restart, rollback, leaks, and a
//! corrupt state file.
// Children are reaped by the harness's reaper (see testkit/src/procs.rs), never by `Child::wait`.
#![allow(clippy::zombie_processes)]

use hotrestart_testkit as common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn hot_restart_changes_pid_keeps_count_and_fails_no_request() {
    let svc = Service::start(&[]);
    for _ in 0..5 {
        svc.hit();
    }
    let load = Load::start(svc.addr());
    load.wait_more(20);
    let old = svc.pid();
    let new = svc.hot_restart();
    load.wait_more(20);
    let (acked, failures) = load.finish();
    assert_ne!(old, new);
    assert!(
        failures.is_empty(),
        "{} requests failed during the restart: {failures:?}",
        failures.len()
    );
    assert!(acked > 0);
    assert_eq!(
        svc.count(),
        5 + acked,
        "every acknowledged hit is kept, none twice"
    );
    assert_eq!(svc.pid(), new);
    let log = svc.log_text();
    assert!(
        log.contains("before_restart hook ran"),
        "the hook ran:\n{log}"
    );
    assert!(log.contains(&format!("handed over to pid {new}")), "{log}");
}

#[test]
fn cold_restart_restores_the_state_file() {
    let svc = Service::start(&[]);
    for _ in 0..7 {
        svc.hit();
    }
    let pid = svc.pid();
    svc.signal(pid, libc::SIGTERM);
    assert_eq!(
        wait_exit(pid, WAIT),
        0,
        "graceful exit is 0; log:\n{}",
        svc.log_text()
    );
    let meta = fs::metadata(&svc.state_file).expect("state file written on SIGTERM");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        svc.live_processes(),
        Vec::<u32>::new(),
        "nothing of the service runs after the exit"
    );

    let second = svc.spawn();
    assert_ne!(second, pid);
    assert_eq!(svc.count(), 7);
    assert_eq!(svc.hit(), 8);
}

#[test]
fn failed_successors_roll_back_and_a_good_binary_still_takes_over() {
    let svc = Service::start(&[("HOTRESTART_READY_TIMEOUT", "1500ms")]);
    for _ in 0..3 {
        svc.hit();
    }
    let pid = svc.pid();
    let load = Load::start(svc.addr());

    // A build that exits at once.
    svc.replace_binary(EXIT_AT_ONCE);
    svc.signal(pid, libc::SIGHUP);
    let status = svc.wait_rollbacks(1);
    assert!(status.rollbacks()[0].contains("exited"), "{status:?}");
    assert_eq!(status.pid, pid, "the old process serves on");
    assert_eq!(svc.pid(), pid);

    // A build that hangs: killed after the ready timeout.
    svc.replace_binary(HANG);
    svc.signal(pid, libc::SIGHUP);
    let status = svc.wait_rollbacks(2);
    assert!(
        status.rollbacks()[1].contains("ready timeout"),
        "{status:?}"
    );
    assert_eq!(svc.pid(), pid);
    // Killed and reaped before the old process served again.
    let children = children(pid);
    assert!(
        children.is_empty(),
        "failed successors are killed and reaped: {children:?}"
    );

    // A good build takes over, with the live state.
    svc.restore_binary();
    let new = svc.hot_restart();
    let (acked, failures) = load.finish();
    assert_ne!(new, pid);
    assert!(
        failures.is_empty(),
        "{} requests failed: {failures:?}",
        failures.len()
    );
    assert_eq!(svc.count(), 3 + acked);
}

#[test]
fn twenty_restarts_leave_one_process_no_zombie_and_flat_fds() {
    let svc = Service::start(&[]);
    svc.hit();
    let first = svc.hot_restart();
    let fds_after_first = fd_count(first);
    let mut pid = first;
    for _ in 1..20 {
        pid = svc.hot_restart();
    }
    svc.hit();
    assert_eq!(svc.count(), 2);
    assert_eq!(
        svc.live_processes(),
        vec![pid],
        "exactly one generation is alive"
    );
    assert_eq!(
        fd_count(pid),
        fds_after_first,
        "fd count is flat across restarts"
    );
    // The serving generation reaps what it spawned (its failed successors, if any); every old
    // generation was reaped with status 0 by `hot_restart`.
    assert!(zombie_children(pid).is_empty());
}

#[test]
fn corrupt_state_file_is_set_aside_and_the_service_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("counter.state");
    let garbage = b"HRSTSNAP\x01\x00\x00\x00 this is not a snapshot".to_vec();
    fs::write(&state, &garbage).unwrap();
    let state_env = state.to_str().unwrap().to_owned();
    let svc = Service::start(&[("HOTRESTART_STATE_FILE", &state_env)]);
    assert_eq!(svc.count(), 0, "starts with the initial state");
    assert!(!state.exists(), "the bad file is no longer in the way");
    let aside: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("counter.state.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "set aside, once");
    assert_eq!(
        fs::read(aside[0].path()).unwrap(),
        garbage,
        "kept byte for byte"
    );
    let lines = svc.wait_log("unusable", 1);
    assert_eq!(lines.len(), 1, "one clear log line");
    assert!(
        lines[0].contains("moved to") && lines[0].contains("initial state"),
        "{}",
        lines[0]
    );

    // The next graceful exit writes a good file in its place.
    svc.hit();
    let pid = svc.pid();
    svc.signal(pid, libc::SIGTERM);
    assert_eq!(wait_exit(pid, WAIT), 0);
    svc.spawn();
    assert_eq!(svc.count(), 1);
}

#[test]
fn a_panicking_supervisor_exits_instead_of_ignoring_signals() {
    use std::io::BufRead;
    // The log goes to a pipe that is then closed: the next log line (the supervisor's, on
    // SIGHUP) makes the log writer panic. The process must exit, not keep serving deaf to
    // SIGTERM and SIGHUP.
    let svc = Service::prepare("counter", &[]);
    let fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let child = svc
        .command()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(fork);
    let pid = child.id();
    let mut lines = std::io::BufReader::new(child.stderr.unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.contains("ready generation=0") {
            break;
        }
    }
    drop(lines); // closes the pipe's only reader
    svc.wait_serving();
    svc.signal(pid, libc::SIGHUP);
    assert_eq!(
        wait_exit(pid, WAIT),
        70,
        "exit status 70: the supervisor died"
    );
}
