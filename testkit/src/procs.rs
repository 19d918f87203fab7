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

/// What each open fd of `pid` refers to (`/proc/<pid>/fd/<n>` links: a path, `socket:[N]`,
/// `pipe:[N]`, ...).
pub fn fd_targets(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|t| t.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Inodes of the sockets `pid` holds (`socket:[N]` among its fds).
pub fn socket_inodes(pid: u32) -> std::collections::HashSet<u64> {
    fd_targets(pid)
        .iter()
        .filter_map(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// The fds of `pid` that `keep` selects, counted as the smallest of several readings, so a
/// connection that is just closing is not counted while a leak (which stays) is.
pub fn settled_fd_count(pid: u32, keep: impl Fn(&str) -> bool) -> usize {
    (0..8)
        .map(|_| {
            thread::sleep(Duration::from_millis(25));
            fd_targets(pid).iter().filter(|t| keep(t)).count()
        })
        .min()
        .unwrap()
}

/// Open fds of `pid` (see [`settled_fd_count`]).
pub fn fd_count(pid: u32) -> usize {
    settled_fd_count(pid, |_| true)
}

/// Sockets `pid` holds open (see [`settled_fd_count`]).
pub fn socket_count(pid: u32) -> usize {
    settled_fd_count(pid, |t| t.starts_with("socket:"))
}

/// Whether `pid` has neither exited nor been reaped.
pub fn is_alive(pid: u32) -> bool {
    exit_code(pid).is_none() && Path::new(&format!("/proc/{pid}")).exists()
}

/// Anonymous resident memory of `pid` in KiB (`RssAnon`: the heap and stacks, not the mapped
/// binary and libraries).
pub fn anon_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/<pid>/status")
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

/// The value of the environment variable `name` that `pid` was started with.
pub fn env_of(pid: u32, name: &str) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|&b| b == 0).find_map(|kv| {
        let kv = std::str::from_utf8(kv).ok()?;
        kv.strip_prefix(name)?.strip_prefix('=').map(str::to_owned)
    })
}

/// Bytes queued unread on socket `fd` of process `pid`: `FIONREAD` on a copy of the fd taken
/// with `pidfd_getfd` (the test runs as the same user, or as root).
pub fn unread_bytes(pid: u32, fd: i32) -> std::io::Result<usize> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open and pidfd_getfd take integers and return new fds, owned here at once.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: as above.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let copy = unsafe { OwnedFd::from_raw_fd(copy as i32) };
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `queued`, a live local.
    if unsafe { libc::ioctl(copy.as_raw_fd(), libc::FIONREAD, &mut queued) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(queued as usize)
}

/// Waits until `bytes` of the handoff channel wait unread in `successor` (its end is the fd
/// named by its `HOTRESTART_HANDOFF_FD`): what the old process sends is under way.
pub fn wait_handoff_queued(successor: u32, bytes: usize) {
    let fd: i32 = env_of(successor, "HOTRESTART_HANDOFF_FD")
        .and_then(|v| v.parse().ok())
        .expect("a successor has HOTRESTART_HANDOFF_FD");
    let start = Instant::now();
    loop {
        let queued = unread_bytes(successor, fd).expect("the successor's handoff channel");
        if queued >= bytes {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "only {queued} bytes queued for pid {successor}, not {bytes}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}
