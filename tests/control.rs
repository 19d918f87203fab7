//! The control socket and `hotrestart-ctl`: restart with an outcome, status, owner only; and
//! the development mode that restarts on a rebuilt executable.
// Children are reaped by the harness's reaper (see testkit/src/procs.rs), never by `Child::wait`.
#![allow(clippy::zombie_processes)]

use hotrestart_testkit as common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;

fn run_ctl(socket: &std::path::Path, command: &str, uid: Option<u32>) -> (i32, String) {
    let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new(ctl());
    cmd.arg(socket).arg(command);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(_fork);
    let pid = child.id();
    // Read the output first (the reaper owns the exit status).
    let mut out = String::new();
    use std::io::Read;
    child.stdout.unwrap().read_to_string(&mut out).unwrap();
    child.stderr.unwrap().read_to_string(&mut out).unwrap();
    (wait_exit(pid, WAIT), out)
}

#[test]
fn restart_through_the_control_socket_reports_the_outcome() {
    let mut svc = Service::prepare("counter", &[("HOTRESTART_READY_TIMEOUT", "5s")]);
    let socket = svc.dir.path().join("control.sock");
    svc.env.push((
        "HOTRESTART_CONTROL_SOCKET".into(),
        socket.to_str().unwrap().into(),
    ));
    let first = svc.spawn();
    svc.hit();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "owner only");

    let (code, out) = run_ctl(&socket, "restart", None);
    assert_eq!(code, 0, "{out}");
    let second = svc.pid();
    assert_ne!(second, first);
    assert!(
        out.starts_with(&format!("restarted: pid {first} → pid {second} in ")),
        "{out}"
    );
    assert_eq!(wait_exit(first, WAIT), 0);

    let (code, out) = run_ctl(&socket, "status", None);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("generation=1 pid={second}")), "{out}");

    // A broken build: the command fails with the reason, the service keeps serving.
    svc.replace_binary(EXIT_AT_ONCE);
    let (code, out) = run_ctl(&socket, "restart", None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("failed: restart rolled back: successor pid"),
        "{out}"
    );
    assert!(out.contains("exited"), "{out}");
    assert_eq!(svc.pid(), second);
    assert_eq!(svc.count(), 1);
}

#[test]
fn the_control_socket_refuses_other_users() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Acting as another user needs root; CI runs as root, so there this never skips.
        skip_or_fail("the_control_socket_refuses_other_users needs root to act as another user");
        return;
    }
    let mut svc = Service::prepare("counter", &[]);
    let socket = svc.dir.path().join("control.sock");
    svc.env.push((
        "HOTRESTART_CONTROL_SOCKET".into(),
        socket.to_str().unwrap().into(),
    ));
    let pid = svc.spawn();
    // Open the file and the directory to everyone, so only SO_PEERCRED stands in the way.
    std::fs::set_permissions(svc.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, out) = run_ctl(&socket, "restart", Some(65534));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("denied"), "{out}");
    assert_eq!(svc.pid(), pid);
    let status = svc.status().unwrap();
    assert!(
        status.history.is_empty(),
        "no restart was attempted: {status:?}"
    );
}

#[test]
fn development_mode_restarts_when_the_executable_is_rebuilt() {
    let svc = Service::start(&[("HOTRESTART_WATCH_EXE", "1")]);
    svc.hit();
    let old = svc.pid();
    svc.restore_binary(); // a new file at the same path, as `cargo build` leaves it
    let new = svc.wait_new_pid(old);
    assert_ne!(new, old);
    assert_eq!(svc.count(), 1, "state kept across the rebuild");
    assert_eq!(wait_exit(old, WAIT), 0);
}
