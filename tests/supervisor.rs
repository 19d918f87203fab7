//! The supervisor: a main process whose pid never changes while generations come and go
//! beneath it. Real processes, real signals, a real pseudo-terminal.

use hotrestart_testkit as common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A counter under a supervisor: `first_pid` is the supervisor.
fn supervised(env: &[(&str, &str)]) -> Service {
    let mut env = env.to_vec();
    env.push(("HOTRESTART_SUPERVISOR", "1"));
    Service::start(&env)
}

/// SIGHUP to the main pid; waits for the new generation to serve and the old one to be gone.
fn restart_through(service: &Service, main: u32) -> u32 {
    let old = service.pid();
    service.signal(main, libc::SIGHUP);
    let new = service.wait_new_pid(old);
    wait_gone(old, WAIT);
    new
}

#[test]
fn the_main_pid_never_changes_across_hundreds_of_restarts() {
    let control = tempfile::tempdir().unwrap();
    let socket = control.path().join("control.sock");
    let service = supervised(&[("HOTRESTART_CONTROL_SOCKET", socket.to_str().unwrap())]);
    let main = service.first_pid;
    let gen0 = service.pid();
    assert_ne!(gen0, main, "generation 0 is a child of the supervisor");
    assert!(children(main).iter().any(|&(p, _)| p == gen0));
    let mut hits = 0;
    let mut pids = vec![gen0];
    // The old generation exits as soon as READY arrives, often before the supervisor has read
    // its successor's announcement: each of these restarts is that race.
    for i in 0..200 {
        let new = restart_through(&service, main);
        assert!(!pids.contains(&new), "restart {i}: pid {new} served before");
        pids.push(new);
        assert!(
            is_alive(main),
            "restart {i}: the supervisor exited; log:\n{}",
            service.log_text()
        );
        if i % 20 == 0 {
            hits += 1;
            assert_eq!(service.hit(), hits);
        }
    }
    // The control socket's status names the main pid, from the serving generation.
    let out = {
        let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        Command::new(ctl())
            .arg(&socket)
            .arg("status")
            .output()
            .unwrap()
    };
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains(&format!(" main_pid={main}")) && status.contains("generation=200 "),
        "{status}"
    );
    // Nothing left behind: the only child is the serving generation, no zombie.
    let kids = children(main);
    assert_eq!(
        kids.iter().map(|&(pid, _)| pid).collect::<Vec<_>>(),
        vec![service.pid()],
        "children of the supervisor: {kids:?}"
    );
    assert!(zombie_children(main).is_empty());
    service.signal(main, libc::SIGTERM);
    assert_eq!(wait_exit(main, WAIT), 0, "log:\n{}", service.log_text());
    assert_eq!(service.saved_count(), hits);
    assert!(service.live_processes().is_empty());
}

#[test]
fn a_rollback_keeps_the_main_process_and_the_serving_generation() {
    let service = supervised(&[]);
    let main = service.first_pid;
    assert_eq!(service.hit(), 1);
    let serving = restart_through(&service, main);
    service.replace_binary(&std::fs::read(example("counter_incompatible")).unwrap());
    service.signal(main, libc::SIGHUP);
    assert_eq!(
        service.wait_rollbacks(1).pid,
        serving,
        "the old generation serves on"
    );
    assert_eq!(service.pid(), serving);
    assert!(is_alive(main));
    assert_eq!(service.hit(), 2);
    service.restore_binary();
    let next = restart_through(&service, main);
    assert_ne!(next, serving);
    assert_eq!(service.hit(), 3);
    service.signal(main, libc::SIGTERM);
    assert_eq!(wait_exit(main, WAIT), 0);
    assert_eq!(service.saved_count(), 3);
}

#[test]
fn a_generation_that_crashes_ends_the_main_process_with_its_status() {
    // Generation 0, the supervisor's own child.
    let service = supervised(&[]);
    service.signal(service.pid(), libc::SIGKILL);
    assert_eq!(wait_exit(service.first_pid, WAIT), 128 + libc::SIGKILL);

    // A later generation, reparented to the supervisor when its predecessor exited.
    let service = supervised(&[]);
    let serving = restart_through(&service, service.first_pid);
    service.signal(serving, libc::SIGABRT);
    assert_eq!(wait_exit(service.first_pid, WAIT), 128 + libc::SIGABRT);
    service.wait_log("was killed by signal 6 without a successor", 1);
}

