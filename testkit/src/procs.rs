//! Processes as the kernel shows them: the one reaper of exit statuses, `/proc` readings
//! (children, states, fds, memory), and waits for a pid to end.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

fn statuses() -> &'static Mutex<HashMap<i32, i32>> {
    static S: OnceLock<Mutex<HashMap<i32, i32>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Collects every exited child (ours or reparented to us).
pub fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into the local `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        statuses().lock().unwrap().insert(pid, status);
    }
}

/// Exit code of `pid` once it has exited (None while it runs). Signals give 128 + signal.
pub fn exit_code(pid: u32) -> Option<i32> {
    reap();
    statuses().lock().unwrap().get(&(pid as i32)).map(|&s| {
        if libc::WIFEXITED(s) {
            libc::WEXITSTATUS(s)
        } else {
            128 + libc::WTERMSIG(s)
        }
    })
}

pub fn wait_exit(pid: u32, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(code) = exit_code(pid) {
            return code;
        }
        assert!(
            start.elapsed() < limit,
            "pid {pid} did not exit within {limit:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub state: char,
    pub exe: PathBuf,
}

pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut rest = stat[close + 2..].split(' ');
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let exe = fs::read_link(entry.path().join("exe")).unwrap_or_default();
        out.push(Proc {
            pid,
            ppid,
            state,
            exe,
        });
    }
    out
}

/// Children of `pid` (with their state letter), zombies included.
pub fn children(pid: u32) -> Vec<(u32, char)> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| (p.pid, p.state))
        .collect()
}

/// Children of `pid` that are zombies.
pub fn zombie_children(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .filter(|&(_, state)| state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// Open fds of `pid`: the smallest of several readings, so a connection that is just closing
/// is not counted while a leak (which stays) is.
pub fn fd_count(pid: u32) -> usize {
    (0..8)
        .map(|_| {
            thread::sleep(Duration::from_millis(25));
            fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
        })
        .min()
        .unwrap()
}

/// Whether `pid` has neither exited nor been reaped.
pub fn is_alive(pid: u32) -> bool {
    exit_code(pid).is_none() && Path::new(&format!("/proc/{pid}")).exists()
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Whether this test runs as root, whom file permissions do not stop.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `pid` is gone: reaped (by anyone) or a zombie.
pub fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_some_and(|s| s == 'Z'),
    }
}

/// Waits until `pid` is gone.
pub fn wait_gone(pid: u32, limit: Duration) {
    let start = Instant::now();
    while !gone(pid) {
        assert!(
            start.elapsed() < limit,
            "pid {pid} still runs after {limit:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}
