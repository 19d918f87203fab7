//! The protocol systemd sees, played by the test: socket activation with `LISTEN_PID`, and the
//! `sd_notify` messages of a start, a hot restart and a stop, all from one main pid (the
//! supervisor); the PID file. The real systemd runs in tests/systemd_container.rs.
// Children are reaped by the harness's reaper (see testkit/src/procs.rs), never by `Child::wait`.
#![allow(clippy::zombie_processes)]

use hotrestart_testkit as common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// `Key=value` lines of a unit file from the book.
fn unit(name: &str) -> Vec<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("book/src/ops")
        .join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn value<'a>(unit: &'a [(String, String)], key: &str) -> &'a str {
    unit.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key}= missing"))
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notifies_ready_reloading_and_stopping_from_one_main_pid() {
    let svc = Service::prepare("counter", &[]);
    let notify_path = svc.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();

    // As systemd does after fork: LISTEN_PID is the service's own pid (`exec` keeps the shell's).
    let log = std::fs::File::create(&svc.log).unwrap();
    let guard = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\"")
        .arg(&svc.bin)
        .current_dir(svc.dir.path())
        .env("LISTEN_FDS", "1")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("HOTRESTART_STATE_FILE", &svc.state_file)
        // PORT names the port the harness holds: were LISTEN_FDS ignored, the bind would fail.
        .env("PORT", svc.port.to_string())
        // As `auto` decides under systemd (the parent is systemd): the test is not.
        .env("HOTRESTART_SUPERVISOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: between fork and exec, only dup2/fcntl, which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The book's units: the socket's name, and the service's environment with its directories
    // moved into this test's directory.
    let socket_unit = unit("counter.socket");
    let service_unit = unit("counter.service");
    assert_eq!(
        value(&service_unit, "NotifyAccess"),
        "main",
        "only the supervisor, the main process, notifies"
    );
    assert_eq!(value(&service_unit, "Type"), "notify");
    command.env("LISTEN_FDNAMES", value(&socket_unit, "FileDescriptorName"));
    let run_dir = svc.dir.path().join("run");
    let lib_dir = svc.dir.path().join("lib");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::create_dir_all(&lib_dir).unwrap();
    let relocate = |v: &str| {
        v.replace("/run/counter", run_dir.to_str().unwrap())
            .replace("/var/lib/counter", lib_dir.to_str().unwrap())
    };
    for (key, val) in service_unit.iter().filter(|(k, _)| k == "Environment") {
        let (k, v) = val.split_once('=').unwrap();
        let _ = key;
        command.env(k, relocate(v));
    }
    let pid = command.spawn().unwrap().id();
    drop(guard);
    drop(listener);

    assert_eq!(recv(&notify), format!("READY=1\nMAINPID={pid}"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let gen0 = get(addr, "/").unwrap().pid;
    assert!(
        children(pid).iter().any(|&(p, _)| p == gen0),
        "generation 0, the supervisor's child, serves on the activated socket"
    );

    // `systemctl reload`: the unit's ExecReload, with the test's paths.
    let reload = relocate(value(&service_unit, "ExecReload"));
    let mut words = reload.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/hotrestart-ctl"));
    let ctl = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("hotrestart-ctl");
    let fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let child = Command::new(ctl)
        .args(words)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(fork);
    let ctl_pid = child.id();
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stdout.unwrap(), &mut said).unwrap();
    assert_eq!(wait_exit(ctl_pid, WAIT), 0, "{said}");
    assert!(
        said.starts_with(&format!("restarted: pid {gen0} → pid ")),
        "{said}"
    );
    let reloading = recv(&notify);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    // The main pid does not change: READY alone, no MAINPID=.
    assert_eq!(recv(&notify), "READY=1");
    let new = get(addr, "/").unwrap().pid;
    assert_ne!(new, gen0);
    wait_gone(gen0, WAIT);
    assert!(is_alive(pid));

    // SAFETY: kill on the supervisor this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert_eq!(recv(&notify), "STOPPING=1");
    assert_eq!(wait_exit(pid, WAIT), 0);
    assert!(gone(new));
}

#[test]
fn each_generation_rewrites_the_pid_file() {
    let mut svc = Service::prepare("counter", &[]);
    let pid_file = svc.dir.path().join("counter.pid");
    svc.env.push((
        "HOTRESTART_PID_FILE".into(),
        pid_file.to_str().unwrap().into(),
    ));
    let first = svc.spawn();
    let read = || {
        std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
    };
    assert_eq!(read(), first);
    let second = svc.hot_restart();
    assert_eq!(read(), second);
}