#[test]
fn a_successor_that_crashes_while_its_predecessor_drains_is_noticed() {
    // The old generation lingers 3 s after handing over: it is the new one's parent then,
    // and the supervisor learns the status from it.
    let service = Service::start_faulty(&[("HOTRESTART_SUPERVISOR", "1")]);
    service.plan("linger-ms=3000");
    let main = service.first_pid;
    let old = service.pid();
    service.signal(main, libc::SIGHUP);
    let new = service.wait_new_pid(old);
    service.wait_log("lingering", 1);
    assert!(is_alive(old), "the predecessor still lingers");
    service.signal(new, libc::SIGKILL);
    // While the predecessor lingers the supervisor waits, and sleeps while it waits: a pidfd
    // of a process that exited stays readable, and polling it again would spin.
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(main);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(main) - before;
    assert!(
        spent < 10,
        "the supervisor used {spent} ticks of CPU in 1 s of waiting"
    );
    assert_eq!(
        wait_exit(main, WAIT),
        128 + libc::SIGKILL,
        "log:\n{}",
        service.log_text()
    );
    assert!(
        gone(old),
        "the supervisor waited for the draining generation"
    );
}

/// User + system CPU time of `pid`, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_rollback_at_the_snapshot_keeps_the_old_generation_serving() {
    // The ready timeout passes while the old process's hook runs (after PREPARED), so it rolls
    // back just as it would send the snapshot. The successor must die before it sees the
    // channel end (else it falls back to the state file and announces itself, and the
    // supervisor follows a process about to be killed).
    // PREPARED comes well within the timeout (a debug build on a loaded machine included),
    // the hook runs past it.
    let service = Service::start_faulty(&[
        ("HOTRESTART_SUPERVISOR", "1"),
        ("HOTRESTART_READY_TIMEOUT", "1500ms"),
    ]);
    service.plan("hook-sleep-ms=2500");
    let main = service.first_pid;
    let serving = service.pid();
    assert_eq!(service.hit(), 1);
    service.signal(main, libc::SIGHUP);
    let line = service.wait_rollbacks(1).rollbacks().remove(0);
    // At the snapshot, the connections or READY (the successor may even have announced
    // itself): either way a timeout after PREPARED, with the successor alive until killed.
    assert!(
        line.contains("within the ready timeout") && !line.contains("PREPARED"),
        "{line}"
    );
    // Past the supervisor's wait for a status it would never get.
    std::thread::sleep(Duration::from_millis(5500));
    assert!(is_alive(main), "log:\n{}", service.log_text());
    assert_eq!(service.pid(), serving, "the old generation serves on");
    assert_eq!(service.hit(), 2);
    assert_eq!(
        service.count_log("went away before handing over"),
        0,
        "the successor never served on its own; log:\n{}",
        service.log_text()
    );
    service.signal(main, libc::SIGTERM);
    assert_eq!(wait_exit(main, WAIT), 0, "log:\n{}", service.log_text());
    assert_eq!(service.saved_count(), 2);
}

#[test]
fn a_generation_killed_in_the_middle_of_a_handover_leaves_its_successor_serving() {
    // The serving generation is the supervisor's own child (generation 0); it is SIGKILLed
    // while it sends its snapshot to a successor that is stopped (SIGSTOP) meanwhile. The
    // successor, re-parented to the supervisor, then serves on the state file, and the
    // supervisor must follow it rather than end the service and stop it as an orphan.
    let mut service = Service::start_faulty(&[
        ("HOTRESTART_SUPERVISOR", "1"),
        ("FAULTY_BALLAST_MB", "8"),
        ("HOTRESTART_READY_TIMEOUT", "20s"),
    ]);
    for n in 1..=3 {
        assert_eq!(service.hit(), n);
    }
    service.signal(service.first_pid, libc::SIGTERM);
    assert_eq!(wait_exit(service.first_pid, WAIT), 0);
    service.first_pid = service.spawn(); // a state file with 3 hits
    let main = service.first_pid;
    assert_eq!(service.hit(), 4); // known to the live process only
    let old = service.pid();
    service.plan("hook-sleep-ms=1000");
    service.signal(main, libc::SIGHUP);
    service.wait_log("hook: sleeping", 1);
    let successor = service.successor_of(old);
    service.signal(successor, libc::SIGSTOP);
    // The old generation now blocks sending a snapshot the stopped successor cannot read:
    // 64 KiB of it waiting in the successor's end of the channel is the snapshot under way.
    wait_handoff_queued(successor, 64 << 10);
    service.signal(old, libc::SIGKILL);
    wait_gone(old, WAIT);
    service.signal(successor, libc::SIGCONT);
    assert_eq!(
        service.wait_new_pid(old),
        successor,
        "log:\n{}",
        service.log_text()
    );
    assert_eq!(service.count(), 3, "the best state left: the state file's");
    service.wait_log("the service goes on", 1);
    assert!(is_alive(main), "log:\n{}", service.log_text());
    assert_eq!(
        service.count_log("stopping the processes left beneath it"),
        0
    );
    assert_eq!(service.hit(), 4);
    service.signal(main, libc::SIGTERM);
    assert_eq!(wait_exit(main, WAIT), 0, "log:\n{}", service.log_text());
    assert_eq!(service.saved_count(), 4);
}

#[test]
fn sigterm_during_a_restart_still_ends_the_service_with_the_state_saved() {
    // Hooks that take 300 ms hold the handover open; SIGTERM arrives in the middle.
    let service = Service::start_faulty(&[("HOTRESTART_SUPERVISOR", "1")]);
    service.plan("hook-sleep-ms=300");
    let main = service.first_pid;
    for n in 1..=5 {
        assert_eq!(service.hit(), n);
    }
    service.signal(main, libc::SIGHUP);
    service.wait_log("hook: sleeping", 1);
    service.signal(main, libc::SIGTERM);
    assert_eq!(wait_exit(main, WAIT), 0, "log:\n{}", service.log_text());
    assert!(service.live_processes().is_empty());
    assert_eq!(service.saved_count(), 5, "log:\n{}", service.log_text());
}

/// A pseudo-terminal: the service is the session leader on its slave side, as under a shell.
struct Terminal {
    master: std::fs::File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    fn spawn(service: &Service) -> (Terminal, u32) {
        use std::os::unix::process::CommandExt;
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes the two fds into the locals; the other arguments may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: both fds were just returned by openpty and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let slave_fd = std::os::fd::AsRawFd::as_raw_fd(&slave);
        let mut cmd = service.command();
        cmd.env_remove("HOTRESTART_SUPERVISOR")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe system calls on integers: the child
        // becomes a session leader whose controlling terminal is the slave.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = {
            let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            cmd.spawn().unwrap()
        };
        drop(cmd);
        let pid = child.id();
        drop(child);
        let master = std::fs::File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = output.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once no process holds the slave side any more.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (Terminal { master, output }, pid)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn lines_with(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

#[test]
fn in_a_terminal_the_prompt_waits_and_ctrl_c_stops_the_service_once() {
    let service = Service::prepare("counter", &[]);
    let (mut terminal, main) = Terminal::spawn(&service);
    service.wait_serving();
    let gen0 = service.pid();
    assert_ne!(
        gen0, main,
        "in a terminal the supervisor is on without being asked"
    );
    assert_eq!(service.hit(), 1);
    // A restart: the process the shell started stays (the prompt would not come back).
    let serving = restart_through(&service, main);
    assert!(is_alive(main));
    assert_eq!(service.hit(), 2);
    // Ctrl-C: the line discipline sends SIGINT to the terminal's foreground process group.
    terminal.master.write_all(b"\x03").unwrap();
    assert_eq!(wait_exit(main, WAIT), 0, "terminal:\n{}", terminal.text());
    wait_gone(serving, WAIT);
    let start = Instant::now();
    while terminal.lines_with("exiting with status 0") == 0 && start.elapsed() < WAIT {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        terminal.lines_with("SIGINT: draining and exiting"),
        1,
        "one generation stopped, once:\n{}",
        terminal.text()
    );
    assert_eq!(
        terminal.lines_with("SIGINT → generation"),
        1,
        "{}",
        terminal.text()
    );
    assert_eq!(service.saved_count(), 2);
}

#[test]
fn off_by_default_under_an_ordinary_parent_and_off_when_asked() {
    // The test harness is neither an init, nor systemd, nor a terminal: no supervisor.
    let service = Service::start(&[]);
    assert_eq!(service.pid(), service.first_pid);
    // `HOTRESTART_SUPERVISOR=0` wins even where `auto` would turn it on (a PID namespace:
    // tests/namespaces.rs).
    let service = Service::start(&[("HOTRESTART_SUPERVISOR", "0")]);
    assert_eq!(service.pid(), service.first_pid);
}
